"""Associative retrieval (Ba et al. 2016, fast weights): "c9k8j3f1??c" -> 9."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import model_validator

from amlab.workloads.registry import Params, knob, task
from amlab.workloads.tasks._partition import check_space, draw_in_split
from amlab.workloads.tasks.base import Batch, Task

DIGITS = 10


class AssocRetrievalParams(Params):
    pairs: int = knob(8, 1, 256, search=False, doc="letter-digit pairs per sequence")
    vocab: int = knob(26, 2, 4096, search=False, doc="distinct keys ('letters'); keys in a sequence are distinct")
    test_pairs: tuple[int, ...] = knob((), search=False, doc="extra (e.g. longer) pair counts in the test split")

    @model_validator(mode="after")
    def _fits(self):
        most = max((self.pairs, *self.test_pairs))
        if most > self.vocab:
            raise ValueError(f"{most} pairs need at least as many keys (vocab is {self.vocab})")
        if self.test_pairs and min(self.test_pairs) < 1:
            raise ValueError("test_pairs must be counts >= 1")
        for n in (self.pairs, *self.test_pairs):
            check_space(math.perm(self.vocab, n) * DIGITS**n, f"{n} pairs over {self.vocab} keys")
        return self


@task(
    "assoc_retrieval", params=AssocRetrievalParams, modality="tokens", loss="ce", metric="error", higher_is_better=False,
    metrics=("error",), paper="Ba et al. 2016, Using Fast Weights to Attend to the Recent Past",
)
class AssocRetrieval(Task):
    """Key-digit pairs, "??", then one key again: output the digit it was paired with.

    Tokens: keys [0, vocab), digits [vocab, vocab+10), "?" = vocab+10.  A
    sequence of n pairs is k1 d1 ... kn dn ? ? q (keys without replacement,
    digits with); the last position is scored and its target is the digit
    token of q's pair.  Train, val and test draw from disjoint parts of the
    space of pair sequences (`workloads.tasks._partition`), so no test
    sequence is ever trained on, with any query.
    """

    def __init__(self, params: AssocRetrievalParams):
        super().__init__(params)
        self.question = params.vocab + DIGITS
        self.input_size = self.output_size = params.vocab + DIGITS + 1
        self.chance = 1 - 1 / DIGITS  # error of guessing a digit

    def eval_groups(self, split):
        p = self.params
        if split == "test" and p.test_pairs:
            return {f"pairs_{n}": {"pairs": n} for n in (p.pairs, *p.test_pairs)}
        return {"all": {}}

    def sample(self, gen, batch_size, split, pairs: int | None = None):
        p, B = self.params, batch_size
        n = pairs or p.pairs

        def draw(m):  # identities: the n keys (a random ordered n-subset), then their digit tokens (with replacement)
            keys = torch.rand(m, p.vocab, generator=gen).topk(n, dim=1).indices
            return torch.cat([keys, torch.randint(p.vocab, p.vocab + DIGITS, (m, n), generator=gen)], 1)

        ctx = draw_in_split(draw, B, split)
        keys, digits = ctx[:, :n], ctx[:, n:]
        which = torch.randint(0, n, (B, 1), generator=gen)
        pairs = torch.stack([keys, digits], 2).flatten(1)
        inputs = torch.cat([pairs, torch.full((B, 2), self.question), keys.gather(1, which)], 1)
        targets = F.pad(digits.gather(1, which), (2 * n + 2, 0))  # the answer at the last step, 0 before
        mask = F.pad(torch.ones(B, 1, dtype=torch.bool), (2 * n + 2, 0))
        return Batch(inputs, targets, mask, {"query": which[:, 0]})

    def score(self, logits, batch):
        wrong = (logits.argmax(-1) != batch.targets) & batch.mask
        return {"error": wrong.any(1).float().mean().item()}
