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
from amlab.workloads.registry import MECHANISMS, TASKS, Exact, Params, UnknownName


class SpecError(BadInput):
    """A spec that cannot run; `problems` holds one "path: message" line each."""

    def __init__(self, problems: list[str]):
        super().__init__("the spec was rejected; nothing was started or recorded", problems)


class Strict(Exact):
    """Misspelled fields are errors; no boolean passes for a number, no float for a whole number."""

    model_config = ConfigDict(extra="forbid")


PERIODS = ("warmup_steps", "eval_every", "test_every", "log_every")
# train fields newer than stored runs: part of a run's identity only when set
ADDED_LATER = {"compile": False, "test_every": None}


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
    test_every: int | None = Field(None, ge=1, description="steps between measurements of the test split, a multiple "
                                   "of eval_every; unset: the final evaluation alone measures it (nothing before reads it, "
                                   "and with long generalisation lengths it costs many times the validation split)")
    eval_batches: int = Field(4, ge=1, le=1000)
    log_every: int = Field(50, ge=1)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    workers: int = Field(1, ge=1, le=1024)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compile: bool = Field(False, description="torch.compile the training forward and backward (worth it on a GPU "
                          "for runs of thousands of steps; on a CPU compiling takes longer than most runs)")

    @model_validator(mode="after")
    def _divisible(self):
        if self.batch_size % self.workers:
            raise ValueError(f"batch_size ({self.batch_size}) must be divisible by workers ({self.workers})")
        if self.test_every is not None and self.test_every % self.eval_every:
            raise ValueError(f"test_every ({self.test_every}) must be a multiple of eval_every ({self.eval_every}): "
                             f"the test split is measured at evaluations")
        return self

    def measures_test(self, step: int) -> bool:
        """Whether the evaluation after `step` steps measures the test split besides the validation one."""
        return step == self.steps or (self.test_every is not None and step % self.test_every == 0)

    def period_problems(self) -> list[str]:
        """Warmup, evaluation or logging periods set longer than the run (a default one may be: it ends with the run).

        Checked by `validate_run` on what a person wrote, not by the model itself, so that records of runs made
        before the rule still load (the report reads them back through this model).
        """
        return [f"train.{name}: {value} is longer than the run (train.steps: {self.steps}); use at most {self.steps}"
                for name in PERIODS if name in self.model_fields_set and (value := getattr(self, name)) is not None
                and self.steps < value != type(self).model_fields[name].default]


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
            "train": self.train.model_dump(mode="json", exclude={k for k, v in ADDED_LATER.items()
                                                                  if getattr(self.train, k) == v}),
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


def shown_value(value: Any, limit: int = 80) -> str:
    """A value as a message shows it: its repr, cut short (a spec may hold kilobytes of garbage)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def kind_of(value: Any) -> str:
    """'a mapping', 'a list', 'a boolean', ...: what a YAML value is, in the user's words."""
    names = {dict: "a mapping", list: "a list", bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    return "nothing (null)" if value is None else names.get(type(value), f"a {type(value).__name__}")


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
            value, shown = e.get("input"), e["type"] != "missing"
            got = f" (got {kind_of(value) if isinstance(value, dict) else shown_value(value)})" if shown else ""
            got = "" if isinstance(value, dict) and not e["loc"] else got  # a model's own rule: the input is the model
            lines.append(f"{path}: {msg}{got}")
    return lines


def _component(section: str, comp: Any, registry, problems: list[str]) -> None:
    """Check one `mechanism`/`task` section: a mapping with one known name and that entry's params."""
    valid = ", ".join(registry.names())
    if comp is None or (isinstance(comp, dict) and "name" not in comp):
        problems.append(f"{section}.name: missing; valid: {valid}")
        return
    if not isinstance(comp, dict):
        problems.append(f"{section}: should be a mapping (name: and its params), not {kind_of(comp)} "
                        f"(got {shown_value(comp)}); valid names: {valid}")
        return
    name = comp["name"]
    if not isinstance(name, str):
        problems.append(f"{section}.name: should be one {registry.kind} name, not {kind_of(name)} "
                        f"(got {shown_value(name)}); valid: {valid}")
        return
    try:
        entry = registry.get(name)
    except UnknownName as e:
        problems.append(f"{section}.name: {e}")
        return
    try:
        entry.params.model_validate({k: v for k, v in comp.items() if k != "name"})
    except ValidationError as err:
        problems += format_errors(err, section, entry.params)


def validate_run(data: dict[str, Any]) -> RunSpec:
    """Validate a whole run spec; raise SpecError listing every problem with its path."""
    if not isinstance(data, dict):
        raise SpecError([f"a run spec is a mapping of sections (mechanism, task, train), not {kind_of(data)}"])
    problems: list[str] = []
    unknown = sorted((k for k in data if k not in RunSpec.model_fields), key=str)
    problems += [f"{k}: unknown section; accepted sections: {', '.join(RunSpec.model_fields)}" for k in unknown]
    data = {**data, "train": {} if data.get("train") is None else data["train"]}
    try:
        problems += TrainSpec.model_validate(data["train"]).period_problems()
    except ValidationError as err:
        problems += format_errors(err, "train", TrainSpec)
    for section, registry in (("mechanism", MECHANISMS), ("task", TASKS)):
        _component(section, data.get(section), registry, problems)
    if not problems:
        try:
            check_compatible(data["mechanism"]["name"], data["task"]["name"])
        except IncompatibleCell as e:
            problems.append(f"mechanism.name: {e}")
    try:
        spec = None if problems else RunSpec.model_validate(data)
    except ValidationError as err:  # a last net: anything the checks above let through is still a clean error
        problems += format_errors(err, "", RunSpec)
    if problems or spec is None:
        raise SpecError(problems)
    return spec


def parse_value(text: str) -> Any:
    """`--set` values are YAML scalars/lists: 32 -> int, 1e-3 -> float, [1,2] -> list, lstm -> str."""
    try:
        return yaml.safe_load(text)
    except (yaml.YAMLError, ValueError, RecursionError):  # e.g. a date that does not exist: keep the text
        return text


NAMED = {"mechanism": MECHANISMS, "task": TASKS}  # run sections whose `name` is a registry name


def _override(data: dict[str, Any], item: str) -> str | None:
    """Apply one `section.field=value` override to `data` in place; the problem with it, or None."""
    key, sep, value = item.partition("=")
    parts = key.split(".")
    if not sep or len(parts) < 2 or not all(parts):
        return f"--set {item!r}: expected section.field=value, e.g. train.steps=50"
    *parents, leaf = parts
    node = data
    for depth, part in enumerate(parents, 1):
        if node.get(part) is None:
            node[part] = {}
        if not isinstance(node[part], dict):
            where = ".".join(parents[:depth])
            return (f"--set {item!r}: {where} is {kind_of(node[part])} ({shown_value(node[part])}), not a section "
                    f"with fields; --set cannot reach inside it")
        node = node[part]
    parsed = parse_value(value)
    if leaf == "name" and parents[0] in NAMED and len(parents) == 1 and not isinstance(parsed, str):
        return (f"--set {item!r}: {key} takes one name, not {kind_of(parsed)}; "
                f"valid: {', '.join(NAMED[parents[0]].names())}")
    node[leaf] = parsed
    return None


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `section.field=value` overrides (nested dotted paths allowed) to a spec dict."""
    problems = [p for item in overrides if (p := _override(data, item))]
    if problems:
        raise SpecError(problems)
    return data


MAX_SPEC_BYTES = 1 << 20  # a spec is a small YAML file; anything bigger was given by mistake


def _read(path: Path) -> bytes:
    """The spec file's bytes, or a SpecError saying why it cannot be read."""
    try:  # stat can fail too (a folder on the way that may not be searched)
        if path.is_dir():
            raise SpecError([f"{path}: is a folder, not a spec file; give the path of a YAML file"])
        if path.exists() and not path.is_file():
            raise SpecError([f"{path}: not a regular file (a device, socket or pipe); give the path of a YAML file"])
        with path.open("rb") as f:
            raw = f.read(MAX_SPEC_BYTES + 1)
    except FileNotFoundError:
        raise SpecError([f"{path}: no such spec file"]) from None
    except PermissionError:
        raise SpecError([f"{path}: cannot be read (permission denied)"]) from None
    except (OSError, ValueError) as e:  # ValueError: a path with a NUL byte or an unencodable character
        raise SpecError([f"{path}: cannot be read: {getattr(e, 'strerror', None) or e}"]) from None
    if len(raw) > MAX_SPEC_BYTES:
        raise SpecError([f"{path}: larger than {MAX_SPEC_BYTES >> 20} MiB; a spec is a small YAML file"])
    return raw


def load_yaml(path: Path) -> dict[str, Any]:
    """A spec file as data; SpecError naming the path and what is wrong (missing, a folder, binary, not YAML)."""
    path = Path(path)
    raw = _read(path)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise SpecError([f"{path}: not a text file: byte 0x{raw[e.start]:02x} at offset {e.start} is not UTF-8 "
                         "(a spec is a UTF-8 YAML file)"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise SpecError([f"{path}: not valid YAML: {e}"]) from None
    except (ValueError, RecursionError) as e:  # a value YAML parses but cannot build (a 13th month), or absurd nesting
        raise SpecError([f"{path}: not a valid YAML spec: {e or type(e).__name__}"]) from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise SpecError([f"{path}: a spec must be a mapping of sections, got {kind_of(data)} ({shown_value(data)})"])
    return data
