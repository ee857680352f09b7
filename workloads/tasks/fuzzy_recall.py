"""Fuzzy in-context recall (MAD: Poli et al. 2024): keys and values span a variable number of tokens."""

from __future__ import annotations

import math

from pydantic import model_validator

from amlab.workloads.registry import Params, knob, task
from amlab.workloads.tasks._partition import check_space
from amlab.workloads.tasks._recall_stream import MAX_MOTIFS, StreamRecall, fuzzy_pairs, fuzzy_stream, motif_count
from amlab.workloads.tasks.noisy_recall import MAD


class FuzzyRecallParams(Params):
    vocab_size: int = knob(16, 4, 4096, search=False, doc="key and value tokens, half each (MAD: 16-128)")
    seq_len: int = knob(128, 8, 2048, search=False, doc="sequence length, left-padded (MAD: 128-1024)")
    key_len: int = knob(3, 1, 8, search=False, doc="most tokens in a key (MAD: 3); test keys have exactly this many")
    value_len: int = knob(3, 1, 8, search=False, doc="most tokens in a value (MAD: 3)")

    @model_validator(mode="after")
    def _fits(self):
        keys, values, width = self.vocab_size // 2, self.vocab_size - self.vocab_size // 2, self.key_len + self.value_len
        if self.key_len > keys or self.value_len > values:
            raise ValueError(f"key_len and value_len must be <= vocab_size / 2 ({keys}): a motif's tokens are distinct")
        if self.seq_len < 2 * width:
            raise ValueError(f"seq_len ({self.seq_len}) must be >= 2 * (key_len + value_len) = {2 * width}")
        if max(motif_count(keys, self.key_len), motif_count(values, self.value_len)) > MAX_MOTIFS:
            raise ValueError(f"more than {MAX_MOTIFS} possible keys or values (all are tabulated): lower vocab_size, "
                             "key_len or value_len")
        sure = (self.seq_len - width) // width  # pairs that always fit
        check_space(math.perm(keys, self.key_len) ** sure, f"seq_len {self.seq_len} with {self.key_len}-token keys")
        return self


@task(
    "fuzzy_recall", params=FuzzyRecallParams, modality="tokens", loss="ce", metric="accuracy", higher_is_better=True,
    paper=MAD,
)
class FuzzyRecall(StreamRecall):
    """Pairs of multi-token keys and values over a per-sequence map: each recurring key is scored on its value's tokens.

    MAD's fuzzy in-context recall (multi-query): a key is 1..`key_len`
    distinct key tokens, a value 1..`value_len` distinct value tokens; pairs
    follow each other until the sequence is full, the last re-shows an
    earlier key, and the rest is left padding.  Since key and value tokens
    are disjoint the model can find where a motif ends, but must match keys
    of varying length.  As in MAD, the test split shows only `key_len`-token
    keys (where a key's end is certain); val is the training distribution.
    With many possible keys, full-length ones rarely recur within a
    sequence, so there the test split scores mostly the final probe (as in MAD).
    Token layout and scoring: `workloads.tasks._recall_stream`.  Train, val
    and test draw from disjoint parts of the space of whole sequences
    (`_partition`).
    """

    def __init__(self, params: FuzzyRecallParams):
        super().__init__(params)
        self.keys, self.values = params.vocab_size // 2, params.vocab_size - params.vocab_size // 2
        self.input_size = self.output_size = 1 + params.vocab_size
        self.chance = 1 / self.values  # a uniform guess among the value tokens

    def eval_groups(self, split):
        if split == "test":
            return {f"keys_{self.params.key_len}": {"full_keys": True}}
        return {"all": {}}

    def draw(self, gen, n, split, full_keys: bool | None = None):
        p = self.params
        return fuzzy_pairs(gen, n, keys=self.keys, values=self.values, seq_len=p.seq_len, key_len=p.key_len,
                           value_len=p.value_len, full_keys=split == "test" if full_keys is None else full_keys)

    def expand(self, rows):
        p = self.params
        return fuzzy_stream(rows, keys=self.keys, values=self.values, seq_len=p.seq_len, key_len=p.key_len,
                            value_len=p.value_len)
