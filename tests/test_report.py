"""The comparison report: statistics on hand-made inputs, paper verdicts, and a report built from a real sweep."""

from __future__ import annotations

import csv
import io
import json

import optuna
import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

import amctl
from amlab.platform import report, stats
from amlab.platform.papers import PAPERS
from amlab.platform.presets import PRESETS
from amlab.platform.store import Store

SWEEP = "reportgrid"  # tests/conftest.py: report_dir


# -- statistics --------------------------------------------------------------------------------------

def test_median_ignores_missing_values():
    assert stats.median([3.0, None, 1.0, 2.0, float("nan")]) == 2.0
    assert stats.median([1.0, 4.0]) == 2.5
    assert stats.median([None]) is None


def test_bootstrap_interval_of_two_values_is_their_range():
    # resampled medians of [0, 1] are 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4: the 2.5 % and 97.5 % quantiles are 0 and 1
    assert stats.bootstrap_ci([0.0, 1.0]) == (0.0, 1.0)
    assert stats.bootstrap_ci([5.0]) == (5.0, 5.0)
    assert stats.bootstrap_ci([]) is None


def test_bootstrap_interval_is_seeded_and_brackets_the_median():
    values = [0.1, 0.5, 0.52, 0.55, 0.9, 0.3, 0.61]
    a, b = stats.bootstrap_ci(values, seed=3), stats.bootstrap_ci(values, seed=3)
    assert a == b
    lo, hi = a
    assert min(values) <= lo <= stats.median(values) <= hi <= max(values)
    assert lo > min(values) and hi < max(values)  # 7 values: the extremes are rarely the resampled median
    narrow = stats.bootstrap_ci([0.5, 0.51, 0.49, 0.5, 0.5, 0.52, 0.48])
    assert narrow[1] - narrow[0] < hi - lo


def test_best_and_ties_follow_the_metric_direction_and_interval_overlap():
    cells = [{"value": 0.9, "ci": (0.85, 0.95)}, {"value": 0.88, "ci": (0.80, 0.86)}, {"value": 0.5, "ci": (0.4, 0.6)},
             {"value": None, "ci": None}]
    stats.rank_cells(cells, higher_is_better=True)
    assert [(c["best"], c["tie"]) for c in cells] == [(True, True), (False, True), (False, False), (False, False)]
    stats.rank_cells(cells, higher_is_better=False)  # lower is better: 0.5 wins, nobody overlaps it
    assert [(c["best"], c["tie"]) for c in cells] == [(False, False), (False, False), (True, False), (False, False)]


def test_gap_size_is_relative_to_chance():
    assert stats.gap_size(0.45, chance=0.1, perfect=1.0) == "large"  # 0.45 / 0.9 = 0.5
    assert stats.gap_size(-0.18, chance=0.1, perfect=1.0) == "moderate"  # 0.2
    assert stats.gap_size(0.05, chance=0.1, perfect=1.0) == "small"
    assert stats.gap_size(2.0, chance=100.0, perfect=0.0) == "small"


@pytest.mark.parametrize(("win", "lose", "paper", "expected"), [
    ((0.98, (0.97, 0.99)), (0.30, (0.25, 0.35)), "large", "reproduces"),
    ((0.98, (0.97, 0.99)), (0.80, (0.78, 0.82)), "large", "direction only"),  # gap 0.18 / 0.75: moderate
    ((0.60, (0.50, 0.70)), (0.55, (0.45, 0.65)), "large", "tie"),
    ((0.30, (0.25, 0.35)), (0.98, (0.97, 0.99)), "large", "reversed"),
    ((0.98, (0.97, 0.99)), (None, None), "large", "not run"),
])
def test_verdict_judges_direction_and_rough_size_only(win, lose, paper, expected):
    cell = lambda v: {"value": v[0], "ci": v[1]}  # noqa: E731
    got = stats.verdict(cell(win), cell(lose), higher_is_better=True, chance=0.25, perfect=1.0, paper_size=paper)
    assert got["verdict"] == expected
    # lower-is-better metrics: the same cells expressed as errors give the same verdict
    err = lambda v: {"value": None if v[0] is None else 1 - v[0], "ci": v[1] and (1 - v[1][1], 1 - v[1][0])}  # noqa: E731
    flipped = stats.verdict(err(win), err(lose), higher_is_better=False, chance=0.75, perfect=0.0, paper_size=paper)
    assert flipped["verdict"] == expected


def test_every_paper_preset_maps_to_a_published_row():
    for name, p in PRESETS.items():
        if "paper" not in p:
            continue
        row = PAPERS[p["paper"]]
        spec = p["spec"]
        assert row["task"] in spec["tasks"], name
        assert row["winner"] in spec["mechanisms"] and set(row["losers"]) & set(spec["mechanisms"]), name
        assert set(row["published"]) == {row["winner"], *row["losers"]}
    assert PAPERS["ba2016-retrieval"]["approximate"] and PAPERS["landi2021-wm-lstm"]["approximate"]
    assert not PAPERS["graves2014-copy"]["approximate"]


def test_summary_sentences_come_from_the_numbers():
    def cell(m, v, ci, task="mqar"):
        return {"mechanism": m, "task": task, "metric": "accuracy", "higher_is_better": True, "value": v, "ci": ci,
                "chance": 0.01, "target": report.target_of("accuracy", 0.01),
                "reached_target": report.reached(v, report.target_of("accuracy", 0.01), True)}

    cells = [cell("lstm", 0.31, (0.27, 0.35)), cell("transformer", 0.998, (0.996, 1.0))]
    stats.rank_cells(cells, True)
    (line,) = report.summary(cells)
    assert line.startswith("transformer solves mqar (99.8 % ± 0.2); lstm does not (31 % ± 4).")
    assert "transformer is best on mqar, clear of lstm" in line
    tied = [cell("gru", 0.5, (0.4, 0.6)), cell("lstm", 0.45, (0.35, 0.55))]
    stats.rank_cells(tied, True)
    assert "gru and lstm are tied for best on mqar" in report.summary(tied)[0]


def test_importances_need_enough_completed_trials(tmp_path):
    assert report.importances("imp", f"sqlite:///{tmp_path / 'optuna.db'}") == ({}, "no Optuna study")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: (t.suggest_float("x", -1, 1) ** 2) * 10 + 0.01 * t.suggest_float("y", -1, 1), n_trials=3)
    got = report.importances_of(study)
    assert got[0] == {} and "has 3" in got[1]
    study.optimize(lambda t: (t.suggest_float("x", -1, 1) ** 2) * 10 + 0.01 * t.suggest_float("y", -1, 1), n_trials=27)
    values, note = report.importances_of(study)
    assert note == "" and set(values) == {"x", "y"} and values["x"] > 0.9


# -- a report from a real sweep ----------------------------------------------------------------------

@pytest.mark.ray
def test_report_from_a_real_sweep_in_every_format(report_dir, settings):
    cells = json.loads((report_dir / "report.json").read_text())
    assert {(c["mechanism"], c["task"]) for c in cells} == {(m, t) for m in ("lstm", "transformer") for t in ("copy", "mqar")}
    for c in cells:
        for key in ("mechanism", "task", "metric", "higher_is_better", "value", "per_seed", "best_params", "params_count",
                    "state_size", "status"):
            assert key in c
        assert c["ci_low"] <= c["value"] <= c["ci_high"] and c["n_seeds"] == 2
        assert c["chance"] == (0.5 if c["task"] == "mqar" else 8 / 2 * 6)  # 1/kv pairs; width/2 × mean test length
        assert [s for s, _ in c["learning_curve"]] == [10, 20, 30]
        assert c["wall_s"] > 0 and c["steps_per_s"] > 0 and len(c["trial_values"]) == 2
        assert c["generalisation"].keys() == ({"len_4", "len_8"} if c["task"] == "copy" else set())
        assert c["importances"] == {} and "has 2" in c["importance_note"]
    for task in ("copy", "mqar"):
        assert sum(c["best"] for c in cells if c["task"] == task) == 1

    rows = list(csv.DictReader(io.StringIO((report_dir / "report.csv").read_text())))
    assert len(rows) == 4 and tuple(rows[0]) == report.CSV_FIELDS
    md = (report_dir / "report.md").read_text()
    assert "## Leaderboard" in md and "| lstm |" in md and "| *chance* |" in md and "Arora et al. 2023" in md
    html = (report_dir / "report.html").read_text()
    assert 'id="leaderboard-table"' in html and html.count('src="data:image/png;base64,') == 7
    assert "http://" not in html and "https://" not in html  # self-contained

    client = MlflowClient(settings.mlflow_uri)
    with Store(settings.db_url).session() as s:
        run_id = Store(settings.db_url).sweep(s, SWEEP).mlflow_run_id
    logged = {a.path for a in client.list_artifacts(run_id, "report")}
    assert logged == {f"report/report.{f}" for f in report.FORMATS}
    with Store(settings.db_url).session() as s:  # ASHA must not cut off a full-length trial before its dumps
        full = [t.mlflow_run_id for c in Store(settings.db_url).sweep(s, SWEEP).cells for t in c.trials
                if t.status == "FINISHED" and not t.early_stopped]
    assert len(full) >= 8 and all(client.list_artifacts(r, "dumps") for r in full)


@pytest.mark.ray
def test_report_and_compare_commands(report_dir):
    runner = CliRunner()
    res = runner.invoke(amctl.app, ["report", SWEEP, "--format", "md"])
    assert res.exit_code == 0 and res.output.startswith(f"# amctl report: {SWEEP}")
    res = runner.invoke(amctl.app, ["report", SWEEP, "--format", "pdf"])
    assert res.exit_code == 2 and "valid: html, md, csv, json" in res.output
    res = runner.invoke(amctl.app, ["compare", SWEEP, SWEEP, "--json"])
    assert res.exit_code == 0
    rows = json.loads(res.output)
    assert len(rows) == 4 and all(r["difference"] == 0 and r["overlap"] for r in rows)
    res = runner.invoke(amctl.app, ["compare", SWEEP, "nope"])
    assert res.exit_code == 2 and "no sweep named 'nope'" in res.output
