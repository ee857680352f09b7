"""Disjoint train / val / test example spaces for tasks whose example space is small enough to repeat.

Scheme: an example's identity is a row of tokens (for the recall tasks its
key-value context, so a held-out context is never trained on with any query).
`identity_hash` computes `h = sum_i tok_i * w_i mod P` with P = 2^31 - 1 and
fixed pseudo-random position weights w_i (splitmix64 of i), in exact int64
arithmetic (one matrix-vector product), so the same on every machine and
version; changing any token moves h by a pseudo-random residue.
`u = h / P` picks the part: u < 0.1 is "test", 0.1 <= u < 0.2 is "val", the
rest is "train".  The partition is a fixed function of the example,
independent of seeds, ranks and steps, so no test example can occur in
training under any seed (whatever the hash's collisions: they only move
examples between parts, never put one example in two).  `draw_in_split` keeps drawing candidates from the task's own
generator until the batch is filled from the split's part, so a batch stays a
pure function of the generator and the split's examples keep the task's
distribution restricted to that part.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch

_PRIME = 2**31 - 1
SPLIT_SHARES = {"test": (0.0, 0.1), "val": (0.1, 0.2), "train": (0.2, 1.0)}  # [low, high) ranges of h / P
MAX_ROUNDS = 100
MIN_SPACE = 1000  # smallest example space partitioned: every part then holds ~100 examples or more


def check_space(size: int, what: str) -> None:
    """Raise (for a params validator) if an example space is too small to split three ways."""
    if size < MIN_SPACE:
        raise ValueError(f"{what} allow only {size} distinct contexts; disjoint train/val/test parts need >= {MIN_SPACE}")


def _splitmix64(i: int) -> int:
    z = (i * 0x9E3779B97F4A7C15) % 2**64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) % 2**64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) % 2**64
    return z ^ (z >> 31)


@functools.lru_cache(maxsize=64)
def _weights(n: int) -> torch.Tensor:
    return torch.tensor([_splitmix64(i + 1) % _PRIME for i in range(n)], dtype=torch.long)


def identity_hash(tokens: torch.Tensor) -> torch.Tensor:
    """(B, n) CPU int64 tokens -> (B,) hashes in [0, P), a function of each row as an ordered sequence.

    Exact (no int64 overflow) for tokens < 2^16 and rows shorter than 2^16.
    """
    return (tokens @ _weights(tokens.shape[1])) % _PRIME


def _range(split: str) -> tuple[int, int]:
    """The split's [low, high) range of hashes."""
    try:
        low, high = SPLIT_SHARES[split]
    except KeyError:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLIT_SHARES)}") from None
    return round(low * _PRIME), round(high * _PRIME)


def in_split(tokens: torch.Tensor, split: str) -> torch.Tensor:
    """(B,) bool: which identities belong to `split`'s part of the example space."""
    low, high = _range(split)
    h = identity_hash(tokens)
    if low == 0:
        return h < high
    return h >= low if high == _PRIME else (h >= low) & (h < high)


def draw_in_split(draw: Callable[[int], torch.Tensor], batch_size: int, split: str) -> torch.Tensor:
    """Rejection sampling: `draw(n)` makes n candidate identity rows (n, k); keep the first `batch_size` in `split`'s part."""
    low, high = _range(split)
    parts: list[torch.Tensor] = []
    have = 0
    for _ in range(MAX_ROUNDS):
        rows = draw(math.ceil((batch_size - have) * _PRIME / (high - low) * 1.25) + 4)
        rows = rows[in_split(rows, split)][: batch_size - have]
        parts.append(rows)
        have += len(rows)
        if have == batch_size:
            return parts[0] if len(parts) == 1 else torch.cat(parts)
    raise RuntimeError(
        f"could not fill a {split!r} batch in {MAX_ROUNDS} rounds: the task's example space is too small to partition"
    )
