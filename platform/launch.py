"""Launching work: record it, start (or join) Ray, run it under Tune, close every record.

`launch_run` is the single-cell, single-trial path; sweeps use the same
pieces.  Validation has already happened in `spec.validate_run`; nothing here
runs for a rejected spec.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ray
from ray import tune

from amlab.platform import tracking
from amlab.platform.settings import Settings
from amlab.platform.spec import RunSpec
from amlab.platform.store import Cell, Store, Sweep, Trial
from amlab.platform.train import run_trial

DRIVER_CPU = 0.01  # a Tune trial that only drives a TorchTrainer; it cannot ask for 0


@dataclass
class RunResult:
    name: str
    status: str
    mlflow_run_id: str
    metrics: dict[str, Any]
    reused: bool = False


def ensure_ray(settings: Settings, address: str | None = None) -> None:
    """Start an embedded local Ray (or join `address`), passing the store locations to every worker."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the progress bar is ours; Tune's tables would interleave
    if ray.is_initialized():
        return
    env = {"AMCTL_HOME": str(settings.home), "MLFLOW_TRACKING_URI": settings.mlflow_uri,
           "AMCTL_DB_URL": settings.db_url, "AMCTL_OPTUNA_URL": settings.optuna_url}
    ray.init(address=address, log_to_driver=False, logging_level="ERROR", runtime_env={"env_vars": env})


def cluster_cpus() -> float:
    return float(ray.cluster_resources().get("CPU", 1))


def node_cpus() -> float:
    """CPUs of the largest alive node: the most one single-process trial can hold (bundles never span nodes)."""
    return max((float(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n["Alive"]), default=1.0) or 1.0


def ddp_cpus_per_worker(workers: int, cap: float = 1.0) -> float:
    """CPUs per Train worker so that `workers` of them fit beside the trial driver's sliver (2 cores: 0.99 each)."""
    return min(cap, math.floor((cluster_cpus() - DRIVER_CPU) / workers * 100) / 100)


def run_name(spec: RunSpec) -> str:
    return f"{spec.mechanism.name}-{spec.task.name}-{spec.config_hash()[:8]}"


def launch_run(
    spec: RunSpec,
    settings: Settings,
    *,
    address: str | None = None,
    on_progress: Callable[[int, int, dict[str, Any]], None] | None = None,
    fresh: bool = False,
) -> RunResult:
    """Train one spec as a one-trial Tune experiment; a finished identical run is reused unless `fresh`."""
    store = Store(settings.db_url)
    name = run_name(spec)
    normalised = spec.normalised()
    client = tracking.client(settings)
    with store.session() as s:
        sweep = store.sweep(s, name)
        if sweep is not None and fresh:
            s.delete(sweep)
            s.flush()
            sweep = None
        if sweep is not None and sweep.status == "FINISHED":
            trial = sweep.cells[0].trials[0]
            return RunResult(name, "FINISHED", sweep.mlflow_run_id, trial.metrics or {}, reused=True)
        if sweep is None:
            exp = tracking.experiment_id(client, settings)
            tags = {"amctl.kind": "run", "mechanism": spec.mechanism.name, "task": spec.task.name,
                    "seed": str(spec.train.seed), "config_hash": spec.config_hash(), "code_version": tracking.code_version()}
            run_id = tracking.start_run(client, exp, name, normalised, tags)
            client.log_dict(run_id, normalised, "spec.yaml")
            sweep = Sweep(name=name, kind="run", spec=normalised, config_hash=spec.config_hash(), mlflow_run_id=run_id)
            cell = Cell(mechanism=spec.mechanism.name, task=spec.task.name, config_hash=spec.config_hash(),
                        spec=normalised, mlflow_run_id=run_id)
            trial = Trial(trial_key="0", seed=spec.train.seed, config=normalised, config_hash=spec.config_hash(),
                          mlflow_run_id=run_id)
            cell.trials.append(trial)
            sweep.cells.append(cell)
            s.add(sweep)
        cell, trial = sweep.cells[0], sweep.cells[0].trials[0]
        for obj in (sweep, cell, trial):
            store.set_status(s, obj, "RUNNING")
        s.commit()
    client.update_run(sweep.mlflow_run_id, status="RUNNING")

    ensure_ray(settings, address)
    workers = spec.train.workers
    node = max(1, int(node_cpus()))
    config = {
        "spec": normalised,
        "tracking": {"tracking_uri": settings.mlflow_uri, "run_id": sweep.mlflow_run_id},
        "storage_path": settings.ray_storage,
        # one worker takes a whole node; DDP workers up to a core each beside the trial driver's sliver
        "threads": node if workers == 1 else 1,
        "cpus_per_worker": ddp_cpus_per_worker(workers),
        "gpus_per_worker": 1 if spec.train.device == "cuda" else 0,
    }
    resources = {"cpu": node, "gpu": config["gpus_per_worker"]} if workers == 1 else {"cpu": DRIVER_CPU}
    path = os.path.join(settings.ray_storage, name)
    trainable = tune.with_resources(run_trial, resources)
    callbacks = [_ProgressCallback(spec.train.steps, on_progress)] if on_progress else []
    if tune.Tuner.can_restore(path):
        tuner = tune.Tuner.restore(path, trainable, resume_errored=True, param_space=config)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=config,
            tune_config=tune.TuneConfig(num_samples=1),
            run_config=tune.RunConfig(
                name=name, storage_path=settings.ray_storage, verbose=0, callbacks=callbacks,
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            ),
        )
    status, metrics = "FAILED", {}
    try:
        results = tuner.fit()
        result = results[0]
        metrics = {k: v for k, v in (result.metrics or {}).items() if "/" in k or k == "step"}
        # an interrupted Tune run (SIGINT, e.g. `amctl cancel` of a Ray job) returns normally, short of the last step
        status = "FAILED" if result.error else "FINISHED" if metrics.get("step") == spec.train.steps else "KILLED"
        if result.error:
            metrics["error"] = str(result.error).strip().splitlines()[-1][:500]
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        finish(store, client, name, status, metrics)
    return RunResult(name, status, sweep.mlflow_run_id, metrics)


def finish(store: Store, client, name: str, status: str, metrics: dict[str, Any]) -> None:
    """Close the store rows and the MLflow run with one terminal status."""
    with store.session() as s:
        sweep = store.sweep(s, name)
        for cell in sweep.cells:
            for trial in cell.trials:
                trial.metrics = metrics
                trial.steps_done = int(metrics.get("step", trial.steps_done))
                store.set_status(s, trial, status)
            store.set_status(s, cell, status)
        store.set_status(s, sweep, status)
        s.commit()
    client.set_terminated(sweep.mlflow_run_id, status=status)


class _ProgressCallback(tune.Callback):
    """Tune callback on the driver: forwards each trial report's step to a progress display."""

    def __init__(self, total: int, fn: Callable[[int, int, dict[str, Any]], None]):
        self.total, self.fn = total, fn

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if self.fn is not None:
            self.fn(int(result.get("step", 0)), self.total, result)

    def __getstate__(self):  # Tune pickles its callbacks with the experiment state; the display stays behind
        return {"total": self.total, "fn": None}
