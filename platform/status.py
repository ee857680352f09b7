"""The platform's vocabulary as types: states, phases, metric keys, and the names derived from a sweep.

Every module that reads or writes a status, a metric key or a study name
imports it from here, so the store, MLflow, Tune callbacks, the report and
the CLI cannot drift apart.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    """Lifecycle of a sweep, a cell or a trial (the same values as MLflow's run statuses)."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    KILLED = "KILLED"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL

    @property
    def active(self) -> bool:
        return self in ACTIVE


TERMINAL = frozenset({Status.FINISHED, Status.FAILED, Status.KILLED})
ACTIVE = frozenset({Status.PENDING, Status.RUNNING})


class Kind(StrEnum):
    """What a row of the `sweeps` table is: a sweep, or a single run (a one-cell, one-trial sweep)."""

    SWEEP = "sweep"
    RUN = "run"


class Phase(StrEnum):
    """A trial either searches hyperparameters (on the search seed) or replicates the chosen ones on a seed."""

    SEARCH = "search"
    SEED = "seed"


SEARCH_SEED_BASE = 2**30  # search trains on SEARCH_SEED_BASE + search.seed; reported seeds stay below it


def reported(phase: Phase, seed: int) -> bool:
    """Whether a finished trial can be one a cell reports: a seed replicate, or a trial on a reported seed (a
    cell with nothing to search trains its first seed directly).  Search on the search seed never is."""
    return phase == Phase.SEED or seed < SEARCH_SEED_BASE


# -- metric keys: what the training loop reports and everything downstream reads ------------------

OBJECTIVE = "objective"  # the validation metric, signed so that lower is better (what search minimises)
STEP = "step"
EVALS = "evals"
TRAIN_LOSS = "train/loss"
PARAMS_COUNT = "model/params_count"
STATE_SIZE = "model/state_size"


def val_key(metric: str, group: str | None = None) -> str:
    """`val/<metric>` (or `val/<metric>/<group>`): the split search looks at."""
    return f"val/{metric}" + (f"/{group}" if group else "")


def test_key(metric: str, group: str | None = None) -> str:
    """`test/<metric>` (or `test/<metric>/<group>`): the split the report compares."""
    return f"test/{metric}" + (f"/{group}" if group else "")


test_key.__test__ = False  # not a pytest test, though its name starts with test


def objective_sign(higher_is_better: bool) -> float:
    """Multiply a metric by this to get the objective (lower is better)."""
    return -1.0 if higher_is_better else 1.0


def is_reported_metric(key: str) -> bool:
    """Keys kept from a Tune result in the store: split metrics, model sizes, step and objective."""
    return "/" in key or key in (STEP, OBJECTIVE)


# -- names derived from a sweep ---------------------------------------------------------------------

def study_name(sweep: str, cell_key: str) -> str:
    """The cell's Optuna study (optuna-dashboard lists them as SWEEP:CELL)."""
    return f"{sweep}:{cell_key}"


class CellNames:
    """A cell's names, derived in one place for the plan (`CellPlan`) and the store's row (`Cell`).

    Both carry `mechanism`, `task`, `mechanism_variant`, `task_variant` and `config_hash`.
    """

    @property
    def key(self) -> str:
        """Its name in MLflow, Optuna and Tune: unique per variant."""
        return f"{self.mechanism}-{self.task}-{self.config_hash[:8]}"

    @property
    def mechanism_label(self) -> str:
        return f"{self.mechanism}[{self.mechanism_variant}]" if self.mechanism_variant else self.mechanism

    @property
    def task_label(self) -> str:
        return f"{self.task}[{self.task_variant}]" if self.task_variant else self.task

    @property
    def title(self) -> str:
        return f"{self.mechanism_label} × {self.task_label}"
