"""The warm local cluster's resident driver (platform/resident.py): commands run in it as they would alone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import command_line

from amlab.platform import resident
from amlab.platform.resident import Resident, code_stamp, differs, served

REPO = Path(__file__).resolve().parents[1]
RUN = ["launch", "run", "-m", "lstm", "-t", "copy", "--json", "--set", "mechanism.d_model=16", "--set", "train.eval_every=30"]


def env(home: Path, **extra: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("RAY_")} | {"AMCTL_HOME": str(home)} | extra


def amctl(home: Path, *args: str, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "amctl.py"), *args], env=env(home, **extra), capture_output=True,
                          text=True, timeout=300)


def served_lines(home: Path) -> list[str]:
    return [line for line in (home / "local-driver.log").read_text().splitlines() if line.startswith(("served", "declined"))]


def idle_workers() -> set[int]:
    return {p.pid for p in psutil.process_iter() if command_line(p).strip() == "ray::IDLE"}  # Ray's title, padded


def trials() -> set[int]:
    return {p.pid for p in psutil.process_iter() if command_line(p).startswith("ray::ImplicitFunc")}


def test_which_commands_and_environments_a_resident_serves():
    assert served(["launch", "run", "-m", "lstm"]) and served(["--debug", "status"]) and served(["report", "x", "--json"])
    assert not served(["cluster", "down"]) and not served(["ui"]) and not served([])  # its own end; no end
    assert not served(["status", "x", "--watch"])  # never ends by itself: it would hold the resident
    assert not served(["launch", "run", "--address", "10.0.0.1:6379"]) and not served(["status", "--address=h:1"])
    base = {"AMCTL_HOME": "/h", "TERM": "xterm", "OMP_NUM_THREADS": "2"}
    assert differs(base, base | {"TERM": "dumb", "COLUMNS": "80"}) == []  # display variables travel with the command
    assert differs(base, base | {"AMCTL_DB_URL": "sqlite:///x", "OMP_NUM_THREADS": "1"}) == ["AMCTL_DB_URL", "OMP_NUM_THREADS"]
    assert differs(base, {"TERM": "xterm"}) == ["AMCTL_HOME", "OMP_NUM_THREADS"]  # unset counts as different


def test_a_resident_refuses_what_a_fresh_process_would_run_differently():
    here = Resident("/unused", "amctl:app")  # what it serves: this environment, this code, this interpreter
    ok = {"argv": ["status", "--json"], "code": code_stamp(str(REPO / "amctl.py")), "python": sys.executable,
          "env": dict(os.environ)}
    assert here.refusal(ok) == ""
    assert here.refusal(ok | {"argv": ["ui"]}) == "not a served command"
    assert here.refusal(ok | {"code": "0" * 64}) == "other code than the resident loaded"
    assert here.refusal(ok | {"python": "/usr/bin/python3"}) == "other code than the resident loaded"
    other = here.refusal(ok | {"env": dict(os.environ) | {"AMCTL_DB_URL": "sqlite:////tmp/other.db", "TERM": "dumb"}})
    assert other == "environment differs in AMCTL_DB_URL"


def test_the_code_stamp_follows_amctls_source():
    cli = str(REPO / "amctl.py")
    before, source = code_stamp(cli), Path(resident.__file__)
    st = source.stat()
    try:
        os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # edited since the resident started
        assert code_stamp(cli) != before
    finally:
        os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert code_stamp(cli) == before


@pytest.mark.embedded
def test_a_resident_driver_runs_commands_as_a_fresh_process_would(tmp_path):
    home = tmp_path / "home"
    up = amctl(home, "cluster", "up")
    assert up.returncode == 0, up.stderr[-3000:]
    driver = json.loads((home / "local-ray.json").read_text())["driver"]
    try:
        deadline = time.time() + 60  # the head preloads a trial's modules in each prestarted worker
        while len(ready := idle_workers()) < 2 and time.time() < deadline:
            time.sleep(0.2)
        assert len(ready) >= 2, "the resident prestarted no Ray workers"

        cmd = [sys.executable, str(REPO / "amctl.py"), *RUN, "--set", "train.steps=60"]
        proc = subprocess.Popen(cmd, env=env(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        ran = set()
        while proc.poll() is None:
            ran |= trials()
            time.sleep(0.05)
        out, err = proc.communicate()
        assert proc.returncode == 0, err[-3000:]
        warm = json.loads(out)  # the outcome reached the caller's own stdout
        assert warm["metrics"]["step"] == 60 and warm["status"] == "FINISHED"
        assert len(served_lines(home)) == 1
        assert served_lines(home)[0].startswith(f"served {' '.join(RUN)} --set train.steps=60: exit 0")
        assert ran and ran <= ready, f"the trial ran in a new process {ran}, not a prestarted worker {ready}"

        cold = amctl(home, *RUN, "--set", "train.steps=60", "--fresh", AMCTL_RESIDENT="0")  # the same spec, run apart
        assert cold.returncode == 0, cold.stderr[-3000:]
        assert len(served_lines(home)) == 1  # AMCTL_RESIDENT=0: never sent
        timing = ("steps_per_s", "time")
        same = {k: v for k, v in json.loads(cold.stdout)["metrics"].items() if not any(t in k for t in timing)}
        assert same == {k: v for k, v in warm["metrics"].items() if not any(t in k for t in timing)}  # seeded: identical

        bad = amctl(home, "launch", "run", "-m", "lstmx", "-t", "copy")
        assert bad.returncode == 2 and "unknown mechanism 'lstmx'" in bad.stderr  # on the caller's stderr, exit code kept
        assert served_lines(home)[-1].startswith("served launch run -m lstmx -t copy: exit 2 in ")

        listing = amctl(home, "list", "tasks", "--json", AMCTL_DEBUG="1")  # an environment amctl reads differently
        assert listing.returncode == 0 and "copy" in {t["name"] for t in json.loads(listing.stdout)}
        assert "declined ['list', 'tasks', '--json']: environment differs in AMCTL_DEBUG" in served_lines(home)[-1]

        long = subprocess.Popen([sys.executable, str(REPO / "amctl.py"), *RUN, "--set", "train.steps=100000"], env=env(home),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 120
        while not trials() and time.time() < deadline:  # training: Ctrl-C now must stop it, not the resident
            time.sleep(0.2)
        long.send_signal(signal.SIGINT)
        out, err = long.communicate(timeout=120)
        assert long.returncode == 130, err[-3000:]
        assert json.loads(out)["status"] == "KILLED"
        assert psutil.pid_exists(driver["pid"])
        status = amctl(home, "status", "--json")  # still serving
        assert status.returncode == 0 and served_lines(home)[-1].startswith("served status --json: exit 0")
        assert {r["status"] for r in json.loads(status.stdout)} == {"FINISHED", "KILLED"}
    finally:
        down = amctl(home, "cluster", "down")
    assert down.returncode == 0, down.stderr[-3000:]
    assert not psutil.pid_exists(driver["pid"]) or psutil.Process(driver["pid"]).status() == psutil.STATUS_ZOMBIE
    assert not any(p in idle_workers() for p in ready)
