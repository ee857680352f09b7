"""The report's statistics: intervals over seeds, paired comparisons, ranks and gap sizes.

Kept apart from the rendering so that every number the report states can be
checked on hand-made inputs.

What the numbers are.  A cell's per-seed values are its test metric on the
*same* evaluation examples for every seed and every mechanism (train.evaluate
seeds the evaluation data by split, group and index alone), and seed i trains
every mechanism on the same data stream.  So two cells are compared *paired
by seed*: the differences a_i - b_i over the seeds both have.  The spread
behind every interval is therefore seed-to-seed training variation on a fixed
evaluation set; the sampling error of that evaluation set is not in it.

Why Student-t and not a bootstrap or a permutation test.  With the 3 to 5
seeds a sweep affords, a percentile or BCa bootstrap of the mean covers the
truth about 72-76 % of the time at n=3 and 85 % at n=5 while calling itself
95 %, and an exact paired permutation (sign-flip) test over n=3 seeds has a
smallest possible two-sided p of 2/8 = 0.25, so it can never separate
anything.  The Student-t interval (`scipy.stats.t`; on per-seed differences
it is the paired t-test's, `scipy.stats.ttest_rel`) has its nominal coverage
at any n when the seed-to-seed variation is roughly normal, and about 92 %
for flat (uniform) variation at n=3; tests/test_stats.py checks both on
synthetic draws.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
from scipy import stats as sps

LEVEL = 0.95
MIN_SEEDS = 3  # fewer paired seeds than this: no ranking, no "clear of", no paper verdict
INSUFFICIENT = "insufficient seeds"

# Rough size of a gap between two mechanisms, as a fraction of the distance from chance to a perfect score.
SIZES = ((0.5, "large"), (0.1, "moderate"), (0.0, "small"))

# The values a metric can take: fractions lie in [0, 1]; counts (bit errors), MSE and bpc are >= 0.
FRACTIONS = {"accuracy", "error"}


def metric_range(metric: str) -> tuple[float, float]:
    return (0.0, 1.0) if metric in FRACTIONS else (0.0, math.inf)


def median(values: Sequence[float | None]) -> float | None:
    v = [x for x in values if x is not None and np.isfinite(x)]
    return float(np.median(v)) if v else None


def finite(values: Sequence[float | None]) -> list[float]:
    return [float(x) for x in values if x is not None and math.isfinite(x)]


@dataclass(frozen=True)
class Interval:
    """A two-sided confidence interval, with what it is an interval of and how many seeds it rests on."""

    low: float
    high: float
    n: int
    of: str
    level: float = LEVEL
    clipped: bool = False  # an end reached past the metric's range and was cut there (then it is not mean ± h)

    @property
    def label(self) -> str:
        cut = ", clipped to the metric's range" if self.clipped else ""
        return f"{self.level * 100:g} % t-interval of {self.of} over n={self.n} seeds{cut}"

    def within(self, low: float, high: float) -> Interval:
        """This interval cut to [low, high]: a mean of accuracies is never above 100 %, so the t-interval's
        symmetric ends are not either (73 % ± 97 says nothing a reader can use about the top end)."""
        if self.low >= low and self.high <= high:
            return self
        return replace(self, low=max(self.low, low), high=min(self.high, high), clipped=True)

    def as_dict(self) -> dict:
        return {**asdict(self), "label": self.label}


def _t_interval(values: Sequence[float], of: str, level: float) -> Interval:
    """mean ± t((1 + level) / 2, n - 1) · s / √n: what scipy.stats.ttest_1samp(values).confidence_interval() gives,
    without its per-call overhead (the coverage test draws thousands)."""
    v = np.asarray(values, dtype=float)
    mean, n = float(v.mean()), v.size
    if np.ptp(v) <= 1e-12 * max(1.0, float(np.abs(v).max())):  # no spread (e.g. 0 bit errors on every seed)
        return Interval(mean, mean, n, of, level)
    half = float(sps.t.ppf((1 + level) / 2, n - 1) * v.std(ddof=1) / math.sqrt(n))
    return Interval(mean - half, mean + half, n, of, level)


def mean_interval(values: Sequence[float | None], level: float = LEVEL, metric: str | None = None) -> Interval | None:
    """Student-t interval of the mean over seeds; None with fewer than two finite values (no spread to measure).

    With `metric`, the interval is cut to the values that metric can take (`metric_range`)."""
    v = finite(values)
    if len(v) < 2:
        return None
    interval = _t_interval(v, "the mean", level)
    return interval.within(*metric_range(metric)) if metric else interval


@dataclass(frozen=True)
class Comparison:
    """A paired comparison of cell A with cell B over the seeds both have.

    `difference` is the mean of (a_i - b_i) signed so that > 0 means A is
    better; `outcome` is "ahead" / "behind" when the interval of that
    difference excludes 0, "tie" when it includes 0, and "insufficient seeds"
    with fewer than MIN_SEEDS paired seeds (then there is no interval).
    """

    outcome: str
    n: int
    difference: float | None = None
    interval: Interval | None = None

    @property
    def label(self) -> str:
        if self.interval is None:
            return f"{INSUFFICIENT}: {self.n} paired seeds, at least {MIN_SEEDS} needed"
        i = self.interval
        return (f"{self.outcome} (difference {self.difference:+.3g}, positive = better; "
                f"{i.label}: [{i.low:+.3g}, {i.high:+.3g}])")

    def as_dict(self) -> dict:
        return {"outcome": self.outcome, "n": self.n, "difference": self.difference,
                "interval": self.interval.as_dict() if self.interval else None, "label": self.label}


def compare_paired(a: Mapping[str, float | None], b: Mapping[str, float | None], higher_is_better: bool,
                   level: float = LEVEL) -> Comparison:
    """Is A better than B?  Paired by seed (`a`, `b`: per-seed values keyed by seed)."""
    seeds = [s for s in a if s in b and len(finite([a[s], b[s]])) == 2]
    if len(seeds) < MIN_SEEDS:
        return Comparison(INSUFFICIENT, len(seeds))
    sign = 1.0 if higher_is_better else -1.0
    diffs = sign * np.array([a[s] - b[s] for s in seeds], dtype=float)
    interval = _t_interval(diffs, "the mean paired difference", level)  # = scipy.stats.ttest_rel(a, b)'s interval
    outcome = "ahead" if interval.low > 0 else "behind" if interval.high < 0 else "tie"
    return Comparison(outcome, len(seeds), float(diffs.mean()), interval)


def rank_cells(cells: Sequence[dict], higher_is_better: bool) -> None:
    """Mark, in place, the best cell of one task and the cells not resolved from it, by paired comparisons.

    Each cell needs `mean` and `per_seed` ({seed: value}).  The leader is the
    cell with the best mean; every other cell is compared with it, paired by
    seed.  `tie`: that comparison does not exclude a zero difference.  When
    any comparison rests on fewer than MIN_SEEDS paired seeds the task is not
    ranked at all: no cell is `best` or `tie` and `rank_note` says
    "insufficient seeds".  A task with one finished cell is not ranked either.
    `vs_best` holds each cell's comparison with the leader, as plain data.
    """
    for c in cells:
        c.update(best=False, tie=False, rank_note=None, vs_best=None)
    scored = [c for c in cells if c.get("mean") is not None]
    if not scored:
        return
    leader = max(scored, key=lambda c: c["mean"] if higher_is_better else -c["mean"])
    others = [c for c in scored if c is not leader]
    comparisons = [compare_paired(leader["per_seed"], c["per_seed"], higher_is_better) for c in others]
    if not others or any(cmp.interval is None for cmp in comparisons):
        for c in scored:
            c["rank_note"] = INSUFFICIENT if others else "only finished cell"
        return
    for c, cmp in zip(others, comparisons, strict=True):
        c.update(tie=cmp.outcome != "ahead", vs_best=cmp.as_dict())
    leader.update(best=True, tie=any(c["tie"] for c in others))


def gap_size(gap: float, chance: float, perfect: float) -> str:
    """'large' | 'moderate' | 'small': |gap| relative to the chance-to-perfect distance of the metric."""
    span = abs(perfect - chance) or 1.0
    rel = abs(gap) / span
    return next(name for bound, name in SIZES if rel >= bound)
