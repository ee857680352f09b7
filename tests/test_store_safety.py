"""Stores under concurrent first use, corruption and a bad home: clear messages, nothing half-made, private files."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
from contextlib import closing
from pathlib import Path

from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

import amctl
from amlab.platform import schema_cache
from amlab.platform.store import Store

REPO = Path(__file__).resolve().parents[1]
OPEN_AND_WRITE = """
import sys
from amlab.platform.status import Kind
from amlab.platform.store import Store, Sweep
store = Store(sys.argv[1])
with store.session() as s:
    s.add(Sweep(name=sys.argv[2], kind=Kind.SWEEP, spec={}, config_hash="h"))
    s.commit()
"""


def test_several_processes_opening_a_fresh_store_at_once_all_succeed(tmp_path):
    url = f"sqlite:///{tmp_path / 'amctl.db'}"
    procs = [subprocess.Popen([sys.executable, "-c", OPEN_AND_WRITE, url, f"s{i}"], stderr=subprocess.PIPE, text=True)
             for i in range(6)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, errors
    with Store(url).session() as s:
        assert sorted(x.name for x in Store(url).sweeps(s)) == [f"s{i}" for i in range(6)]


def test_a_corrupted_store_is_named_with_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("AMCTL_HOME", str(tmp_path))
    (tmp_path / "amctl.db").write_bytes(b"this is not a database" * 100)
    res = CliRunner().invoke(amctl.app, ["status"])
    assert res.exit_code == 2, res.output
    assert f"cannot open amctl's store {tmp_path / 'amctl.db'}" in res.output and "mv " in res.output
    assert "Traceback" not in res.output
    assert (tmp_path / "amctl.db").read_bytes().startswith(b"this is not a database"), "the broken file is kept as it was"


def test_a_home_that_is_a_file_is_refused(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.write_text("not a folder")
    monkeypatch.setenv("AMCTL_HOME", str(home))
    res = CliRunner().invoke(amctl.app, ["status"])
    assert res.exit_code == 2 and "cannot be amctl's home" in res.output and "Traceback" not in res.output


def test_a_new_home_and_store_are_private(tmp_path, monkeypatch):
    home = tmp_path / "new-home"
    monkeypatch.setenv("AMCTL_HOME", str(home))
    assert CliRunner().invoke(amctl.app, ["status", "--json"]).exit_code == 0
    assert stat.S_IMODE(os.stat(home).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(home / "amctl.db").st_mode) == 0o600


def schema(path: Path) -> list[tuple]:
    """Every table and index with its definition's clauses as a set: Alembic's batch migrations on SQLite write a
    table's constraints in no fixed order (two databases MLflow itself migrates differ in it)."""
    with closing(sqlite3.connect(path)) as db:
        rows = db.execute("SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'")
        return sorted((*row[:3], frozenset(c.strip(" ,") for c in (row[3] or "").splitlines())) for row in rows)


def test_a_fresh_mlflow_database_is_the_cached_schema_that_mlflow_migrations_make(tmp_path, monkeypatch):
    """The first fresh home fills the cache, the next copies it; either way the database is exactly what MLflow's
    own migrations make, MLflow opens it as its own, and the Default experiment belongs to the home that opened it."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    migrated = tmp_path / "migrated.db"
    MlflowClient(tracking_uri=f"sqlite:///{migrated}").get_experiment("0")  # MLflow's own way: every migration
    for home in (tmp_path / "first", tmp_path / "second"):
        home.mkdir()
        url = f"sqlite:///{home / 'mlflow.db'}"
        assert schema_cache.seed(url)
        assert not schema_cache.seed(url), "an existing database is never replaced"
        assert schema(home / "mlflow.db") == schema(migrated)
        assert stat.S_IMODE(os.stat(home / "mlflow.db").st_mode) == 0o600
        monkeypatch.chdir(home)
        client = MlflowClient(tracking_uri=url)  # verifies the schema is at MLflow's head revision, or raises
        default = client.get_experiment("0")
        assert default.name == "Default" and default.artifact_location.endswith(f"{home.name}/mlruns/0")
        run = client.create_run(client.create_experiment("e")).info.run_id
        client.log_metric(run, "m", 1.5, step=3)
        assert [(m.value, m.step) for m in client.get_metric_history(run, "m")] == [(1.5, 3)]
    [cached] = (tmp_path / "cache" / "amctl").glob("mlflow-*-schema.db")
    with closing(sqlite3.connect(cached)) as db:
        assert db.execute("SELECT count(*) FROM experiments").fetchone() == (0,)


def test_without_a_writable_cache_mlflow_creates_the_database_itself(tmp_path, monkeypatch):
    blocked = tmp_path / "cache"
    blocked.write_text("a file where the cache folder would go")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    url = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert not schema_cache.seed(url)
    assert not list(tmp_path.glob(".*partial")) and not (tmp_path / "mlflow.db").exists()
    assert MlflowClient(tracking_uri=url).get_experiment("0").name == "Default"
