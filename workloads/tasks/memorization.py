"""Memorization (MAD: Poli et al. 2024): a fixed key -> value map that can only be learned in the weights."""

from __future__ import annotations

import torch
from pydantic import model_validator

from amlab.workloads.registry import Params, knob, task
from amlab.workloads.tasks.base import Batch, Task, generator
from amlab.workloads.tasks.noisy_recall import MAD

INSERT = 0


class MemorizationParams(Params):
    vocab_size: int = knob(256, 4, 65536, search=False, doc="keys and values, half each: vocab_size / 2 facts (MAD: 256-8192)")
    seq_len: int = knob(32, 2, 8192, search=False, doc="sequence length, even: seq_len / 2 keys per sequence (MAD: 32)")
    train_examples: int = knob(256, 0, 10**6, search=False,
                               doc="fixed training set (MAD: 256; facts get rarer as vocab_size grows); 0: fresh sequences")
    map_seed: int = knob(12345, 0, 2**31 - 1, search=False, doc="seeds the key -> value map (same in every run, split, seed)")

    @model_validator(mode="after")
    def _fits(self):
        if self.seq_len % 2:
            raise ValueError(f"seq_len ({self.seq_len}) must be even: the sequence is (key, insert) pairs")
        if self.train_examples * self.seq_len > 2**23:
            raise ValueError("train_examples * seq_len must be <= 2**23 (the training set is held in memory)")
        return self


@task(
    "memorization", params=MemorizationParams, modality="tokens", loss="ce", metric="accuracy", higher_is_better=True,
    paper=MAD,
)
class Memorization(Task):
    """Keys each followed by an insert token, scored on the key's value in one fixed map: facts stored in the weights.

    The map (a bijection from vocab_size/2 keys to as many values) depends
    only on `map_seed` and the vocabulary, never on the run's seed or split,
    and sequences carry no information about it: train, val and test share
    it by design, and the test split measures how much of it the weights
    hold.  So, unlike the recall tasks, the splits are not partitioned.  As in
    MAD, training draws from a fixed set of `train_examples` sequences (so
    larger vocabularies show each fact less often, and at the largest some
    never); val and test are fresh uniform sequences.  Tokens: 0 insert,
    keys [1, 1+K), values [1+K, 1+2K).
    """

    def __init__(self, params: MemorizationParams):
        super().__init__(params)
        K = self.keys = params.vocab_size // 2
        self.input_size = self.output_size = 1 + 2 * K
        self.chance = 1 / K  # a uniform guess among the value tokens
        fixed = generator("memorization", params.map_seed, K)
        self.map = torch.randperm(K, generator=fixed) + 1 + K  # value token of key token k is map[k - 1]
        n = params.train_examples
        pool_gen = generator("memorization-train", params.map_seed, K, params.seq_len, n)
        self.pool = torch.randint(1, 1 + K, (n, params.seq_len // 2), generator=pool_gen) if n else None

    def sample(self, gen, batch_size, split):
        B, half = batch_size, self.params.seq_len // 2
        if split == "train" and self.pool is not None:
            keys = self.pool[torch.randint(0, len(self.pool), (B,), generator=gen)]
        else:
            keys = torch.randint(1, 1 + self.keys, (B, half), generator=gen)
        inputs = torch.stack([keys, torch.full_like(keys, INSERT)], 2).flatten(1)
        targets = torch.stack([torch.zeros_like(keys), self.map[keys - 1]], 2).flatten(1)
        mask = torch.zeros_like(inputs, dtype=torch.bool)
        mask[:, 1::2] = True
        return Batch(inputs, targets, mask, {"keys": keys})

    def score(self, logits, batch):
        right = (logits.argmax(-1) == batch.targets) & batch.mask
        return {"accuracy": (right.sum(1) / batch.mask.sum(1)).mean().item()}
