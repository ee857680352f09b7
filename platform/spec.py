"""Run specs: typed, strict (misspelled fields are errors), hashable.

A spec names a mechanism and a task with their params and a training
budget.  It is validated completely, against the registries, before any
Ray or store work starts; every problem is reported with its path.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from amlab.platform.errors import BadInput
from amlab.workloads.model import IncompatibleCell, check_compatible
from amlab.workloads.registry import MECHANISMS, TASKS, Params, UnknownName


class SpecError(BadInput):
    """A spec that cannot run; `problems` holds one "path: message" line each."""

    def __init__(self, problems: list[str]):
        super().__init__("the spec was rejected; nothing was started or recorded", problems)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TrainSpec(Strict):
    steps: int = Field(1000, ge=1, le=10_000_000)
    batch_size: int = Field(32, ge=1, le=65536)
    lr: float = Field(1e-3, gt=0, le=10)
    optimizer: Literal["adam", "adamw", "rmsprop", "sgd"] = "adam"
    weight_decay: float = Field(0.0, ge=0, le=1)
    schedule: Literal["constant", "cosine"] = "constant"
    warmup_steps: int = Field(0, ge=0)
    grad_clip: float = Field(1.0, ge=0, description="max global grad norm; 0 disables")
    eval_every: int = Field(200, ge=1)
    eval_batches: int = Field(4, ge=1, le=1000)
    log_every: int = Field(50, ge=1)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    workers: int = Field(1, ge=1, le=1024)
    device: Literal["auto", "cpu", "cuda"] = "auto"

    @model_validator(mode="after")
    def _divisible(self):
        if self.batch_size % self.workers:
            raise ValueError(f"batch_size ({self.batch_size}) must be divisible by workers ({self.workers})")
        return self


class Component(Strict):
    """`name` plus that entry's params, validated against the registry's params class."""

    model_config = ConfigDict(extra="allow")
    name: str

    def params_dict(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class RunSpec(Strict):
    mechanism: Component
    task: Component
    train: TrainSpec = TrainSpec()

    def mechanism_params(self) -> Params:
        return MECHANISMS.get(self.mechanism.name).params(**self.mechanism.params_dict())

    def task_params(self) -> Params:
        return TASKS.get(self.task.name).params(**self.task.params_dict())

    def normalised(self) -> dict[str, Any]:
        """Every default filled in: what the config hash and the tracking params see."""
        return {
            "mechanism": {"name": self.mechanism.name, **self.mechanism_params().model_dump(mode="json")},
            "task": {"name": self.task.name, **self.task_params().model_dump(mode="json")},
            "train": self.train.model_dump(mode="json"),
        }

    def config_hash(self) -> str:
        return config_hash(self.normalised())


def dotted(tree: dict[str, Any], key: str) -> Any:
    """The value at a dotted path ('mechanism.d_model') of a spec tree, or None."""
    node: Any = tree
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def config_hash(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _loc(prefix: str, loc: tuple) -> str:
    return ".".join([prefix, *map(str, loc)]) if prefix else ".".join(map(str, loc))


def format_errors(err: ValidationError, prefix: str, model: type[BaseModel] | None = None) -> list[str]:
    """One line per problem: the dotted path, what is wrong, and what is accepted."""
    lines = []
    for e in err.errors():
        path = _loc(prefix, e["loc"])
        if e["type"] == "extra_forbidden" and model is not None:
            target = model
            for part in e["loc"][:-1]:
                field = target.model_fields.get(str(part)) if isinstance(target, type) else None
                target = field.annotation if field else None
            accepted = ", ".join(target.model_fields) if isinstance(target, type) and issubclass(target, BaseModel) else "?"
            lines.append(f"{path}: unknown field; accepted fields: {accepted}")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            shown = e["loc"] and e["type"] != "missing" and not isinstance(e.get("input"), dict)
            got = f" (got {e['input']!r})" if shown else ""
            lines.append(f"{path}: {msg}{got}")
    return lines


def validate_run(data: dict[str, Any]) -> RunSpec:
    """Validate a whole run spec; raise SpecError listing every problem with its path."""
    problems: list[str] = []
    unknown = sorted(set(data) - set(RunSpec.model_fields))
    problems += [f"{k}: unknown section; accepted sections: {', '.join(RunSpec.model_fields)}" for k in unknown]
    try:
        TrainSpec.model_validate(data.get("train") or {})
    except ValidationError as err:
        problems += format_errors(err, "train", TrainSpec)
    for section, registry in (("mechanism", MECHANISMS), ("task", TASKS)):
        comp = data.get(section)
        if not isinstance(comp, dict) or "name" not in comp:
            problems.append(f"{section}.name: missing; valid: {', '.join(registry.names())}")
            continue
        try:
            entry = registry.get(str(comp["name"]))
        except UnknownName as e:
            problems.append(f"{section}.name: {e}")
            continue
        try:
            entry.params(**{k: v for k, v in comp.items() if k != "name"})
        except ValidationError as err:
            problems += format_errors(err, section, entry.params)
    if not problems:
        try:
            check_compatible(data["mechanism"]["name"], data["task"]["name"])
        except IncompatibleCell as e:
            problems.append(f"mechanism.name: {e}")
    if problems:
        raise SpecError(problems)
    return RunSpec.model_validate(data)


def parse_value(text: str) -> Any:
    """`--set` values are YAML scalars/lists: 32 -> int, 1e-3 -> float, [1,2] -> list, lstm -> str."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `section.field=value` overrides (nested dotted paths allowed) to a spec dict."""
    problems = []
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key or "." not in key:
            problems.append(f"--set {item!r}: expected section.field=value, e.g. train.steps=50")
            continue
        *parents, leaf = key.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                problems.append(f"--set {item!r}: {part} is not a section")
                break
        else:
            node[leaf] = parse_value(value)
    if problems:
        raise SpecError(problems)
    return data


def load_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError:
        raise SpecError([f"{path}: no such spec file"]) from None
    except yaml.YAMLError as e:
        raise SpecError([f"{path}: not valid YAML: {e}"]) from None
    if not isinstance(data, dict):
        raise SpecError([f"{path}: a spec must be a mapping of sections, got {type(data).__name__}"])
    return data
