"""Variants and difficulty axes: one registry entry of a sweep can stand for several parameter sets.

Two spellings, as a researcher writes them:
* a grid: any knob given a list of values is an axis (`lstm: {d_model: [64, 128]}`,
  `mqar: {seq_len: [64, 128], num_kv_pairs: [4, 8]}` is 4 variants); a knob whose own value is a
  list (copy's `test_lens`) is an axis only when given a list of lists;
* explicit variants: a list of parameter mappings, each with an optional `label`
  (`lstm: [{label: small, d_model: 32}, {label: big, d_model: 256, layers: 2}]`).

Every variant carries its axis values (the knobs that vary) and a label (`d_model=64`), which
follow the cell everywhere: store, MLflow, report, compare.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

MAX_CELLS = 2000  # a grid larger than this is a typo, not an experiment


@dataclass(frozen=True)
class Variant:
    params: dict[str, Any]
    axes: dict[str, Any] = field(default_factory=dict)  # knob -> value, for the knobs that vary
    label: str = ""  # "" when the entry has a single variant


def _list_valued(params_cls, knob: str) -> bool:
    f = params_cls.model_fields.get(knob)
    return f is not None and isinstance(f.default, (list, tuple))


def _is_axis(params_cls, knob: str, value: Any) -> bool:
    if not isinstance(value, list):
        return False
    if _list_valued(params_cls, knob):
        return bool(value) and all(isinstance(v, list) for v in value)
    return True


def _fmt(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def label_of(axes: dict[str, Any]) -> str:
    return ",".join(f"{k}={_fmt(v)}" for k, v in axes.items())


def expand(raw: dict[str, Any] | list[dict[str, Any]] | None, params_cls, path: str) -> tuple[list[Variant], list[str]]:
    """The variants of one sweep entry and the problems found (each naming its YAML path)."""
    if raw is None or raw == {}:
        return [Variant({})], []
    if isinstance(raw, list):
        return _explicit(raw, path)
    if not isinstance(raw, dict):
        return [], [f"{path}: expected a mapping of parameters or a list of variants, got {type(raw).__name__}"]
    axes = {k: v for k, v in raw.items() if _is_axis(params_cls, k, v)}
    problems = [f"{path}.{k}: an axis needs at least one value" for k, v in axes.items() if not v]
    problems += [f"{path}.{k}: the axis repeats a value ({v})" for k, vs in axes.items()
                 for v in dict.fromkeys(_fmt(x) for x in vs) if [_fmt(x) for x in vs].count(v) > 1]
    if problems:
        return [], problems
    fixed = {k: v for k, v in raw.items() if k not in axes}
    if not axes:
        return [Variant(fixed)], []
    out = []
    for combo in itertools.product(*axes.values()):
        point = dict(zip(axes, combo, strict=True))
        out.append(Variant({**fixed, **point}, point, label_of(point)))
    return out, []


def _explicit(items: list[Any], path: str) -> tuple[list[Variant], list[str]]:
    problems = [f"{path}[{i}]: expected a mapping of parameters, got {type(x).__name__}"
                for i, x in enumerate(items) if not isinstance(x, dict)]
    if problems or not items:
        return [], problems or [f"{path}: an empty list of variants"]
    params = [{k: v for k, v in x.items() if k != "label"} for x in items]
    varying = [k for k in dict.fromkeys(k for p in params for k in p) if len({_fmt(p.get(k)) for p in params}) > 1]
    out = []
    for x, p in zip(items, params, strict=True):
        axes = {k: p.get(k) for k in varying}
        out.append(Variant(p, axes, str(x.get("label") or label_of(axes))))
    labels = [v.label for v in out]
    problems = [f"{path}: two variants share the label {lab!r}" for lab in dict.fromkeys(labels) if labels.count(lab) > 1]
    return out, problems


def grid_problem(sizes: dict[str, int]) -> str | None:
    """A message when the grid of mechanism and task variants is too large to be meant."""
    total = 1
    for n in sizes.values():
        total *= n
    if total <= MAX_CELLS:
        return None
    shape = " × ".join(f"{n} {what}" for what, n in sizes.items())
    return f"mechanisms × tasks: the grid has {total} cells ({shape}); at most {MAX_CELLS}: narrow an axis"
