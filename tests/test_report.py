"""The comparison report: summary and renderers on hand-made cells, importances, and a report built from a real sweep.

Statistics are tested in test_stats.py, paper settings and verdicts in test_papers.py."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import optuna
import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

import amctl
from amlab.platform import report, stats
from amlab.platform.report import summarise
from amlab.platform.store import Store

SWEEP = "reportgrid"  # tests/conftest.py: report_dir


# -- summary and renderers on hand-made cells -------------------------------------------------------

def cell(mechanism, task, values, *, metric="accuracy", hib=True, chance=0.25, task_params=None, mech_params=None):
    """A cell as `collect` builds it, from per-seed test values (no store, no MLflow)."""
    c = {"mechanism": mechanism, "task": task, "metric": metric, "higher_is_better": hib, "chance": chance,
         "per_seed": {str(i): v for i, v in enumerate(values)}, "value": float(np.median(values)),
         "task_params": task_params or {}, "mechanism_params": mech_params or {"d_model": 64}, "params_count": 12_345,
         "state_size": 64, "status": "FINISHED", "config_hash": f"{mechanism}{task}", "mlflow_run_id": "r",
         "best_params": {}, "wall_s": 3.0, "seed_wall_s": 1.0, "steps_per_s": 50.0, "time_to_target_s": None,
         "step_to_target": None, "trial_spread": 0.1, "trial_values": [0.1, 0.2], "importances": {},
         "importance_note": "needs ≥ 4 completed search trials (has 2)", "learning_curve": [[10, 0.3], [20, 0.5]],
         "generalisation": {}, "dump_run_ids": ["r"]}
    summarise.seed_statistics(c)
    c["target"] = report.target_of(metric, chance)
    c["reached_target"] = report.reached(c["mean"], c["target"], hib)
    return c


def data_of(cells, seeds):
    summarise.rank(cells)
    first = {c["task"]: c for c in reversed(cells)}
    tasks = [{k: first[t][k] for k in ("task", "metric", "higher_is_better", "chance", "target")} for t in sorted(first)]
    scale = {"steps": 1000, "seeds": seeds, "trials": 2}
    return {"name": "hand", "status": "FINISHED", "mlflow_run_id": "r", "created_at": "2025-01-01T00:00:00", "spec": {},
            "scale": scale, "cells": cells, "tasks": tasks, "papers": report.paper_rows(cells, scale), "failures": [],
            "summary": report.summary(cells), "generated_at": "2025-01-01T00:00:00"}


MQAR_GAP = {"vocab_size": 8192, "seq_len": 128, "num_kv_pairs": 8}  # the mqar-gap preset: Zoology's (128, 8) at d=64


def test_three_seeds_rank_with_a_labelled_paired_comparison():
    cells = [cell("lstm", "mqar", [0.31, 0.27, 0.35], chance=0.125, task_params=MQAR_GAP),
             cell("transformer", "mqar", [0.998, 0.996, 1.0], chance=0.125, task_params=MQAR_GAP)]
    data = data_of(cells, 3)
    (line,) = data["summary"]
    label, cut = "(mean ± 95 % t-interval, n=3 seeds)", "(mean [95 % t-interval, clipped to the metric's range], n=3 seeds)"
    # 99.8 % ± 0.5 would reach past 100 %: the interval is cut there and shown by its ends
    assert line.startswith(f"transformer solves mqar (99.8 % [99.3, 100] {cut}); lstm does not (31 % ± 9.9 {label})")
    assert ("transformer is best on mqar, clear of lstm "
            "(the paired 95 % t-interval of the difference over seeds excludes 0, n=3)") in line
    (row,) = data["papers"]
    assert row["paper"] == "arora2023-mqar" and row["paper_setting"].startswith("len 128, 8 pairs")
    assert row["verdict"] == "reproduces" and row["ours_size"] == "large" and row["differences"] == []
    assert row["our_setting"] == "mqar: vocab_size=8192, seq_len=128, num_kv_pairs=8; transformer: d_model=64; lstm: d_model=64"
    tied = [cell("gru", "mqar", [0.5, 0.4, 0.6]), cell("lstm", "mqar", [0.45, 0.42, 0.62])]  # differences +5, -2, -2 points
    summarise.rank(tied)
    assert "gru and lstm are not separated on mqar" in report.summary(tied)[0]


def test_two_seeds_claim_no_best_and_no_paper_verdict():
    """The quick study's shape: 2 seeds, copy tested to 24 only."""
    quick_copy = {"width": 8, "min_len": 1, "max_len": 8, "test_lens": [8, 16, 24]}
    cells = [cell("ntm", "copy", [0.0, 0.1], metric="bit_errors", hib=False, chance=64.0, task_params=quick_copy,
                  mech_params={"d_model": 64, "slots": 32}),
             cell("lstm", "copy", [40.0, 42.0], metric="bit_errors", hib=False, chance=64.0, task_params=quick_copy)]
    data = data_of(cells, 2)
    assert not any(c["best"] or c["tie"] for c in cells) and {c["rank_note"] for c in cells} == {"insufficient seeds"}
    (line,) = data["summary"]
    assert "No ranking on copy: insufficient seeds (fewest 2" in line and "best" not in line and "clear of" not in line
    (row,) = data["papers"]
    assert row["verdict"] == "different setting" and row["ours_size"] is None
    assert "paper: tested up to length 120; ours: task test_lens=8, 16, 24" in row["differences"]
    assert row["paper_params"].startswith("ntm 67,561") and "copy: width=8, min_len=1, max_len=8" in row["our_setting"]
    # in the paper's own setting two seeds are still too few for a verdict
    paper_copy = {"width": 8, "min_len": 1, "max_len": 20, "test_lens": [20, 40, 80, 120]}
    cells = [cell("ntm", "copy", [0.0, 0.1], metric="bit_errors", hib=False, chance=280.0, task_params=paper_copy,
                  mech_params={"d_model": 100, "slots": 128}),
             cell("lstm", "copy", [200.0, 210.0], metric="bit_errors", hib=False, chance=280.0, task_params=paper_copy)]
    (row,) = data_of(cells, 2)["papers"]
    assert row["verdict"] == "insufficient seeds" and row["differences"] == []
    md = report.render_md(data_of(cells, 2))
    assert "reproduces" not in md and "**best" not in md and "| *ranking* | insufficient seeds |" in md


def test_renderers_on_hand_made_cells():
    cells = [cell("lstm", "mqar", [0.31, 0.27, 0.35], chance=0.125, task_params=MQAR_GAP),
             cell("transformer", "mqar", [0.998, 0.996, 1.0], chance=0.125, task_params=MQAR_GAP),
             cell("lstm", "adding", [0.05, 0.06], metric="mse", hib=False, chance=1 / 6),
             cell("wm_lstm", "adding", [0.04, 0.05], metric="mse", hib=False, chance=1 / 6)]
    data = data_of(cells, 3)
    md = report.render_md(data)
    assert "| lstm | 0.055 [0, 0.119] (n=2) | 31 % ± 9.9 (n=3) |" in md  # an MSE interval cut at 0
    assert "| transformer |  | **99.8 % [99.3, 100] (n=3)** |" in md
    assert "| *ranking* | insufficient seeds | paired t, 95 % |" in md  # adding has 2 seeds, mqar 3
    assert "Student-t interval" in md and "Landi et al. 2021" in md and "**different setting**" in md
    rows = list(csv.DictReader(io.StringIO(report.render_csv(data))))
    assert tuple(rows[0]) == report.CSV_FIELDS and len(rows) == 4
    assert rows[1]["ci_label"] == "95 % t-interval of the mean over n=3 seeds, clipped to the metric's range"
    assert rows[1]["best"] == "True" and rows[0]["ci_label"] == "95 % t-interval of the mean over n=3 seeds"
    assert [json.loads(report.render_json(cells))[i]["n_seeds"] for i in range(4)] == [3, 3, 2, 2]
    html = report.render_html(data, [])
    assert 'id="leaderboard-table"' in html and "95 % t-interval of the mean over n=3 seeds" in html
    assert html.count('src="data:image/png;base64,') == 2 and "http://" not in html and "https://" not in html


def test_failed_trials_are_listed_only_when_there_are_any():
    cells = [cell("lstm", "mqar", [0.31, 0.27, 0.35]), cell("transformer", "mqar", [0.998, 0.996, 1.0])]
    clean = data_of(cells, 3)
    assert "## Failed trials" not in report.render_md(clean) and "failures-table" not in report.render_html(clean, [])
    assert not any("failed" in line for line in clean["summary"])

    error = "ValueError: loss is nan | at step 40\nTraceback (most recent call last):"
    failures = [{"mechanism": "lstm", "task": "mqar", "seed": 2, "phase": "seed", "status": "FAILED", "error": error},
                {"mechanism": "lstm", "task": "mqar", "seed": 1000, "phase": "search", "status": "KILLED", "error": "x" * 300}]
    data = {**clean, "failures": failures, "summary": report.summary(cells, failures)}
    assert data["summary"][-1].startswith("2 trials failed (see Failed trials): a cell left without a full-length search trial")
    md = report.render_md(data)
    assert "## Failed trials" in md and "| mechanism | task | seed | phase | status | error |" in md
    assert "| lstm | mqar | 2 | seed | FAILED | ValueError: loss is nan \\| at step 40 |" in md  # first line, | escaped
    assert "Traceback" not in md and f"| {'x' * 199}… |" in md  # cut to 200 characters
    html = report.render_html(data, [])
    assert 'id="failures-table"' in html and "<td>ValueError: loss is nan | at step 40</td>" in html
    assert 'href="#failures"' in html and "Traceback" not in html


def test_collect_lists_the_failed_trials_of_a_store(tmp_path):
    """collect on a real SQLite store whose one cell failed: the failures, their summary line, nothing from MLflow."""
    from amlab.platform.settings import Settings
    from amlab.platform.spec import RunSpec
    from amlab.platform.status import Kind, Phase, Status
    from amlab.platform.store import Cell, Sweep, Trial
    from amlab.platform.sweep_spec import SEARCH_SEED_BASE as SEARCH

    spec = RunSpec.model_validate({"mechanism": {"name": "lstm", "d_model": 8}, "task": {"name": "copy"}}).normalised()
    cfg = Settings(home=tmp_path, db_url=f"sqlite:///{tmp_path / 'amctl.db'}", mlflow_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                   artifacts=(tmp_path / "artifacts").as_uri(), optuna_url=f"sqlite:///{tmp_path / 'optuna.db'}",
                   ray_storage=str(tmp_path / "ray"))
    store = Store(cfg.db_url)
    with store.session() as s:
        sweep = Sweep(name="broken", kind=Kind.SWEEP, spec={"seeds": [0, 1, 2]}, config_hash="h", status=Status.FAILED)
        c = Cell(mechanism="lstm", task="copy", mechanism_variant="d_model=8", config_hash="c", spec=spec,
                 status=Status.FAILED, metric="bit_errors", higher_is_better=False)
        trials = [("a", Phase.SEARCH, SEARCH, Status.FAILED, "FloatingPointError: loss is nan"),
                  ("b", Phase.SEARCH, SEARCH, Status.KILLED, None),  # interrupted: no reason to show
                  ("c", Phase.SEARCH, SEARCH, Status.FINISHED, None),
                  ("d", Phase.SEED, 1, Status.KILLED, "RayTaskError: worker died")]
        c.trials = [Trial(trial_key=k, phase=p, seed=seed, config=spec, config_hash="t", status=st, error=e)
                    for k, p, seed, st, e in trials]
        sweep.cells = [c]
        s.add(sweep)
        s.commit()
    data = report.collect(cfg, "broken")
    assert data["failures"] == [
        {"mechanism": "lstm[d_model=8]", "task": "copy", "seed": SEARCH, "phase": "search", "status": "FAILED",
         "error": "FloatingPointError: loss is nan"},
        {"mechanism": "lstm[d_model=8]", "task": "copy", "seed": 1, "phase": "seed", "status": "KILLED",
         "error": "RayTaskError: worker died"}]
    first, note = data["summary"]
    assert first == "copy: no finished cell." and note.startswith("2 trials failed (see Failed trials)")
    assert "| lstm[d_model=8] | copy | 1 | seed | KILLED | RayTaskError: worker died |" in report.render_md(data)
    assert "<td>RayTaskError: worker died</td>" in report.render_html(data, [])


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
        assert c["ci_low"] <= c["mean"] <= c["ci_high"] and c["n_seeds"] == 2
        assert c["ci_label"].startswith("95 % t-interval of the mean over n=2 seeds")
        low, high = stats.metric_range(c["metric"])
        assert low <= c["ci_low"] and c["ci_high"] <= high  # cut at the metric's range (issue 11)
        assert c["chance"] == (0.5 if c["task"] == "mqar" else 8 / 2 * 6)  # 1/kv pairs; width/2 × mean test length
        assert [s for s, _ in c["learning_curve"]] == [10, 20, 30]
        assert c["wall_s"] > 0 and c["steps_per_s"] > 0 and len(c["trial_values"]) == 2
        assert c["generalisation"].keys() == ({"len_4", "len_8"} if c["task"] == "copy" else set())
        # 2 search trials, ASHA may prune one: fANOVA reads complete (full-length) trials only, and needs 4
        assert c["importances"] == {} and "needs ≥ 4 completed search trials (has " in c["importance_note"]
    # two seeds: no ranking and no paper verdict stronger than that (issue 11)
    assert not any(c["best"] or c["tie"] for c in cells) and {c["rank_note"] for c in cells} == {"insufficient seeds"}

    rows = list(csv.DictReader(io.StringIO((report_dir / "report.csv").read_text())))
    assert len(rows) == 4 and tuple(rows[0]) == report.CSV_FIELDS
    md = (report_dir / "report.md").read_text()
    assert "## Leaderboard" in md and "| lstm |" in md and "| *chance* |" in md and "Arora et al. 2023" in md
    assert "| *ranking* | insufficient seeds | insufficient seeds |" in md and "**different setting**" in md
    assert "reproduces**" not in md and "best on" not in md
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
    assert res.exit_code == 2 and "'pdf' is not one of" in res.output
    res = runner.invoke(amctl.app, ["compare", SWEEP, SWEEP, "--json"])
    assert res.exit_code == 0
    rows = json.loads(res.output)
    assert len(rows) == 4 and all(r["difference"] == 0 and r["overlap"] is None for r in rows)  # 2 seeds: no paired verdict
    res = runner.invoke(amctl.app, ["compare", SWEEP, "nope"])
    assert res.exit_code == 2 and "no sweep or run named 'nope'" in res.output


@pytest.mark.ray
def test_the_quick_study_claims_no_paper_verdict_its_settings_do_not_allow(ray_local, settings):
    """The quick study as shipped (its mechanisms, tasks, 3 seeds and search), only shorter: every paper row it
    meets is in another setting (copy tested to 24, not 120; R=64, not 20; MQAR length 32), so none may say
    'reproduces' or give a size, whatever the numbers."""
    from amlab.platform.api import plan, sweep_data
    from amlab.platform.report import collect
    from amlab.platform.status import Kind
    from amlab.platform.sweep import run_sweep

    data = sweep_data(None, "quick", ["train.steps=20", "train.eval_every=10", "train.log_every=10",
                                      "train.eval_batches=1"]) | {"name": "quick-verdicts"}
    assert data["seeds"] == [0, 1, 2]
    assert run_sweep(plan(Kind.SWEEP, data), settings).status == "FINISHED"
    got = collect(settings, "quick-verdicts")
    rows = {r["paper"]: r for r in got["papers"]}
    assert set(rows) == {"graves2014-copy", "ba2016-retrieval", "arora2023-mqar"}
    for row in rows.values():
        assert row["verdict"] == "different setting" and row["ours_size"] is None and row["differences"]
    assert "paper: tested up to length 120; ours: task test_lens=8, 16, 24" in rows["graves2014-copy"]["differences"]
    md = report.render_md(got)
    assert "**reproduces**" not in md and "direction only" not in md


def test_a_grid_gets_a_paper_row_per_task_variant_and_equal_width_pair():
    """mqar-scaling's shape: widths and lengths as axes; Zoology's row compares the transformer and the LSTM of the
    same width on each length, and only (64, 4) at d=64 is the paper's own setting."""
    cells = []
    for length in (32, 64):
        for width in (16, 64):
            task = {"vocab_size": 64, "seq_len": length, "num_kv_pairs": 4}
            for mech, values in (("transformer", [0.99, 1.0, 0.995]), ("lstm", [0.3, 0.28, 0.31])):
                c = cell(f"{mech}[d_model={width}]", f"mqar[seq_len={length}]", values, task_params=task,
                         mech_params={"d_model": width})
                c.update(mechanism_name=mech, task_name="mqar", mechanism_variant=f"d_model={width}")
                cells.append(c)
    rows = data_of(cells, 3)["papers"]
    assert sorted((r["task"], r["winner"], r["loser"]) for r in rows) == sorted(
        (f"mqar[seq_len={n}]", f"transformer[d_model={w}]", f"lstm[d_model={w}]") for n in (32, 64) for w in (16, 64))
    verdicts = {(r["task"], r["winner"]): r["verdict"] for r in rows}
    assert verdicts.pop(("mqar[seq_len=64]", "transformer[d_model=64]")) == "reproduces"
    assert set(verdicts.values()) == {"different setting"}
