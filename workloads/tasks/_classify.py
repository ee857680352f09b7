"""Whole-input classification: one label per example, scored at the last position of the sequence."""

from __future__ import annotations

import torch

from amlab.workloads.tasks.base import Batch


def last_position_batch(labels: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(targets (B, steps) long, mask (B, steps) bool) with the label and the only True at the last step."""
    targets = torch.zeros(len(labels), steps, dtype=torch.long)
    targets[:, -1] = labels
    mask = torch.zeros(len(labels), steps, dtype=torch.bool)
    mask[:, -1] = True
    return targets, mask


def last_position_accuracy(logits: torch.Tensor, batch: Batch) -> float:
    """Fraction of examples whose arg-max class at the last position is the label."""
    return (logits[:, -1].argmax(-1) == batch.targets[:, -1]).float().mean().item()
