"""scikit-learn's shipped 8x8 digits, loaded once per process, with a fixed train/val/test image partition.

Shared by `seq_digits`, `cluttered_digits` and `moving_digits` so that every
digit task evaluates on images its training never saw.  Also the pasting
helpers the canvas tasks use (vectorised: one scatter per batch).
"""

from __future__ import annotations

from functools import cache, lru_cache

import torch

from amlab.workloads.tasks.base import generator

SPLIT_FRACTIONS = {"train": 0.7, "val": 0.15, "test": 0.15}  # of every class, so each split is class-balanced


@lru_cache(maxsize=1)
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """(images (1797, 8, 8) float in [0, 1], labels (1797,) long); no download, the data ships with sklearn."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return torch.as_tensor(d.images, dtype=torch.float32) / 16.0, torch.as_tensor(d.target, dtype=torch.long)


@cache
def partition(split: str) -> torch.Tensor:
    """The image indices of a split: a fixed stratified shuffle, the first 70% of each class train, then 15% val, 15% test."""
    if split not in SPLIT_FRACTIONS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLIT_FRACTIONS)}")
    labels = digits()[1]
    order = torch.argsort(labels + torch.rand(len(labels), generator=generator("digits-partition")))  # by class, shuffled within
    counts = torch.bincount(labels)
    rank = torch.arange(len(labels)) - (counts.cumsum(0) - counts)[labels[order]]  # position within its class
    bounds = torch.tensor(list(SPLIT_FRACTIONS.values())).cumsum(0)[:-1]  # 0.7, 0.85
    which = torch.bucketize(rank / counts[labels[order]], bounds, right=True)
    return order[which == list(SPLIT_FRACTIONS).index(split)]


def draw(gen: torch.Generator, split: str, *shape: int) -> torch.Tensor:
    """Random image indices (with replacement) from a split's partition."""
    part = partition(split)
    return part[torch.randint(len(part), shape, generator=gen)]


def upscale(images: torch.Tensor, scale: int) -> torch.Tensor:
    """Nearest-neighbour upscaling of (..., h, w) by an integer factor."""
    return images if scale == 1 else images.repeat_interleave(scale, -2).repeat_interleave(scale, -1)


def fragments(gen: torch.Generator, split: str, shape: tuple[int, ...], size: int) -> torch.Tensor:
    """Random size x size crops of random digits of the split: clutter that looks like pieces of digits."""
    images = digits()[0][draw(gen, split, *shape)]  # (*shape, 8, 8)
    oy = torch.randint(0, 8 - size + 1, shape, generator=gen)
    ox = torch.randint(0, 8 - size + 1, shape, generator=gen)
    r = torch.arange(size)
    rows = (oy[..., None] + r)[..., :, None].expand(*shape, size, size)
    cols = (ox[..., None] + r)[..., None, :].expand(*shape, size, size)
    flat = images.flatten(-2).gather(-1, (rows * 8 + cols).flatten(-2))
    return flat.view(*shape, size, size)


def paste_max(canvas: torch.Tensor, patches: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
    """Paste patches (N, K, h, w) at top-left corners (N, K) onto canvas (N, H, W), keeping the brighter pixel."""
    N, H, W = canvas.shape
    K, h, w = patches.shape[1:]
    rows = ys[..., None, None] + torch.arange(h)[:, None]
    cols = xs[..., None, None] + torch.arange(w)[None, :]
    index = (rows * W + cols).reshape(N, K * h * w)
    return canvas.reshape(N, H * W).scatter_reduce(1, index, patches.reshape(N, K * h * w), "amax").view(N, H, W)
