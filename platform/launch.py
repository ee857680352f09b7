"""What a launch is once validated: a named set of cells with a search and a resource request.

A single run is a one-cell, one-trial sweep with no search space: it is
recorded, scheduled, tracked and displayed by exactly the code that runs a
sweep (records, resources, sweep), so the two cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from amlab.platform.spec import RunSpec, config_hash
from amlab.platform.status import Kind
from amlab.platform.sweep_spec import WHOLE_NODE, CellPlan, ResourcesSpec, SearchSpec, SweepSpec


@dataclass(frozen=True)
class Launch:
    kind: Kind
    name: str
    spec: dict[str, Any]  # what the store records and `resume` relaunches: the sweep spec, or the run's normalised spec
    cells: list[CellPlan]
    search: SearchSpec
    resources: ResourcesSpec
    notices: list[str] = field(default_factory=list)
    experiment: str | None = None  # the MLflow experiment asked for; where runs go is tracking.experiment_name's call

    @property
    def config_hash(self) -> str:
        return config_hash(self.spec)

    @property
    def total_trials(self) -> int:
        return sum(c.trials for c in self.cells)

    @classmethod
    def of_sweep(cls, spec: SweepSpec, cells: list[CellPlan], notices: list[str] | None = None) -> Launch:
        # the experiment only files the runs: it is kept out of the recorded spec and so out of its hash
        return cls(Kind.SWEEP, spec.name, spec.model_dump(mode="json", exclude={"experiment"}), cells, spec.search,
                   spec.resources, notices or [], spec.experiment)

    @classmethod
    def of_run(cls, spec: RunSpec) -> Launch:
        """One cell with the run's exact configuration: no search space, one seed, no early stopping."""
        normalised, train = spec.normalised(), spec.train
        search = SearchSpec(trials=1, scheduler="fifo")
        cell = CellPlan(spec.mechanism.name, spec.task.name, normalised, {}, (train.seed,), search, spec.config_hash())
        # a whole node's CPUs, as a plain PyTorch script takes the machine's cores (plan caps at the largest node)
        resources = ResourcesSpec(workers_per_trial=train.workers, gpus_per_worker=1 if train.device == "cuda" else 0,
                                  cpus_per_worker=WHOLE_NODE)
        return cls(Kind.RUN, cell.key, normalised, [cell], search, resources)
