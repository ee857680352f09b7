"""Selective copying (MAD: Poli et al. 2024; Gu & Dao 2023): copy the tokens scattered among noise, in order."""

from __future__ import annotations

import torch
from pydantic import model_validator

from amlab.workloads.registry import Params, knob, task
from amlab.workloads.tasks.base import Batch, Task

BLANK, PROMPT = 0, 1


class SelectiveCopyParams(Params):
    vocab: int = knob(16, 2, 65536, search=False, doc="content tokens to copy from")
    seq_len: int = knob(256, 2, 100000, search=False, doc="length of the noisy region the tokens are scattered in")
    tokens: int = knob(16, 1, 4096, search=False, doc="tokens to copy")
    noise_vocab: int = knob(0, 0, 65536, search=False, doc="distinct noise tokens (0: every filler is one blank token)")
    test_lens: tuple[int, ...] = knob((256, 512), search=False, doc="noisy-region lengths of the test split")

    @model_validator(mode="after")
    def _fits(self):
        if not self.test_lens:
            raise ValueError("test_lens must be a non-empty list of lengths")
        if self.tokens > min(self.seq_len, *self.test_lens):
            raise ValueError(f"tokens ({self.tokens}) must fit in seq_len and every test length")
        return self


@task(
    "selective_copy", params=SelectiveCopyParams, modality="tokens", loss="ce", metric="accuracy", higher_is_better=True,
    metrics=("accuracy", "seq_accuracy"),
    paper="Poli et al. 2024, Mechanistic Design and Scaling of Hybrid Architectures (MAD); Gu & Dao 2023, Mamba",
)
class SelectiveCopy(Task):
    """`tokens` content tokens at random positions of a `seq_len` filler region, then as many prompt steps.

    Tokens: 0 blank, 1 prompt, [2, 2+noise_vocab) noise, then the content
    vocabulary.  The filler is blank, or uniform noise tokens when
    `noise_vocab` > 0.  At the i-th prompt step the target is the i-th
    content token in order of position; only prompt steps are scored.  The
    test split stretches the filler region (longer gaps, same token count).
    """

    def __init__(self, params: SelectiveCopyParams):
        super().__init__(params)
        self.first_content = 2 + params.noise_vocab
        self.input_size = self.output_size = self.first_content + params.vocab
        self.chance = 1 / params.vocab  # random (and majority) guess of a uniform content token

    def eval_groups(self, split):
        if split == "test":
            return {f"len_{n}": {"seq_len": n} for n in self.params.test_lens}
        return {"all": {}}

    def sample(self, gen, batch_size, split, seq_len: int | None = None):
        p, B, k = self.params, batch_size, self.params.tokens
        L = seq_len or p.seq_len
        content = torch.randint(self.first_content, self.input_size, (B, k), generator=gen)
        positions = torch.rand(B, L, generator=gen).topk(k, dim=1).indices.sort(1).values
        if p.noise_vocab:
            filler = torch.randint(2, self.first_content, (B, L), generator=gen)
        else:
            filler = torch.full((B, L), BLANK)
        inputs = torch.cat([filler.scatter(1, positions, content), torch.full((B, k), PROMPT)], 1)
        targets = torch.zeros_like(inputs)
        targets[:, L:] = content
        mask = torch.zeros(B, L + k, dtype=torch.bool)
        mask[:, L:] = True
        return Batch(inputs, targets, mask, {"positions": positions})

    def score(self, logits, batch):
        right = (logits.argmax(-1) == batch.targets) & batch.mask
        per_example = right.sum(1) / batch.mask.sum(1)
        return {"accuracy": per_example.float().mean().item(), "seq_accuracy": (per_example == 1).float().mean().item()}
