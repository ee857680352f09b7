"""Every local command of a sweep's life on the session's real Ray: cancel from another process, resume,
a changed spec refused, delete from all four stores; and the CLI's conventions for hostile names and pipes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

import amctl
from amlab.platform.status import Status, study_name
from amlab.platform.store import Store, Transition, Trial
from amlab.platform.sweep_spec import SEARCH_SEED_BASE

REPO = Path(__file__).resolve().parents[1]
NAME = "lifecycle"


def spec(steps: int = 600) -> dict:
    return {
        "name": NAME,
        "mechanisms": {"lstm": {"d_model": 16}},
        "tasks": {"copy": {"max_len": 4, "test_lens": [4, 8]}},
        "seeds": [0, 1],
        "train": {"steps": steps, "batch_size": 8, "eval_every": 10, "log_every": 10, "eval_batches": 1},
        "search": {"trials": 2, "scheduler": "fifo"},
    }


def sweep_trials(store: Store, name: str) -> list[Trial]:
    with store.session() as s:
        return [t for t in s.query(Trial).all() if t.cell.sweep.name == name]


@pytest.mark.ray
def test_cancel_from_another_process_then_resume_finishes(ray_local, settings, tmp_path):
    path = tmp_path / "lifecycle.yaml"
    path.write_text(yaml.safe_dump(spec()))
    env = {**os.environ, "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address}
    driver = subprocess.Popen([sys.executable, str(REPO / "amctl.py"), "launch", "sweep", str(path), "--json"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    store = Store(settings.db_url)
    deadline = time.time() + 300
    while not any(t.status == Status.RUNNING and t.steps_done >= 10 for t in sweep_trials(store, NAME)):
        assert driver.poll() is None, driver.stderr.read()[-3000:]
        assert time.time() < deadline, "the sweep never got going"
        time.sleep(0.5)

    res = CliRunner().invoke(amctl.app, ["cancel", NAME])  # this test process is not the sweep's driver
    assert res.exit_code == 0 and "cancel requested" in res.output, res.output
    _, err = driver.communicate(timeout=180)
    assert driver.returncode == 130, err[-3000:]

    client = MlflowClient(settings.mlflow_uri)
    with store.session() as s:
        sweep = store.sweep(s, NAME)
        assert sweep.status == Status.KILLED and not sweep.cancel_requested
        rows = [t for c in sweep.cells for t in c.trials]
        assert Status.KILLED in {t.status for t in rows} and all(Status(t.status).terminal for t in rows)
        assert all(Status(c.status).terminal for c in sweep.cells)
        for row in [sweep, *sweep.cells, *rows]:  # the store and MLflow agree on every record
            assert client.get_run(row.mlflow_run_id).info.status == row.status

    res = CliRunner().invoke(amctl.app, ["resume", NAME, "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["status"] == "FINISHED"
    with store.session() as s:
        sweep = store.sweep(s, NAME)
        assert sweep.status == Status.FINISHED and sweep.cells[0].value is not None
        finished = [t for t in sweep.cells[0].trials if t.status == Status.FINISHED]
        assert {t.seed for t in finished} == {0, 1, SEARCH_SEED_BASE} and len(finished) == 4
        assert set(sweep.cells[0].per_seed) == {"0", "1"}  # the search seed is never reported
    for t in finished:
        steps = [m.step for m in client.get_metric_history(t.mlflow_run_id, "train/loss")]
        assert steps == list(range(10, 601, 10)), "a resumed trial lost or repeated a step"


@pytest.mark.ray
def test_changed_spec_under_the_same_name_is_refused(ray_local, settings, tmp_path):
    changed = {**spec(), "train": {**spec()["train"], "steps": 80}}
    path = tmp_path / "changed.yaml"
    path.write_text(yaml.safe_dump(changed))
    before = len(sweep_trials(Store(settings.db_url), NAME))
    res = CliRunner().invoke(amctl.app, ["launch", "sweep", str(path)])
    assert res.exit_code == 2, res.output
    assert "was launched with another spec" in res.output and "train.steps: 600 -> 80" in res.output
    assert len(sweep_trials(Store(settings.db_url), NAME)) == before

    # asked for explicitly, the changed spec adds its cell beside the old one, and the name now means the new spec
    path.write_text(yaml.safe_dump({**spec(), "train": {**spec()["train"], "steps": 20}}))
    res = CliRunner().invoke(amctl.app, ["launch", "sweep", str(path), "--extend", "--json"])
    assert res.exit_code == 0, res.output
    cells = json.loads(res.output)["cells"]
    assert len(cells) == 2 and all(c["status"] == "FINISHED" for c in cells)
    assert CliRunner().invoke(amctl.app, ["launch", "sweep", str(path), "--json"]).exit_code == 0  # same spec: no-op


@pytest.mark.ray
def test_delete_leaves_no_trace_in_any_store(ray_local, settings):
    store, client = Store(settings.db_url), MlflowClient(settings.mlflow_uri)
    with store.session() as s:
        sweep = store.sweep(s, NAME)
        assert sweep is not None and sweep.status == Status.FINISHED, "runs after the cancel/resume test"
        ids = [("sweep", sweep.id), *(("cell", c.id) for c in sweep.cells), *(("trial", t.id) for c in sweep.cells
                                                                             for t in c.trials)]
        runs = {r for r in [sweep.mlflow_run_id, *(c.mlflow_run_id for c in sweep.cells),
                            *(t.mlflow_run_id for c in sweep.cells for t in c.trials)]}
        studies = [study_name(NAME, c.key) for c in sweep.cells]
    artifact_dirs = [Path(client.get_run(r).info.artifact_uri.removeprefix("file://")) for r in runs]
    assert any(d.exists() for d in artifact_dirs)
    tune_dir = Path(settings.ray_storage) / NAME
    assert tune_dir.exists()

    dry = CliRunner().invoke(amctl.app, ["delete", NAME, "--dry-run", "--json"])
    assert dry.exit_code == 0 and set(json.loads(dry.output)["mlflow_runs"]) == runs
    assert tune_dir.exists() and Store(settings.db_url) and client.get_run(next(iter(runs)))

    res = CliRunner().invoke(amctl.app, ["delete", NAME])
    assert res.exit_code == 0, res.output
    with store.session() as s:
        assert store.sweep(s, NAME) is None
        for entity, entity_id in ids:
            assert not s.query(Transition).filter(Transition.entity == entity, Transition.entity_id == entity_id).all()
    for run_id in runs:
        with pytest.raises(Exception, match="not found|does not exist"):
            client.get_run(run_id)
    assert not any(d.exists() for d in artifact_dirs)
    names = {st.study_name for st in optuna.get_all_study_summaries(settings.optuna_url)}
    assert not names & set(studies)
    assert not tune_dir.exists()
    again = CliRunner().invoke(amctl.app, ["delete", NAME])
    assert again.exit_code == 2 and "no sweep or run named 'lifecycle'" in again.output


def test_markup_in_a_name_is_shown_as_typed_and_exits_2(settings):
    for args in (["report", "[/red]"], ["status", "[bold]x[/]"], ["delete", "[/]"], ["cancel", "[red]"]):
        res = CliRunner().invoke(amctl.app, args)
        assert res.exit_code == 2, (args, res.output)
        assert f"no sweep or run named {args[1]!r}" in res.output and "Traceback" not in res.output


def test_piped_listings_are_never_cut(settings):
    from amlab.workloads.registry import MECHANISMS, TASKS

    for kind, registry in (("mechanisms", MECHANISMS), ("tasks", TASKS)):
        out = subprocess.run([sys.executable, str(REPO / "amctl.py"), "list", kind], capture_output=True, text=True,
                             timeout=120, env={**os.environ, "COLUMNS": "80"}).stdout
        lines = out.splitlines()
        for name in registry.names():
            assert any(f" {name} " in line for line in lines), f"{name} missing from a piped `amctl list {kind}`"


def test_bad_format_and_unknown_command_are_usage_errors(settings):
    res = CliRunner().invoke(amctl.app, ["report", "x", "--format", "pdf"])
    assert res.exit_code == 2 and "pdf" in res.output
    assert CliRunner().invoke(amctl.app, ["-h"]).exit_code == 0



def test_shell_completion_offers_registry_and_store_names(settings):
    assert amctl.complete("mechanisms")("ls") == ["lstm"]
    assert "mqar" in amctl.complete("tasks")("m")
    assert "quick" in amctl.complete("presets")("")
    assert amctl.complete("sweeps")("no-such-prefix") == []
