"""Disjoint train / val / test example spaces for tasks whose example space is small enough to repeat.

Scheme: an example's identity is a token sequence (for recall tasks its ordered
key-value context, so a held-out context is never trained on with any query).
`identity_hash` maps it to 32 bits: every (position, token) is mixed on its own
(`tok * n + pos` is injective, the 32-bit mixer a bijection), the mixed terms
are summed and mixed again.  `bucket = hash % 10`; bucket 0 is "test", bucket 1
is "val", buckets 2-9 are "train".  The partition is a fixed function of the
example, independent of seeds, ranks and steps, so no test example can occur in
training under any seed.  `draw_in_split` keeps drawing candidates from the
task's own generator until the batch is filled from the split's part, so a
batch stays a pure function of the generator.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

BUCKETS = 10
SPLIT_BUCKETS = {"test": (0,), "val": (1,), "train": tuple(range(2, BUCKETS))}
MAX_ROUNDS = 100
MIN_SPACE = 1000  # smallest example space partitioned: every part then holds ~100 examples or more
_M32 = 0xFFFFFFFF


def check_space(size: int, what: str) -> None:
    """Raise (for a params validator) if an example space is too small to split three ways."""
    if size < MIN_SPACE:
        raise ValueError(f"{what} allow only {size} distinct contexts; disjoint train/val/test parts need >= {MIN_SPACE}")


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer bijection with good avalanche (xor-shift-multiply), in int64 without overflow."""
    x = x & _M32
    x = (((x >> 16) ^ x) * 0x45D9F3B) & _M32
    x = (((x >> 16) ^ x) * 0x45D9F3B) & _M32
    return (x >> 16) ^ x


def identity_hash(tokens: torch.Tensor) -> torch.Tensor:
    """(B, n) non-negative integer tokens -> (B,) 32-bit hashes of each row as an ordered sequence."""
    n = tokens.shape[1]
    terms = _mix32(tokens.long() * n + torch.arange(n, device=tokens.device))
    return _mix32(terms.sum(1))


def split_of(tokens: torch.Tensor) -> torch.Tensor:
    """(B, n) identities -> (B,) bucket in [0, BUCKETS)."""
    return identity_hash(tokens) % BUCKETS


def in_split(tokens: torch.Tensor, split: str) -> torch.Tensor:
    """(B,) bool: which identities belong to `split`'s part of the example space."""
    try:
        buckets = SPLIT_BUCKETS[split]
    except KeyError:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLIT_BUCKETS)}") from None
    return torch.isin(split_of(tokens), torch.tensor(buckets, device=tokens.device))


def draw_in_split(
    draw: Callable[[int], dict[str, torch.Tensor]], identity: Callable[[dict[str, torch.Tensor]], torch.Tensor],
    batch_size: int, split: str,
) -> dict[str, torch.Tensor]:
    """Rejection sampling: draw candidate examples until `batch_size` of them lie in `split`'s part.

    `draw(n)` returns per-example tensors with a leading dimension n; `identity`
    turns them into the (n, k) token rows that `in_split` hashes.
    """
    share = len(SPLIT_BUCKETS.get(split, (0,))) / BUCKETS
    kept: list[dict[str, torch.Tensor]] = []
    have = 0
    for _ in range(MAX_ROUNDS):
        cand = draw(math.ceil((batch_size - have) / share * 1.25) + 4)
        ok = in_split(identity(cand), split)
        kept.append({k: v[ok] for k, v in cand.items()})
        have += int(ok.sum())
        if have >= batch_size:
            return {k: torch.cat([c[k] for c in kept])[:batch_size] for k in cand}
    raise RuntimeError(
        f"could not fill a {split!r} batch in {MAX_ROUNDS} rounds: the task's example space is too small to partition"
    )
