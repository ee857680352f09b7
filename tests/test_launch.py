"""`amctl launch run` end to end on the session's real local Ray: MLflow run, artifacts, store rows, DDP."""

from __future__ import annotations

import json

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

import amctl
from amlab.platform.launch import launch_run
from amlab.platform.spec import validate_run
from amlab.platform.store import Store

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
    assert run.data.tags["mechanism"] == "lstm" and run.data.tags["task"] == "copy" and run.data.tags["seed"] == "0"
    assert run.data.tags["code_version"].startswith("0.1.0")
    assert int(run.data.tags["params_count"]) > 0 and run.data.tags["state_size"] == str(2 * 16)
    assert run.data.params["mechanism.d_model"] == "16" and run.data.params["train.steps"] == "40"
    losses = client.get_metric_history(run.info.run_id, "train/loss")
    assert [m.step for m in losses] == [10, 20, 30, 40]
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
        assert [t.new for t in store.transitions(s, "trial", trial.id)] == ["RUNNING", "FINISHED"]

    # an identical launch reuses the finished run: no new MLflow run, no new rows
    before = len(client.search_runs([run.info.experiment_id]))
    again = CliRunner().invoke(amctl.app, ARGS)
    assert again.exit_code == 0
    assert json.loads(again.output[again.output.index("{"):])["reused"] is True
    assert len(client.search_runs([run.info.experiment_id])) == before


def test_two_worker_ddp_run_completes(ray_local, settings):
    spec = validate_run({
        "mechanism": {"name": "gru", "d_model": 16},
        "task": {"name": "copy", "max_len": 4, "test_lens": [4]},
        "train": {"steps": 20, "batch_size": 8, "eval_every": 10, "log_every": 10, "eval_batches": 1,
                  "workers": 2, "device": "cpu"},
    })
    result = launch_run(spec, settings)
    assert result.status == "FINISHED", result.metrics.get("error")
    assert result.metrics["step"] == 20 and "val/bit_errors" in result.metrics
    run = MlflowClient(settings.mlflow_uri).get_run(result.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert len(MlflowClient(settings.mlflow_uri).get_metric_history(result.mlflow_run_id, "train/loss")) == 2
