"""Sequential digits: scikit-learn's 8x8 digits read one pixel per step (pixel-by-pixel MNIST, in small)."""

from __future__ import annotations

from functools import lru_cache

import torch

from amlab.workloads.registry import Params, knob, task
from amlab.workloads.tasks import _digits
from amlab.workloads.tasks._classify import last_position_accuracy, last_position_batch
from amlab.workloads.tasks.base import Batch, Task, generator

STEPS = 64


class SeqDigitsParams(Params):
    permuted: bool = knob(False, search=False, doc="read the pixels in one fixed random order (permuted pixel task)")


@lru_cache(maxsize=1)
def pixel_order() -> torch.Tensor:
    """The fixed permutation of the permuted variant (the same in every process)."""
    return torch.randperm(STEPS, generator=generator("seq_digits-permutation"))


@task(
    "seq_digits", params=SeqDigitsParams, modality="real", loss="ce", metric="accuracy", higher_is_better=True,
    metrics=("accuracy",), paper="Le et al. 2015, A Simple Way to Initialize Recurrent Networks of Rectified Linear Units",
)
class SeqDigits(Task):
    """An 8x8 digit fed as 64 one-pixel steps; the class is scored at the last step.

    The label depends on pixels seen up to 64 steps earlier, so the task
    separates long-range recurrent memory; the permuted variant removes the
    locality of raster order.  Images come from fixed disjoint partitions
    (`_digits.partition`), so val/test images are never trained on.
    """

    def __init__(self, params: SeqDigitsParams):
        super().__init__(params)
        self.input_size, self.output_size = 1, 10
        self.chance = 0.1  # ten classes of nearly equal size (174-183 images each): guessing or the majority class

    def sample(self, gen, batch_size, split):
        images, labels = _digits.digits()
        idx = _digits.draw(gen, split, batch_size)
        seq = images[idx].flatten(1)
        if self.params.permuted:
            seq = seq[:, pixel_order()]
        targets, mask = last_position_batch(labels[idx], STEPS)
        return Batch(seq[..., None], targets, mask, {"index": idx, "label": labels[idx]})

    def score(self, logits, batch):
        return {"accuracy": last_position_accuracy(logits, batch)}

