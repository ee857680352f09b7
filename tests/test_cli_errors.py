"""The CLI's error boundary: a bug prints one line and keeps its traceback in a private log file (exit 1);
--debug prints the traceback instead; a platform error and typer's own exits go through unchanged."""

from __future__ import annotations

import re
import stat
import tempfile
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import amctl
import amlab.platform.api
from amlab.platform.errors import BadInput


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("AMCTL_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("AMCTL_DEBUG", raising=False)
    return tmp_path / "home"


def failing(monkeypatch, error: BaseException) -> None:
    """`amctl list` (a cheap command) raises `error` from the platform."""
    def listing(kind):
        raise error
    monkeypatch.setattr(amlab.platform.api, "listing", listing)


def logs(folder: Path) -> list[Path]:
    return sorted(folder.glob("amctl-error-*.log"))


def test_a_bug_is_one_line_and_a_private_log(home, monkeypatch):
    failing(monkeypatch, RuntimeError("boom\nsecond line"))
    res = CliRunner().invoke(amctl.app, ["list", "mechanisms"])
    assert res.exit_code == 1 and res.stdout == ""
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    [log] = logs(home / "logs")
    assert re.fullmatch(r"amctl-error-\d{8}T\d{6}\.\d{6}Z-\d+\.log", log.name)
    line = lines[0]
    assert line.startswith("error: amctl list failed unexpectedly (RuntimeError: boom)") and "second line" not in line
    assert str(log) in line and "--debug" in line and "amctl --version" in line
    assert stat.S_IMODE(log.stat().st_mode) == 0o600 and stat.S_IMODE(log.parent.stat().st_mode) == 0o700
    kept = log.read_text()
    assert kept.startswith("Traceback (most recent call last):") and "raise error" in kept  # every frame, to the raise
    assert kept.rstrip().endswith("RuntimeError: boom\nsecond line")


def test_a_launch_subcommand_is_named_by_its_path(home, monkeypatch):
    def run_data(*args):
        raise KeyError(0)
    monkeypatch.setattr(amlab.platform.api, "run_data", run_data)
    res = CliRunner().invoke(amctl.app, ["launch", "run", "-m", "lstm", "-t", "copy"])
    assert res.exit_code == 1 and res.stderr.startswith("error: amctl launch run failed unexpectedly (KeyError: 0)")


def test_debug_prints_the_traceback_instead(home, monkeypatch):
    failing(monkeypatch, RuntimeError("boom\nsecond line"))
    for args, env in ((["--debug"], {}), ([], {"AMCTL_DEBUG": "1"})):
        res = CliRunner().invoke(amctl.app, [*args, "list", "mechanisms"], env=env)
        assert res.exit_code == 1
        assert "Traceback (most recent call last):" in res.stderr and "RuntimeError: boom\nsecond line" in res.stderr
        assert not (home / "logs").exists()
    assert CliRunner().invoke(amctl.app, ["list", "mechanisms"]).stderr.count("\n") == 1  # the flag does not stick


def test_a_home_that_cannot_take_the_log_falls_back_to_the_temp_folder(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("AMCTL_HOME", str(tmp_path / "file"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    failing(monkeypatch, ValueError())
    res = CliRunner().invoke(amctl.app, ["list", "tasks"])
    [log] = logs(tmp_path / "tmp")
    assert res.exit_code == 1 and "(ValueError)" in res.stderr and str(log) in res.stderr
    assert stat.S_IMODE(log.stat().st_mode) == 0o600 and "ValueError" in log.read_text()


@pytest.mark.parametrize("error, code", [(BadInput("no such thing", ["a problem"]), 2), (typer.Exit(3), 3),
                                         (KeyboardInterrupt(), 130)])
def test_platform_errors_and_typer_exits_are_not_bugs(home, monkeypatch, error, code):
    failing(monkeypatch, error)
    res = CliRunner().invoke(amctl.app, ["list", "presets"])
    assert res.exit_code == code
    assert "unexpectedly" not in res.output and "Traceback" not in res.output
    assert not (home / "logs").exists()
    if code == 2:
        assert res.stderr == "error: no such thing\n  - a problem\n"
