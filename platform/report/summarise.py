"""What the numbers say: per-cell intervals, the leaderboard's ranks, paper verdicts and the generated summary.

Works on plain cell dicts (as `collect` builds them), so every statement can
be checked on hand-made inputs.  Statistics come from platform/stats.py, the
papers' settings and verdict rules from platform/papers.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from amlab.platform import stats
from amlab.platform.papers import PERFECT, applicable, match, our_setting, verdict

TARGET_FRACTION = 0.9  # "solves": 90 % of the way from chance to a perfect score
PERCENT = stats.FRACTIONS


# -- numbers as text -------------------------------------------------------------------------------

def fmt(value: float | None, metric: str, ci: tuple[float, float] | None = None) -> str:
    """'99.8 % ± 0.2' for fractions shown as percent, '3.12 ± 0.4' otherwise; '-' when missing.

    An interval cut at the metric's range is no longer symmetric and is shown by its ends instead:
    '73.4 % [0, 100]'.  The caller says what the interval is.
    """
    if value is None:
        return "-"
    scale, unit = (100.0, " %") if metric in PERCENT else (1.0, "")
    text = f"{value * scale:.3g}{unit}"
    if ci is not None:
        below, above = value - ci[0], ci[1] - value
        if abs(below - above) <= 1e-9 * max(1.0, abs(value)):
            text += f" ± {above * scale:.2g}"
        else:
            text += f" [{ci[0] * scale:.3g}, {ci[1] * scale:.3g}]"
    return text


def fmt_cell(c: dict[str, Any]) -> str:
    """A cell's mean with its interval, saying what both are and over how many seeds."""
    if c["mean"] is None:
        return "-"
    if c["ci"] is None:
        return f"{fmt(c['mean'], c['metric'])} (n={c['n_seeds']} seed, no interval)"
    what = "mean [95 % t-interval, clipped to the metric's range]" if c.get("ci_clipped") else "mean ± 95 % t-interval"
    return f"{fmt(c['mean'], c['metric'], c['ci'])} ({what.replace('95', f'{stats.LEVEL * 100:g}')}, n={c['n_seeds']} seeds)"


def count(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1e6:.2g}M" if n >= 1e6 else f"{n / 1e3:.3g}k" if n >= 1e3 else str(n)


def names(cells: list[dict[str, Any]]) -> str:
    ms = [c["mechanism"] for c in cells]
    return ms[0] if len(ms) == 1 else ", ".join(ms[:-1]) + " and " + ms[-1]


# -- per cell and per task -------------------------------------------------------------------------

def target_of(metric: str, chance: float) -> float:
    perfect = PERFECT.get(metric, 0.0)
    return chance + TARGET_FRACTION * (perfect - chance)


def reached(value: float | None, target: float, higher_is_better: bool) -> bool:
    return value is not None and (value >= target if higher_is_better else value <= target)


def seed_statistics(c: dict[str, Any]) -> None:
    """Set, in place, the cell's mean over seeds and the labelled interval of that mean (from `per_seed`)."""
    values = stats.finite(list(c["per_seed"].values()))
    interval = stats.mean_interval(values, metric=c["metric"])
    c.update(mean=sum(values) / len(values) if values else None, n_seeds=len(values),
             ci=(interval.low, interval.high) if interval else None,
             ci_low=interval.low if interval else None, ci_high=interval.high if interval else None,
             ci_clipped=bool(interval and interval.clipped),
             ci_label=interval.label if interval else f"no interval (n={len(values)} seed)")


def rank(cells: list[dict[str, Any]]) -> None:
    """Best and tie marks per task, from paired comparisons (stats.rank_cells)."""
    for task in {c["task"] for c in cells}:
        group = [c for c in cells if c["task"] == task]
        stats.rank_cells(group, group[0]["higher_is_better"])


def summary(cells: list[dict[str, Any]], failures: Sequence[dict[str, Any]] = ()) -> list[str]:
    """A few sentences per task, generated from the numbers only, each interval labelled with its n.

    With `failures` (collect's failed trials), one sentence more: a failure can leave a cell without a value,
    and then without a rank, which the numbers alone do not say.
    """
    lines = []
    for task in sorted({c["task"] for c in cells}):
        group = [c for c in cells if c["task"] == task and c["mean"] is not None]
        if not group:
            lines.append(f"{task}: no finished cell.")
            continue
        hib, metric = group[0]["higher_is_better"], group[0]["metric"]
        group.sort(key=lambda c: -c["mean"] if hib else c["mean"])
        solved = [c for c in group if c["reached_target"]]
        failed = [c for c in group if not c["reached_target"]]

        def vals(cs):
            return ", ".join(fmt_cell(c) for c in cs)

        target = fmt(group[0]["target"], metric)
        if solved and failed:
            verb = "solves" if len(solved) == 1 else "solve"
            neg = "does not" if len(failed) == 1 else "do not"
            text = f"{names(solved)} {verb} {task} ({vals(solved)}); {names(failed)} {neg} ({vals(failed)})."
        elif solved:
            text = f"Every mechanism solves {task} (target {target}): {names(group)} ({vals(group)})."
        else:
            text = (f"No mechanism solves {task} (target {target}, chance {fmt(group[0]['chance'], metric)}): "
                    + ", ".join(f"{c['mechanism']} {fmt_cell(c)}" for c in group) + ".")
        lines.append(text + " " + _ranking(task, group))
    if failures:
        n = len(failures)
        lines.append(f"{n} trial{'s' if n > 1 else ''} failed (see Failed trials): a cell left without a full-length search "
                     "trial or without a result on every seed has no value and is left out of its task's ranking; any other "
                     "failed search trial only drops out of the search.")
    return lines


def _ranking(task: str, group: list[dict[str, Any]]) -> str:
    best = group[0]
    if best["rank_note"] == stats.INSUFFICIENT:
        fewest = min(c["n_seeds"] for c in group)
        return (f"No ranking on {task}: {stats.INSUFFICIENT} (fewest {fewest}; a paired comparison needs "
                f"at least {stats.MIN_SEEDS} seeds per mechanism).")
    if not best["best"]:
        return ""
    tied = [c for c in group[1:] if c["tie"]]
    clear = [c for c in group[1:] if not c["tie"]]
    how = f"paired {stats.LEVEL * 100:g} % t-interval of the difference over seeds"
    text = ""
    if tied:
        text = f"{names([best, *tied])} are not separated on {task} (the {how} includes 0)."
    if clear:
        text += (" " if text else "") + f"{best['mechanism']} is {'best' if not tied else 'ahead'} on {task}, clear of " \
                f"{names(clear)} (the {how} excludes 0, n={min(c['vs_best']['n'] for c in clear)})."
    return text


# -- paper vs ours ---------------------------------------------------------------------------------

def paper_rows(cells: list[dict[str, Any]], scale: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (paper, task variant, winner/loser pair) the sweep mirrors: the paper's setting and ours, numbers,
    verdict.  In a grid, the paper's winner and loser are paired by equal mechanism variant (e.g. both d_model=64)."""
    by_task: dict[str, tuple[str, dict[str, list[dict[str, Any]]]]] = {}
    for c in cells:
        _, mechs = by_task.setdefault(c["task"], (c.get("task_name", c["task"]), {}))
        mechs.setdefault(c.get("mechanism_name", c["mechanism"]), []).append(c)
    rows = []
    for label, (task_name, mine) in by_task.items():
        for key, paper, task, losers in applicable({task_name: set(mine)}):
            for loser in losers:
                for win, lose in _pairs(mine[paper.winner], mine[loser]):
                    rows.append(_paper_row(key, paper, task, label, loser, win, lose, scale))
    return rows


def _pairs(winners: list[dict[str, Any]], losers: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Cells compared for a paper: equal mechanism variants, or the only cell of each."""
    if len(winners) == len(losers) == 1:
        return [(winners[0], losers[0])]
    return [(w, x) for w in winners for x in losers if w.get("mechanism_variant", "") == x.get("mechanism_variant", "")]


def _paper_row(key: str, paper, task: str, label: str, loser: str, win: dict[str, Any], lose: dict[str, Any],
               scale: dict[str, Any]) -> dict[str, Any]:
    compared = (paper.winner, loser)
    params = {"task": win["task_params"], paper.winner: win["mechanism_params"], loser: lose["mechanism_params"]}
    setting, unmet = match(paper, task, win["metric"], params, compared)
    comparison = stats.compare_paired(win["per_seed"], lose["per_seed"], win["higher_is_better"])
    both = win["mean"] is not None and lose["mean"] is not None
    sign = 1.0 if win["higher_is_better"] else -1.0
    size = stats.gap_size(sign * (win["mean"] - lose["mean"]), win["chance"], PERFECT.get(win["metric"], 0.0)) \
        if both else None
    return {
        "paper": key, "source": paper.source, "approximate": paper.approximate, "note": paper.note,
        "task": label, "metric": win["metric"], "winner": win["mechanism"], "loser": lose["mechanism"],
        "paper_setting": setting.describe(), "paper_metric": setting.metric,
        "our_setting": our_setting(task, params, compared, setting), "differences": unmet,
        "published_winner": setting.published[paper.winner], "published_loser": setting.published[loser],
        "paper_size": setting.size or "not stated",
        "paper_params": "; ".join(f"{m} {paper.params[m]}" for m in compared if m in paper.params) or "not stated",
        "ours_winner": fmt_cell(win), "ours_loser": fmt_cell(lose), "comparison": comparison.label,
        "our_scale": f"{paper.winner} {count(win['params_count'])}, {loser} {count(lose['params_count'])} parameters; "
                     f"{scale['steps']} steps; {scale['seeds']} seeds",
        **verdict(setting, unmet, comparison, size),
    }
