"""The adding problem (Hochreiter & Schmidhuber 1997, in the form of Le et al. 2015 / Arjovsky et al. 2016)."""

from __future__ import annotations

import torch
from pydantic import model_validator

from amlab.workloads.registry import Params, knob, task
from amlab.workloads.tasks.base import Batch, Task


class AddingParams(Params):
    seq_len: int = knob(100, 4, 10000, search=False, doc="T, steps per training sequence")
    test_lens: tuple[int, ...] = knob((100, 200, 400), search=False, doc="T of the test split")

    @model_validator(mode="after")
    def _lens(self):
        if not self.test_lens or min(self.test_lens) < 4:
            raise ValueError("test_lens must be a non-empty list of lengths >= 4")
        return self


@task(
    "adding", params=AddingParams, modality="real", loss="mse", metric="mse", higher_is_better=False,
    metrics=("mse", "abs_error"), paper="Hochreiter & Schmidhuber 1997, Long Short-Term Memory (experiment 4)",
)
class Adding(Task):
    """(value, marker) pairs over T steps: output the sum of the two marked values at the last step.

    Values are uniform in [0, 1]; exactly two markers are 1, one in the first
    half and one in the second, so the model has to hold the first value for
    up to T steps.  Only the last step is scored.  Constant baseline:
    predicting the mean sum 1.0 scores MSE = Var(U1 + U2) = 2/12 = 0.167,
    whatever T (the "trivial 0.167" of the literature).
    """

    def __init__(self, params: AddingParams):
        super().__init__(params)
        self.input_size, self.output_size = 2, 1
        self.chance = 2 / 12

    def eval_groups(self, split):
        if split == "test":
            return {f"len_{n}": {"seq_len": n} for n in self.params.test_lens}
        return {"all": {}}

    def sample(self, gen, batch_size, split, seq_len: int | None = None):
        B, T = batch_size, seq_len or self.params.seq_len
        values = torch.rand(B, T, generator=gen)
        first = (torch.rand(B, generator=gen) * (T // 2)).long()
        second = T // 2 + (torch.rand(B, generator=gen) * (T - T // 2)).long()
        rows = torch.arange(B)
        markers = torch.zeros(B, T)
        markers[rows, first] = 1.0
        markers[rows, second] = 1.0
        targets = torch.zeros(B, T, 1)
        targets[:, -1, 0] = values[rows, first] + values[rows, second]
        mask = torch.zeros(B, T, dtype=torch.bool)
        mask[:, -1] = True
        return Batch(torch.stack([values, markers], -1), targets, mask, {"marked": torch.stack([first, second], 1)})

    def score(self, logits, batch):
        err = ((logits[..., 0] - batch.targets[..., 0]) * batch.mask).sum(1)  # one scored step per example
        return {"mse": err.square().mean().item(), "abs_error": err.abs().mean().item()}
