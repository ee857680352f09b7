"""MLflow: explicit tracking URIs (never the working directory), experiments, runs, batched metric logging."""

from __future__ import annotations

import functools
import logging
import os
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from amlab.platform import schema_cache
from amlab.platform.locks import first_use
from amlab.platform.outbox import FINAL, FINAL_CHECKPOINT, FINAL_DUMPS, FINAL_MODEL, KEY, SYSTEM, Item
from amlab.platform.settings import Settings
from amlab.platform.status import STEP, TRAIN_LOSS, Kind

if TYPE_CHECKING:
    from torch import nn

RUNS_EXPERIMENT = "amctl"  # single runs' experiment unless MLFLOW_EXPERIMENT_NAME names another; a sweep has its own
KIND_TAG, KIND = "mlflow.experimentKind", "custom_model_development"  # MLflow 3's UI opens the classic runs view
MODEL = "model"  # a trial's trained model: mlflow.pytorch.load_model(f"runs:/{run_id}/model")
for _name in ("mlflow", "alembic"):  # schema-creation notices would break into amctl's progress display
    logging.getLogger(_name).setLevel(logging.WARNING)
logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)  # its warning on every pickled model: chosen (log_model)


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=Path(__file__).resolve().parent, capture_output=True, text=True,
                              timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


@functools.cache
def context_tags() -> dict[str, str]:
    """The tags MLflow's fluent API resolves for a run and `MlflowClient.create_run` does not: the UI's Source,
    Version and User columns read them."""
    import getpass

    tags = {"mlflow.source.name": "amctl", "mlflow.source.type": "LOCAL", "mlflow.user": getpass.getuser()}
    if sha := _git("rev-parse", "HEAD"):
        tags["mlflow.source.git.commit"] = sha
    return tags


def code_version() -> str:
    """amctl's version plus the git commit of the checkout it runs from, when there is one."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        v = version("amctl")
    except PackageNotFoundError:
        v = "0+unknown"
    sha = _git("rev-parse", "--short", "HEAD")
    return f"{v}+g{sha}" if sha else v


def client(settings: Settings) -> MlflowClient:
    """A client whose database exists: created on first use, under the lock (platform/locks.py); a fresh SQLite
    database starts as a copy of the cached migrated schema (platform/schema_cache.py)."""
    with first_use(settings.mlflow_uri):  # the constructor opens the store (and creates or migrates it)
        schema_cache.seed(settings.mlflow_uri)
        return MlflowClient(tracking_uri=settings.mlflow_uri)


def experiment_name(kind: Kind, sweep: str, configured: str | None = None) -> str:
    """A sweep's experiment: its spec's `experiment`, else its name; single runs share MLFLOW_EXPERIMENT_NAME's
    (MLflow's own variable), else `amctl`.  Only a new launch reads this: a relaunch stays where it was recorded."""
    if kind is Kind.SWEEP:
        return configured or sweep
    return os.environ.get("MLFLOW_EXPERIMENT_NAME") or RUNS_EXPERIMENT


def experiment_id(c: MlflowClient, settings: Settings, name: str) -> str:
    """Create the experiment once, on the driver, before any trial starts (avoids SQLite migration races)."""
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        if exp.tags.get(KIND_TAG) != KIND:
            c.set_experiment_tag(exp.experiment_id, KIND_TAG, KIND)
        return exp.experiment_id
    where = f"{settings.artifacts}/{name}" if settings.artifacts else None  # None: the tracking server's location
    return c.create_experiment(name, artifact_location=where, tags={KIND_TAG: KIND})


def start_run(
    c: MlflowClient, exp_id: str, name: str, params: dict[str, Any], tags: dict[str, str], parent: str | None = None
) -> str:
    tags = {**context_tags(), **tags, **({"mlflow.parentRunId": parent} if parent else {})}
    run = c.create_run(exp_id, run_name=name, tags=tags)
    items = [Param(k, str(v)[:6000]) for k, v in flatten(params).items()]
    for i in range(0, len(items), 100):
        c.log_batch(run.info.run_id, params=items[i : i + 100])
    return run.info.run_id


def log_cell(c: MlflowClient, run_id: str, key: str, metric: str, per_seed: dict[str, float | None],
             best_params: dict[str, Any] | None) -> None:
    """A cell run's result where MLflow users look: the median, mean and its 95 % t-interval over seeds (the
    report's numbers, platform/stats.py), each seed's value, and the chosen configuration as params."""
    import time

    from amlab.platform import stats

    values = stats.finite(list(per_seed.values()))
    found = {f"{key}/median": stats.median(values), f"{key}/mean": sum(values) / len(values) if values else None,
             f"{key}/n_seeds": len(values), **{f"{key}/seed_{s}": v for s, v in per_seed.items()}}
    if (interval := stats.mean_interval(values, metric=metric)) is not None:
        found |= {f"{key}/ci_low": interval.low, f"{key}/ci_high": interval.high}
    now = int(time.time() * 1000)
    c.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in found.items() if v is not None],
                params=[Param(f"best.{k}", str(v)) for k, v in (best_params or {}).items()])


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


class Deliveries:
    """The driver's side of platform/outbox.py: what trials report for MLflow, written into their runs.

    A restarted trial reports again the steps after its checkpoint; those its run already holds are skipped (the
    first delivery to a run in this process reads how far it got), so nothing is logged twice.  Its machine
    samples are a series of their own and always kept.
    """

    def __init__(self, client: MlflowClient, tracking_uri: str):
        self.client, self.tracking_uri = client, tracking_uri
        self._logged_upto: dict[str, int] = {}

    def take(self, run_id: str, result: dict) -> None:
        """Write what `result` (a trial's report) carries for MLflow into `run_id`, and take it out of `result`."""
        if items := result.pop(KEY, None):
            self.items(run_id, items)
        if where := result.pop(FINAL, None):
            self.final(run_id, where, int(result[STEP]))

    def items(self, run_id: str, items: list[Item]) -> None:
        if run_id not in self._logged_upto:
            history = self.client.get_metric_history(run_id, TRAIN_LOSS)
            self._logged_upto[run_id] = max((m.step for m in history), default=-1)
        upto = self._logged_upto[run_id]
        metrics = [Metric(i.key, i.value, i.timestamp_ms, i.step) for i in items
                   if not i.is_tag and (i.step > upto or i.key.startswith(SYSTEM))]
        tags = [RunTag(i.key, i.value) for i in items if i.is_tag]
        if tags:
            self.client.log_batch(run_id, tags=tags)
        for start in range(0, len(metrics), 500):
            self.client.log_batch(run_id, metrics=metrics[start : start + 500])
        self._logged_upto[run_id] = max([upto, *(m.step for m in metrics if not m.key.startswith(SYSTEM))])

    def final(self, run_id: str, where: str, step: int) -> None:
        """A trial's final folder on storage (outbox.FINAL): its checkpoint and dumps as artifacts, its model as the
        run's MLflow model; the folder is removed once logged."""
        import torch

        from amlab.platform import storage

        with storage.local_folder(where) as folder:
            self.client.log_artifacts(run_id, str(folder / FINAL_CHECKPOINT), "checkpoint")
            if (folder / FINAL_DUMPS).is_dir():
                self.client.log_artifacts(run_id, str(folder / FINAL_DUMPS), "dumps")
            log_model(self.client, self.tracking_uri, run_id, torch.load(folder / FINAL_MODEL, weights_only=False), step)
        storage.remove(where)


_prepared: threading.Thread | None = None  # prepare_model_logging's thread, once per process


def prepare_model_logging() -> None:
    """Do ahead, on a thread, what a process's first log_model spends most of its second on: importing
    mlflow.pytorch, and MLflow's map of every installed distribution to its modules, which log_model reads to
    check the requirements it records against this environment (reading each distribution's RECORD file).

    Called as a sweep's trials start: the driver mostly waits while their workers boot and train, so that work
    no longer sits between a trial's last report and the launch's end.  log_model waits for it.
    """
    global _prepared
    if _prepared is None:
        def prepare() -> None:
            import mlflow.pytorch  # noqa: F401
            from mlflow.utils import requirements_utils

            requirements_utils._init_packages_to_modules_map()  # MLflow's cache of it for this process

        _prepared = threading.Thread(target=prepare, name="amctl-mlflow-prepare", daemon=True)
        _prepared.start()


def log_model(c: MlflowClient, tracking_uri: str, run_id: str, module: nn.Module, step: int) -> None:
    """Log `module` as the run's MLflow model `MODEL`, linked to the metrics logged at `step`.

    Pickled, not MLflow's default pt2: torch.export fails on some mechanisms (the mixers' data-dependent
    offsets) and takes up to ~45 s on others, where pickling takes milliseconds and loads back amctl's own
    module class; loading it therefore needs MLFLOW_ALLOW_PICKLE_DESERIALIZATION=true.  The pickle names
    the classes in `amlab.workloads`, so the loader needs amctl installed, which is also why there are
    no code_paths (they cannot recreate the `amlab.` package names).  Requirements are given, not
    inferred: inference loads the model again in a subprocess.

    The LoggedModel is created here, in the run's experiment: given only a run id, log_model files it
    under the Default experiment, whose artifacts land in the working directory, and `runs:/` URIs look
    for it in the run's experiment.  log_model still reads MLflow's process-wide tracking URI (it takes
    no client), so that points at this run's store while it runs (`process_tracking_uri`).
    """
    from importlib.metadata import version

    import mlflow
    import mlflow.pytorch
    import torch

    if _prepared is not None:
        _prepared.join()
    run = c.get_run(run_id)
    logged = c.create_logged_model(run.info.experiment_id, name=MODEL, source_run_id=run_id, params=run.data.params)
    with process_tracking_uri(tracking_uri):
        mlflow.pytorch.log_model(module, name=MODEL, model_id=logged.model_id, run_id=run_id, step=step,
                                 serialization_format="pickle",
                                 pip_requirements=[f"amctl=={version('amctl')}", f"torch=={torch.__version__}"])


@contextmanager
def process_tracking_uri(uri: str) -> Iterator[None]:
    """MLflow's process-wide tracking URI set for the block, then put back, with the MLFLOW_TRACKING_URI that
    `mlflow.set_tracking_uri` also exports: a driver (the resident serves many environments; tests run sweeps in
    one process) must not hand later commands and their child processes another store."""
    import mlflow
    from mlflow.tracking._tracking_service import utils

    before, exported = utils._tracking_uri, os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        utils._tracking_uri = before
        if exported is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = exported


def hard_delete_runs(c: MlflowClient, run_ids: list[str]) -> None:
    """Delete runs with their artifacts for good, as `mlflow gc` does; a tracking server only soft-deletes them."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    store = c._tracking_client.store  # the backend store: hard deletion is not part of the public client
    for run_id in run_ids:
        try:
            run = c.get_run(run_id)
        except Exception:  # already gone
            continue
        # its logged models (the trained model) keep their artifacts beside the experiment's runs, not in the run's
        models = c.search_logged_models([run.info.experiment_id], filter_string=f"source_run_id = '{run_id}'")
        if not hasattr(store, "_hard_delete_run"):
            for model in models:
                c.delete_logged_model(model.model_id)
            c.delete_run(run_id)
            continue
        for model in models:
            get_artifact_repository(model.artifact_location).delete_artifacts()
            store._hard_delete_logged_model(model.model_id)
        get_artifact_repository(run.info.artifact_uri).delete_artifacts()
        store._hard_delete_run(run_id)
