"""Copy (Graves et al. 2014): read random bit vectors and a delimiter, then write them back."""

from __future__ import annotations

import torch
from pydantic import model_validator

from amlab.workloads.registry import Params, knob, task
from amlab.workloads.tasks.base import Batch, Task, masked_mean_per_example


class CopyParams(Params):
    width: int = knob(8, 1, 64, search=False, doc="bits per vector")
    min_len: int = knob(1, 1, 1000, search=False, doc="shortest training sequence")
    max_len: int = knob(20, 1, 1000, search=False, doc="longest training sequence")
    test_lens: tuple[int, ...] = knob((20, 40, 80, 120), search=False, doc="lengths of the generalisation split")

    @model_validator(mode="after")
    def _order(self):
        if self.min_len > self.max_len:
            raise ValueError(f"min_len ({self.min_len}) must be <= max_len ({self.max_len})")
        if not self.test_lens or min(self.test_lens) < 1:
            raise ValueError("test_lens must be a non-empty list of lengths >= 1")
        return self


@task(
    "copy", params=CopyParams, modality="bits", loss="bce", metric="bit_errors", higher_is_better=False,
    metrics=("bit_errors", "seq_accuracy"), paper="Graves et al. 2014, Neural Turing Machines",
)
class Copy(Task):
    """Random bit vectors, a delimiter, then the same vectors: memory over the sequence length.

    Layout for length L: steps 0..L-1 carry the vectors (channel `width` = 0),
    step L is the delimiter (channel `width` = 1), steps L+1..2L are blank
    inputs whose outputs must reproduce the vectors.  Sequences in a batch
    have their own lengths; the rest is zero padding outside the mask.
    """

    def __init__(self, params: CopyParams):
        super().__init__(params)
        self.input_size = params.width + 1
        self.output_size = params.width
        # random guessing gets half the bits of every written vector wrong
        self.chance = params.width / 2 * sum(params.test_lens) / len(params.test_lens)

    def eval_groups(self, split):
        if split == "test":
            return {f"len_{n}": {"length": n} for n in self.params.test_lens}
        return {"all": {}}

    def sample(self, gen, batch_size, split, length: int | None = None):
        p = self.params
        if length is None:
            lengths = torch.randint(p.min_len, p.max_len + 1, (batch_size,), generator=gen)
        else:
            lengths = torch.full((batch_size,), length)
        Lmax = int(lengths.max())
        T = 2 * Lmax + 1
        bits = torch.randint(0, 2, (batch_size, Lmax, p.width), generator=gen).float()
        t = torch.arange(Lmax)
        bits = bits * (t[None, :] < lengths[:, None])[..., None]
        inputs = torch.zeros(batch_size, T, p.width + 1)
        targets = torch.zeros(batch_size, T, p.width)
        inputs[:, :Lmax, : p.width] = bits
        rows = torch.arange(batch_size)
        inputs[rows, lengths, p.width] = 1.0
        # output phase of example b: steps L_b+1 .. 2L_b carry bits[b, 0..L_b-1]
        out_t = lengths[:, None] + 1 + t[None, :]  # (B, Lmax)
        valid = t[None, :] < lengths[:, None]
        targets[rows[:, None].expand_as(out_t)[valid], out_t[valid]] = bits[valid]
        mask = torch.zeros(batch_size, T, dtype=torch.bool)
        mask[rows[:, None].expand_as(out_t)[valid], out_t[valid]] = True
        return Batch(inputs, targets, mask, {"lengths": lengths})

    def score(self, logits, batch):
        wrong = ((logits > 0).float() != batch.targets).float().sum(-1)  # (B, T) wrong bits per step
        per_seq = (wrong * batch.mask).sum(1)
        return {
            "bit_errors": per_seq.mean().item(),
            "seq_accuracy": (per_seq == 0).float().mean().item(),
            "bit_accuracy": 1 - masked_mean_per_example(wrong / self.params.width, batch.mask).mean().item(),
        }
