"""A tracked trial's MLflow run, without Ray: its reports, delivered as the driver delivers them (platform/outbox.py),
give a model that loads back by URI and system metrics; the run is left RUNNING for the driver to close, a
restarted trial's steps are logged once, and deleting the run deletes its model."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import mlflow.pytorch
import pytest
import torch
from mlflow import MlflowClient
from torch import nn

from amlab.platform import outbox, tracking
from amlab.platform.sessions import CHECKPOINT, LocalSession
from amlab.platform.spec import validate_run
from amlab.platform.train import evaluate, train_loop
from amlab.platform.trial import Placement, TrialConfig
from amlab.workloads.registry import TASKS

SPEC = validate_run({
    "mechanism": {"name": "lstm", "d_model": 16},
    "task": {"name": "copy", "max_len": 4, "test_lens": [4, 8]},
    "train": {"steps": 40, "batch_size": 8, "eval_every": 20, "log_every": 10, "eval_batches": 1},
})


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """(client, experiment id): one SQLite store for the module (creating MLflow's schema takes seconds)."""
    folder = tmp_path_factory.mktemp("mlflow")
    c = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    return c, c.create_experiment(tracking.RUNS_EXPERIMENT, artifact_location=(folder / "artifacts").as_uri())


@pytest.fixture
def tracked(store, tmp_path, monkeypatch):
    """(client, run id): a run created as the driver creates a trial's."""
    c, exp = store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", c.tracking_uri)  # as a user loading the model has it (runs:/ URIs)
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")  # the model is pickled (tracking.log_model)
    monkeypatch.setattr(outbox, "SYSTEM_INTERVAL_S", 0.05)  # a few samples within a trial of a second
    return c, tracking.start_run(c, exp, "trial", SPEC.normalised(), {})


def deliver(c, run_id: str, reports: list[dict]) -> list[dict]:
    """What the driver's Bookkeeper does with each report of the trial; the reports as Tune then keeps them."""
    deliveries = tracking.Deliveries(c, c.tracking_uri)
    for report in reports:
        deliveries.take(run_id, report)
    return reports


def test_the_trained_model_loads_by_run_uri_and_scores_what_the_run_logged(tracked, tmp_path):
    c, run_id = tracked
    session = LocalSession()
    storage = tmp_path / "ray"
    train_loop(TrialConfig(spec=SPEC, run_id=run_id, storage_path=str(storage), placement=Placement(threads=1)), session)
    assert any(outbox.KEY in r for r in session.reports) and outbox.FINAL in session.reports[-1]
    kept = deliver(c, run_id, session.reports)
    assert not any(outbox.KEY in r or outbox.FINAL in r for r in kept), "what Tune keeps carries no MLflow payload"
    assert not any(storage.rglob("*.pt")), "the final folder is removed once the driver logged it"

    loaded = mlflow.pytorch.load_model(f"runs:/{run_id}/{tracking.MODEL}")
    assert isinstance(loaded, nn.Module)
    state = torch.load(c.download_artifacts(run_id, f"checkpoint/{CHECKPOINT}", str(tmp_path)), weights_only=False)
    weights = loaded.state_dict()
    assert weights.keys() == state["model"].keys() and state["step"] == SPEC.train.steps
    assert all(torch.equal(weights[k], v) for k, v in state["model"].items())

    task = TASKS.get(SPEC.task.name).build(SPEC.task_params())
    scores = evaluate(loaded, task, SPEC, "test", torch.device("cpu"))
    logged = {m.step: m.value for m in c.get_metric_history(run_id, "test/bit_errors")}
    assert scores["test/bit_errors"] == logged[SPEC.train.steps] == session.reports[-1]["test/bit_errors"]
    assert sorted(m.step for m in c.get_metric_history(run_id, "train/loss")) == [10, 20, 30, 40]

    run = c.get_run(run_id)
    assert run.info.status == "RUNNING"  # the driver closes a trial's run, not the trial
    assert run.data.tags["params_count"] == str(sum(p.numel() for p in loaded.parameters()))
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= set(run.data.metrics)
    assert not any(t.name == "amctl-system-metrics" for t in threading.enumerate())


def test_a_trial_restored_after_its_last_evaluation_reports_its_result_and_final_folder_again(tracked, tmp_path):
    """Its driver killed after the last evaluation's checkpoint registered, before the final folder was logged:
    restored at its last step, the trial trains nothing, measures again (evaluation is seeded) and stages it again."""
    c, run_id = tracked
    config = TrialConfig(spec=SPEC, run_id=run_id, storage_path=str(tmp_path / "ray"), placement=Placement(threads=1))
    first = LocalSession(tmp_path / "checkpoint")
    train_loop(config, first)
    again = LocalSession(tmp_path / "checkpoint")  # restores the last checkpoint: step 40 of 40
    train_loop(config, again)
    [report] = again.reports
    measured = {k: v for k, v in first.reports[-1].items() if k.startswith(("val/", "test/", "objective"))}
    assert measured and {k: report[k] for k in measured} == measured
    deliver(c, run_id, again.reports)
    assert mlflow.pytorch.load_model(f"runs:/{run_id}/{tracking.MODEL}") is not None


def test_a_restarted_trials_steps_are_logged_once_and_its_machine_samples_all_kept(tracked):
    c, run_id = tracked
    first = [{outbox.KEY: [outbox.Item("train/loss", 1.0, 1, 10), outbox.Item("train/loss", 0.9, 2, 20),
                           outbox.Item("system/cpu_utilization_percentage", 50.0, 3, 20)]}]
    deliver(c, run_id, first)
    # restarted from its step-10 checkpoint, by this driver and by a new one (which reads how far the run got)
    again = {outbox.KEY: [outbox.Item("train/loss", 0.7, 4, 20), outbox.Item("train/loss", 0.5, 5, 30),
                          outbox.Item("system/cpu_utilization_percentage", 60.0, 6, 20)]}
    deliveries = tracking.Deliveries(c, c.tracking_uri)
    deliveries.take(run_id, dict(again))
    deliveries.take(run_id, {outbox.KEY: [outbox.Item("train/loss", 0.4, 7, 30)]})  # the same driver, again
    assert [(m.step, m.value) for m in c.get_metric_history(run_id, "train/loss")] == [(10, 1.0), (20, 0.9), (30, 0.5)]
    assert [m.value for m in c.get_metric_history(run_id, "system/cpu_utilization_percentage")] == [50.0, 60.0]


def test_system_samples_carry_the_rank_and_stop_when_the_block_fails(monkeypatch):
    monkeypatch.setattr(outbox, "SYSTEM_INTERVAL_S", 0.05)
    box = outbox.Outbox()
    with pytest.raises(RuntimeError, match="diverged"), outbox.SystemSampler(box, "rank_1"):
        time.sleep(0.3)
        raise RuntimeError("the trial diverged")
    assert not any(t.name == "amctl-system-metrics" for t in threading.enumerate())
    items = box.attach({})[outbox.KEY]
    keys = {i.key for i in items}
    assert "system/rank_1/cpu_utilization_percentage" in keys and all(k.startswith("system/rank_1/") for k in keys)
    assert box.attach({"x": 1}) == {"x": 1}, "attaching takes the items out of the outbox"
    # samples at one step never share a millisecond (MLflow refuses two values of a metric at one time and step
    # when it links the model to the run's metrics at its last step)
    sampler = outbox.SystemSampler(box, None)
    for _ in range(3):
        sampler.record()
    times = [i.timestamp_ms for i in box.attach({})[outbox.KEY] if i.key == "system/cpu_utilization_percentage"]
    assert len(times) == 3 and times[0] < times[1] < times[2]


def test_deleting_a_run_deletes_its_model(tracked, monkeypatch):
    c, run_id = tracked
    monkeypatch.delenv("MLFLOW_TRACKING_URI")  # a driver's process that names no store (its settings do)
    tracking.log_model(c, c.tracking_uri, run_id, nn.Linear(2, 2), step=0)
    # MLflow's process-wide URI, and the variable child processes inherit, pointed at the run's store and put back
    assert "MLFLOW_TRACKING_URI" not in os.environ and mlflow.get_tracking_uri() != c.tracking_uri
    exp, mine = c.get_run(run_id).info.experiment_id, f"source_run_id = '{run_id}'"
    [model] = c.search_logged_models([exp], filter_string=mine)
    folder = Path(model.artifact_location.removeprefix("file://"))
    assert (folder / "MLmodel").exists()
    tracking.hard_delete_runs(c, [run_id])
    assert not c.search_logged_models([exp], filter_string=mine)
    assert not folder.exists()


def test_runs_carry_the_standard_context_tags_and_cells_their_result(store, tmp_path):
    """What the stock MLflow UI reads: Source, Version and User, the classic runs view, and a cell's numbers."""
    from amlab.platform.settings import Settings

    c, _ = store
    settings = Settings(home=tmp_path, db_url="", mlflow_uri=c.tracking_uri, artifacts=(tmp_path / "a").as_uri(),
                        optuna_url="", ray_storage="")
    exp = tracking.experiment_id(c, settings, "tags-check")
    assert c.get_experiment(exp).tags[tracking.KIND_TAG] == "custom_model_development"
    run = c.get_run(tracking.start_run(c, exp, "cell", {}, {"amctl.kind": "cell"}))
    tags = run.data.tags
    assert tags["mlflow.source.name"] == "amctl" and tags["mlflow.user"] and tags["amctl.kind"] == "cell"
    assert len(tags["mlflow.source.git.commit"]) == 40 and tracking.code_version().endswith(
        tags["mlflow.source.git.commit"][:7])
    tracking.log_cell(c, run.info.run_id, "test/accuracy", "accuracy", {"0": 0.9, "1": 0.95, "2": 1.0},
                      {"train.lr": 0.003})
    got = c.get_run(run.info.run_id).data
    assert got.metrics["test/accuracy/median"] == 0.95 and got.metrics["test/accuracy/seed_1"] == 0.95
    assert got.metrics["test/accuracy/n_seeds"] == 3 and got.metrics["test/accuracy/ci_high"] == 1.0  # cut at 100 %
    assert got.metrics["test/accuracy/ci_low"] < 0.95 and got.params["best.train.lr"] == "0.003"
