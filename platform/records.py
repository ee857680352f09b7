"""ONE lifecycle for what a launch records: sweep, cell and trial rows in the store and their MLflow runs, together.

Every status is written through `_set`, which changes the store row and its
MLflow run in the same step, so no record can end RUNNING in one store and
terminal in the other.  A single run (Kind.RUN) records one MLflow run that
its sweep, cell and trial rows share; a sweep records the tree
sweep > cells > trials.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

import optuna

from amlab.platform import lease, studies, tracking
from amlab.platform.errors import SpecChanged
from amlab.platform.launch import Launch
from amlab.platform.settings import Settings
from amlab.platform.spec import RunSpec, config_hash, dotted
from amlab.platform.status import (
    OBJECTIVE,
    PARAMS_COUNT,
    STATE_SIZE,
    STEP,
    Kind,
    Phase,
    Status,
    is_reported_metric,
    reported,
    test_key,
)
from amlab.platform.store import Cell, Store, Sweep, Trial
from amlab.platform.sweep_spec import CellPlan
from amlab.workloads.registry import TASKS

optuna.logging.set_verbosity(optuna.logging.WARNING)  # one study per cell: creation notices would drown the live table


@dataclass
class SweepContext:
    """What the driver-side pieces need; plain data so that Tune can pickle it with its experiment state."""

    sweep: str
    kind: Kind
    settings: Settings
    experiment_id: str
    sweep_run_id: str
    cell_runs: dict[str, str]  # cell key -> MLflow run id
    cell_ids: dict[str, int]  # cell key -> store id
    _store: Store | None = field(default=None, repr=False)
    _client: Any = field(default=None, repr=False)

    def __getstate__(self):  # connections stay in the process that opened them
        return {**self.__dict__, "_store": None, "_client": None}

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.settings.db_url)
        return self._store

    @property
    def client(self):
        if self._client is None:
            self._client = tracking.client(self.settings)
        return self._client


def _set(ctx: SweepContext, s, row: Sweep | Cell | Trial, status: Status, *, mlflow: bool = True) -> None:
    """The one place a status changes: the store row, its transition, and its MLflow run."""
    ctx.store.set_status(s, row, status)
    if mlflow and row.mlflow_run_id:
        if status.terminal:
            ctx.client.set_terminated(row.mlflow_run_id, status=status.value)
        else:
            ctx.client.update_run(row.mlflow_run_id, status=status.value)


def _changes(old: Any, new: Any, path: str = "") -> list[str]:
    """Dotted paths where two spec trees differ, with both values."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [c for k in sorted(set(old) | set(new)) for c in _changes(old.get(k), new.get(k), f"{path}.{k}" if path else k)]
    return [] if old == new else [f"{path}: {old!r} -> {new!r}"]


def _base_tags(launch: Launch) -> dict[str, str]:
    return {"amctl.kind": launch.kind.value, "amctl.sweep": launch.name, "code_version": tracking.code_version()}


def open_launch(launch: Launch, settings: Settings, *, extend: bool = False) -> tuple[SweepContext, list[CellPlan]]:
    """Record the launch (new or relaunched) and return its context and the cells still to run.

    A relaunch whose cells all finished writes nothing; a relaunch of the
    name with another spec raises SpecChanged unless `extend`, and one that
    another live driver runs raises SweepActive (the lease, lease.py).
    """
    store, client = Store(settings.db_url), tracking.client(settings)
    with store.session() as s:
        sweep = lease.acquire(s, launch.name)  # before any record changes
        if sweep is None:
            exp = tracking.experiment_id(client, settings, tracking.experiment_name(launch.kind, launch.name,
                                                                                    launch.experiment))
        else:  # a relaunch (resume, --extend) files new runs beside its first ones
            exp = client.get_run(sweep.mlflow_run_id).info.experiment_id
        if sweep is not None and sweep.config_hash != launch.config_hash and not extend:
            raise SpecChanged(f"{launch.kind.value} {launch.name!r} was launched with another spec; launch it under a new "
                              "name, or pass --extend to add these cells to it", _changes(sweep.spec, launch.spec))
        if sweep is None:
            params = launch.spec if launch.kind is Kind.RUN else {k: launch.spec[k] for k in ("seeds", "search", "resources")}
            tags = _base_tags(launch)
            if launch.kind is Kind.RUN:
                cell = launch.cells[0]
                tags |= {"mechanism": cell.mechanism, "task": cell.task, "seed": str(cell.seeds[0]),
                         "config_hash": cell.config_hash}
            run_id = tracking.start_run(client, exp, launch.name, params, tags)
            sweep = Sweep(name=launch.name, kind=launch.kind, spec=launch.spec, config_hash=launch.config_hash,
                          mlflow_run_id=run_id)
            s.add(sweep)
            lease.hold(sweep)
            store.set_status(s, sweep, Status.PENDING)
        if sweep.config_hash != launch.config_hash or not sweep.cells:
            client.log_dict(sweep.mlflow_run_id, launch.spec, "spec.yaml")
            sweep.spec, sweep.config_hash = launch.spec, launch.config_hash
        existing = {c.config_hash: c for c in sweep.cells}
        ctx = SweepContext(launch.name, launch.kind, settings, exp, sweep.mlflow_run_id, {}, {})
        pending = []
        for plan in launch.cells:
            row = existing.get(plan.config_hash) or _open_cell(ctx, s, sweep, plan)
            ctx.cell_runs[plan.key], ctx.cell_ids[plan.key] = row.mlflow_run_id, row.id
            if row.status != Status.FINISHED:
                pending.append(plan)
        if not pending:  # nothing will run: the name is free again at once
            lease.release(sweep)
        s.commit()
    return ctx, pending


def has_trials(ctx: SweepContext, cells: list[CellPlan]) -> bool:
    """Whether the store holds any trial of these cells: a Tune experiment of cells it has none of is not ours."""
    ids = [ctx.cell_ids[c.key] for c in cells]
    with ctx.store.session() as s:
        return s.query(Trial.id).filter(Trial.cell_id.in_(ids)).first() is not None


def _open_cell(ctx: SweepContext, s, sweep: Sweep, plan: CellPlan) -> Cell:
    entry = TASKS.get(plan.task)
    run_id = sweep.mlflow_run_id
    if ctx.kind is Kind.SWEEP:
        tags = {"amctl.kind": "cell", "amctl.sweep": ctx.sweep, "amctl.cell": plan.key, "mechanism": plan.mechanism,
                "mlflow.note.content": f"{plan.title}: {len(plan.seeds)} seeds, {plan.search.trials} search trials",
                "task": plan.task, "config_hash": plan.config_hash, "code_version": tracking.code_version(),
                **variant_tags(plan)}
        run_id = tracking.start_run(ctx.client, ctx.experiment_id, plan.title, plan.base, tags, parent=sweep.mlflow_run_id)
        studies.create(ctx.sweep, plan, ctx.settings.optuna_url)
    row = Cell(mechanism=plan.mechanism, task=plan.task, mechanism_variant=plan.mechanism_variant,
               task_variant=plan.task_variant, axes=plan.axes or None, config_hash=plan.config_hash, spec=plan.base,
               mlflow_run_id=run_id, metric=entry.metric, higher_is_better=entry.higher_is_better)
    sweep.cells.append(row)
    s.flush()
    ctx.store.set_status(s, row, Status.PENDING)
    return row


def variant_tags(plan: CellPlan) -> dict[str, str]:
    """`amctl.variant` (the cell's title) and one `axis.<section>.<knob>` tag per axis value, for a variant cell."""
    if not plan.axes:
        return {}
    return {"amctl.variant": plan.title, **{f"axis.{k}": str(v) for k, v in plan.axes.items()}}


def start(ctx: SweepContext, pending: list[CellPlan]) -> None:
    """Mark the sweep and its pending cells RUNNING (store and MLflow); a stale cancel request is dropped."""
    ids = {ctx.cell_ids[c.key] for c in pending}
    with ctx.store.session() as s:
        sweep = ctx.store.sweep(s, ctx.sweep)
        sweep.cancel_requested = False
        _set(ctx, s, sweep, Status.RUNNING)
        for cell in sweep.cells:
            if cell.id in ids:
                _set(ctx, s, cell, Status.RUNNING, mlflow=ctx.kind is Kind.SWEEP)
        s.commit()


def open_trial(ctx: SweepContext, cell: CellPlan, trial_id: str, phase: Phase, spec: RunSpec) -> str:
    """A trial's store row (PENDING) and MLflow run; returns the run id its loop logs into.

    The row is committed before a sweep's trial run is created, so no MLflow trial run is ever unknown to the store:
    a driver killed in between leaves a row with no run id, which `finalize` links to its run by trial id.
    """
    seed, one_run = spec.train.seed, ctx.kind is Kind.RUN  # a run's trial logs into the launch's own run
    normalised = spec.normalised()
    digest = config_hash(normalised)
    if one_run:
        ctx.client.set_tag(ctx.sweep_run_id, "amctl.tune_trial_id", trial_id)
    with ctx.store.session() as s:
        row = Trial(cell_id=ctx.cell_ids[cell.key], trial_key=trial_id, phase=phase, seed=seed, config=normalised,
                    config_hash=digest, mlflow_run_id=ctx.sweep_run_id if one_run else None)
        s.add(row)
        ctx.store.set_status(s, row, Status.PENDING)
        s.commit()
        if one_run:
            return row.mlflow_run_id
        tags = {"amctl.kind": "trial", "amctl.sweep": ctx.sweep, "amctl.cell": cell.key, "amctl.phase": phase.value,
                "amctl.tune_trial_id": trial_id, "mechanism": cell.mechanism, "task": cell.task, "seed": str(seed),
                "config_hash": digest, "code_version": tracking.code_version(), **variant_tags(cell)}
        row.mlflow_run_id = tracking.start_run(ctx.client, ctx.experiment_id, f"{cell.key}/{phase.value}-s{seed}-{trial_id[-5:]}",
                                               normalised, tags, parent=ctx.cell_runs[cell.key])
        s.commit()
        return row.mlflow_run_id


def _trial(s, trial_id: str) -> Trial | None:
    return s.query(Trial).filter(Trial.trial_key == trial_id).one_or_none()


def trial_progress(ctx: SweepContext, trial_id: str, step: int | None) -> None:
    with ctx.store.session() as s:
        row = _trial(s, trial_id)
        if row is not None:
            if step is not None:
                row.steps_done = step
            _set(ctx, s, row, Status.RUNNING, mlflow=ctx.kind is Kind.SWEEP and row.status != Status.RUNNING)
            s.commit()


def close_trial(ctx: SweepContext, trial_id: str, status: Status, result: dict, *, early: bool, error: str = "",
                if_open: bool = False) -> None:
    """A trial's terminal status, metrics and tags; `if_open` leaves an already closed row alone (reconciliation)."""
    with ctx.store.session() as s:
        row = _trial(s, trial_id)
        if row is None or (if_open and Status(row.status).terminal):
            return
        row.metrics, row.early_stopped = {k: v for k, v in result.items() if is_reported_metric(k)}, early
        row.steps_done = int(result.get(STEP, row.steps_done))
        ctx.client.set_tag(row.mlflow_run_id, "amctl.early_stopped", str(early).lower())
        if error:
            ctx.client.set_tag(row.mlflow_run_id, "amctl.error", error[-4000:])
            row.error = error_summary(error)
        _set(ctx, s, row, status, mlflow=ctx.kind is Kind.SWEEP)
        s.commit()


def note_retry(ctx: SweepContext, trial_id: str, attempt: int, error: str) -> None:
    """A failed attempt Tune retries from the trial's last checkpoint: the trial stays open, its reason is kept."""
    with ctx.store.session() as s:
        row = _trial(s, trial_id)
        if row is not None:
            row.error = f"attempt {attempt} failed, retried: {error_summary(error)}"[:500]
            ctx.client.set_tag(row.mlflow_run_id, "amctl.retries", str(attempt))
            s.commit()


def error_summary(text: str) -> str:
    """The line of a traceback that says what went wrong (its last non-empty line), for the store and `status`."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:500] if lines else ""


def finalize(ctx: SweepContext, cells: list[CellPlan], *, interrupted: bool = False) -> Status:
    """Aggregate each cell, close every record left open, and set the sweep's final status (store and MLflow)."""
    by_hash = {c.config_hash: c for c in cells}
    sweep_level = ctx.kind is Kind.SWEEP
    with ctx.store.session() as s:
        sweep = ctx.store.sweep(s, ctx.sweep)
        cancelled, sweep.cancel_requested = sweep.cancel_requested, False
        for cell in sweep.cells:
            for t in cell.trials:
                if not Status(t.status).terminal:  # interrupted, or suggested just before a driver crash
                    _set(ctx, s, t, Status.KILLED, mlflow=sweep_level)
            plan = by_hash.get(cell.config_hash)
            if plan is None or cell.status == Status.FINISHED:
                continue
            status = aggregate(cell, plan)
            _set(ctx, s, cell, status, mlflow=sweep_level and status.terminal)
            if sweep_level and cell.value is not None:
                tracking.log_cell(ctx.client, cell.mlflow_run_id, test_key(cell.metric), cell.metric, cell.per_seed,
                                  cell.best_params)
        if sweep_level:  # every trial row is terminal now: so must its run be.  A row without its run id (a driver
            # killed between creating the run and recording it, open_trial) gets it back by trial id; a run no row
            # knows (recorded by an amctl that created runs first) is KILLED
            rows = {t.trial_key: t for c in sweep.cells for t in c.trials}
            query = f"tags.`amctl.sweep` = '{ctx.sweep}' AND tags.`amctl.kind` = 'trial' AND attributes.status = 'RUNNING'"
            for run in ctx.client.search_runs([ctx.experiment_id], filter_string=query, max_results=10000):
                row = rows.get(run.data.tags.get("amctl.tune_trial_id", ""))
                if row is not None and row.mlflow_run_id is None:
                    row.mlflow_run_id = run.info.run_id
                known = row is not None and row.mlflow_run_id == run.info.run_id
                ctx.client.set_terminated(run.info.run_id, status=(Status(row.status) if known else Status.KILLED).value)
        statuses = {c.status for c in sweep.cells}
        if statuses <= {Status.FINISHED}:
            final = Status.FINISHED
        elif interrupted or cancelled or statuses & {Status.PENDING, Status.RUNNING, Status.KILLED}:
            final = Status.KILLED
        else:
            final = Status.FAILED
        _set(ctx, s, sweep, final)
        s.commit()
    return final


def best_search(cell: Cell) -> Trial | None:
    """The search trial whose configuration the cell reports: the best validation objective among full-length ones."""
    full = [t for t in cell.trials if t.phase == Phase.SEARCH and t.status == Status.FINISHED and t.metrics
            and not t.early_stopped and OBJECTIVE in t.metrics and math.isfinite(t.metrics[OBJECTIVE])]
    return min(full, key=lambda t: t.metrics[OBJECTIVE]) if full else None


def seed_trials(cell: Cell) -> list[Trial]:
    """The runs behind a cell's value: the chosen configuration on each reported seed.

    Those are the seed replicates, plus the best search trial itself when search trained on a reported seed
    (a cell with nothing to search); a search seed is never reported (`CellPlan.search_seed`).
    """
    best = best_search(cell)
    chosen = [best] if best is not None and reported(best.phase, best.seed) else []
    return chosen + [t for t in cell.trials if t.phase == Phase.SEED and t.status == Status.FINISHED and t.metrics]


def aggregate(cell: Cell, plan: CellPlan) -> Status:
    """Set the cell's value (median over its reported seeds of the test metric) and sizes; return its status."""
    best = best_search(cell)
    if best is None:
        return Status.FAILED if any(t.status == Status.FAILED for t in cell.trials) else Status.KILLED
    runs, key = seed_trials(cell), test_key(cell.metric)
    per_seed = {str(t.seed): t.metrics.get(key) for t in runs}
    if len(per_seed) < len(plan.seeds):
        replicas = [t for t in cell.trials if t.phase == Phase.SEED]
        killed = any(t.status == Status.KILLED for t in replicas) or len(replicas) < len(plan.replica_seeds)
        return Status.KILLED if killed else Status.FAILED
    values = [v for v in per_seed.values() if v is not None]
    cell.per_seed = per_seed
    cell.value = statistics.median(values) if values else None
    cell.best_params = {k: dotted(best.config, k) for k in plan.space}
    cell.params_count = int(runs[0].metrics.get(PARAMS_COUNT, 0)) or None
    cell.state_size = int(runs[0].metrics[STATE_SIZE]) if STATE_SIZE in runs[0].metrics else None
    return Status.FINISHED
