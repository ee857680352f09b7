"""Sweeps: every cell's hyperparameter search and seed replicates, in one Ray Tune run.

Per cell: an Optuna study (seeded TPE, define-by-run space from the registry
or the spec) driven through Tune's `OptunaSearch` searches on the first
seed, with ASHA stopping weak configurations early; then the best full-length
configuration is re-run on every other seed.  The cell's value is the median
over seeds of the task's test metric.  All cells share one Tune run, so cells
run concurrently whenever the cluster has room, each with its own searcher
and its own ASHA brackets (metrics of different tasks are never compared).

Trials report `objective`: the validation metric signed so that lower is
better.  Search never looks at the test split.
"""

from __future__ import annotations

import copy
import math
import os
import pickle
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
import ray
from ray import tune
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from amlab.platform import tracking
from amlab.platform.launch import DRIVER_CPU, ddp_cpus_per_worker, ensure_ray, node_cpus
from amlab.platform.settings import Settings
from amlab.platform.spec import CellPlan, Dimension, SweepSpec, config_hash, validate_run
from amlab.platform.store import Cell, Store, Sweep, Trial
from amlab.platform.train import run_trial
from amlab.workloads.registry import TASKS

optuna.logging.set_verbosity(optuna.logging.WARNING)  # one study per cell: creation notices would drown the live table

OBJECTIVE = "objective"
TERMINAL = ("FINISHED", "FAILED", "KILLED")


# -- search space ----------------------------------------------------------------------------------

class SpaceFn:
    """Define-by-run space for one cell (picklable: Tune checkpoints the searcher)."""

    def __init__(self, space: dict[str, Dimension], base: dict[str, Any]):
        self.space = {k: v.model_dump() for k, v in space.items()}
        self.ints = {k for k in space if isinstance(_get(base, k), int) and not isinstance(_get(base, k), bool)}

    def __call__(self, trial: optuna.Trial) -> None:
        for key, d in self.space.items():
            name = key.replace(".", "/")
            if d["choices"] is not None:
                trial.suggest_categorical(name, d["choices"])
            elif key in self.ints:
                trial.suggest_int(name, int(d["low"]), int(d["high"]), log=d["log"])
            else:
                trial.suggest_float(name, d["low"], d["high"], log=d["log"])


def _get(tree: dict[str, Any], dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def defaults_point(cell: CellPlan) -> dict[str, Any] | None:
    """The cell's base configuration as the first point to evaluate, when it lies inside the space."""
    point = {}
    for key, d in cell.space.items():
        value = _get(cell.base, key)
        inside = value in d.choices if d.choices is not None else (value is not None and d.low <= value <= d.high)
        if not inside:
            return None
        point[key.replace(".", "/")] = value
    return point or None


def merge(base: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for section, values in params.items():
        out[section] = {**out.get(section, {}), **values}
    return out


# -- trial configs, shared by searcher and callbacks ----------------------------------------------

@dataclass
class SweepContext:
    """What the driver-side pieces need; plain data so Tune can pickle them with its experiment state."""

    sweep: str
    settings: Settings
    experiment_id: str
    sweep_run_id: str
    cell_runs: dict[str, str]  # cell key -> MLflow run id
    cell_ids: dict[str, int]  # cell key -> store id
    trial_common: dict[str, Any]
    _store: Store | None = field(default=None, repr=False)

    def __getstate__(self):
        return {**self.__dict__, "_store": None}

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.settings.db_url)
        return self._store

    @property
    def client(self):
        return tracking.client(self.settings)


class CellSearcher(Searcher):
    """Multiplexes one OptunaSearch per cell, then schedules each cell's seed replicates."""

    def __init__(self, cells: list[CellPlan], ctx: SweepContext):
        super().__init__(metric=OBJECTIVE, mode="min")
        self.ctx = ctx
        self.cells = {c.key: c for c in cells}
        self.order = [c.key for c in cells]
        self.optuna = {
            c.key: OptunaSearch(
                space=SpaceFn(c.space, c.base), metric=OBJECTIVE, mode="min",
                sampler=optuna.samplers.TPESampler(seed=c.search.seed),
                points_to_evaluate=[p] if (p := defaults_point(c)) else None,
            )
            for c in cells if c.space
        }
        self.search_total = {c.key: c.search.trials if c.space else 1 for c in cells}
        self.suggested: dict[str, int] = {c.key: 0 for c in cells}
        self.done: dict[str, dict[str, dict[str, Any]]] = {c.key: {} for c in cells}
        self.best: dict[str, dict[str, Any] | None] = {}
        self.replicas: dict[str, list[int]] = {c.key: [] for c in cells}
        self.owner: dict[str, tuple[str, str, int, dict[str, Any]]] = {}
        self._turn = 0

    def total_trials(self) -> int:
        return sum(self.search_total[k] + len(self.cells[k].seeds) - 1 for k in self.order)

    def suggest(self, trial_id: str):
        n = len(self.order)
        for i in range(n):
            key = self.order[(self._turn + i) % n]
            cell = self.cells[key]
            if self.suggested[key] < self.search_total[key]:
                params = self.optuna[key].suggest(trial_id) if key in self.optuna else {}
                self.suggested[key] += 1
                self._turn = (self._turn + i + 1) % n
                return self._config(trial_id, key, "search", cell.seeds[0], params)
            best = self.best.get(key)
            todo = [s for s in cell.seeds[1:] if s not in self.replicas[key]]
            if best is not None and todo:
                self.replicas[key].append(todo[0])
                self._turn = (self._turn + i + 1) % n
                return self._config(trial_id, key, "seed", todo[0], best["params"])
        finished = all(
            self.suggested[k] >= self.search_total[k]
            and (k in self.best and (self.best[k] is None or len(self.replicas[k]) == len(self.cells[k].seeds) - 1))
            for k in self.order
        )
        return Searcher.FINISHED if finished else None

    def _config(self, trial_id: str, key: str, phase: str, seed: int, params: dict[str, Any]) -> dict[str, Any]:
        cell = self.cells[key]
        spec = validate_run(merge(cell.base, {**params, "train": {**params.get("train", {}), "seed": seed}}))
        normalised = spec.normalised()
        entry = TASKS.get(cell.task)
        client = self.ctx.client
        tags = {"amctl.kind": "trial", "amctl.sweep": self.ctx.sweep, "amctl.cell": key, "amctl.phase": phase,
                "amctl.tune_trial_id": trial_id, "mechanism": cell.mechanism, "task": cell.task, "seed": str(seed),
                "config_hash": spec.config_hash(), "code_version": tracking.code_version()}
        run_id = tracking.start_run(client, self.ctx.experiment_id, f"{key}/{phase}-s{seed}-{trial_id[-5:]}", normalised,
                                    tags, parent=self.ctx.cell_runs[key])
        store = self.ctx.store
        with store.session() as s:
            trial = Trial(cell_id=self.ctx.cell_ids[key], trial_key=trial_id, phase=phase, seed=seed, config=normalised,
                          config_hash=spec.config_hash(), mlflow_run_id=run_id)
            s.add(trial)
            store.set_status(s, trial, "PENDING")
            s.commit()
        self.owner[trial_id] = (key, phase, seed, params)
        return {
            **self.ctx.trial_common, "spec": normalised, "cell": key, "phase": phase,
            "tracking": {"tracking_uri": self.ctx.settings.mlflow_uri, "run_id": run_id},
            "objective": {"key": f"val/{entry.metric}", "sign": -1.0 if entry.higher_is_better else 1.0},
        }

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id not in self.owner:
            return
        key, phase, seed, params = self.owner[trial_id]
        if phase != "search" or trial_id in self.done[key]:
            return
        if key in self.optuna:
            self.optuna[key].on_trial_complete(trial_id, result, error)
        result = result or {}
        cell = self.cells[key]
        self.done[key][trial_id] = {
            "objective": None if error else result.get(OBJECTIVE), "params": params,
            "full": not error and result.get("step") == cell.base["train"]["steps"],
        }
        mirror_to_optuna(self.ctx, cell, trial_id, params, self.done[key][trial_id], seed)
        if len(self.done[key]) == self.search_total[key]:
            scored = [d for d in self.done[key].values() if d["objective"] is not None and math.isfinite(d["objective"])]
            full = [d for d in scored if d["full"]] or scored
            self.best[key] = min(full, key=lambda d: d["objective"]) if full else None

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))


def study_name(sweep: str, cell: CellPlan) -> str:
    return f"{sweep}:{cell.key}"


def mirror_to_optuna(ctx: SweepContext, cell: CellPlan, trial_id: str, params: dict, done: dict, seed: int) -> None:
    """Copy a finished search trial into the cell's persistent study (optuna-dashboard reads it); idempotent."""
    study = optuna.load_study(study_name=study_name(ctx.sweep, cell), storage=ctx.settings.optuna_url)
    if any(t.user_attrs.get("tune_trial_id") == trial_id for t in study.get_trials(deepcopy=False)):
        return
    flat = {f"{section}.{k}": v for section, values in params.items() for k, v in values.items()}
    dists = {}
    for key, value in flat.items():
        d = cell.space[key]
        if d.choices is not None:
            dists[key] = optuna.distributions.CategoricalDistribution(d.choices)
        elif isinstance(value, int):
            dists[key] = optuna.distributions.IntDistribution(int(d.low), int(d.high), log=d.log)
        else:
            dists[key] = optuna.distributions.FloatDistribution(d.low, d.high, log=d.log)
    ok = done["objective"] is not None and math.isfinite(done["objective"])
    study.add_trial(optuna.trial.create_trial(
        params=flat, distributions=dists, value=done["objective"] if ok else None,
        state=optuna.trial.TrialState.COMPLETE if ok else optuna.trial.TrialState.FAIL,
        user_attrs={"tune_trial_id": trial_id, "seed": seed, "early_stopped": not done["full"]},
    ))


class CellScheduler(FIFOScheduler):
    """One ASHA per cell for its search trials; seed replicates always run to the end."""

    def __init__(self, cells: list[CellPlan], kind: str):
        super().__init__()
        self.asha = {}
        if kind == "asha":
            for c in cells:
                evals = math.ceil(c.base["train"]["steps"] / c.base["train"]["eval_every"])
                self.asha[c.key] = AsyncHyperBandScheduler(
                    time_attr="evals", metric=OBJECTIVE, mode="min", max_t=evals,
                    grace_period=min(c.search.grace_evals, evals), reduction_factor=c.search.reduction_factor,
                )

    def set_search_properties(self, metric, mode, **spec) -> bool:
        return True

    def _asha(self, trial):
        return self.asha.get(trial.config.get("cell")) if trial.config.get("phase") == "search" else None

    def on_trial_add(self, controller, trial):
        if (a := self._asha(trial)) is not None:
            a.on_trial_add(controller, trial)

    def on_trial_result(self, controller, trial, result):
        a = self._asha(trial)
        if a is None or result.get("step", 0) >= trial.config["spec"]["train"]["steps"]:
            return TrialScheduler.CONTINUE  # at max_t ASHA says STOP, which would cut off the final checkpoint and dumps
        return a.on_trial_result(controller, trial, result)

    def on_trial_complete(self, controller, trial, result):
        if (a := self._asha(trial)) is not None:
            a.on_trial_complete(controller, trial, result)

    def on_trial_remove(self, controller, trial):
        if (a := self._asha(trial)) is not None:
            a.on_trial_remove(controller, trial)


# -- driver-side bookkeeping -----------------------------------------------------------------------

_DISPLAYS: dict[str, Callable[[str, dict[str, Any]], None]] = {}  # sweep -> live display (process-local)


class Bookkeeper(tune.Callback):
    """Keeps the store and MLflow in step with Tune: statuses, progress, and a terminal state for every run."""

    def __init__(self, ctx: SweepContext):
        self.ctx = ctx

    def _trial(self, s, trial) -> Trial | None:
        return s.query(Trial).filter(Trial.trial_key == trial.trial_id).one_or_none()

    def on_trial_start(self, iteration, trials, trial, **info):
        with self.ctx.store.session() as s:
            row = self._trial(s, trial)
            if row is not None:
                self.ctx.store.set_status(s, row, "RUNNING")
                s.commit()
        self._show("start", trial, {})

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if "step" in result:
            with self.ctx.store.session() as s:
                row = self._trial(s, trial)
                if row is not None:
                    row.steps_done = int(result["step"])
                    self.ctx.store.set_status(s, row, "RUNNING")
                    s.commit()
        self._show("result", trial, result)

    def on_trial_complete(self, iteration, trials, trial, **info):
        result = trial.last_result or {}
        steps = trial.config["spec"]["train"]["steps"]
        self._close(trial, "FINISHED", result, early=result.get("step", steps) < steps)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._close(trial, "FAILED", trial.last_result or {}, early=False, error=str(trial.error_file or ""))

    def _close(self, trial, status: str, result: dict, early: bool, error: str = "") -> None:
        metrics = {k: v for k, v in result.items() if "/" in k or k in ("step", OBJECTIVE)}
        with self.ctx.store.session() as s:
            row = self._trial(s, trial)
            if row is not None:
                row.metrics, row.early_stopped = metrics, early
                row.steps_done = int(result.get("step", row.steps_done))
                self.ctx.store.set_status(s, row, status)
                s.commit()
                run_id = row.mlflow_run_id
        if row is not None:
            client = self.ctx.client
            client.set_tag(run_id, "amctl.early_stopped", str(early).lower())
            if error:
                client.set_tag(run_id, "amctl.error_file", error)
            client.set_terminated(run_id, status=status)
        self._show(status.lower(), trial, result)

    def _show(self, event: str, trial, result: dict) -> None:
        fn = _DISPLAYS.get(self.ctx.sweep)
        if fn is not None:
            fn(event, {"trial_id": trial.trial_id, "cell": trial.config.get("cell"), "phase": trial.config.get("phase"),
                       "steps": trial.config["spec"]["train"]["steps"], **result})


class CancelStopper(tune.Stopper):
    """Stops the whole run when `amctl cancel` marks the sweep CANCELLING in the store (polled every 2 s)."""

    def __init__(self, ctx: SweepContext):
        self.ctx, self._last, self._stop = ctx, 0.0, False

    def __call__(self, trial_id, result) -> bool:
        return False

    def stop_all(self) -> bool:
        if not self._stop and time.time() - self._last > 2:
            self._last = time.time()
            with self.ctx.store.session() as s:
                sweep = self.ctx.store.sweep(s, self.ctx.sweep)
                self._stop = sweep is not None and sweep.status == "CANCELLING"
        return self._stop


# -- resources -------------------------------------------------------------------------------------

def plan_resources(spec: SweepSpec, total_trials: int, storage_path: str) -> tuple[dict[str, float], dict[str, Any], int]:
    """Per-trial resource request, per-trial settings, and how many trials fit at once on this cluster."""
    r = spec.resources
    avail = ray.cluster_resources()
    cpus, gpus = float(avail.get("CPU", 1)), float(avail.get("GPU", 0))
    if r.gpus_per_worker and r.gpus_per_worker * r.workers_per_trial > gpus:
        raise RuntimeError(f"resources: a trial needs {r.gpus_per_worker * r.workers_per_trial:g} GPUs; the cluster has {gpus:g}")
    if r.workers_per_trial == 1:
        cpw = min(r.cpus_per_worker, node_cpus())
        request = {"cpu": cpw, "gpu": r.gpus_per_worker}
        per_trial_cpu = cpw
    else:
        cpw = ddp_cpus_per_worker(r.workers_per_trial, r.cpus_per_worker)
        if cpw <= 0:
            raise RuntimeError(f"resources.workers_per_trial={r.workers_per_trial} does not fit on {cpus:g} CPUs")
        request = {"cpu": DRIVER_CPU}
        per_trial_cpu = DRIVER_CPU + cpw * r.workers_per_trial
    fits = math.floor(cpus / per_trial_cpu + 1e-9)
    if r.gpus_per_worker:
        fits = min(fits, math.floor(gpus / (r.gpus_per_worker * r.workers_per_trial) + 1e-9))
    concurrency = max(1, min(fits, r.max_concurrent or fits, total_trials))
    common = {"storage_path": storage_path, "threads": max(1, int(cpw)), "cpus_per_worker": cpw,
              "gpus_per_worker": r.gpus_per_worker}
    return request, common, concurrency


# -- the sweep -------------------------------------------------------------------------------------

@dataclass
class SweepOutcome:
    name: str
    status: str
    mlflow_run_id: str
    skipped: list[str]
    ran: list[str]
    concurrency: int = 0


def prepare(spec: SweepSpec, cells: list[CellPlan], settings: Settings) -> tuple[SweepContext, list[CellPlan]]:
    """Record the sweep, its cells, MLflow parent runs and Optuna studies (all on the driver, before any trial)."""
    store, client = Store(settings.db_url), tracking.client(settings)
    exp = tracking.experiment_id(client, settings)
    spec_dict = spec.model_dump(mode="json")
    with store.session() as s:
        sweep = store.sweep(s, spec.name)
        if sweep is None:
            tags = {"amctl.kind": "sweep", "amctl.sweep": spec.name, "code_version": tracking.code_version()}
            run_id = tracking.start_run(client, exp, spec.name, {"seeds": spec.seeds, "search": spec_dict["search"],
                                                                   "resources": spec_dict["resources"]}, tags)
            sweep = Sweep(name=spec.name, kind="sweep", spec=spec_dict, config_hash=config_hash(spec_dict), mlflow_run_id=run_id)
            s.add(sweep)
            store.set_status(s, sweep, "PENDING")
        sweep.spec, sweep.config_hash = spec_dict, config_hash(spec_dict)
        client.log_dict(sweep.mlflow_run_id, spec_dict, "sweep.yaml")
        existing = {c.config_hash: c for c in sweep.cells}
        cell_runs, cell_ids, pending = {}, {}, []
        for plan in cells:
            row = existing.get(plan.config_hash)
            if row is None:
                entry = TASKS.get(plan.task)
                tags = {"amctl.kind": "cell", "amctl.sweep": spec.name, "amctl.cell": plan.key, "mechanism": plan.mechanism,
                        "task": plan.task, "config_hash": plan.config_hash, "code_version": tracking.code_version()}
                run_id = tracking.start_run(client, exp, plan.key, plan.base, tags, parent=sweep.mlflow_run_id)
                row = Cell(mechanism=plan.mechanism, task=plan.task, config_hash=plan.config_hash, spec=plan.base,
                           mlflow_run_id=run_id, metric=entry.metric, higher_is_better=entry.higher_is_better)
                sweep.cells.append(row)
                s.flush()
                store.set_status(s, row, "PENDING")
                optuna.create_study(study_name=study_name(spec.name, plan), storage=settings.optuna_url, direction="minimize",
                                    load_if_exists=True)
            cell_runs[plan.key], cell_ids[plan.key] = row.mlflow_run_id, row.id
            if row.status != "FINISHED":
                pending.append(plan)
        s.commit()
        ctx = SweepContext(spec.name, settings, exp, sweep.mlflow_run_id, cell_runs, cell_ids, {})
    return ctx, pending


def run_sweep(
    spec: SweepSpec,
    cells: list[CellPlan],
    settings: Settings,
    *,
    address: str | None = None,
    display: Callable[[str, dict[str, Any]], None] | None = None,
    on_plan: Callable[[list[CellPlan], int, int], None] | None = None,
) -> SweepOutcome:
    """Run (or resume) a sweep; finished cells (same config hash) are skipped."""
    ctx, pending = prepare(spec, cells, settings)
    skipped = [c.key for c in cells if c not in pending]
    store, client = ctx.store, ctx.client
    if not pending:
        finalize(ctx, cells)
        publish_report(ctx)
        return SweepOutcome(spec.name, "FINISHED", ctx.sweep_run_id, skipped, [])
    with store.session() as s:
        sweep = store.sweep(s, spec.name)
        store.set_status(s, sweep, "RUNNING")
        for cell in sweep.cells:
            if cell.id in {ctx.cell_ids[c.key] for c in pending}:
                store.set_status(s, cell, "RUNNING")
        s.commit()
    client.update_run(ctx.sweep_run_id, status="RUNNING")
    for key in (c.key for c in pending):
        client.update_run(ctx.cell_runs[key], status="RUNNING")

    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "0.5")  # a driver killed any time loses at most 0.5 s of state
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")  # `objective` comes with evaluations only
    ensure_ray(settings, address)
    searcher = CellSearcher(pending, ctx)
    request, common, concurrency = plan_resources(spec, searcher.total_trials(), settings.ray_storage)
    ctx.trial_common.update(common)
    if on_plan:
        on_plan(pending, searcher.total_trials(), concurrency)
    name = f"{spec.name}-{config_hash(sorted(c.config_hash for c in pending))[:8]}"
    path = os.path.join(settings.ray_storage, name)
    trainable = tune.with_resources(run_trial, request)
    if display:
        _DISPLAYS[spec.name] = display
    try:
        if tune.Tuner.can_restore(path):
            tuner = tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=True)
        else:
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(search_alg=searcher, scheduler=CellScheduler(pending, spec.search.scheduler),
                                            num_samples=searcher.total_trials(), max_concurrent_trials=concurrency,
                                            reuse_actors=True),  # a fresh process per trial costs seconds
                run_config=tune.RunConfig(name=name, storage_path=settings.ray_storage, verbose=0,
                                          callbacks=[Bookkeeper(ctx)], stop=CancelStopper(ctx),
                                          checkpoint_config=tune.CheckpointConfig(num_to_keep=2)),
            )
        interrupted = False
        try:
            tuner.fit()
        except KeyboardInterrupt:
            interrupted = True
    finally:
        _DISPLAYS.pop(spec.name, None)
    status = finalize(ctx, cells, interrupted=interrupted)
    publish_report(ctx)
    return SweepOutcome(spec.name, status, ctx.sweep_run_id, skipped, [c.key for c in pending], concurrency)


def finalize(ctx: SweepContext, cells: list[CellPlan], interrupted: bool = False) -> str:
    """Aggregate each cell (median over seeds), close every run left open, and set the sweep's status."""
    store, client = ctx.store, ctx.client
    by_hash = {c.config_hash: c for c in cells}
    with store.session() as s:
        sweep = store.sweep(s, ctx.sweep)
        cancelled = sweep.status == "CANCELLING"
        for cell in sweep.cells:
            plan = by_hash.get(cell.config_hash)
            for t in cell.trials:
                if t.status not in TERMINAL:  # interrupted, or suggested just before a driver crash and never resumed
                    store.set_status(s, t, "KILLED")
                    client.set_tag(t.mlflow_run_id, "amctl.early_stopped", "false")
                    client.set_terminated(t.mlflow_run_id, status="KILLED")
            if plan is None or cell.status == "FINISHED":
                continue
            status = aggregate(cell, plan)
            store.set_status(s, cell, status)
            if status != "PENDING":
                if cell.value is not None:
                    client.log_metric(cell.mlflow_run_id, f"test/{cell.metric}/median", cell.value)
                client.set_terminated(cell.mlflow_run_id, status=status)
        statuses = {c.status for c in sweep.cells}
        if statuses <= {"FINISHED"}:
            final = "FINISHED"
        elif interrupted or cancelled or "PENDING" in statuses or "KILLED" in statuses:
            final = "KILLED"
        else:
            final = "FAILED"
        store.set_status(s, sweep, final)
        s.commit()
    client.set_terminated(ctx.sweep_run_id, status=final)
    return final


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


def aggregate(cell: Cell, plan: CellPlan) -> str:
    """Set the cell's value from its best search trial and seed replicates; return the cell's status."""
    key = f"test/{cell.metric}"
    search = [t for t in cell.trials if t.phase == "search" and t.status == "FINISHED" and t.metrics]
    full = [t for t in search if not t.early_stopped and OBJECTIVE in t.metrics]
    if not full:
        return "FAILED" if any(t.status == "FAILED" for t in cell.trials) else "KILLED"
    best = min(full, key=lambda t: t.metrics[OBJECTIVE])
    replicas = [t for t in cell.trials if t.phase == "seed"]
    per_seed = {str(best.seed): best.metrics.get(key)}
    per_seed.update({str(t.seed): t.metrics.get(key) for t in replicas if t.status == "FINISHED" and t.metrics})
    if len(per_seed) < len(plan.seeds):
        return "KILLED" if any(t.status == "KILLED" for t in replicas) or len(replicas) < len(plan.seeds) - 1 else "FAILED"
    values = [v for v in per_seed.values() if v is not None]
    cell.per_seed = per_seed
    cell.value = statistics.median(values) if values else None
    cell.best_params = {k: _get(best.config, k) for k in plan.space}
    cell.params_count = int(best.metrics.get("model/params_count", 0)) or None
    cell.state_size = int(best.metrics.get("model/state_size", -1)) if "model/state_size" in best.metrics else None
    return "FINISHED"
