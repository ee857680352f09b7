"""Sweeps on the session's real local Ray: a 2 × 2 grid end to end, kill -9 and relaunch, no-op relaunch."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

import amctl
from amlab.platform.api import plan
from amlab.platform.status import Kind
from amlab.platform.store import Store, Trial
from amlab.platform.sweep import run_sweep
from amlab.platform.sweep_spec import SEARCH_SEED_BASE

pytestmark = pytest.mark.ray
REPO = Path(__file__).resolve().parents[1]


def grid(name: str, steps: int = 30) -> dict:
    return {
        "name": name,
        "mechanisms": {"lstm": {"d_model": 16}, "transformer": {"d_model": 16, "heads": 2}},
        "tasks": {"copy": {"max_len": 4, "test_lens": [4, 8]},
                  "mqar": {"vocab_size": 64, "seq_len": 16, "num_kv_pairs": 2}},
        "seeds": [0, 1],
        "train": {"steps": steps, "batch_size": 8, "eval_every": 10, "log_every": 10, "eval_batches": 1},
        "search": {"trials": 2, "scheduler": "asha", "grace_evals": 1, "reduction_factor": 2},
    }


def saved_trials(settings, sweep: str) -> list:
    """The trials as the newest saved Tune experiment state has them ([] before the first save, or mid-write)."""
    from ray.tune.experiment import Trial as TuneTrial

    states = sorted(Path(settings.ray_storage, sweep).glob("*/experiment_state-*.json"))
    try:
        data = json.loads(states[-1].read_text()) if states else {"trial_data": []}
    except ValueError:
        return []
    trials = []
    for state, metadata in data["trial_data"]:
        trial = TuneTrial.from_json_state(state, stub=True)
        trial.restore_run_metadata(metadata)
        trials.append(trial)
    return trials


def runs_of(client: MlflowClient, sweep: str) -> list:
    exp = client.get_experiment_by_name(sweep)  # its own experiment
    return client.search_runs([exp.experiment_id], f"tags.`amctl.sweep` = '{sweep}'", max_results=1000)


def check_tree(client: MlflowClient, store: Store, name: str) -> list:
    """The run tree is sweep > cells > trials, every run closed, and the store agrees with MLflow."""
    runs = runs_of(client, name)
    by_kind = {k: [r for r in runs if r.data.tags["amctl.kind"] == k] for k in ("sweep", "cell", "trial")}
    assert len(by_kind["sweep"]) == 1 and len(by_kind["cell"]) == 4
    sweep_id = by_kind["sweep"][0].info.run_id
    cell_ids = {r.info.run_id for r in by_kind["cell"]}
    assert all(r.data.tags["mlflow.parentRunId"] == sweep_id for r in by_kind["cell"])
    assert all(r.data.tags["mlflow.parentRunId"] in cell_ids for r in by_kind["trial"])
    open_runs = [(r.data.tags["amctl.kind"], r.data.tags.get("amctl.tune_trial_id"), r.info.status) for r in runs
                 if r.info.status not in ("FINISHED", "FAILED", "KILLED")]
    assert not open_runs, f"runs left open: {open_runs}"
    with store.session() as s:
        sweep = store.sweep(s, name)
        assert sweep.mlflow_run_id == sweep_id and sweep.status == "FINISHED"
        rows = {t.mlflow_run_id: t for c in sweep.cells for t in c.trials if t.mlflow_run_id}
        # a row has no run only when its driver was killed between committing it and creating the run
        assert all(t.status == "KILLED" for c in sweep.cells for t in c.trials if not t.mlflow_run_id)
        assert {c.mlflow_run_id for c in sweep.cells} == cell_ids
    trial_runs = {r.info.run_id: r for r in by_kind["trial"]}
    assert set(rows) == set(trial_runs)
    for run_id, row in rows.items():
        assert row.status == trial_runs[run_id].info.status
        assert row.trial_key == trial_runs[run_id].data.tags["amctl.tune_trial_id"]
        assert (trial_runs[run_id].data.tags.get("amctl.early_stopped") == "true") == row.early_stopped
    return by_kind["trial"]


def test_two_by_two_sweep_end_to_end(ray_local, settings):
    launch = plan(Kind.SWEEP, grid("grid22"))
    cells = launch.cells
    outcome = run_sweep(launch, settings)
    assert outcome.status == "FINISHED" and outcome.concurrency >= 1

    res = CliRunner().invoke(amctl.app, ["report", "grid22", "--json"])
    assert res.exit_code == 0
    report = json.loads(res.output)
    assert {(c["mechanism"], c["task"]) for c in report} == {(m, t) for m in ("lstm", "transformer") for t in ("copy", "mqar")}
    for c in report:
        assert c["status"] == "FINISHED" and set(c["per_seed"]) == {"0", "1"}
        assert c["value"] == pytest.approx(sorted(c["per_seed"].values())[0] / 2 + sorted(c["per_seed"].values())[1] / 2)
        assert c["params_count"] > 0 and c["state_size"] is not None
        assert "train.lr" in c["best_params"] and c["higher_is_better"] == (c["metric"] == "accuracy")
        assert c["trials"] == 4  # 2 searched on the (unreported) search seed + the chosen one on seeds 0 and 1

    client, store = MlflowClient(settings.mlflow_uri), Store(settings.db_url)
    trials = check_tree(client, store, "grid22")
    assert len(trials) == 16
    for t in trials:  # no winner's curse: search never trains a reported seed, every reported seed is a replicate
        searched = t.data.tags["amctl.phase"] == "search"
        assert (int(t.data.tags["seed"]) >= SEARCH_SEED_BASE) == searched
    for t in trials:  # nothing logged twice
        steps = [m.step for m in client.get_metric_history(t.info.run_id, "train/loss")]
        assert steps == sorted(set(steps))
    study = optuna.load_study(study_name=f"grid22:{cells[0].key}", storage=settings.optuna_url)
    assert len(study.trials) == 2 and all(t.user_attrs["seed"] == SEARCH_SEED_BASE for t in study.trials)

    # relaunching a finished sweep does no work and leaves its MLflow run closed as it was
    sweep_run = [r for r in runs_of(client, "grid22") if r.data.tags["amctl.kind"] == "sweep"][0]
    again = run_sweep(launch, settings)
    assert client.get_run(sweep_run.info.run_id).info.end_time == sweep_run.info.end_time
    assert again.status == "FINISHED" and sorted(again.skipped) == sorted(c.key for c in cells) and again.ran == []
    assert len(runs_of(client, "grid22")) == 1 + 4 + 16


def test_driver_killed_mid_sweep_then_relaunched_completes_without_duplicates(ray_local, settings, tmp_path):
    spec_file = tmp_path / "killme.yaml"
    spec_file.write_text(yaml.safe_dump(grid("killme", steps=60)))
    env = {**os.environ, "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address}
    cmd = [sys.executable, str(REPO / "amctl.py"), "launch", "sweep", str(spec_file), "--json"]
    store = Store(settings.db_url)

    first = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline:  # wait until work is under way: a trial done, Tune's saved state has one mid-training
        with store.session() as s:
            rows = [t for t in s.query(Trial).all() if t.cell.sweep.name == "killme"]
        resumable = [t for t in saved_trials(settings, "killme") if t.status == "PENDING" and t.checkpoint]  # saved running
        if any(t.status == "FINISHED" for t in rows) and resumable:
            break
        assert first.poll() is None, first.stderr.read().decode()[-3000:]
        time.sleep(0.5)
    else:
        pytest.fail("the sweep never got going")
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    # Tune deletes a checkpoint past `num_to_keep` before its next state save forces: a kill in between leaves the
    # saved state naming a checkpoint that is gone.  Make it so for one trial, every time
    shutil.rmtree(resumable[0].checkpoint.path, ignore_errors=True)

    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stderr[-3000:]
    out = json.loads(second.stdout)
    assert out["status"] == "FINISHED" and len(out["cells"]) == 4
    client = MlflowClient(settings.mlflow_uri)
    trials = check_tree(client, store, "killme")
    finished = [t for t in trials if t.info.status == "FINISHED"]
    with store.session() as s:
        story = [(c.key, t.trial_key, t.phase, t.seed, t.status, t.steps_done, t.error,
                  [x.new for x in store.transitions(s, "trial", t.id)]) for c in store.sweep(s, "killme").cells for t in c.trials]
    assert len(finished) == 16, (f"each cell: 2 searched + 2 seed replicates, each finished exactly once: {story}\n"
                                 f"{second.stderr[-3000:]}")
    keys = [t.data.tags["amctl.tune_trial_id"] for t in trials]
    assert len(keys) == len(set(keys))
    for t in finished:
        steps = [m.step for m in client.get_metric_history(t.info.run_id, "train/loss")]
        assert steps == sorted(set(steps)), "a resumed trial logged a step twice"


def test_bad_sweep_spec_lists_every_problem_and_starts_nothing(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("AMCTL_HOME", str(home))
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({
        "name": "Bad Name", "mechanisms": ["lsmt", "lstm"], "tasks": {"copy": {"max_len": 0}},
        "seeds": [0], "train": {"seed": 1}, "search": {"trials": 2, "space": {"lstm.forget_bias": {"low": -50, "high": 1}}},
        "extra": True,
    }))
    res = CliRunner().invoke(amctl.app, ["launch", "sweep", str(bad)])
    assert res.exit_code == 2
    for expected in ("name: String should match pattern", "extra: unknown field", "train.seed: set by the sweep",
                     "mechanisms.lsmt: unknown mechanism 'lsmt'",
                     "tasks.copy.max_len: Input should be greater than or equal to 1",
                     "search.space.lstm.forget_bias.low: -50.0 is below the registry's bound -5.0"):
        assert expected in res.output, expected
    assert not home.exists() or not any(home.iterdir())
    empty = tmp_path / "empty.yaml"
    empty.write_text(yaml.safe_dump({"name": "e", "mechanisms": ["stn"], "tasks": ["copy"]}))
    res = CliRunner().invoke(amctl.app, ["launch", "sweep", str(empty)])
    assert res.exit_code == 2 and "no compatible cell" in res.output


def test_report_of_unknown_sweep_is_exit_2(settings):
    res = CliRunner().invoke(amctl.app, ["report", "nope", "--json"])
    assert res.exit_code == 2 and "no sweep or run named 'nope'" in res.output
