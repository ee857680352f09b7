"""The report's statistics on hand-made and synthetic inputs: intervals that cover what they claim, paired
comparisons, ranks that refuse to rank on too few seeds, gap sizes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats

from amlab.platform import report, stats

DRAWS = 4000  # per coverage check: the binomial standard error of a 95 % coverage is then 0.0034
TOLERANCE = 0.015


def seeds(*values):
    return {str(i): v for i, v in enumerate(values)}


def coverage(interval, truth: float, samples: np.ndarray) -> float:
    hits = 0
    for x in samples:
        lo, hi = interval(x)
        hits += lo <= truth <= hi
    return hits / len(samples)


def declared(x):
    i = stats.mean_interval(list(x))
    return i.low, i.high


def z_interval(x):
    """The textbook mistake: a normal quantile where a t quantile belongs (too narrow at small n)."""
    half = 1.959964 * np.std(x, ddof=1) / math.sqrt(len(x))
    return x.mean() - half, x.mean() + half


def test_median_ignores_missing_values():
    assert stats.median([3.0, None, 1.0, 2.0, float("nan")]) == 2.0
    assert stats.median([1.0, 4.0]) == 2.5
    assert stats.median([None]) is None


def test_mean_interval_is_the_student_t_interval_and_says_so():
    i = stats.mean_interval([1.0, 2.0, 3.0, None, float("nan")])
    half = 4.303 * 1.0 / math.sqrt(3)  # t(0.975, 2 df) = 4.303 from any table; sample sd of 1, 2, 3 is 1
    assert i.low == pytest.approx(2 - half, abs=1e-3) and i.high == pytest.approx(2 + half, abs=1e-3)
    assert i.n == 3 and i.label == "95 % t-interval of the mean over n=3 seeds"
    assert stats.mean_interval([0.0, 0.0, 0.0]) == stats.Interval(0.0, 0.0, 3, "the mean")  # no spread, no 0/0
    assert stats.mean_interval([5.0]) is None and stats.mean_interval([]) is None


def test_an_interval_is_cut_at_the_metrics_range_and_then_shown_by_its_ends():
    """mqar-scaling's deltanet at d=64 reached 0.27, 0.27, 0.66 (one seed solved it): mean 40 % ± 56 over 3 seeds."""
    values = [0.27, 0.27, 0.66]
    raw = stats.mean_interval(values)
    assert raw.low < 0 and not raw.clipped  # no metric: the plain t-interval, symmetric about the mean
    cut = stats.mean_interval(values, metric="accuracy")
    assert (cut.low, cut.high) == (0.0, pytest.approx(raw.high)) and cut.clipped
    assert cut.label == "95 % t-interval of the mean over n=3 seeds, clipped to the metric's range"
    assert report.fmt(0.4, "accuracy", (cut.low, cut.high)) == f"40 % [0, {raw.high * 100:.3g}]"
    assert report.fmt(0.4, "accuracy", (raw.low, raw.high)) == f"40 % ± {(raw.high - 0.4) * 100:.2g}"
    # counts are cut at 0 only; an interval inside the range is left alone
    assert stats.mean_interval([0.0, 0.0, 30.0], metric="bit_errors").low == 0.0
    assert stats.mean_interval([10.0, 11.0, 12.0], metric="bit_errors") == stats.mean_interval([10.0, 11.0, 12.0])
    assert not stats.mean_interval([0.5, 0.6, 0.7], metric="error").clipped


@pytest.mark.parametrize("n", [3, 5, 10])
def test_declared_interval_covers_the_true_mean_at_its_nominal_level(n):
    rng = np.random.default_rng(n)
    samples = rng.normal(0.7, 0.05, size=(DRAWS, n))  # e.g. accuracies of n seeds around a true mean of 0.7
    assert abs(coverage(declared, 0.7, samples) - stats.LEVEL) < TOLERANCE


def test_declared_interval_nearly_covers_for_a_flat_metric():
    rng = np.random.default_rng(7)
    samples = rng.uniform(0.2, 0.4, size=(DRAWS, 3))  # flat, bounded: far from normal at n=3
    assert 0.91 < coverage(declared, 0.3, samples) <= stats.LEVEL + TOLERANCE  # about 92 %, as platform/stats.py says


def test_the_coverage_check_catches_an_interval_that_is_too_narrow():
    rng = np.random.default_rng(3)
    samples = rng.normal(0.7, 0.05, size=(DRAWS, 3))
    assert coverage(z_interval, 0.7, samples) < stats.LEVEL - 5 * TOLERANCE  # about 0.81: the check has teeth


def test_paired_interval_covers_the_true_difference():
    rng = np.random.default_rng(11)
    hits = 0
    for _ in range(DRAWS):
        seed_effect = rng.normal(0, 0.2, 3)  # a hard data order hurts both mechanisms on the same seed
        a = 0.60 + seed_effect + rng.normal(0, 0.02, 3)
        b = 0.55 + seed_effect + rng.normal(0, 0.02, 3)
        i = stats.compare_paired(seeds(*a), seeds(*b), higher_is_better=True).interval
        hits += i.low <= 0.05 <= i.high
    assert abs(hits / DRAWS - stats.LEVEL) < TOLERANCE


def test_pairing_by_seed_resolves_what_separate_intervals_cannot():
    a, b = seeds(0.50, 0.80, 0.65), seeds(0.48, 0.77, 0.63)  # a ahead by 0.02-0.03 on every seed, seeds spread by 0.3
    ia, ib = stats.mean_interval(list(a.values())), stats.mean_interval(list(b.values()))
    assert ia.low < ib.high and ib.low < ia.high  # the two intervals overlap widely
    cmp = stats.compare_paired(a, b, higher_is_better=True)
    assert cmp.outcome == "ahead" and cmp.n == 3 and cmp.difference == pytest.approx(0.07 / 3)
    assert cmp.interval.low > 0 and "t-interval of the mean paired difference over n=3 seeds" in cmp.label
    reference = scipy.stats.ttest_rel(list(a.values()), list(b.values())).confidence_interval(0.95)  # scipy's paired t
    assert (cmp.interval.low, cmp.interval.high) == pytest.approx((reference.low, reference.high))
    # as errors (lower is better) the same numbers mean a is behind
    assert stats.compare_paired(a, b, higher_is_better=False).outcome == "behind"


def test_paired_comparison_needs_three_shared_seeds():
    cmp = stats.compare_paired(seeds(0.9, 0.8), seeds(0.1, 0.2), higher_is_better=True)
    assert cmp.outcome == stats.INSUFFICIENT and cmp.interval is None and cmp.n == 2
    assert "at least 3 needed" in cmp.label
    # a seed missing (or None) on one side does not count
    assert stats.compare_paired(seeds(0.9, 0.8, 0.7), {"0": 0.1, "1": 0.2, "2": None}, True).n == 2
    same = stats.compare_paired(seeds(0.5, 0.6, 0.7), seeds(0.5, 0.6, 0.7), True)
    assert same.outcome == "tie" and (same.interval.low, same.interval.high) == (0.0, 0.0)
    constant = stats.compare_paired(seeds(0.6, 0.7, 0.8), seeds(0.5, 0.6, 0.7), True)
    assert constant.outcome == "ahead" and constant.interval.low == pytest.approx(0.1)


def cell(*values):
    return {"per_seed": seeds(*values), "mean": float(np.mean(values)) if values else None}


def test_best_needs_every_paired_comparison_resolved():
    leader, close, far = cell(0.90, 0.92, 0.91), cell(0.91, 0.90, 0.89), cell(0.50, 0.55, 0.52)
    cells = [close, leader, far, {"per_seed": {}, "mean": None}]
    stats.rank_cells(cells, higher_is_better=True)
    assert [(c["best"], c["tie"]) for c in cells] == [(False, True), (True, True), (False, False), (False, False)]
    assert far["vs_best"]["outcome"] == "ahead" and leader["rank_note"] is None
    stats.rank_cells(cells, higher_is_better=False)  # lower is better: 0.52 leads, clear of both
    assert [(c["best"], c["tie"]) for c in cells] == [(False, False), (False, False), (True, False), (False, False)]


def test_fewer_than_three_seeds_rank_nothing():
    cells = [cell(0.99, 0.98), cell(0.10, 0.12)]
    stats.rank_cells(cells, higher_is_better=True)
    assert not any(c["best"] or c["tie"] for c in cells)
    assert {c["rank_note"] for c in cells} == {stats.INSUFFICIENT}
    lone = [cell(0.5, 0.6, 0.7)]
    stats.rank_cells(lone, higher_is_better=True)
    assert not lone[0]["best"] and lone[0]["rank_note"] == "only finished cell"


def test_gap_size_is_relative_to_chance():
    assert stats.gap_size(0.45, chance=0.1, perfect=1.0) == "large"  # 0.45 / 0.9 = 0.5
    assert stats.gap_size(-0.18, chance=0.1, perfect=1.0) == "moderate"  # 0.2
    assert stats.gap_size(0.05, chance=0.1, perfect=1.0) == "small"
    assert stats.gap_size(2.0, chance=100.0, perfect=0.0) == "small"
