"""Hostile input, generated: every spec file and `--set` ends in exit 2 with a message, or in a plan that is valid.

Hypothesis builds run and sweep specs from the registries' knob tables (valid ones, and mutated ones: wrong
types, unknown fields, values out of range, lists and mappings where names or sections belong), raw YAML and
binary garbage files, and random `--set` strings, and drives them through `amctl launch run --spec FILE` and
`amctl launch sweep FILE` with `api.launch` and `api.submit` replaced by a recorder, so nothing starts Ray or
touches a store.  A plan that reaches launch must validate again to the same cells (what `resume` relies on),
and must hold no value that pydantic's lax mode coerced (`steps: true` planned as 1).  SWEEP_CHECKS lists
sweep-level inputs that once got through (a traceback, or a failure inside Ray) and must now be exit 2.
Derandomized: the same examples every run, so CI is stable; a failure prints the input that caused it.
"""

from __future__ import annotations

import functools
import math

import pytest
import typer.testing
import yaml
from hypothesis import HealthCheck, currently_in_test_context, event, given, note, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import amctl
from amlab.platform import api
from amlab.platform.errors import AmctlError
from amlab.platform.launch import Launch
from amlab.platform.spec import ADDED_LATER, validate_run
from amlab.platform.status import Kind
from amlab.platform.sweep_spec import validate_sweep
from amlab.workloads.model import IncompatibleCell, check_compatible
from amlab.workloads.registry import MECHANISMS, TASKS, knob_table


def fuzz(examples: int):
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None, print_blob=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large, HealthCheck.large_base_example])


def compatible(m: str, t: str) -> bool:
    try:
        check_compatible(m, t)
    except IncompatibleCell:
        return False
    return True


PAIRS = [(m, t) for m in MECHANISMS.names() for t in TASKS.names() if compatible(m, t)]
TABLES = {**{("mechanism", m): knob_table(MECHANISMS.get(m).params) for m in MECHANISMS.names()},
          **{("task", t): knob_table(TASKS.get(t).params) for t in TASKS.names()}}
TRAIN = {
    "steps": st.integers(1, 5000), "batch_size": st.sampled_from([1, 8, 32, 64]), "lr": st.floats(1e-5, 1.0),
    "optimizer": st.sampled_from(["adam", "adamw", "rmsprop", "sgd"]), "weight_decay": st.floats(0, 1),
    "schedule": st.sampled_from(["constant", "cosine"]), "warmup_steps": st.integers(0, 500),
    "grad_clip": st.floats(0, 10), "eval_every": st.integers(1, 2000), "eval_batches": st.integers(1, 8),
    "log_every": st.integers(1, 2000), "seed": st.integers(0, 2**31 - 1), "workers": st.sampled_from([1, 2, 4]),
    "device": st.sampled_from(["auto", "cpu", "cuda"]), "compile": st.booleans(),
}
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=12), st.binary(max_size=8),
    st.dates(), st.sampled_from(["lstm", "copy", "1e-3", ".nan", "", "~", "0x1F", "[", "{a: 1}", "yes", "2020-13-45"]),
)
HOSTILE = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                       | st.dictionaries(st.one_of(st.text(max_size=6), st.integers(-3, 3)), inner, max_size=3),
                       max_leaves=6)
YAMLISH = st.text(alphabet=":-[]{}&*!|>'\"%@`#,?~ \n\tabcdelmnrstx0123456789.eE+_", max_size=120)


def knob_values(entry: dict):
    """Values inside a knob's declared bounds or choices; None for knobs left at their defaults (tuples, paths)."""
    if "choices" in entry:
        return st.sampled_from(entry["choices"])
    if entry["type"] == "bool":
        return st.booleans()
    if "low" in entry and "high" in entry and entry["type"] in ("int", "float"):
        lo, hi = entry["low"], entry["high"]
        return st.integers(math.ceil(lo), math.floor(hi)) if entry["type"] == "int" else st.floats(lo, hi)
    return None


def params_of(table: dict):
    return st.fixed_dictionaries({}, optional={n: s for n, e in table.items() if (s := knob_values(e)) is not None})


@st.composite
def run_specs(draw):
    m, t = draw(st.sampled_from(PAIRS))
    return {"mechanism": {"name": m, **draw(params_of(TABLES["mechanism", m]))},
            "task": {"name": t, **draw(params_of(TABLES["task", t]))},
            "train": draw(st.fixed_dictionaries({}, optional=TRAIN))}


def space_of(mechanisms: list[str]):
    """A search space over the sweep's mechanisms' knobs (within their bounds) and train.lr."""
    dims = {"train.lr": st.just({"low": 1e-4, "high": 1e-2, "log": True})}
    for m in mechanisms:
        for name, e in TABLES["mechanism", m].items():
            if "choices" in e:
                dims[f"{m}.{name}"] = st.lists(st.sampled_from(e["choices"]), min_size=1, max_size=3).map(
                    lambda c: {"choices": c})
            elif "space" in e:
                dims[f"mechanism.{name}"] = st.just({"low": e["space"][0], "high": e["space"][1], "log": e["log"]})
    return st.fixed_dictionaries({}, optional=dims)


@st.composite
def sweep_specs(draw):
    task = draw(st.sampled_from(TASKS.names()))
    mechs = draw(st.lists(st.sampled_from([m for m, t in PAIRS if t == task]), min_size=1, max_size=3, unique=True))
    as_map = draw(st.booleans())
    mechanisms = {m: draw(params_of(TABLES["mechanism", m])) for m in mechs} if as_map else mechs
    train = {k: v for k, v in TRAIN.items() if k not in ("seed", "workers")}
    return {
        "name": draw(st.from_regex(r"[a-z0-9_-]{1,24}", fullmatch=True)),
        "mechanisms": mechanisms,
        "tasks": {task: draw(params_of(TABLES["task", task]))} if draw(st.booleans()) else [task],
        "seeds": draw(st.lists(st.integers(0, 1000), min_size=1, max_size=3)),
        "train": draw(st.fixed_dictionaries({}, optional=train)),
        **draw(st.fixed_dictionaries({}, optional={
            "search": st.fixed_dictionaries({}, optional={
                "trials": st.integers(1, 8), "scheduler": st.sampled_from(["asha", "fifo"]), "space": space_of(mechs)}),
            "resources": st.fixed_dictionaries({}, optional={
                "workers_per_trial": st.sampled_from([1, 2]), "cpus_per_worker": st.sampled_from([0.5, 1, 2]),
                "max_concurrent": st.integers(1, 4)}),
        })),
    }


def places(tree, parent=None, key=None):
    """Every (container, key) of a spec tree, sections and leaves: where a mutation can land."""
    if parent is not None:
        yield parent, key
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
    for k, v in list(items):
        yield from places(v, tree, k)


@st.composite
def mutated(draw, specs):
    """A generated spec with 1-3 mutations: a hostile value, a nudged number, a dropped or an unknown field."""
    spec = draw(specs)
    for _ in range(draw(st.integers(1, 3))):
        spots = list(places(spec))
        if not spots:
            return draw(HOSTILE)
        container, key = draw(st.sampled_from(spots))
        value, action = container[key], draw(st.sampled_from(["hostile", "nudge", "drop", "unknown"]))
        if action == "hostile":
            container[key] = draw(HOSTILE)
        elif action == "nudge" and isinstance(value, (int, float)) and not isinstance(value, bool):
            container[key] = draw(st.sampled_from([-value, value * 1000 + 1, value + 0.5, 0, -1, float(value), 2**63]))
        elif action == "drop":
            container.pop(key)
        else:
            target = value if isinstance(value, dict) else container if isinstance(container, dict) else None
            if target is not None:
                target[draw(st.text(min_size=1, max_size=8))] = draw(HOSTILE)
    return spec


OVERRIDES = st.one_of(
    st.text(max_size=30),
    st.builds("{}.{}={}".format, st.sampled_from(["mechanism", "task", "train", "search", "seeds", "x", ""]),
              st.one_of(st.sampled_from(sorted({k for t in TABLES.values() for k in t} | set(TRAIN) | {"name"})),
                        st.text(max_size=8)), st.one_of(YAMLISH, st.sampled_from(["true", "[1, 2]", "{a: 1}", "-1"]))),
)


def tally(outcome: str) -> None:
    if currently_in_test_context():
        event(outcome)  # `pytest --hypothesis-show-statistics` shows the mix of outcomes


class Launched(AmctlError):
    """Raised by the stand-in for `api.launch`/`api.submit`: the CLI handed over this plan (kept in `handed`).

    An AmctlError, so the CLI's error boundary turns it into its own exit code, as it would a real outcome."""

    exit_code = 99
    handed: list[Launch] = []

    def __init__(self, launch: Launch):
        super().__init__(f"launched {launch.name}")
        Launched.handed.append(launch)


class Cli:
    def __init__(self, tmp_path):
        self.file, self.home, self.runner = tmp_path / "spec.yaml", tmp_path / "home", CliRunner()

    def write(self, content) -> str:
        if isinstance(content, bytes):
            self.file.write_bytes(content)
        else:
            self.file.write_text(yaml.safe_dump(content, allow_unicode=True), encoding="utf-8")
        return str(self.file)

    def check(self, args: list[str]) -> Launch | None:
        """Invoke the CLI; assert a clean exit 2 or a plan that validates again to the same cells."""
        res = self.runner.invoke(amctl.app, [*args, "--json"])
        assert not self.home.exists(), f"{args}: the stores were touched"
        if res.exit_code == Launched.exit_code:
            lch = Launched.handed.pop()
            if lch.kind is Kind.RUN:
                assert validate_run(lch.spec).config_hash() == lch.cells[0].config_hash
            else:
                assert [c.key for c in validate_sweep(lch.spec)[1]] == [c.key for c in lch.cells]
            tally(f"planned ({lch.kind.value})")
            return lch
        if res.exception is not None and not isinstance(res.exception, SystemExit):
            if currently_in_test_context():
                note(f"{args}\nspec file: {self.file.read_bytes()[:2000]!r}")
            raise res.exception  # a crash, raised as itself so that Hypothesis tells distinct crashes apart
        assert res.exit_code == 2 and "error:" in res.output, f"{args}\nexit {res.exit_code}\n{res.output}"
        assert "Traceback" not in res.output
        tally("refused with exit 2")
        return None


@pytest.fixture
def cli(tmp_path, monkeypatch):
    def record(lch, *args, **kwargs):
        raise Launched(lch)

    monkeypatch.setenv("AMCTL_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(api, "launch", record)
    monkeypatch.setattr(api, "submit", record)
    # Typer rebuilds the click command from the app on every invoke (most of an invoke's time); build it once
    monkeypatch.setattr(typer.testing, "_get_command", functools.cache(typer.testing._get_command))
    return Cli(tmp_path)


def test_every_compatible_pair_plans_with_its_defaults(cli):
    for m, t in PAIRS:
        lch = cli.check(["launch", "run", "-m", m, "-t", t])
        assert lch is not None and (lch.cells[0].mechanism, lch.cells[0].task) == (m, t)


def coerced(sent: dict, planned: dict) -> list[str]:
    """Fields where pydantic's lax mode would have turned what the user wrote into another kind of value:
    a boolean into a number, a number into a boolean, a float into a whole number."""
    out = []
    for section in ("mechanism", "task", "train"):
        for key, value in (sent.get(section) or {}).items():  # a planned spec: every section a mapping or null
            late = ADDED_LATER.get(key) if section == "train" and key not in planned[section] else None
            if late is not None and type(value) is type(late) and value == late:
                continue  # a field newer than stored runs, at its default: left out of the identity (spec.py)
            got, number = planned[section].get(key), (int, float)
            if (isinstance(value, bool) and not isinstance(got, bool)) \
                    or (isinstance(got, bool) and isinstance(value, number) and not isinstance(value, bool)) \
                    or (isinstance(value, float) and isinstance(got, int)):
                out.append(f"{section}.{key}: {value!r} was planned as {got!r}")
    return out


@fuzz(1600)
@given(spec=st.one_of(run_specs(), mutated(run_specs())))
def test_generated_run_specs(cli, spec):
    if (lch := cli.check(["launch", "run", "--spec", cli.write(spec)])) is not None:
        assert not coerced(spec, lch.spec)


@fuzz(900)
@given(spec=st.one_of(sweep_specs(), mutated(sweep_specs())))
def test_generated_sweep_specs(cli, spec):
    cli.check(["launch", "sweep", cli.write(spec)])


SWEEP = {"name": "gap", "mechanisms": ["lstm"], "tasks": ["copy"], "train": {"steps": 100}}
SWEEP_CHECKS = {  # sweep-level checks (platform/sweep_spec.py): each must end in exit 2 before Ray starts
    "list-inside-mechanisms": {"mechanisms": [["lstm"]]},  # was a TypeError traceback
    "duplicated-seeds": {"seeds": [1, 1]},  # was accepted: the same replicate trained twice
    "duplicated-mechanisms": {"mechanisms": ["lstm", "lstm"]},  # was silently merged into one
    "empty-choices": {"search": {"space": {"lstm.layers": {"choices": []}}}},  # Optuna failed inside Ray
    "boolean-choice-for-int-knob": {"search": {"space": {"lstm.layers": {"choices": [True, 2]}}}},  # refused in Ray
    "fractional-choice-for-int-knob": {"search": {"space": {"lstm.d_model": {"choices": [16.5, 32]}}}},
    "warmup-range-beyond-the-run": {"search": {"space": {"train.warmup_steps": {"low": 0, "high": 5000}}}},
}


@pytest.mark.parametrize("change", SWEEP_CHECKS.values(), ids=SWEEP_CHECKS.keys())
def test_sweep_level_bad_input_is_refused_before_ray(cli, change):
    assert cli.check(["launch", "sweep", cli.write({**SWEEP, **change})]) is None


@fuzz(600)
@given(content=st.one_of(st.binary(max_size=300), YAMLISH.map(str.encode), st.text(max_size=200).map(str.encode)),
       sweep=st.booleans())
def test_garbage_files(cli, content, sweep):
    path = cli.write(content)
    cli.check(["launch", "sweep", path] if sweep else ["launch", "run", "--spec", path])


@fuzz(900)
@given(base=st.one_of(st.none(), run_specs(), sweep_specs()), sets=st.lists(OVERRIDES, min_size=1, max_size=3))
def test_random_overrides(cli, base, sets):
    flags = [f"--set={s}" for s in sets]
    if base is None:
        cli.check(["launch", "run", "-m", "lstm", "-t", "copy", *flags])
    elif "name" in base:
        cli.check(["launch", "sweep", cli.write(base), *flags])
    else:
        cli.check(["launch", "run", "--spec", cli.write(base), *flags])

