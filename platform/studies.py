"""Each cell's Optuna study: the search Tune ran, written so that optuna-dashboard and `optuna.importance` read it as is.

Tune does the searching (search.CellSearcher asks a per-cell OptunaSearch for each configuration, minimising
`objective`); the persistent study only records it.  It is created when the cell is recorded (records) and
gets each search trial when it ends (the searcher).  The study is in the metric's own terms, as if Optuna
had run it: its direction is the one in which the metric improves (maximize accuracy, minimize errors), its
values are the validation metric, each evaluation is an intermediate value, a trial that ASHA stopped is
PRUNED, and its start and end times are the trial's own.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import optuna

from amlab.platform.locks import first_use, sqlite_file
from amlab.platform.status import objective_sign, study_name
from amlab.platform.sweep_spec import CellPlan
from amlab.workloads.registry import TASKS

TUNE_TRIAL_ID = "tune_trial_id"  # user attr naming the Tune trial a study trial records (what keeps mirroring idempotent)


def storage(url: str) -> optuna.storages.RDBStorage:
    """The process's one Optuna storage for `url`.  Optuna builds a new one for every `storage=URL` call, and each
    checks its schema's version by executing its Alembic revision scripts: about 0.13 s of CPU, which the driver
    spent on every search trial that ended, beside the trials it shares the cores with.  An SQLite file that was
    replaced or removed since (a long-lived resident driver outlives it) gets a storage of its own."""
    made = _STORAGES.get((url, _identity(url)))
    if made is None:
        with first_use(url):  # Optuna creates its schema on first use
            made = optuna.storages.RDBStorage(url)
        _STORAGES[(url, _identity(url))] = made  # the file's identity once it exists
        while len(_STORAGES) > 8:
            del _STORAGES[next(iter(_STORAGES))]
    return made


_STORAGES: dict[tuple[str, tuple[int, int] | None], optuna.storages.RDBStorage] = {}


def _identity(url: str) -> tuple[int, int] | None:
    path = sqlite_file(url)
    if path is None or not path.exists():
        return None
    stat = path.stat()
    return stat.st_dev, stat.st_ino


def create(sweep: str, cell: CellPlan, optuna_url: str) -> None:
    """The cell's study, in the direction its metric improves; an existing one is kept (a relaunch resumes it)."""
    direction = "maximize" if TASKS.get(cell.task).higher_is_better else "minimize"
    optuna.create_study(study_name=study_name(sweep, cell.key), storage=storage(optuna_url), direction=direction,
                        load_if_exists=True)


def _distributions(cell: CellPlan, flat: dict[str, Any]) -> dict[str, optuna.distributions.BaseDistribution]:
    """Each parameter's distribution as SpaceFn suggested it (an int knob as IntDistribution)."""
    out: dict[str, optuna.distributions.BaseDistribution] = {}
    for key, value in flat.items():
        d = cell.space[key]
        if d.choices is not None:
            out[key] = optuna.distributions.CategoricalDistribution(d.choices)
        elif isinstance(value, int):
            out[key] = optuna.distributions.IntDistribution(int(d.low), int(d.high), log=d.log)
        else:
            out[key] = optuna.distributions.FloatDistribution(d.low, d.high, log=d.log)
    return out


def mirror(optuna_url: str, sweep: str, cell: CellPlan, trial_id: str, seed: int, done: dict[str, Any], *,
           curve: dict[int, float], started: datetime, completed: datetime) -> None:
    """Add a finished search trial to the cell's study, once: a trial it already holds (a resumed sweep
    reporting it again) adds nothing.

    `done` is the searcher's record (`objective`, `params`, `full`, `error`) and `curve` the objective at
    each evaluated step, both as Tune minimised it; the study gets the metric itself (objective × sign).
    An errored trial is FAIL, one stopped before its last step PRUNED with its last value (as Optuna's own
    `tell` gives a pruned trial, optuna/study/_tell.py), a full-length one COMPLETE, or FAIL when its
    objective is not finite.
    """
    study = optuna.load_study(study_name=study_name(sweep, cell.key), storage=storage(optuna_url))
    if any(t.user_attrs.get(TUNE_TRIAL_ID) == trial_id for t in study.get_trials(deepcopy=False)):
        return
    sign = objective_sign(TASKS.get(cell.task).higher_is_better)  # ±1: its own inverse
    objective = done["objective"]
    ok = objective is not None and math.isfinite(objective)
    if done["error"]:
        state = optuna.trial.TrialState.FAIL
    elif not done["full"]:
        state = optuna.trial.TrialState.PRUNED
    else:
        state = optuna.trial.TrialState.COMPLETE if ok else optuna.trial.TrialState.FAIL
    flat = {f"{section}.{k}": v for section, values in done["params"].items() for k, v in values.items()}
    # built directly: optuna.trial.create_trial stamps both times with now(); add_trial validates it the same way
    study.add_trial(optuna.trial.FrozenTrial(
        number=-1, trial_id=-1, state=state,
        value=sign * objective if ok and state is not optuna.trial.TrialState.FAIL else None,
        datetime_start=started, datetime_complete=completed, params=flat, distributions=_distributions(cell, flat),
        user_attrs={TUNE_TRIAL_ID: trial_id, "seed": seed}, system_attrs={},
        intermediate_values={step: sign * v for step, v in sorted(curve.items())},
    ))
