"""MAD's in-context recall streams, behind `noisy_recall` (one-token keys and values, noise) and `fuzzy_recall`.

MAD's recipe for both: a stream of key-value pairs over a per-sequence
key -> value map, keys drawn with replacement (so they recur), every
recurrence of a key scored on its value (MAD's multi-query form), and a final
probe pair whose key occurred before, so every sequence has a scored step.
Noisy recall swaps pairs for noise; fuzzy recall makes keys and values
variable-length motifs and left-pads the stream to `seq_len`.

Tokens: 0 pad, keys [1, 1+K), values [1+K, 1+K+V), noise [1+K+V, 1+K+V+N).
A motif's tokens are distinct (MAD draws permutations).  Key and value tokens
are disjoint, so a stream parses back into pairs uniquely, and targets and
mask are functions of the inputs alone (the tests re-derive them that way).

Scoring in the (inputs, targets, mask) layout, where step t predicts the token
after input t: for a recurring key, its last step is scored on the first value
token, and each value step but the last on the next value token.  Each scored
prediction is determined by the inputs so far (a key that is a prefix of a
longer one is scored only where it actually ended).

Splits: train, val and test hold disjoint parts of the space of whole
examples (`_partition`).  Noisy recall hashes the (inputs, targets, mask)
row; fuzzy recall hashes its pair list (`fuzzy_pairs`), which determines the
stream and back, and expands only the rows it keeps into tokens.

Speed: one torch draw of uniforms from the task's generator per call (so a
batch stays a pure function of it); the rest runs in numpy, whose per-op
overhead is a fraction of torch's on arrays this small (as in babi).
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import numpy as np
import torch

from amlab.workloads.tasks._partition import draw_in_split
from amlab.workloads.tasks.base import Batch, Task


def _first_occurrence(ids: np.ndarray) -> np.ndarray:
    """(n, P) ids -> (n, P) index of the earliest position holding the same id.

    One sort per row of id·P + position (unique, ordered by id then
    position), so O(P log P) rather than comparing all pairs of positions.
    """
    n, P = ids.shape
    steps, rows = np.arange(P), np.arange(n)[:, None] * P
    id_, step = np.divmod(np.sort(ids * P + steps, axis=1), P)
    starts = np.ones((n, P), dtype=bool)
    starts[:, 1:] = id_[:, 1:] != id_[:, :-1]
    run_start = np.maximum.accumulate(steps * starts, axis=1)  # sorted position where each run of one id begins
    first = np.empty(n * P, dtype=np.int64)
    first[(rows + step).ravel()] = step.ravel()[(rows + run_start).ravel()]
    return first.reshape(n, P)


def _uniforms(gen: torch.Generator, *shapes: tuple[int, ...]) -> list[np.ndarray]:
    """Arrays of the given shapes of float64 uniforms in [0, 1), from one draw of `gen`."""
    sizes = [math.prod(shape) for shape in shapes]
    flat = torch.rand(sum(sizes), generator=gen, dtype=torch.float64).numpy()
    return [part.reshape(shape) for part, shape in zip(np.split(flat, np.cumsum(sizes)[:-1]), shapes, strict=True)]


def _pick(u: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """(n,) uniforms, (n, P) bool with a True per row -> (n,) index of a uniformly chosen allowed position."""
    return (allowed.cumsum(1) > (u * allowed.sum(1)).astype(np.int64)[:, None]).argmax(1)


def noisy_stream(gen: torch.Generator, n: int, *, keys: int, values: int, seq_len: int, noise: int,
                 frac_noise: float) -> np.ndarray:
    """n rows (n, 3·seq_len): inputs, targets, mask of `seq_len / 2` two-token slots, the last one the probe."""
    S = seq_len // 2 - 1  # stream slots before the probe
    u, per_row, map_u = _uniforms(gen, (4, n, S), (2, n), (n, keys))
    row = np.arange(n)
    key = (u[0] * keys).astype(np.int64)
    value_of = (map_u * values).astype(np.int64) + 1 + keys  # this sequence's map
    val = value_of[row[:, None], key]
    real = u[1] >= frac_noise
    real[row, (per_row[1] * S).astype(np.int64)] = True  # at least one pair for the probe to repeat
    recurs = real & (_first_occurrence(np.where(real, key, -1 - np.arange(S))) < np.arange(S))
    src = _pick(per_row[0], real)
    first_noise = 1 + keys + values
    slots = np.empty((n, S + 1, 2), dtype=np.int64)
    slots[:, :S, 0] = np.where(real, key + 1, (u[2] * noise).astype(np.int64) + first_noise)
    slots[:, :S, 1] = np.where(real, val, (u[3] * noise).astype(np.int64) + first_noise)
    slots[:, S] = slots[row, src]
    out = np.zeros((n, 3, S + 1, 2), dtype=np.int64)
    out[:, 0] = slots
    out[:, 2, :S, 0], out[:, 2, S, 0] = recurs, 1  # scored at the key step: predict the value after it
    out[:, 1, :, 0] = slots[..., 1] * out[:, 2, :, 0]
    return out.reshape(n, 3 * seq_len)


MAX_MOTIFS = 2**20 - 1  # most keys or values (all lengths) fuzzy recall tabulates; see `fuzzy_pairs`


def motif_count(vocab: int, width: int) -> int:
    """Distinct motifs of 1..width distinct tokens from `vocab`."""
    return sum(math.perm(vocab, k) for k in range(1, width + 1))


class Motifs(NamedTuple):
    """Every motif of 1..width distinct tokens, numbered, and a null motif (the last number: no tokens)."""

    tokens: np.ndarray  # (width, M+1), 0 past a motif's end
    length: np.ndarray  # (M+1,)
    start: np.ndarray  # (width+1,): first number of each length (index 0 unused)
    count: np.ndarray  # (width+1,): motifs of each length


@functools.lru_cache(maxsize=8)
def motif_table(vocab: int, width: int, first: int) -> Motifs:
    """The motifs of distinct tokens of [first, first+vocab).

    Motif number j of length k is the mixed-radix number j read as ranks
    r_0..r_{k-1}; token i is the r_i-th of the vocab - i tokens not yet
    taken, the least fixed point of x = r_i + #{taken <= x} (at most i
    steps).  So a uniform number of a length is a uniform ordered motif, and
    the number itself names the key.
    """
    tokens, counts = [], [0]
    for k in range(1, width + 1):
        j, taken = np.arange(math.perm(vocab, k)), []
        for i in range(k):
            j, r = np.divmod(j, vocab - i)
            x = r
            for _ in range(i):
                x = r + sum(t <= x for t in taken)
            taken.append(x)
        tokens.append(np.stack([t + first for t in taken] + [np.zeros_like(r)] * (width - k)))
        counts.append(len(r))
    length = np.repeat(np.arange(width + 1), counts)
    return Motifs(np.concatenate([*tokens, np.zeros((width, 1), dtype=np.int64)], 1), np.append(length, 0),
                  np.cumsum(counts) - counts, np.array(counts))


def fuzzy_pairs(gen: torch.Generator, n: int, *, keys: int, values: int, seq_len: int, key_len: int,
                value_len: int, full_keys: bool) -> np.ndarray:
    """n examples as their pairs: rows of (key + 1, value + 1, scored) per pair in stream order, the probe last, then 0.

    Motif numbers (`motif_table`) stand for keys and values.  `full_keys`:
    every key has `key_len` tokens (MAD's test condition), else key lengths
    are uniform in [1, key_len]; value lengths are uniform in [1, value_len].
    Pairs follow each other while they fit in seq_len - (key_len +
    value_len), which leaves room for the probe.  The row is the example's
    identity for the split partition (it determines the token stream and back)
    and is cheaper to draw than the stream (`fuzzy_stream` expands the rows
    kept).  Entries below 2**20 in rows of at most 3·1025 (seq_len <= 2048)
    keep `identity_hash`'s int64 sum exact.
    """
    K, V = motif_table(keys, key_len, 1), motif_table(values, value_len, 1 + keys)
    budget, row = seq_len - key_len - value_len, np.arange(n)
    most = P = budget // 2  # most pairs the budget can hold (a pair has >= 2 tokens)
    u = torch.rand(2 * n * P + n, generator=gen, dtype=torch.float64).numpy()
    pick, u = u[:n], u[n:].reshape(2, n, P)
    if key_len > 1 and not full_keys:  # one uniform per key: its length, and its motif from the remainder
        ku = u[0] * key_len
        kl = ku.astype(np.int64)
        ku -= kl
        kl += 1
    else:
        ku, kl = u[0], np.full((n, P), key_len)
    P = int(((kl + 1).cumsum(1) <= budget).sum(1).max())  # fewer pairs can fit, given the key lengths
    ku, kl, vu = ku[:, :P], kl[:, :P], u[1][:, :P] * value_len
    key = K.start[kl] + (ku * K.count[kl]).astype(np.int64)
    first = _first_occurrence(key)
    vl = vu.astype(np.int64) + 1
    value = (V.start[vl] + ((vu - vl + 1) * V.count[vl]).astype(np.int64))[row[:, None], first]  # the first's
    kept = (kl + V.length[value]).cumsum(1) <= budget  # a prefix of the pairs
    count = kept.sum(1)
    src = (kept.cumsum(1) > (pick * count).astype(np.int64)[:, None]).argmax(1)  # the probe copies a kept pair
    pairs = np.zeros((n, most + 1, 3), dtype=np.int64)
    pairs[:, :P, 0], pairs[:, :P, 1], pairs[:, :P, 2] = (key + 1) * kept, (value + 1) * kept, (first < np.arange(P)) & kept
    pairs[row, count, :2], pairs[row, count, 2] = pairs[row, src, :2], 1
    return pairs.reshape(n, -1)


def fuzzy_stream(pairs: np.ndarray, *, keys: int, values: int, seq_len: int, key_len: int, value_len: int) -> np.ndarray:
    """Rows of `fuzzy_pairs` -> rows (n, 3·seq_len): inputs, targets, mask of the left-padded token stream."""
    K, V = motif_table(keys, key_len, 1), motif_table(values, value_len, 1 + keys)
    n, stride, row = len(pairs), seq_len + 1, np.arange(len(pairs))[:, None]
    pairs = pairs.reshape(n, -1, 3)
    key, value, scored = pairs[..., 0] - 1, pairs[..., 1] - 1, pairs[..., 2]  # no pair: -1, the null motif
    kl = K.length[key]
    length = kl + V.length[value]
    start = (row[:, 0] * stride + seq_len - length.sum(1))[:, None] + length.cumsum(1) - length
    kpos, vpos = np.arange(key_len)[:, None, None], np.arange(value_len)[:, None, None]
    # every slot (key tokens, then value tokens) to its step, right-aligned; slots past a motif's end to a spare column
    tokens = np.concatenate([np.take(K.tokens, key, 1), np.take(V.tokens, value, 1)])  # (width, n, pairs)
    at = np.where(tokens != 0, np.concatenate([start + kpos, start + kl + vpos]), row * stride + seq_len)
    out = np.zeros((2, n * stride), dtype=np.int64)
    out[0][at], out[1][at] = tokens, scored
    out = out.reshape(2, n, stride)
    out[:, :, seq_len] = 0  # the spare column, now the step after the last
    # scored: each step whose next token is a value token of a recurring key (or the probe); the target is that token
    after = out[0, :, 1:]
    mask = (after > keys) & (out[1, :, 1:] > 0)
    return np.concatenate([out[0, :, :seq_len], after * mask, mask], 1)


class StreamRecall(Task):
    """Sampling and scoring shared by the stream-recall tasks.

    Subclasses set `keys`, `values`, `draw` (n identity rows, the split
    partition's unit) and, when those are not yet (inputs, targets, mask)
    rows, `expand` (identity rows -> such rows).
    """

    keys: int
    values: int

    def draw(self, gen: torch.Generator, n: int, split: str, **group: Any) -> np.ndarray:
        raise NotImplementedError

    def expand(self, rows: np.ndarray) -> np.ndarray:
        return rows

    def sample(self, gen, batch_size, split, **group):
        rows = draw_in_split(lambda m: torch.from_numpy(self.draw(gen, m, split, **group)), batch_size, split)
        rows = torch.from_numpy(self.expand(rows.numpy()))
        inputs, targets, mask = rows.view(batch_size, 3, self.params.seq_len).unbind(1)
        return Batch(inputs, targets, mask.bool())

    def score(self, logits, batch):
        right = (logits.argmax(-1) == batch.targets) & batch.mask
        return {"accuracy": (right.sum(1) / batch.mask.sum(1)).mean().item()}
