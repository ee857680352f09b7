"""run_sweep: one Tune run for every pending cell of a launch (a sweep, or a single run as a one-cell sweep).

The pieces it assembles each live in their own module: records (store and
MLflow), resources (placement and concurrency), search (searcher and
scheduler), callbacks (bookkeeping, cancel, progress) and trial (the typed
config the loop receives).  All cells share one Tune run, so cells run
concurrently whenever the cluster has room.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass

from ray import tune
from ray.tune.execution import class_cache

from amlab.platform import errors, lease, ray_runtime, records, resources, storage, tracking
from amlab.platform.callbacks import Bookkeeper, CancelStopper, Display, Progress, attach_display
from amlab.platform.launch import Launch
from amlab.platform.records import SweepContext
from amlab.platform.search import CellScheduler, CellSearcher
from amlab.platform.settings import Settings
from amlab.platform.spec import config_hash
from amlab.platform.status import Kind, Status
from amlab.platform.store import Store
from amlab.platform.sweep_spec import CellPlan
from amlab.platform.train import run_trial


@dataclass
class SweepOutcome:
    name: str
    kind: Kind
    status: Status
    mlflow_run_id: str
    skipped: list[str]  # cell keys already finished (same config hash)
    ran: list[str]
    concurrency: int = 0


def tune_storage(settings: Settings, name: str) -> str:
    """The sweep's own folder of Tune experiments (one per set of pending cells); `delete` removes it whole."""
    return storage.join(settings.ray_storage, name)


def run_sweep(
    launch: Launch,
    settings: Settings,
    *,
    address: str | None = None,
    extend: bool = False,
    display: Display | None = None,
    on_plan: Callable[[list[CellPlan], int, int], None] | None = None,
    release_ray: bool = False,
) -> SweepOutcome:
    """Run (or resume) a launch; finished cells (same config hash) are skipped and a finished sweep is not touched.

    `release_ray`: this process needs Ray no more once the trials are over (the CLI exits after its launch), so
    Ray's teardown starts then, while the records are finalised and the report published.
    """
    resources.check_local_devices(launch.resources.gpus_per_worker, address)
    ctx, pending = records.open_launch(launch, settings, extend=extend)
    skipped = [c.key for c in launch.cells if c not in pending]
    if not pending:
        with ctx.store.session() as s:
            status = Status(ctx.store.sweep(s, launch.name).status)
        if status != Status.FINISHED:  # e.g. killed after its last cell finished
            status = records.finalize(ctx, launch.cells)
        errors.release_interrupts()
        return SweepOutcome(launch.name, launch.kind, status, ctx.sweep_run_id, skipped, [])

    with lease.Heartbeat(ctx.store, launch.name):  # open_launch took the lease: fresh until the records are final
        interrupted, concurrency = False, 0
        try:  # Ray's start-up included: Ctrl-C at any moment ends in finalize, exit 130
            errors.release_interrupts()  # a Ctrl-C held since the launch began is raised here
            concurrency = _tune(launch, ctx, pending, settings, address, display, on_plan)
        except KeyboardInterrupt:
            interrupted = True
        finally:  # whatever happened, no record stays RUNNING
            if release_ray:
                ray_runtime.stop_ray(wait=False)
            status = records.finalize(ctx, launch.cells, interrupted=interrupted)
    if launch.kind is Kind.SWEEP:
        publish_report(ctx)
    return SweepOutcome(launch.name, launch.kind, status, ctx.sweep_run_id, skipped, [c.key for c in pending],
                        concurrency)


def _tune(launch: Launch, ctx: SweepContext, pending: list[CellPlan], settings: Settings, address: str | None,
          display: Display | None, on_plan: Callable[[list[CellPlan], int, int], None] | None) -> int:
    """Start (or join) Ray, place the trials and run (or restore) the Tune experiment; returns the concurrency."""
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", storage.sync_period(settings.ray_storage))
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")  # `objective` comes with evaluations only
    # no result.json, progress.csv or TensorBoard file per trial: the store and MLflow keep the results, nothing
    # reads those (resuming reads the experiment state), and the driver wrote all three on every report
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    # Tune gives every trial actor PL_DISABLE_FORK (for PyTorch Lightning, unused here); with no runtime env at
    # all, Ray hands a trial's actor a prestarted worker, its modules already imported (local_cluster.PRELOADED)
    class_cache.DEFAULT_ENV_VARS.pop("PL_DISABLE_FORK", None)
    ray_runtime.ensure_ray(settings, address)
    total = sum(c.trials for c in pending)
    shape = resources.cluster_shape()
    plan = resources.plan(launch.resources, total, shape)  # before any trial: a sweep that can never fit fails here
    records.start(ctx, pending)
    if on_plan:
        on_plan(pending, total, plan.concurrency)
    root = tune_storage(settings, launch.name)
    path = storage.join(root, config_hash(sorted(c.config_hash for c in pending))[:12])
    trainable = tune.with_resources(run_trial, plan.request)
    if tune.Tuner.can_restore(path) and not records.has_trials(ctx, pending):
        storage.remove(path)  # left by a store since replaced (e.g. a corrupted one moved aside): resume nothing from it
    if tune.Tuner.can_restore(path):
        tuner = tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=True)
        attach_display(tuner, display)
    else:
        searcher = CellSearcher(pending, ctx, plan.placement, root)
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(search_alg=searcher, scheduler=CellScheduler(pending), num_samples=total,
                                        max_concurrent_trials=plan.concurrency,
                                        reuse_actors=True),  # a fresh process per trial costs seconds
            run_config=tune.RunConfig(name=os.path.basename(path), storage_path=root, verbose=0,
                                      callbacks=[Bookkeeper(ctx), Progress(display)], stop=CancelStopper(ctx),
                                      checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                                      failure_config=tune.FailureConfig(max_failures=launch.resources.max_failures)),
        )
    resources.request(plan, shape)  # under an autoscaler: the nodes for `concurrency` trials, at once
    tracking.prepare_model_logging()  # each trial's model is logged as it ends
    ray_runtime.await_prestarted()  # the first trial takes the worker started with an embedded Ray
    try:
        tuner.fit()
    finally:
        resources.request(None, shape)
    return plan.concurrency


def publish_report(ctx: SweepContext) -> None:
    """Log the comparison report (html, md, csv, json) under `report/` of the sweep's MLflow run.

    The cells are already stored when this runs, so a report that cannot be
    built only warns: `amctl report NAME` rebuilds it from the store.
    """
    from amlab.platform import report

    try:
        report.publish(ctx.settings, ctx.sweep, ctx.sweep_run_id)
    except Exception as e:  # see the docstring: the results are safe, only their rendering failed
        warnings.warn(f"sweep {ctx.sweep}: the report was not published: {type(e).__name__}: {e}", stacklevel=2)


def trial_metrics(settings: Settings, name: str) -> dict:
    """The metrics of a single run's trial (what `launch run` prints)."""
    store = Store(settings.db_url)
    with store.session() as s:
        trials = [t for c in store.sweep(s, name).cells for t in c.trials]
        return dict(trials[-1].metrics or {}) if trials else {}
