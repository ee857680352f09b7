"""A warm local cluster: a Ray head on this machine's loopback that launches join instead of starting their own.

`amctl cluster up` (no config) starts it once; every later launch with no `--address` and no `RAY_ADDRESS`
joins it, skipping Ray's start and stop (bench/startup.py measures the difference); `amctl cluster down`
stops it.  The head is `ray start --head --block` in its own session, recorded in AMCTL_HOME by its PID,
so `down` stops exactly its processes and nothing else of Ray's on the machine.  Like an embedded Ray it
listens on loopback only, and its workers get the stores through each launch's runtime env.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from amlab.platform.errors import AmctlError, BadInput
from amlab.platform.settings import Settings

RECORD = "local-ray.json"  # in AMCTL_HOME: {"address", "pid", "temp_dir", "env", "driver": platform/resident.py's}
# what a trial imports: a local Ray's workers (the warm head's, an embedded one's) import it when they start
# (RAY_preload_python_modules), so that a trial given a prestarted worker (the resident's: one per CPU) starts at once
PRESTART = "RAY_prestart_worker_first_driver"  # Ray's switch: a worker per CPU started when a first driver registers
PRELOADED = ("amlab.platform.train", "amlab.workloads.registry", "torch._dynamo")  # a trial's imports (never MLflow's)
START_TIMEOUT_S = 60.0
STOP_GRACE_S = 5.0


def client_env() -> dict[str, str]:
    """What the head and the processes joining it share: loopback only, and one auth mode (token auth when the
    user set RAY_AUTH_MODE, else none: nothing beyond this machine can reach the head)."""
    return {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}


def running(settings: Settings) -> dict[str, Any] | None:
    """The local head recorded in AMCTL_HOME if its process still runs (a record left by a dead head is removed)."""
    path = settings.home / RECORD
    try:
        head = json.loads(path.read_text())
        proc = psutil.Process(head["pid"])
        alive = proc.is_running() and "start" in proc.cmdline()  # not another process given the same PID
    except (OSError, ValueError, KeyError, psutil.Error):
        alive, head = False, None
    if head is not None and not alive:
        path.unlink(missing_ok=True)
    return head if alive else None


def up(settings: Settings, app: str) -> tuple[dict[str, Any], bool]:
    """Start the local head and its resident driver for the CLI's `app` ("module:attr") unless one runs; returns
    (its record, whether it was started now)."""
    if head := running(settings):
        return head, False
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    temp_dir = tempfile.mkdtemp(prefix="amctl-ray-", dir="/tmp")  # Ray's socket paths must stay short
    env = client_env()
    from amlab.platform import resident  # imports no Ray: the resident inherits this environment as the user set it

    preload = {"RAY_preload_python_modules": ",".join(PRELOADED)}  # what every worker imports before its first task
    # the resident prestarts one worker per CPU for its trials (resident.prestart); Ray's own for a first driver
    # would import as many again on the same cores while `up` waits, then idle beside them
    preload[PRESTART] = os.environ.get(PRESTART, "0")
    ray = Path(sys.executable).with_name("ray")
    # no autoscaler monitor: one fixed node has nothing to scale (its log monitor stays, for scripts that attach)
    with open(settings.home / "local-ray.log", "ab") as log:
        proc = subprocess.Popen([str(ray), "start", "--head", "--block", f"--port={port}", f"--temp-dir={temp_dir}",
                                 "--include-dashboard=false", "--disable-usage-stats", "--no-monitor"],
                                env=os.environ | env | preload, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + START_TIMEOUT_S
    while proc.poll() is None and time.time() < deadline:  # up once its GCS answers and its raylet runs
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0 and _has_raylet(proc.pid):
                break
        time.sleep(0.2)
    else:
        if proc.poll() is None:
            _stop(proc.pid)
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise AmctlError(f"the local Ray head did not start; see {settings.home / 'local-ray.log'}")
    head = {"address": f"127.0.0.1:{port}", "pid": proc.pid, "temp_dir": temp_dir, "env": env}
    (settings.home / RECORD).write_text(json.dumps(head))
    try:  # the resident driver joins the head just recorded
        head["driver"] = resident.start(settings, temp_dir, app)
    except BaseException:
        down(settings)
        raise
    (settings.home / RECORD).write_text(json.dumps(head))
    return head, True


def down(settings: Settings) -> dict[str, Any] | None:
    """Stop the local head and every process it started; returns its record, or None when none ran."""
    head = running(settings)
    if head is None:
        return None
    if "driver" in head:
        from amlab.platform import resident

        resident.stop(head["driver"])
    _stop(head["pid"])
    (settings.home / RECORD).unlink(missing_ok=True)
    shutil.rmtree(head["temp_dir"], ignore_errors=True)
    return head


def _stop(pid: int) -> None:
    """SIGTERM to the head's session, SIGKILL what is left after STOP_GRACE_S.

    Its GCS and `ray start --block` take about 30 s to end gracefully; nothing of the head is kept (its temp
    folder goes next, the stores are amctl's), so `down` does not wait for that.
    """
    group = [p for p in psutil.process_iter() if _session(p) == pid]
    os.killpg(pid, signal.SIGTERM)
    _, alive = psutil.wait_procs(group, timeout=STOP_GRACE_S)
    for p in alive:
        p.kill()


def _has_raylet(pid: int) -> bool:
    try:
        return any(p.name() == "raylet" for p in psutil.Process(pid).children(recursive=True))
    except psutil.Error:
        return False


def _session(p: psutil.Process) -> int | None:
    try:
        return os.getsid(p.pid)
    except OSError:
        return None


def act(settings: Settings, action: str, note: Callable[[str], None], app: str) -> int:
    """`amctl cluster up|down|status` with no config; returns the exit code (BadInput when no head is up)."""
    if action == "up":
        head, started = up(settings, app)
        driver = f"run in its warm driver (pid {head['driver']['pid']}) or join it" if "driver" in head else "join it"
        note(f"local Ray head {'started' if started else 'already up'} at {head['address']} (pid {head['pid']}); "
             f"commands with this AMCTL_HOME {driver}, until `amctl cluster down`")
        return 0
    head = down(settings) if action == "down" else running(settings)
    if head is None:
        raise BadInput("no local Ray head is up for this AMCTL_HOME; `amctl cluster up` starts one")
    note(f"local Ray head at {head['address']} (pid {head['pid']}) {'stopped' if action == 'down' else 'is up'}")
    if action == "down":
        return 0
    status = [sys.executable, "-m", "ray.scripts.scripts", "status", f"--address={head['address']}"]
    return subprocess.run(status, env=os.environ | head["env"]).returncode
