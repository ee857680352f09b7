"""Sweep specs: a grid of mechanisms × tasks with seeds, a search and resources, expanded into cells.

Validated completely (every problem with its YAML path) before any Ray or
store work; each cell is a run spec plus its search space and identity.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from amlab.platform.spec import SpecError, Strict, TrainSpec, config_hash, format_errors, validate_run
from amlab.platform.status import SEARCH_SEED_BASE, CellNames
from amlab.platform.variants import Variant, expand, grid_problem
from amlab.workloads.model import IncompatibleCell, check_compatible
from amlab.workloads.registry import MECHANISMS, TASKS, UnknownName, knob_table

TRAIN_SEARCHABLE = {
    "lr": {"low": 1e-5, "high": 10.0, "log": True},
    "weight_decay": {"low": 0.0, "high": 1.0},
    "grad_clip": {"low": 0.0, "high": 100.0},
    "warmup_steps": {"low": 0, "high": 1_000_000},
    "batch_size": {"low": 1, "high": 65536, "log": True},
    "optimizer": {"choices": ["adam", "adamw", "rmsprop", "sgd"]},
    "schedule": {"choices": ["constant", "cosine"]},
}
DEFAULT_TRAIN_SPACE = {"train.lr": {"low": 3e-4, "high": 1e-2, "log": True}}


class Dimension(Strict):
    """One searched parameter: a numeric range (log-uniform when `log`) or a list of choices."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _shape(self):
        if (self.choices is None) == (self.low is None or self.high is None):
            raise ValueError("give either low and high, or choices")
        if self.choices is not None and not self.choices:
            raise ValueError("choices is empty; list at least one value")
        if self.choices is None and self.low > self.high:
            raise ValueError(f"low ({self.low}) must be <= high ({self.high})")
        if self.log and self.choices is None and self.low <= 0:
            raise ValueError("a log-scale range needs low > 0")
        return self


class SearchSpec(Strict):
    trials: int = Field(4, ge=1, le=100_000, description="configurations tried per cell (on the first seed)")
    scheduler: Literal["asha", "fifo"] = "asha"
    space: dict[str, Dimension] = Field(default_factory=dict, description="'mechanism.X', 'NAME.X' or 'train.X' -> range")
    grace_evals: int = Field(2, ge=1, description="ASHA: evaluations every trial gets before it can be stopped")
    reduction_factor: int = Field(3, ge=2)
    seed: int = Field(0, ge=0, description="seed of the TPE sampler")


WHOLE_NODE = 256  # the most CPUs a worker may ask for; planning caps any request at the largest node's CPUs


class ResourcesSpec(Strict):
    workers_per_trial: int = Field(1, ge=1, le=1024)
    gpus_per_worker: float = Field(0, ge=0, le=16)
    cpus_per_worker: float = Field(1, gt=0, le=WHOLE_NODE)
    max_concurrent: int | None = Field(None, ge=1, description="cap on concurrent trials; default: what the cluster fits")
    max_failures: int = Field(2, ge=0, le=100, description="retries of a trial from its last checkpoint after its "
                              "process, worker or node dies (0: none)")


class SweepSpec(Strict):
    name: str = Field(pattern=r"^[a-z0-9_-]+$", max_length=120)
    mechanisms: list[str] | dict[str, dict[str, Any] | list[dict[str, Any]] | None]  # params, or variants (variants.py)
    tasks: list[str] | dict[str, dict[str, Any] | list[dict[str, Any]] | None]
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)  # fewer cannot be ranked
    train: dict[str, Any] = Field(default_factory=dict)
    search: SearchSpec = SearchSpec()
    resources: ResourcesSpec = ResourcesSpec()
    experiment: str | None = Field(None, min_length=1, max_length=200, description="MLflow experiment of the sweep's "
                                   "runs (default: the sweep's name); not part of the spec's identity")


@dataclass(frozen=True)
class CellPlan(CellNames):
    """One mechanism × task cell: its fixed run spec (seed filled per trial), search space and identity."""

    mechanism: str
    task: str
    base: dict[str, Any]  # normalised RunSpec dict with the first seed
    space: dict[str, Dimension]
    seeds: tuple[int, ...]
    search: SearchSpec
    config_hash: str
    mechanism_variant: str = ""  # e.g. "d_model=64"; "" when the entry has one variant
    task_variant: str = ""
    axes: dict[str, Any] = field(default_factory=dict)  # "mechanism.d_model" / "task.seq_len" -> value

    @property
    def search_seed(self) -> int:
        """The seed search trains on: never a reported seed when there is a space to search (no winner's curse).

        Picking the best configuration on seed s's validation split and then reporting seed s's test split
        would carry the selection's luck into the result; the chosen configuration is instead re-run on every
        reported seed.  A cell with nothing to search (a single run) trains its first seed directly.
        """
        return SEARCH_SEED_BASE + self.search.seed if self.space else self.seeds[0]

    @property
    def replica_seeds(self) -> tuple[int, ...]:
        """The seeds the chosen configuration is (re-)trained on after search."""
        return self.seeds if self.space else self.seeds[1:]

    @property
    def trials(self) -> int:
        return (self.search.trials if self.space else 1) + len(self.replica_seeds)


def _entries(value: list[str] | dict[str, Any]) -> dict[str, Any]:
    """name -> params; names that are not strings are left to SweepSpec's own error."""
    return {n: None for n in value if isinstance(n, str)} if isinstance(value, list) else dict(value)


def _repeats(section: str, value: Any) -> list[str]:
    """A seed or a listed name given twice would train one thing twice, or silently once."""
    if not isinstance(value, list):
        return []
    hashable = [v for v in value if isinstance(v, (str, int))]
    return [f"{section}: {v!r} is listed {hashable.count(v)} times; list each once" for v in dict.fromkeys(hashable)
            if hashable.count(v) > 1]


def _space_for(spec: SweepSpec, mechanism: str, fixed: dict[str, Any], train_fixed: set[str]) -> dict[str, Dimension]:
    """The cell's search space: the spec's entries that apply to it, else the registry defaults.

    A default range never overrides a value the spec fixes: a mechanism knob given in the spec, or a train
    field set in its `train` section (a preset's published learning rate is trained as given).
    """
    table = knob_table(MECHANISMS.get(mechanism).params)
    if spec.search.space:
        space = {}
        for key, dim in spec.search.space.items():
            scope, _, field = key.partition(".")
            if scope == "train" or (scope in ("mechanism", mechanism) and field in table):
                space[key if scope == "train" else f"mechanism.{field}"] = dim
        return space
    space = {
        f"mechanism.{name}": Dimension(**({"choices": k["choices"]} if "choices" in k else
                                          {"low": k["space"][0], "high": k["space"][1], "log": k["log"]}))
        for name, k in table.items() if k["search"] and name not in fixed
    }
    train_space = {k: Dimension(**v) for k, v in DEFAULT_TRAIN_SPACE.items() if k.partition(".")[2] not in train_fixed}
    return {**space, **train_space}


def _check_bounds(path: str, dim: Dimension, bounds: dict[str, Any], problems: list[str]) -> None:
    if dim.choices is not None:
        allowed = bounds.get("choices")
        bad = [c for c in dim.choices if allowed is not None and c not in allowed]
        if bad:
            problems.append(f"{path}.choices: {bad} not accepted; accepted: {allowed}")
        return
    if "low" in bounds and dim.low < bounds["low"]:
        problems.append(f"{path}.low: {dim.low} is below the registry's bound {bounds['low']}")
    if "high" in bounds and dim.high > bounds["high"]:
        problems.append(f"{path}.high: {dim.high} is above the registry's bound {bounds['high']}")


def _check_values(path: str, dim: Dimension, model, field: str, problems: list[str]) -> None:
    """Every value the search can suggest (each choice, both ends of a range) must be one the field accepts."""
    for value in dim.choices if dim.choices is not None else [dim.low, dim.high]:
        if isinstance(value, float) and value.is_integer() and dim.choices is None:
            value = int(value)  # a range's ends are read as floats; an int knob is searched with integers
        try:
            model.model_validate({field: value})
        except ValidationError as err:
            problems.append(f"{path}: {value!r}: {err.errors()[0]['msg'].removeprefix('Value error, ')}")


def validate_sweep(data: dict[str, Any]) -> tuple[SweepSpec, list[CellPlan], list[str]]:
    """Validate and expand a sweep spec -> (spec, cells, notices); SpecError lists every problem with its YAML path."""
    problems: list[str] = []
    try:
        spec = SweepSpec.model_validate(data)
    except ValidationError as err:
        problems += format_errors(err, "", SweepSpec)
        spec = None
    raw_train = data.get("train") if isinstance(data.get("train"), dict) else {}
    for forbidden, where in (("seed", "seeds"), ("workers", "resources.workers_per_trial")):
        if forbidden in raw_train:
            problems.append(f"train.{forbidden}: set by the sweep; use {where}")
    for section in ("seeds", "mechanisms", "tasks"):
        problems += _repeats(section, data.get(section))
    if spec is not None and max(spec.seeds) >= SEARCH_SEED_BASE:
        problems.append(f"seeds: {max(spec.seeds)} is reserved for search (seeds >= {SEARCH_SEED_BASE} are never reported)")
    chosen: dict[str, dict[str, list[Variant]]] = {}
    for section, registry in (("mechanisms", MECHANISMS), ("tasks", TASKS)):
        value = data.get(section)
        entries = _entries(value) if isinstance(value, (list, dict)) else {}
        if isinstance(value, (list, dict)) and not entries:
            problems.append(f"{section}: empty; valid: {', '.join(registry.names())}")
        chosen[section] = {}
        for name, raw in entries.items():
            try:
                params_cls = registry.get(str(name)).params
            except UnknownName as e:
                problems.append(f"{section}.{name}: {e}")
                continue
            found, trouble = expand(raw, params_cls, f"{section}.{name}")
            problems += trouble
            for i, variant in enumerate(found):
                try:
                    params_cls(**variant.params)
                except ValidationError as err:
                    where = f"{section}.{name}" + (f"[{variant.label}]" if variant.label else "")
                    problems += format_errors(err, where, params_cls)
                except TypeError as err:  # params that are not a mapping of names
                    problems.append(f"{section}.{name}[{i}]: {err}")
            chosen[section][name] = found
    sizes = {what: sum(len(v) for v in chosen[section].values()) for section, what in
             (("mechanisms", "mechanism variants"), ("tasks", "task variants"))}
    if (too_big := grid_problem(sizes)) is not None:
        problems.append(too_big)
    space = ((data.get("search") or {}).get("space") or {}) if isinstance(data.get("search"), dict) else {}
    for key, raw in space.items() if isinstance(space, dict) else ():
        try:
            dim = Dimension.model_validate(raw)
        except ValidationError:
            continue  # already reported by the SweepSpec validation above
        scope, _, field = str(key).partition(".")
        path = f"search.space.{key}"
        if scope == "train":
            if field not in TRAIN_SEARCHABLE:
                problems.append(f"{path}: not searchable; searchable train fields: {', '.join(TRAIN_SEARCHABLE)}")
            else:
                _check_bounds(path, dim, TRAIN_SEARCHABLE[field], problems)
                _check_values(path, dim, TrainSpec, field, problems)
                steps = raw_train.get("steps", TrainSpec.model_fields["steps"].default)
                longest = max(dim.choices or [dim.high], default=0)
                if field in ("warmup_steps",) and isinstance(steps, int) and isinstance(longest, (int, float)) \
                        and longest > steps:
                    problems.append(f"{path}: reaches {longest:g}, longer than the run (train.steps: {steps})")
            continue
        if scope != "mechanism" and scope not in chosen["mechanisms"]:
            problems.append(f"{path}: '{scope}' is not 'train', 'mechanism' or one of the sweep's mechanisms")
            continue
        owners = [m for m in chosen["mechanisms"] if scope in ("mechanism", m)]
        tables = [knob_table(MECHANISMS.get(m).params) for m in owners]
        if not any(field in t for t in tables):
            problems.append(f"{path}: no mechanism in the sweep has a knob '{field}'")
        for m, t in zip(owners, tables, strict=True):
            if field in t:
                _check_bounds(path, dim, t[field], problems)
                _check_values(f"{path} ({m})", dim, MECHANISMS.get(m).params, field, problems)
    train = {k: v for k, v in raw_train.items() if k not in ("seed", "workers")}
    if spec is not None:
        train.update(seed=spec.seeds[0], workers=spec.resources.workers_per_trial)
        if spec.resources.gpus_per_worker > 0:
            train.setdefault("device", "cuda")
    try:
        TrainSpec.model_validate(train)
    except ValidationError as err:
        problems += format_errors(err, "train", TrainSpec)
    if problems or spec is None:
        raise SpecError(list(dict.fromkeys(problems)))

    cells, notices = [], []
    for (m, mvariants), (t, tvariants) in itertools.product(chosen["mechanisms"].items(), chosen["tasks"].items()):
        try:
            check_compatible(m, t)
        except IncompatibleCell as e:
            notices.append(f"skipped {m} × {t}: {e}")
            continue
        for mv, tv in itertools.product(mvariants, tvariants):
            run = {"mechanism": {"name": m, **mv.params}, "task": {"name": t, **tv.params}, "train": train}
            base = validate_run(run).normalised()
            cell_space = _space_for(spec, m, mv.params, set(raw_train))
            identity = {"run": {**base, "train": {**base["train"], "seed": None}}, "seeds": spec.seeds,
                        "search": spec.search.model_dump(mode="json", exclude={"space"}),
                        "space": {k: v.model_dump(mode="json") for k, v in sorted(cell_space.items())}}
            axes = {**{f"mechanism.{k}": v for k, v in mv.axes.items()}, **{f"task.{k}": v for k, v in tv.axes.items()}}
            cells.append(CellPlan(m, t, base, cell_space, tuple(spec.seeds), spec.search, config_hash(identity),
                                  mv.label, tv.label, axes))
    if not cells:
        raise SpecError(["mechanisms × tasks: no compatible cell; " + "; ".join(notices)])
    if any(c.axes for c in cells):
        notices.append(f"grid: {sizes['mechanism variants']} mechanism variants × {sizes['task variants']} task variants "
                       f"-> {len(cells)} cells")
    return spec, cells, notices
