"""Spec validation: every problem named with its path and the accepted values, before anything runs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from amlab.platform.spec import RunSpec, SpecError, apply_overrides, load_yaml, validate_run
from amlab.platform.sweep_spec import validate_sweep

GOOD = {"mechanism": {"name": "lstm"}, "task": {"name": "copy"}}


def problems(data) -> list[str]:
    with pytest.raises(SpecError) as e:
        validate_run(data)
    return e.value.problems


def test_defaults_fill_in_and_hash_is_stable():
    a = validate_run(GOOD)
    b = validate_run({"mechanism": {"name": "lstm", "d_model": 64}, "task": {"name": "copy"}, "train": {"steps": 1000}})
    assert a.normalised()["mechanism"]["d_model"] == 64
    assert a.config_hash() == b.config_hash()  # explicit defaults == implicit defaults
    c = validate_run({**GOOD, "train": {"seed": 1}})
    assert c.config_hash() != a.config_hash()


def test_unknown_names_list_the_valid_ones():
    p = problems({"mechanism": {"name": "lsmt"}, "task": {"name": "kopy"}})
    assert any(x.startswith("mechanism.name: unknown mechanism 'lsmt'; valid:") and "lstm" in x for x in p)
    assert any(x.startswith("task.name: unknown task 'kopy'; valid:") and "copy" in x for x in p)


def test_misspelled_fields_name_the_accepted_ones():
    p = problems({"mechanism": {"name": "lstm", "d_modle": 32}, "task": {"name": "copy"}, "train": {"stepz": 3}})
    assert "mechanism.d_modle: unknown field; accepted fields: d_model, layers, forget_bias" in p
    assert any(x.startswith("train.stepz: unknown field; accepted fields: steps, batch_size") for x in p)


def test_every_problem_is_reported_at_once():
    p = problems({"mechanism": {"name": "lstm", "d_model": 2}, "task": {"name": "copy", "max_len": 0},
                  "train": {"device": "tpu"}, "trian": {}})
    assert len(p) == 4
    assert any(x.startswith("train.device: Input should be 'auto', 'cpu' or 'cuda'") for x in p)
    assert any(x.startswith("mechanism.d_model: Input should be greater than or equal to 8") for x in p)
    assert any(x.startswith("trian: unknown section; accepted sections: mechanism, task, train") for x in p)


def test_cross_field_rules():
    p = problems({"mechanism": {"name": "transformer", "d_model": 30, "heads": 4}, "task": {"name": "copy"}})
    assert p == ["mechanism: heads (4) must divide d_model (30)"]
    p = problems({**GOOD, "train": {"batch_size": 33, "workers": 2}})
    assert p == ["train: batch_size (33) must be divisible by workers (2)"]
    p = problems({**GOOD, "train": {"eval_every": 200, "test_every": 300}})
    assert p == ["train: test_every (300) must be a multiple of eval_every (200): the test split is measured at evaluations"]
    p = problems({**GOOD, "train": {"steps": 100, "eval_every": 50, "test_every": 150}})
    assert p == ["train.test_every: 150 is longer than the run (train.steps: 100); use at most 100"]
    assert validate_run({**GOOD, "train": {"test_every": None}}).train.test_every is None


def test_missing_sections_are_named():
    p = problems({})
    assert any(x.startswith("mechanism.name: missing; valid:") for x in p)
    assert any(x.startswith("task.name: missing; valid:") for x in p)


def test_overrides_parse_yaml_scalars():
    data = apply_overrides(dict(GOOD), ["train.steps=50", "mechanism.d_model=32", "train.lr=3e-4", "task.test_lens=[10, 30]"])
    spec = validate_run(data)
    assert spec.train.steps == 50 and spec.train.lr == pytest.approx(3e-4)
    assert spec.mechanism_params().d_model == 32
    assert spec.task_params().test_lens == (10, 30)


def test_malformed_override_is_an_error():
    with pytest.raises(SpecError, match="expected section.field=value"):
        apply_overrides({}, ["steps50"])


def test_yaml_file_errors(tmp_path):
    with pytest.raises(SpecError, match="no such spec file"):
        load_yaml(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n- not a mapping\n")
    with pytest.raises(SpecError, match="must be a mapping"):
        load_yaml(bad)


def test_unreadable_spec_files_name_the_path_and_the_reason(tmp_path, monkeypatch):
    binary = tmp_path / "model.pt"
    binary.write_bytes(b"PK\x03\x04\xff\xfe\x00garbage")
    with pytest.raises(SpecError) as e:
        load_yaml(binary)
    assert e.value.problems == [f"{binary}: not a text file: byte 0xff at offset 4 is not UTF-8 (a spec is a UTF-8 YAML file)"]
    with pytest.raises(SpecError, match=f"{tmp_path}: is a folder, not a spec file"):
        load_yaml(tmp_path)
    control = tmp_path / "control.yaml"
    control.write_bytes(b"train: {steps: 5}\x00\x07")
    with pytest.raises(SpecError, match="control.yaml: not valid YAML"):
        load_yaml(control)
    no_date = tmp_path / "date.yaml"
    no_date.write_text("train: {steps: 2020-13-45}\n")  # YAML reads a timestamp that cannot exist
    with pytest.raises(SpecError, match="date.yaml: not a valid YAML spec: month must be in 1..12"):
        load_yaml(no_date)
    huge = tmp_path / "huge.yaml"
    huge.write_bytes(b"#" * (2 << 20))
    with pytest.raises(SpecError, match="huge.yaml: larger than 1 MiB"):
        load_yaml(huge)
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "pipe")
        with pytest.raises(SpecError, match="pipe: not a regular file"):
            load_yaml(tmp_path / "pipe")  # would block forever if it were opened
    locked = tmp_path / "locked.yaml"
    locked.write_text("mechanism: {name: lstm}\n")
    real_open = Path.open

    def refuse(self, *args, **kwargs):  # chmod 000 does not stop root, so deny the read itself
        if self == locked:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", refuse)
    with pytest.raises(SpecError, match="locked.yaml: cannot be read \\(permission denied\\)"):
        load_yaml(locked)
    monkeypatch.undo()
    empty = tmp_path / "empty.yaml"
    empty.write_text("# only a comment\n")
    assert load_yaml(empty) == {}
    bom = tmp_path / "bom.yaml"
    bom.write_bytes("\ufefftrain: {steps: 5}\n".encode())
    assert load_yaml(bom) == {"train": {"steps": 5}}


def test_overrides_that_cannot_apply_name_the_set_item():
    data = {"mechanism": {"name": "lstm"}, "task": {"name": "copy", "test_lens": [10, 30]}, "train": {"steps": 5}}
    with pytest.raises(SpecError) as e:
        apply_overrides(data, ["task.test_lens.first=3", "train.steps.max=9", "mechanism.name={a: 1}", "task.name=[copy]",
                               "train..steps=3", "=3"])
    p = e.value.problems
    assert p[0] == "--set 'task.test_lens.first=3': task.test_lens is a list ([10, 30]), not a section with fields; " \
                   "--set cannot reach inside it"
    assert p[1].startswith("--set 'train.steps.max=9': train.steps is an integer (5), not a section")
    assert p[2].startswith("--set 'mechanism.name={a: 1}': mechanism.name takes one name, not a mapping; valid:")
    assert "lstm" in p[2]
    assert p[3].startswith("--set 'task.name=[copy]': task.name takes one name, not a list; valid:") and "copy" in p[3]
    assert p[4:] == [f"--set {x!r}: expected section.field=value, e.g. train.steps=50" for x in ("train..steps=3", "=3")]
    filled = apply_overrides({"mechanism": {"name": "lstm"}, "train": None}, ["train.steps=7", "task.name=copy"])
    assert validate_run(filled).train.steps == 7  # an empty section (YAML null) takes fields


def test_no_boolean_or_float_passes_for_a_whole_number():
    p = problems({**GOOD, "train": {"steps": True, "lr": True, "batch_size": 8.0, "eval_batches": "2"}})
    assert p == ["train.steps: should be a whole number, not a boolean (got True)",
                 "train.batch_size: should be a whole number, not a float (got 8.0)",
                 "train.lr: should be a number, not a boolean (got True)"]  # "2" is YAML's quoted 2: accepted
    p = problems({"mechanism": {"name": "lstm", "d_model": True, "forget_bias": False},
                  "task": {"name": "copy", "test_lens": [10, True], "max_len": 20.0}})
    assert "mechanism.d_model: should be a whole number, not a boolean (got True)" in p
    assert "mechanism.forget_bias: should be a number, not a boolean (got False)" in p
    assert "task.test_lens: item 1: should be a whole number, not a boolean (got [10, True])" in p
    assert "task.max_len: should be a whole number, not a float (got 20.0)" in p
    ok = validate_run({"mechanism": {"name": "lstm", "forget_bias": 2}, "task": {"name": "copy"}, "train": {"lr": "1e-3"}})
    assert ok.mechanism_params().forget_bias == 2.0 and ok.train.lr == 1e-3  # ints and YAML's "1e-3" for floats


def test_periods_longer_than_the_run_are_refused():
    assert problems({**GOOD, "train": {"steps": 100, "eval_every": 500}}) == [
        "train.eval_every: 500 is longer than the run (train.steps: 100); use at most 100"]
    assert problems({**GOOD, "train": {"steps": 100, "warmup_steps": 101, "log_every": 1000}}) == [
        "train.warmup_steps: 101 is longer than the run (train.steps: 100); use at most 100",
        "train.log_every: 1000 is longer than the run (train.steps: 100); use at most 100"]
    short = validate_run({**GOOD, "train": {"steps": 30, "eval_every": 30}})  # default log_every 50: it ends with the run
    again = validate_run(short.normalised())  # what `resume` validates: every field explicit
    assert again.config_hash() == short.config_hash() and again.train.log_every == 50
    old = {**short.normalised(), "train": {**short.normalised()["train"], "eval_every": 500}}
    assert RunSpec.model_validate(old).train.eval_every == 500  # a record from before the rule still loads
    with pytest.raises(SpecError, match="train.eval_every: 500 is longer than the run"):
        validate_sweep({"name": "s", "mechanisms": ["lstm"], "tasks": ["copy"], "train": {"steps": 30, "eval_every": 500}})


def test_a_name_must_be_one_name_and_a_section_a_mapping():
    p = problems({"mechanism": {"name": {"a": 1}}, "task": ["copy"]})
    assert p[0].startswith("mechanism.name: should be one mechanism name, not a mapping (got {'a': 1}); valid: ")
    assert p[1].startswith("task: should be a mapping (name: and its params), not a list (got ['copy']); valid names: ")
    assert "lstm" in p[0] and "copy" in p[1]
    p = problems({"mechanism": {"name": 7, 3: 4}, "task": "copy", "train": 5, 1: {}})
    assert p[0] == "1: unknown section; accepted sections: mechanism, task, train"
    assert "train: Input should be a valid dictionary or instance of TrainSpec (got 5)" in p
    assert any(x.startswith("mechanism.name: should be one mechanism name, not an integer (got 7)") for x in p)
    assert any(x.startswith("task: should be a mapping (name: and its params), not a string (got 'copy')") for x in p)


def test_data_paths_are_checked_when_the_spec_is_validated(tmp_path):
    lstm = {"name": "lstm"}
    p = problems({"mechanism": lstm, "task": {"name": "char_lm", "path": str(tmp_path / "enwik8")}})
    assert p == [f"task.path: no such text file; set path to an existing local file, or leave it out for the bundled "
                 f"text (got {str(tmp_path / 'enwik8')!r})"]
    assert problems({"mechanism": lstm, "task": {"name": "char_lm", "path": str(tmp_path)}})[0].startswith(
        "task.path: a folder, not a text file")
    text = tmp_path / "text.txt"
    text.write_text("hello world " * 2000)
    assert validate_run({"mechanism": lstm, "task": {"name": "char_lm", "path": str(text)}}).task_params().path == str(text)
    p = problems({"mechanism": lstm, "task": {"name": "babi", "family": 2, "data_dir": str(tmp_path)}})
    assert p == [f"task: data_dir: no bAbI file {tmp_path / 'qa2_*_train.txt'} (data_dir should be e.g. "
                 "tasks_1-20_v1-2/en-10k; nothing is downloaded)"]


def test_cli_turns_unloadable_files_into_exit_2(tmp_path):
    from typer.testing import CliRunner

    import amctl

    binary = tmp_path / "spec.yaml"
    binary.write_bytes(bytes(range(256)))
    for args in (["launch", "run", "--spec", str(binary)], ["launch", "run", "--spec", str(tmp_path)],
                 ["launch", "sweep", str(binary)], ["launch", "sweep", str(tmp_path)]):
        res = CliRunner().invoke(amctl.app, args)
        assert res.exit_code == 2 and "error:" in res.output and str(tmp_path) in res.output, (args, res.output)


def test_cli_rejects_bad_spec_with_exit_2_and_writes_nothing(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import amctl

    home = tmp_path / "home"
    monkeypatch.setenv("AMCTL_HOME", str(home))
    res = CliRunner().invoke(amctl.app, ["launch", "run", "-m", "lsmt", "-t", "copy", "--set", "train.stepz=1"])
    assert res.exit_code == 2
    assert "unknown mechanism 'lsmt'" in res.output and "train.stepz: unknown field" in res.output
    assert not home.exists() or not any(home.iterdir()), "a rejected spec must leave the stores untouched"


def test_cli_list_json_is_valid():
    from typer.testing import CliRunner

    import amctl

    res = CliRunner().invoke(amctl.app, ["list", "mechanisms", "--json"])
    assert res.exit_code == 0
    rows = {r["name"]: r for r in json.loads(res.output)}
    assert {"lstm", "gru", "transformer"} <= set(rows)
    lstm = rows["lstm"]
    assert lstm["params"]["d_model"]["default"] == 64 and lstm["params"]["layers"]["low"] == 1
    assert "bits" in lstm["modalities"] and lstm["paper"]
    res = CliRunner().invoke(amctl.app, ["list", "tasks", "--json"])
    tasks = {r["name"]: r for r in json.loads(res.output)}
    assert tasks["copy"]["metric"] == "bit_errors" and tasks["copy"]["higher_is_better"] is False


def test_a_sweeps_experiment_files_its_runs_without_changing_what_it_is():
    """`experiment` names the MLflow experiment only: the recorded spec and its hash (what resume compares) ignore it."""
    from amlab.platform.api import plan
    from amlab.platform.status import Kind

    base = {"name": "exp-check", "mechanisms": ["lstm"], "tasks": ["copy"]}
    plain, filed = plan(Kind.SWEEP, base), plan(Kind.SWEEP, {**base, "experiment": "team/copy-study"})
    assert filed.experiment == "team/copy-study" and plain.experiment is None
    assert filed.config_hash == plain.config_hash and "experiment" not in filed.spec
    with pytest.raises(SpecError, match="experiment"):
        plan(Kind.SWEEP, {**base, "experiment": ""})
