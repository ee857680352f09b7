"""Multi-query associative recall (Arora et al. 2023, Zoology)."""

from __future__ import annotations

import math

import torch
from pydantic import model_validator

from amlab.workloads.registry import Params, knob, task
from amlab.workloads.tasks._partition import check_space, draw_in_split
from amlab.workloads.tasks.base import Batch, Task


class MQARParams(Params):
    vocab_size: int = knob(256, 16, 65536, search=False, doc="tokens; keys from the lower half, values from the upper")
    seq_len: int = knob(64, 8, 8192, search=False, doc="sequence length")
    num_kv_pairs: int = knob(8, 1, 1024, search=False, doc="key-value pairs shown before the queries")

    @model_validator(mode="after")
    def _fits(self):
        if 4 * self.num_kv_pairs > self.seq_len:
            raise ValueError(f"seq_len ({self.seq_len}) must be >= 4 * num_kv_pairs ({4 * self.num_kv_pairs})")
        if self.num_kv_pairs > self.vocab_size // 2 - 1:
            raise ValueError(f"num_kv_pairs ({self.num_kv_pairs}) must be < vocab_size / 2 - 1")
        half = self.vocab_size // 2
        check_space(math.perm(half - 1, self.num_kv_pairs) * half**self.num_kv_pairs, f"{self.num_kv_pairs} pairs")
        return self


@task(
    "mqar", params=MQARParams, modality="tokens", loss="ce", metric="accuracy", higher_is_better=True,
    paper="Arora et al. 2023, Zoology: Measuring and Improving Recall in Efficient Language Models",
)
class MQAR(Task):
    """Key-value pairs, then each key again at a random later position: predict its value there.

    Tokens: 0 is filler, keys are drawn without replacement from
    [1, V/2), values from [V/2, V).  The first 2·kv positions hold the
    pairs; every key is queried once at a random position in the rest, and
    the target at a query position is the key's value.  Train, val and test
    draw from disjoint parts of the space of contexts (the ordered key-value
    prefix; see `workloads.tasks._partition`), so a test context is never trained on.
    """

    def __init__(self, params: MQARParams):
        super().__init__(params)
        self.input_size = self.output_size = params.vocab_size
        self.chance = 1.0 / params.num_kv_pairs  # guessing among the values shown

    def sample(self, gen, batch_size, split):
        p = self.params
        B, T, kv, half = batch_size, p.seq_len, p.num_kv_pairs, p.vocab_size // 2

        def draw(n):  # contexts k1 v1 ... k_kv v_kv: keys a random ordered kv-subset, values with replacement
            keys = torch.rand(n, half - 1, generator=gen).topk(kv, dim=1).indices + 1
            return torch.stack([keys, torch.randint(half, p.vocab_size, (n, kv), generator=gen)], 2).flatten(1)

        ctx = draw_in_split(draw, B, split)
        keys, values = ctx[:, 0::2], ctx[:, 1::2]
        inputs = torch.zeros(B, T, dtype=torch.long)
        inputs[:, : 2 * kv] = ctx
        # query positions: key i is queried at slots[:, i], a random ordered kv-subset of the steps after the context
        slots = torch.rand(B, T - 2 * kv, generator=gen).topk(kv, dim=1).indices + 2 * kv
        inputs.scatter_(1, slots, keys)
        targets = torch.zeros(B, T, dtype=torch.long)
        targets.scatter_(1, slots, values)
        mask = torch.zeros(B, T, dtype=torch.bool)
        mask.scatter_(1, slots, True)
        return Batch(inputs, targets, mask, {"keys": keys, "values": values})

    def score(self, logits, batch):
        right = (logits.argmax(-1) == batch.targets).float()
        per_example = (right * batch.mask).sum(1) / batch.mask.sum(1)
        return {"accuracy": per_example.mean().item()}
