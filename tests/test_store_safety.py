"""Stores under concurrent first use, corruption and a bad home: clear messages, nothing half-made, private files."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

import amctl
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
