"""Noisy in-context recall (MAD: Poli et al. 2024): recall values of recurring keys among noise pairs."""

from __future__ import annotations

from pydantic import model_validator

from amlab.workloads.registry import Params, knob, task
from amlab.workloads.tasks._partition import check_space
from amlab.workloads.tasks._recall_stream import StreamRecall, noisy_stream

MAD = "Poli et al. 2024, Mechanistic Design and Scaling of Hybrid Architectures (MAD)"


class NoisyRecallParams(Params):
    vocab_size: int = knob(16, 4, 4096, search=False, doc="key and value tokens, half each (MAD: 16-128); noise tokens are extra")
    seq_len: int = knob(128, 8, 8192, search=False, doc="sequence length, even (MAD: 128-1024)")
    noise_vocab: int = knob(16, 1, 4096, search=False, doc="distinct noise tokens (MAD: 16)")
    frac_noise: float = knob(0.2, 0.0, 0.9, search=False,
                             doc="chance that a pair slot is noise (MAD: 0.2-0.8; 0 is MAD's plain recall)")

    @model_validator(mode="after")
    def _fits(self):
        if self.seq_len % 2:
            raise ValueError(f"seq_len ({self.seq_len}) must be even: the stream is pairs of tokens")
        keys, values = self.vocab_size // 2, self.vocab_size - self.vocab_size // 2
        check_space(keys ** (self.seq_len // 2 - 2) * values, f"seq_len {self.seq_len} over {keys} keys")
        return self


@task(
    "noisy_recall", params=NoisyRecallParams, modality="tokens", loss="ce", metric="accuracy", higher_is_better=True,
    paper=MAD,
)
class NoisyRecall(StreamRecall):
    """Key-value pairs over a per-sequence map, some pairs replaced by noise: each recurring key is scored on its value.

    MAD's (multi-query) in-context recall with noise: `seq_len / 2` pair
    slots; a slot is two noise tokens with probability `frac_noise`, else a
    key (uniform, with replacement, so keys recur) and its value in this
    sequence's map; the last slot re-shows an earlier key.  At every key that
    occurred before, the target is its value; noise is never scored.
    `frac_noise = 0` is MAD's plain in-context recall.  Token layout and
    scoring: `workloads.tasks._recall_stream`.  Train, val and test draw from
    disjoint parts of the space of whole sequences (`_partition`), so no
    test sequence is ever trained on.
    """

    def __init__(self, params: NoisyRecallParams):
        super().__init__(params)
        self.keys, self.values = params.vocab_size // 2, params.vocab_size - params.vocab_size // 2
        self.input_size = self.output_size = 1 + params.vocab_size + params.noise_vocab
        self.chance = 1 / self.values  # a uniform guess among the value tokens

    def draw(self, gen, n, split):
        p = self.params
        return noisy_stream(gen, n, keys=self.keys, values=self.values, seq_len=p.seq_len, noise=p.noise_vocab,
                            frac_noise=p.frac_noise)
