"""Spec validation: every problem named with its path and the accepted values, before anything runs."""

from __future__ import annotations

import json

import pytest

from amlab.platform.spec import SpecError, apply_overrides, load_yaml, validate_run

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
