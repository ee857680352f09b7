"""Per-cell search: the search space, the multiplexing searcher (one Optuna TPE per cell, then seed replicates)
and the per-cell scheduler (one ASHA per cell).  No I/O beyond recording the trials it suggests.

Search runs against the validation split on a seed that is never reported
(`CellPlan.search_seed`); the best full-length configuration is then trained
on every reported seed, so the cell's value carries no selection luck.  Trials report
`objective` (the validation metric signed so that lower is better); search
never looks at the test split.
"""

from __future__ import annotations

import copy
import math
import pickle
from datetime import datetime
from typing import Any

import optuna
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from amlab.platform import records, studies
from amlab.platform.records import SweepContext
from amlab.platform.spec import dotted, validate_run
from amlab.platform.status import OBJECTIVE, STEP, Phase
from amlab.platform.sweep_spec import CellPlan, Dimension
from amlab.platform.trial import KEY, Placement, TrialConfig, of


class SpaceFn:
    """Define-by-run space for one cell (picklable: Tune checkpoints the searcher)."""

    def __init__(self, space: dict[str, Dimension], base: dict[str, Any]):
        self.space = {k: v.model_dump() for k, v in space.items()}
        self.ints = {k for k in space if isinstance(dotted(base, k), int) and not isinstance(dotted(base, k), bool)}

    def __call__(self, trial: optuna.Trial) -> None:
        for key, d in self.space.items():
            name = key.replace(".", "/")
            if d["choices"] is not None:
                trial.suggest_categorical(name, d["choices"])
            elif key in self.ints:
                trial.suggest_int(name, int(d["low"]), int(d["high"]), log=d["log"])
            else:
                trial.suggest_float(name, d["low"], d["high"], log=d["log"])


def defaults_point(cell: CellPlan) -> dict[str, Any] | None:
    """The cell's base configuration as the first point to evaluate, when it lies inside the space."""
    point = {}
    for key, d in cell.space.items():
        value = dotted(cell.base, key)
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


class CellSearcher(Searcher):
    """Multiplexes one OptunaSearch per cell, then schedules each cell's seed replicates."""

    def __init__(self, cells: list[CellPlan], ctx: SweepContext, placement: Placement, storage_path: str):
        super().__init__(metric=OBJECTIVE, mode="min")
        self.ctx, self.placement, self.storage_path = ctx, placement, storage_path
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
        self.owner: dict[str, tuple[str, Phase, int, dict[str, Any]]] = {}
        # for each search trial of a cell with a space, until it ends: when it was suggested and its objective by step
        self.started: dict[str, datetime] = {}
        self.curves: dict[str, dict[int, float]] = {}
        self._turn = 0

    def suggest(self, trial_id: str):
        n = len(self.order)
        for i in range(n):
            key = self.order[(self._turn + i) % n]
            cell = self.cells[key]
            if self.suggested[key] < self.search_total[key]:
                params = self.optuna[key].suggest(trial_id) if key in self.optuna else {}
                self.suggested[key] += 1
                self._turn = (self._turn + i + 1) % n
                return self._config(trial_id, cell, Phase.SEARCH, cell.search_seed, params)
            best = self.best.get(key)
            todo = [s for s in cell.replica_seeds if s not in self.replicas[key]]
            if best is not None and todo:
                self.replicas[key].append(todo[0])
                self._turn = (self._turn + i + 1) % n
                return self._config(trial_id, cell, Phase.SEED, todo[0], best["params"])
        finished = all(
            self.suggested[k] >= self.search_total[k]
            and (k in self.best and (self.best[k] is None or len(self.replicas[k]) == len(self.cells[k].replica_seeds)))
            for k in self.order
        )
        return Searcher.FINISHED if finished else None

    def _config(self, trial_id: str, cell: CellPlan, phase: Phase, seed: int, params: dict[str, Any]) -> dict[str, Any]:
        spec = validate_run(merge(cell.base, {**params, "train": {**params.get("train", {}), "seed": seed}}))
        run_id = records.open_trial(self.ctx, cell, trial_id, phase, spec)
        self.owner[trial_id] = (cell.key, phase, seed, params)
        if phase is Phase.SEARCH and cell.space:  # its study trial starts when suggested, as an Optuna trial does when asked
            self.started[trial_id], self.curves[trial_id] = datetime.now(), {}
        return {KEY: TrialConfig(spec=spec, cell=cell.key, phase=phase, run_id=run_id, storage_path=self.storage_path,
                                 placement=self.placement)}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """Keep each evaluation's objective: on_trial_complete gets only the last result, the study wants the curve."""
        if trial_id in self.curves and OBJECTIVE in result:
            self.curves[trial_id][int(result[STEP])] = result[OBJECTIVE]

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id not in self.owner:
            return
        key, phase, seed, params = self.owner[trial_id]
        if phase is not Phase.SEARCH or trial_id in self.done[key]:
            return
        if key in self.optuna:
            self.optuna[key].on_trial_complete(trial_id, result, error)
        result = result or {}
        cell = self.cells[key]
        self.done[key][trial_id] = {
            "objective": None if error else result.get(OBJECTIVE), "params": params,
            "full": not error and result.get(STEP) == cell.base["train"]["steps"], "error": error,
        }
        if cell.space:
            curve = self.curves.pop(trial_id, {})  # {} for a trial suggested by a searcher saved before curves were kept
            if OBJECTIVE in result:  # the result ASHA stopped it on reaches only on_trial_complete
                curve[int(result[STEP])] = result[OBJECTIVE]
            studies.mirror(self.ctx.settings.optuna_url, self.ctx.sweep, cell, trial_id, seed, self.done[key][trial_id],
                           curve=curve, started=self.started.pop(trial_id, None) or datetime.now(), completed=datetime.now())
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


class CellScheduler(FIFOScheduler):
    """One ASHA per cell for its search trials; seed replicates (and single runs) always run to the end."""

    def __init__(self, cells: list[CellPlan]):
        super().__init__()
        self.asha = {}
        for c in cells:
            if c.search.scheduler == "asha" and c.space:
                evals = math.ceil(c.base["train"]["steps"] / c.base["train"]["eval_every"])
                self.asha[c.key] = AsyncHyperBandScheduler(
                    time_attr="evals", metric=OBJECTIVE, mode="min", max_t=evals,
                    grace_period=min(c.search.grace_evals, evals), reduction_factor=c.search.reduction_factor,
                )

    def set_search_properties(self, metric, mode, **spec) -> bool:
        return True

    def _asha(self, trial):
        t = of(trial.config)
        return self.asha.get(t.cell) if t.phase is Phase.SEARCH else None

    def on_trial_add(self, controller, trial):
        if (a := self._asha(trial)) is not None:
            a.on_trial_add(controller, trial)

    def on_trial_result(self, controller, trial, result):
        a = self._asha(trial)
        if a is None or result.get(STEP, 0) >= of(trial.config).steps:
            return TrialScheduler.CONTINUE  # at max_t ASHA says STOP, which would cut off the final checkpoint and dumps
        return a.on_trial_result(controller, trial, result)

    def on_trial_complete(self, controller, trial, result):
        if (a := self._asha(trial)) is not None:
            a.on_trial_complete(controller, trial, result)

    def on_trial_remove(self, controller, trial):
        if (a := self._asha(trial)) is not None:
            a.on_trial_remove(controller, trial)
