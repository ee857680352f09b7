"""`amctl cluster up` with no config: a warm local Ray head that later launches join, and `down` that stops it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import command_line

REPO = Path(__file__).resolve().parents[1]


def amctl(home: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")} | {"AMCTL_HOME": str(home)}
    return subprocess.run([sys.executable, str(REPO / "amctl.py"), *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def names(procs: list[psutil.Process]) -> set[str]:
    out = set()
    for p in procs:
        try:
            out |= {p.name(), command_line(p)}
        except psutil.Error:  # gone (or a zombie) since the tree was read
            continue
    return out


@pytest.mark.embedded
def test_a_warm_local_cluster_is_joined_by_launches_and_stopped_by_down(tmp_path):
    home = tmp_path / "home"
    status = amctl(home, "cluster", "status")
    assert status.returncode == 2 and "amctl cluster up" in status.stderr  # none yet: says how to start one

    up = amctl(home, "cluster", "up")
    assert up.returncode == 0, up.stderr[-3000:]
    head = json.loads((home / "local-ray.json").read_text())
    assert head["address"].startswith("127.0.0.1:") and head["address"] in up.stderr
    try:
        head_procs = tree(head["pid"])
        assert {"gcs_server", "raylet"} <= names(head_procs)
        again = amctl(home, "cluster", "up")  # idempotent: the same head, not a second one
        assert again.returncode == 0 and "already" in again.stderr and head["address"] in again.stderr
        status = amctl(home, "cluster", "status")
        assert status.returncode == 0 and head["address"] in status.stderr

        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")} | {"AMCTL_HOME": str(home)}
        cmd = [sys.executable, str(REPO / "amctl.py"), "launch", "run", "-m", "lstm", "-t", "copy", "--json",
               "--set", "train.steps=300", "--set", "train.eval_every=100", "--set", "mechanism.d_model=16"]
        run = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        in_launch, in_head = set(), set()
        while run.poll() is None:  # where Ray's processes and the trial's worker live while it trains
            in_launch |= names(tree(run.pid)[1:])
            in_head |= names(tree(head["pid"]))
            time.sleep(0.2)
        out, err = run.communicate()
        assert run.returncode == 0, err[-3000:]
        assert json.loads(out)["metrics"]["step"] == 300
        assert not {"gcs_server", "raylet"} & in_launch, "the launch started its own Ray instead of joining"
        assert any("ImplicitFunc" in n for n in in_head), "the trial did not run on the local head"
    finally:
        down = amctl(home, "cluster", "down")
    assert down.returncode == 0, down.stderr[-3000:]
    _, alive = psutil.wait_procs(head_procs, timeout=30)
    assert not alive, f"the head's processes outlived `down`: {[p.pid for p in alive]}"
    assert not (home / "local-ray.json").exists()
    assert amctl(home, "cluster", "down").returncode == 2  # nothing left to stop
