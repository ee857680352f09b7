"""The one object that crosses into a trial: everything the training loop needs, validated once on the driver.

Tune pickles it inside the trial's config (`{"trial": TrialConfig}`) and
restores it with the experiment; the loop, the DDP workers and the driver's
callbacks all read the same fields instead of re-parsing a dict.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from amlab.platform.spec import RunSpec
from amlab.platform.status import Phase, objective_sign, reported, val_key
from amlab.workloads.registry import TASKS

KEY = "trial"  # the single entry of a Tune trial config


@dataclass(frozen=True)
class Placement:
    """How a trial's work is laid out: threads per process and what each (DDP) worker holds."""

    threads: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    max_failures: int = 0  # restarts of a DDP trial's workers from its last checkpoint (Ray Train)


@dataclass(frozen=True)
class TrialConfig:
    spec: RunSpec
    cell: str = ""  # the cell key (scheduler and display group trials by it)
    phase: Phase = Phase.SEARCH
    run_id: str | None = None  # its MLflow run, which the driver writes (platform/outbox.py); None: nothing logged
    storage_path: str | None = None  # Ray storage: a DDP trial's Train run, a trial's final folder for the driver
    scratch: str | None = None  # the trial's own folder for checkpoint temporaries (None: the system temp dir)
    placement: Placement = Placement()

    @classmethod
    def local(cls, spec: RunSpec, threads: int = 1) -> TrialConfig:
        """A trial with no tracking and no Ray: the loop run in-process by tests and benchmarks."""
        return cls(spec=spec, placement=Placement(threads=threads))

    @property
    def steps(self) -> int:
        return self.spec.train.steps

    @property
    def objective_key(self) -> str:
        return val_key(TASKS.get(self.spec.task.name).metric)

    @property
    def objective_sign(self) -> float:
        return objective_sign(TASKS.get(self.spec.task.name).higher_is_better)

    @property
    def reported(self) -> bool:
        """Whether its result can stand for its cell (see status.reported): only those runs get heatmaps drawn."""
        return reported(self.phase, self.spec.train.seed)

    @property
    def tracked(self) -> bool:
        return self.run_id is not None

    def with_placement(self, placement: Placement) -> TrialConfig:
        return replace(self, placement=placement)


def of(config: dict) -> TrialConfig:
    """The TrialConfig inside a Tune trial's config dict."""
    return config[KEY]
