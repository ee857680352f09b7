"""`amctl launch run` end to end on the session's real local Ray: MLflow run, artifacts, store rows, DDP."""

from __future__ import annotations

import json

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

import amctl
from amlab.platform.api import plan
from amlab.platform.status import Kind
from amlab.platform.store import Store
from amlab.platform.sweep import run_sweep, trial_metrics

pytestmark = pytest.mark.ray

ARGS = ["launch", "run", "-m", "lstm", "-t", "copy", "--set", "train.steps=40", "--set", "train.eval_every=20",
        "--set", "train.log_every=10", "--set", "mechanism.d_model=16", "--set", "task.max_len=4",
        "--set", "task.test_lens=[4,8]", "--json"]


def artifact_paths(client: MlflowClient, run_id: str, path: str = "") -> set[str]:
    out = set()
    for a in client.list_artifacts(run_id, path):
        out |= artifact_paths(client, run_id, a.path) if a.is_dir else {a.path}
    return out


def test_cli_run_is_tracked_in_mlflow_and_the_store(ray_local, settings):
    res = CliRunner().invoke(amctl.app, ARGS)
    assert res.exit_code == 0, res.output
    out = json.loads(res.output[res.output.index("{"):])
    assert out["status"] == "FINISHED" and not out["reused"]

    client = MlflowClient(settings.mlflow_uri)
    run = client.get_run(out["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "amctl"  # single runs share one experiment
    assert run.data.tags["mechanism"] == "lstm" and run.data.tags["task"] == "copy" and run.data.tags["seed"] == "0"
    assert run.data.tags["code_version"].startswith("0.1.0")
    assert int(run.data.tags["params_count"]) > 0 and run.data.tags["state_size"] == str(2 * 16)
    assert run.data.params["mechanism.d_model"] == "16" and run.data.params["train.steps"] == "40"
    losses = client.get_metric_history(run.info.run_id, "train/loss")
    assert [m.step for m in losses] == [10, 20, 30, 40]
    # evaluations are logged where they were measured (eval_every=20), never repeated at the steps between
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/bit_errors")] == [20, 40]
    # the test split at the final evaluation alone (train.test_every unset)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "test/bit_errors/len_8")] == [40]
    assert {"val/bit_errors", "test/bit_errors", "test/bit_errors/len_8"} <= set(run.data.metrics)
    arts = artifact_paths(client, run.info.run_id)
    assert {"spec.yaml", "checkpoint/state.pt", "dumps/traces.npz", "dumps/forget_gate.png"} <= arts

    store = Store(settings.db_url)
    with store.session() as s:
        sweep = store.sweep(s, out["name"])
        assert sweep.status == "FINISHED" and sweep.mlflow_run_id == run.info.run_id
        assert sweep.config_hash == run.data.tags["config_hash"]
        trial = sweep.cells[0].trials[0]
        assert trial.status == "FINISHED" and trial.steps_done == 40
        assert trial.metrics["val/bit_errors"] == pytest.approx(run.data.metrics["val/bit_errors"])
        assert [t.new for t in store.transitions(s, "trial", trial.id)] == ["PENDING", "RUNNING", "FINISHED"]
        assert sweep.cells[0].status == "FINISHED" and sweep.cells[0].value == trial.metrics["test/bit_errors"]

    # an identical launch reuses the finished run: no new MLflow run, no new rows
    before = len(client.search_runs([run.info.experiment_id]))
    again = CliRunner().invoke(amctl.app, ARGS)
    assert again.exit_code == 0
    assert json.loads(again.output[again.output.index("{"):])["reused"] is True
    assert len(client.search_runs([run.info.experiment_id])) == before


def test_two_worker_ddp_run_completes(ray_local, settings):
    launch = plan(Kind.RUN, {
        "mechanism": {"name": "gru", "d_model": 16},
        "task": {"name": "copy", "max_len": 4, "test_lens": [4]},
        "train": {"steps": 20, "batch_size": 8, "eval_every": 10, "log_every": 10, "eval_batches": 1,
                  "workers": 2, "device": "cpu"},
    })
    result = run_sweep(launch, settings)
    metrics = trial_metrics(settings, launch.name)
    assert result.status == "FINISHED", metrics
    assert metrics["step"] == 20 and "val/bit_errors" in metrics
    run = MlflowClient(settings.mlflow_uri).get_run(result.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert len(MlflowClient(settings.mlflow_uri).get_metric_history(result.mlflow_run_id, "train/loss")) == 2
    # both ranks' machine samples reached the driver through rank 0's reports (train._every_ranks_outbox)
    assert {"system/rank_0/cpu_utilization_percentage", "system/rank_1/cpu_utilization_percentage"} <= set(run.data.metrics)
    assert {a.path for a in MlflowClient(settings.mlflow_uri).list_artifacts(result.mlflow_run_id)} >= {"checkpoint", "dumps"}
    assert MlflowClient(settings.mlflow_uri).search_logged_models([run.info.experiment_id],
                                                                  filter_string=f"source_run_id = '{run.info.run_id}'")


def test_fresh_trains_again_with_a_new_history(ray_local, settings, monkeypatch):
    first = CliRunner().invoke(amctl.app, [*ARGS, "--set", "train.seed=3"])
    assert first.exit_code == 0, first.output
    old = json.loads(first.output[first.output.index("{"):])
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "my-runs")  # MLflow's own variable files a new run elsewhere
    again = CliRunner().invoke(amctl.app, [*ARGS, "--set", "train.seed=3", "--fresh"])
    assert again.exit_code == 0, again.output
    new = json.loads(again.output[again.output.index("{"):])
    assert new["name"] == old["name"] and not new["reused"] and new["mlflow_run_id"] != old["mlflow_run_id"]
    client = MlflowClient(settings.mlflow_uri)
    assert [m.step for m in client.get_metric_history(new["mlflow_run_id"], "train/loss")] == [10, 20, 30, 40]
    assert new["metrics"]["step"] == 40 and client.get_run(new["mlflow_run_id"]).info.status == "FINISHED"
    assert client.get_experiment(client.get_run(new["mlflow_run_id"]).info.experiment_id).name == "my-runs"
    with pytest.raises(Exception, match="not found|does not exist"):  # the old run went with --fresh
        client.get_run(old["mlflow_run_id"])
    with Store(settings.db_url).session() as s:
        trial = Store(settings.db_url).sweep(s, new["name"]).cells[0].trials
        assert len(trial) == 1 and trial[0].steps_done == 40 and trial[0].mlflow_run_id == new["mlflow_run_id"]


def test_a_diverging_run_fails_and_keeps_why(ray_local, settings):
    # the same run as test_train_loop's divergence check: it diverges within 60 steps
    sets = ["train.steps=60", "train.batch_size=8", "train.eval_every=20", "train.log_every=10", "train.eval_batches=1",
            "train.lr=10", "train.grad_clip=0", "train.optimizer=sgd", "mechanism.d_model=16", "task.max_len=4",
            "task.test_lens=[4,8]"]
    args = ["launch", "run", "-m", "lstm", "-t", "copy", *[x for s in sets for x in ("--set", s)], "--json"]
    res = CliRunner().invoke(amctl.app, args)
    assert res.exit_code == 1, res.output
    out = json.loads(res.stdout)  # stdout holds the JSON alone; the trial's traceback went to stderr (a job's log)
    assert out["status"] == "FAILED"
    assert "failed:" in res.stderr and "FloatingPointError: loss became" in res.stderr and "train.py" in res.stderr
    assert MlflowClient(settings.mlflow_uri).get_run(out["mlflow_run_id"]).info.status == "FAILED"
    (row,) = [t for c in json.loads(CliRunner().invoke(amctl.app, ["status", out["name"], "--json"]).output)[0]["cells"]
              for t in c["trials"]]
    assert row["status"] == "FAILED" and row["error"].startswith("FloatingPointError: loss became")
    assert "lower train.lr" in CliRunner().invoke(amctl.app, ["status", out["name"]]).output
