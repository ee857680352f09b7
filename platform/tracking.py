"""MLflow: explicit tracking URIs (never the working directory), experiments, runs, batched metric logging."""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from amlab.platform.settings import Settings

EXPERIMENT = "amctl"
for _name in ("mlflow", "alembic"):  # schema-creation notices would break into amctl's progress display
    logging.getLogger(_name).setLevel(logging.WARNING)


def code_version() -> str:
    """amctl's version plus the git commit of the checkout it runs from, when there is one."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        v = version("amctl")
    except PackageNotFoundError:
        v = "0+unknown"
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).resolve().parent,
            capture_output=True, text=True, timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{v}+g{sha}" if sha else v


def client(settings: Settings) -> MlflowClient:
    return MlflowClient(tracking_uri=settings.mlflow_uri)


def experiment_id(c: MlflowClient, settings: Settings, name: str = EXPERIMENT) -> str:
    """Create the experiment once, on the driver, before any trial starts (avoids SQLite migration races)."""
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    return c.create_experiment(name, artifact_location=f"{settings.artifacts}/{name}")


def start_run(
    c: MlflowClient, exp_id: str, name: str, params: dict[str, Any], tags: dict[str, str], parent: str | None = None
) -> str:
    tags = {**tags, **({"mlflow.parentRunId": parent} if parent else {})}
    run = c.create_run(exp_id, run_name=name, tags=tags)
    items = [Param(k, str(v)[:6000]) for k, v in flatten(params).items()]
    for i in range(0, len(items), 100):
        c.log_batch(run.info.run_id, params=items[i : i + 100])
    return run.info.run_id


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


class RunLogger:
    """Metric and artifact logging into an existing run, from inside a trial (rank 0).

    Metrics are buffered and sent with `flush()` in one `log_batch`.  On a
    resumed trial, steps already logged before the interruption are skipped,
    so nothing is logged twice.
    """

    def __init__(self, tracking_uri: str, run_id: str):
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.run_id = run_id
        self._buffer: list[Metric] = []
        history = self.client.get_metric_history(run_id, "train/loss")
        self.logged_upto = max((m.step for m in history), default=-1)

    def log(self, metrics: dict[str, float], step: int, timestamp_ms: int) -> None:
        if step > self.logged_upto:
            self._buffer += [Metric(k, float(v), timestamp_ms, step) for k, v in metrics.items()]

    def flush(self) -> None:
        for i in range(0, len(self._buffer), 500):
            self.client.log_batch(self.run_id, metrics=self._buffer[i : i + 500])
        self._buffer.clear()

    def tag(self, **tags: str) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def artifacts(self, local_dir: str | os.PathLike, path: str) -> None:
        self.client.log_artifacts(self.run_id, str(local_dir), path)


def hard_delete_runs(c: MlflowClient, run_ids: list[str]) -> None:
    """Delete runs with their artifacts for good, as `mlflow gc` does; a tracking server only soft-deletes them."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    store = c._tracking_client.store  # the backend store: hard deletion is not part of the public client
    for run_id in run_ids:
        try:
            run = c.get_run(run_id)
        except Exception:  # already gone
            continue
        if not hasattr(store, "_hard_delete_run"):
            c.delete_run(run_id)
            continue
        get_artifact_repository(run.info.artifact_uri).delete_artifacts()
        store._hard_delete_run(run_id)
