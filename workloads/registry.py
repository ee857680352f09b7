"""Typed registries of mechanisms and tasks.

One source of truth: `amctl list`, spec validation and the default search
spaces all read these entries.  A module registers an entry with a decorator;
adding a mechanism or task is adding one module (they are discovered by
`workloads.mechanisms` / `workloads.tasks` on import).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from types import UnionType
from typing import Any, Generic, Literal, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

Modality = Literal["bits", "tokens", "real", "image", "video"]
MODALITIES: tuple[str, ...] = ("bits", "tokens", "real", "image", "video")


def coercion_problem(annotation: Any, value: Any) -> str | None:
    """What pydantic's lax mode would silently coerce for a field typed `annotation`, or None.

    A boolean is never a number (`steps: true` is not 1), a number never a
    boolean, and a float never a whole number (`d_model: 64.0` is refused like
    64.5); ints for floats and YAML's strings for floats ("1e-3") stay accepted.
    """
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (Union, UnionType):
        kinds = [a for a in args if a is not type(None)]
        return coercion_problem(kinds[0], value) if len(kinds) == 1 else None
    if origin in (tuple, list) and isinstance(value, (list, tuple)) and args:
        for i, item in enumerate(value):
            if problem := coercion_problem(args[0], item):
                return f"item {i}: {problem}"
        return None
    whole = annotation is int or (origin is Literal and all(type(a) is int for a in args))
    if isinstance(value, bool) and (whole or annotation is float):
        return f"should be a {'whole ' * whole}number, not a boolean"
    if whole and isinstance(value, float):
        return "should be a whole number, not a float"
    if annotation is bool and isinstance(value, (int, float)) and not isinstance(value, bool):
        return "should be true or false, not a number"
    return None


class Exact(BaseModel):
    """A model whose int and float fields take no booleans, and whose int fields take no floats."""

    @field_validator("*", mode="before")
    @classmethod
    def _exact_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        f = cls.model_fields.get(info.field_name or "")
        if f is not None and (problem := coercion_problem(f.annotation, value)):
            raise ValueError(problem)
        return value


class Params(Exact):
    """Base class of every mechanism/task params class: misspelled fields are errors, numbers are exact."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def knob(
    default: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    log: bool = False,
    choices: tuple | None = None,
    search: bool = True,
    space: tuple[float, float] | None = None,
    doc: str = "",
) -> Any:
    """A params field with validation bounds that double as its default search range.

    `low`/`high` are inclusive bounds enforced on every spec; `log` marks the
    search as log-uniform; `choices` makes it categorical.  `search=False`
    keeps a knob out of the default search space (e.g. structural sizes that
    a task fixes); `space=(lo, hi)` narrows the default search range inside
    the validation bounds (a layer count valid up to 8 but searched over 1-2).
    """
    extra: dict[str, Any] = {"search": search, "log": log}
    if space is not None:
        extra["space"] = list(space)
    kwargs: dict[str, Any] = {}
    if choices is not None:
        extra["choices"] = list(choices)
    if low is not None:
        kwargs["ge"] = low
        extra["low"] = low
    if high is not None:
        kwargs["le"] = high
        extra["high"] = high
    return Field(default, description=doc or None, json_schema_extra=extra, **kwargs)


def knob_table(params_cls: type[Params]) -> dict[str, dict[str, Any]]:
    """Each knob's default, bounds/choices, log flag and whether it is searched."""
    table = {}
    for name, f in params_cls.model_fields.items():
        extra = dict(f.json_schema_extra or {})
        default = f.default
        entry = {"default": default, "type": type(default).__name__}
        if "choices" in extra:
            entry["choices"] = extra["choices"]
        for key in ("low", "high"):
            if key in extra:
                entry[key] = extra[key]
        if "low" in entry and "high" in entry:
            entry["space"] = extra.get("space", [entry["low"], entry["high"]])
        entry["log"] = bool(extra.get("log", False))
        entry["search"] = bool(extra.get("search", False)) and (
            "choices" in extra or ("low" in extra and "high" in extra)
        )
        if f.description:
            entry["doc"] = f.description
        table[name] = entry
    return table


P = TypeVar("P", bound=Params)


@dataclass(frozen=True)
class MechanismEntry(Generic[P]):
    """A mechanism: `build(params, d_in)` returns a core module.

    Sequence cores map (B, T, d_model) -> (B, T, d_model) causally and have
    `forward(x, state=None) -> (y, state)`; spatial cores (`kind="spatial"`)
    map feature maps (B, C, H, W) -> (B, C, H, W) inside the frame encoder.
    Every core implements the `Core` protocol in `workloads.model`.
    """

    name: str
    family: str
    params: type[P]
    build: Callable[[P], Any]
    modalities: tuple[str, ...]
    paper: str
    kind: Literal["sequence", "spatial", "glimpse"] = "sequence"
    recurrent: bool = True
    summary: str = ""

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "family": self.family,
            "kind": self.kind,
            "recurrent": self.recurrent,
            "modalities": list(self.modalities),
            "paper": self.paper,
            "summary": self.summary,
            "params": knob_table(self.params),
        }


@dataclass(frozen=True)
class TaskEntry(Generic[P]):
    """A task: `build(params)` returns a `workloads.tasks.base.Task`."""

    name: str
    params: type[P]
    build: Callable[[P], Any]
    modality: str
    loss: Literal["bce", "ce", "mse"]
    metric: str
    higher_is_better: bool
    paper: str = ""
    summary: str = ""
    metrics: tuple[str, ...] = field(default_factory=tuple)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "modality": self.modality,
            "loss": self.loss,
            "metric": self.metric,
            "higher_is_better": self.higher_is_better,
            "metrics": list(self.metrics or (self.metric,)),
            "paper": self.paper,
            "summary": self.summary,
            "params": knob_table(self.params),
        }


E = TypeVar("E", MechanismEntry, TaskEntry)


class Registry(Generic[E]):
    """Name -> entry, filled by decorators when the package's modules import."""

    def __init__(self, kind: str, package: str):
        self.kind = kind
        self._package = package
        self._entries: dict[str, E] = {}
        self._loaded = False

    def add(self, entry: E) -> E:
        if entry.name in self._entries and self._entries[entry.name] is not entry:
            raise ValueError(f"{self.kind} {entry.name!r} registered twice")
        self._entries[entry.name] = entry
        return entry

    def _load(self) -> None:
        if not self._loaded:
            pkg = importlib.import_module(self._package)
            for mod in pkgutil.iter_modules(pkg.__path__):
                if not mod.name.startswith("_"):
                    importlib.import_module(f"{self._package}.{mod.name}")
            self._loaded = True

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def get(self, name: str) -> E:
        self._load()
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownName(self.kind, name, self.names()) from None

    def __iter__(self):
        return iter(self.get(n) for n in self.names())


class UnknownName(KeyError):
    def __init__(self, kind: str, name: str, valid: list[str]):
        self.kind, self.name, self.valid = kind, name, valid
        super().__init__(f"unknown {kind} {name!r}; valid: {', '.join(valid)}")

    def __str__(self) -> str:
        return self.args[0]


MECHANISMS: Registry[MechanismEntry] = Registry("mechanism", "amlab.workloads.mechanisms")
TASKS: Registry[TaskEntry] = Registry("task", "amlab.workloads.tasks")


def mechanism(
    name: str,
    *,
    family: str,
    params: type[Params],
    modalities: tuple[str, ...] = ("bits", "tokens", "real"),
    paper: str,
    kind: str = "sequence",
    recurrent: bool = True,
    summary: str = "",
):
    """Class decorator: register a core class built as `cls(params)`."""

    def wrap(cls):
        MECHANISMS.add(
            MechanismEntry(
                name=name, family=family, params=params, build=cls, modalities=modalities,
                paper=paper, kind=kind, recurrent=recurrent, summary=summary or (cls.__doc__ or "").strip().split("\n")[0],
            )
        )
        return cls

    return wrap


def task(
    name: str,
    *,
    params: type[Params],
    modality: str,
    loss: str,
    metric: str,
    higher_is_better: bool,
    metrics: tuple[str, ...] = (),
    paper: str = "",
    summary: str = "",
):
    """Class decorator: register a task class built as `cls(params)`."""

    def wrap(cls):
        TASKS.add(
            TaskEntry(
                name=name, params=params, build=cls, modality=modality, loss=loss, metric=metric,
                higher_is_better=higher_is_better, metrics=metrics, paper=paper,
                summary=summary or (cls.__doc__ or "").strip().split("\n")[0],
            )
        )
        return cls

    return wrap
