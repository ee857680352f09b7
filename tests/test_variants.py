"""Variant grids and difficulty axes: expansion and validation here; a real variant sweep end to end on Ray."""

from __future__ import annotations

import json

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

import amctl
from amlab.platform.api import plan
from amlab.platform.spec import SpecError
from amlab.platform.status import Kind
from amlab.platform.store import Store
from amlab.platform.sweep import run_sweep
from amlab.platform.sweep_spec import validate_sweep
from amlab.platform.variants import MAX_CELLS


def sweep(**over) -> dict:
    return {"name": "v", "mechanisms": {"lstm": {"d_model": [16, 32]}}, "tasks": {"mqar": {"seq_len": [16, 32],
            "num_kv_pairs": 2, "vocab_size": 32}}, **over}


def test_a_list_on_a_scalar_knob_is_an_axis_and_the_grid_is_their_product():
    _, cells, notices = validate_sweep(sweep())
    assert [(c.mechanism_variant, c.task_variant) for c in cells] == [
        ("d_model=16", "seq_len=16"), ("d_model=16", "seq_len=32"), ("d_model=32", "seq_len=16"), ("d_model=32", "seq_len=32")]
    assert cells[1].axes == {"mechanism.d_model": 16, "task.seq_len": 32}
    assert cells[1].title == "lstm[d_model=16] × mqar[seq_len=32]"
    assert cells[1].base["mechanism"]["d_model"] == 16 and cells[1].base["task"]["seq_len"] == 32
    assert len({c.config_hash for c in cells}) == 4, "every variant is its own cell identity"
    assert notices == ["grid: 2 mechanism variants × 2 task variants -> 4 cells"]


def test_a_list_valued_knob_needs_a_list_of_lists_to_be_an_axis():
    _, cells, notices = validate_sweep({"name": "v", "mechanisms": ["lstm"], "tasks": {"copy": {"test_lens": [4, 8]}}})
    assert len(cells) == 1 and cells[0].axes == {} and not notices
    _, cells, _ = validate_sweep({"name": "v", "mechanisms": ["lstm"], "tasks": {"copy": {"test_lens": [[4, 8], [8, 16]]}}})
    assert [c.task_variant for c in cells] == ["test_lens=4,8", "test_lens=8,16"]


def test_explicit_variants_keep_their_labels_and_vary_what_differs():
    _, cells, _ = validate_sweep({"name": "v", "tasks": ["copy"], "mechanisms": {"lstm": [
        {"label": "small", "d_model": 16}, {"d_model": 32, "layers": 2}]}})
    assert [c.mechanism_variant for c in cells] == ["small", "d_model=32,layers=2"]
    assert cells[0].axes == {"mechanism.d_model": 16, "mechanism.layers": None}


@pytest.mark.parametrize("bad, expected", [
    ({"mechanisms": {"lstm": {"d_model": []}}}, "mechanisms.lstm.d_model: an axis needs at least one value"),
    ({"mechanisms": {"lstm": {"d_model": [16, 16]}}}, "mechanisms.lstm.d_model: the axis repeats a value (16)"),
    ({"mechanisms": {"lstm": {"d_model": [16, 100000]}}}, "mechanisms.lstm[d_model=100000].d_model"),
    ({"mechanisms": {"lstm": [{"label": "a"}, {"label": "a", "d_model": 8}]}}, "two variants share the label 'a'"),
    ({"mechanisms": {"lstm": {"d_model": list(range(8, 200))}},
      "tasks": {"mqar": {"seq_len": list(range(16, 40)), "num_kv_pairs": 2, "vocab_size": 32}}}, f"at most {MAX_CELLS}"),
])
def test_bad_grids_are_refused_with_their_path(bad, expected):
    with pytest.raises(SpecError) as e:
        validate_sweep(sweep(**bad))
    assert any(expected in p for p in e.value.problems), e.value.problems


@pytest.mark.ray
def test_a_variant_grid_runs_and_every_record_carries_its_variant(ray_local, settings):
    spec = sweep(name="variants", seeds=[0], mechanisms={"lstm": {"d_model": [8, 16]}},
                 train={"steps": 20, "batch_size": 8, "eval_every": 10, "log_every": 10, "eval_batches": 1},
                 search={"trials": 1, "scheduler": "fifo"})
    launch = plan(Kind.SWEEP, spec)
    assert run_sweep(launch, settings).status == "FINISHED"

    res = CliRunner().invoke(amctl.app, ["report", "variants", "--json"])
    assert res.exit_code == 0, res.output
    cells = json.loads(res.output)
    assert sorted((c["mechanism"], c["task"]) for c in cells) == sorted(
        (f"lstm[d_model={d}]", f"mqar[seq_len={s}]") for d in (8, 16) for s in (16, 32))
    for c in cells:
        assert c["mechanism_name"] == "lstm" and c["task_name"] == "mqar"
        assert c["axes"] == {"mechanism.d_model": c["mechanism.d_model"], "task.seq_len": c["task.seq_len"]}
        assert c["status"] == "FINISHED" and c["params_count"] > 0

    client = MlflowClient(settings.mlflow_uri)
    with Store(settings.db_url).session() as s:
        rows = Store(settings.db_url).sweep(s, "variants").cells
        for row in rows:
            run = client.get_run(row.mlflow_run_id)
            assert run.info.run_name == f"{row.mechanism_label} × {row.task_label}"
            assert run.data.tags["axis.mechanism.d_model"] == str(row.axes["mechanism.d_model"])
            trial = client.get_run(row.trials[0].mlflow_run_id)
            assert trial.data.tags["amctl.variant"] == run.info.run_name

    md = CliRunner().invoke(amctl.app, ["report", "variants", "--format", "md"]).output
    assert "## Difficulty axes" in md and "against mechanism.d_model** (seq_len=16;" in md
    assert "against task.seq_len** (all;" in md and "| lstm[d_model=8] |" in md  # one line per width
    assert "## Capacity" in md and "| lstm | mqar |" in md
    shown = CliRunner().invoke(amctl.app, ["status", "variants"]).output  # labels are text, never Rich markup
    assert "lstm[d_model=8] × mqar[seq_len=16]" in shown
    assert "lstm[d_model=16]" in CliRunner().invoke(amctl.app, ["compare", "variants", "variants"]).output
    rows = json.loads(CliRunner().invoke(amctl.app, ["compare", "variants", "variants", "--json"]).output)
    assert len(rows) == 4 and {r["mechanism"] for r in rows} == {"lstm[d_model=8]", "lstm[d_model=16]"}
    again = run_sweep(launch, settings)  # dedup per variant: nothing runs twice
    assert again.ran == [] and len(again.skipped) == 4
