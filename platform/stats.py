"""The report's statistics: medians over seeds, seeded bootstrap intervals, ties, and paper verdicts.

Kept apart from the rendering so that every number the report states can be
checked on hand-made inputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

LEVEL = 0.95
RESAMPLES = 4000

# Rough size of a gap between two mechanisms, as a fraction of the distance from chance to a perfect score.
SIZES = ((0.5, "large"), (0.1, "moderate"), (0.0, "small"))


def median(values: Sequence[float]) -> float | None:
    v = [x for x in values if x is not None and np.isfinite(x)]
    return float(np.median(v)) if v else None


def bootstrap_ci(
    values: Sequence[float], seed: int = 0, level: float = LEVEL, resamples: int = RESAMPLES
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the median over seeds (seeded, so a report is reproducible).

    With one value the interval is that value: there is no spread to
    resample, and the report shows n=1 next to it.
    """
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if v.size == 0:
        return None
    idx = np.random.default_rng(seed).integers(0, v.size, size=(resamples, v.size))
    medians = np.median(v[idx], axis=1)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(medians, [alpha, 1 - alpha])
    return float(lo), float(hi)


def overlaps(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


def rank_cells(cells: Sequence[dict], higher_is_better: bool) -> None:
    """Mark, in place, the best cell of one task (`best`) and the cells whose interval overlaps it (`tie`).

    Each cell needs `value` and `ci` ((low, high) or None); cells without a
    value get neither mark.
    """
    scored = [c for c in cells if c.get("value") is not None and c.get("ci") is not None]
    for c in cells:
        c["best"], c["tie"] = False, False
    if not scored:
        return
    best = max(scored, key=lambda c: c["value"] if higher_is_better else -c["value"])
    best["best"] = True
    tied = [c for c in scored if c is not best and overlaps(c["ci"], best["ci"])]
    for c in tied:
        c["tie"] = True
    best["tie"] = bool(tied)


def gap_size(gap: float, chance: float, perfect: float) -> str:
    """'large' | 'moderate' | 'small': |gap| relative to the chance-to-perfect distance of the metric."""
    span = abs(perfect - chance) or 1.0
    rel = abs(gap) / span
    return next(name for bound, name in SIZES if rel >= bound)


def verdict(
    winner: dict | None, loser: dict | None, higher_is_better: bool, chance: float, perfect: float, paper_size: str
) -> dict:
    """Does the paper's direction (winner better than loser) and rough gap size reproduce in our cells?

    winner/loser: our cells ({value, ci}) for the mechanisms the paper ranks
    first and second.  Absolute values are never compared with the paper:
    only who wins and whether the gap is small, moderate or large.
    """
    if winner is None or loser is None or winner.get("value") is None or loser.get("value") is None:
        return {"verdict": "not run", "ours_size": None, "detail": "one of the two cells has no result"}
    sign = 1.0 if higher_is_better else -1.0
    gap = sign * (winner["value"] - loser["value"])  # > 0: the paper's winner is ahead
    size = gap_size(gap, chance, perfect)
    if overlaps(winner["ci"], loser["ci"]):
        return {"verdict": "tie", "ours_size": size,
                "detail": f"95 % intervals overlap: no direction at our scale (paper: {paper_size} gap)"}
    if gap < 0:
        return {"verdict": "reversed", "ours_size": size, "detail": f"the paper's loser wins here by a {size} gap"}
    if size == paper_size:
        return {"verdict": "reproduces", "ours_size": size, "detail": f"same direction, {size} gap as in the paper"}
    return {"verdict": "direction only", "ours_size": size,
            "detail": f"same direction; our gap is {size}, the paper's {paper_size}"}
