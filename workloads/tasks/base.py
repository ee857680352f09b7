"""The task contract: seeded batch generators with masks, metrics and eval groups."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import torch

from amlab.workloads.registry import Params


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from (seed, split, rank, step, ...): independent streams, no coordination."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def generator(*parts: Any) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(*parts))


@dataclass
class Batch:
    """One batch, always sequence-shaped so one loss and one metric code path serve all tasks.

    inputs:  bits/real (B, T, input_size) float; tokens (B, T) long;
             image (B, C, H, W); video (B, F, C, H, W).
    targets: bce/mse (B, T, output_size) float; ce (B, T) long, in range
             at every position (use 0 where `mask` is False).
             Whole-input classification uses T = 1 for image/video, or the
             last step of a sequence with `mask` selecting it.
    mask:    (B, T) bool, the positions whose prediction is scored.
    meta:    per-example extras for metrics and structural checks (lengths, ...).
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor
    meta: dict[str, torch.Tensor] = field(default_factory=dict)

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            self.inputs.to(device, non_blocking=True),
            self.targets.to(device, non_blocking=True),
            self.mask.to(device, non_blocking=True),
            {k: v.to(device) for k, v in self.meta.items()},
        )

    def __len__(self) -> int:
        return self.inputs.shape[0]


class Task:
    """Base class of tasks.  Subclasses are registered with `@task(...)`.

    A task sets `input_size` (features per step, vocabulary size for tokens,
    channels for image/video), `output_size` (features for bce/mse, classes
    for ce) and `chance` (its primary metric under random or majority
    guessing).  `sample` must be a pure function of the generator and its
    arguments: the platform seeds it from (seed, split, rank, step), so
    every DDP rank makes its own shard and a resumed run sees the same data.

    Splits: "train" (what training sees), "val" (the training distribution,
    held-out streams: the tuner optimises this), "test" (the headline
    evaluation, including generalisation conditions such as longer
    sequences; the report shows this).  `eval_groups(split)` names the
    conditions of an eval split; metrics are reported per group and averaged.
    """

    params: Params
    input_size: int
    output_size: int
    chance: float

    def __init__(self, params: Params):
        self.params = params

    def sample(self, gen: torch.Generator, batch_size: int, split: str, **group: Any) -> Batch:
        raise NotImplementedError

    def eval_groups(self, split: str) -> dict[str, dict[str, Any]]:
        """Group label -> keyword arguments of `sample`; one unnamed group by default."""
        return {"all": {}}

    def score(self, logits: torch.Tensor, batch: Batch) -> dict[str, float]:
        """Metric name -> value averaged over the batch's examples."""
        raise NotImplementedError


def masked_mean_per_example(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of (B, T) values over each example's masked positions -> (B,)."""
    m = mask.to(values.dtype)
    return (values * m).sum(1) / m.sum(1).clamp_min(1)
