"""Faults on real Ray: a trial worker killed mid-training is retried from its checkpoint; an embedded Ray
serves loopback only; nothing a trial receives carries the stores' URLs."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pytest
from conftest import command_line
from mlflow.tracking import MlflowClient

from amlab.platform.api import plan
from amlab.platform.settings import Settings
from amlab.platform.status import Kind, Status
from amlab.platform.store import Store, Trial
from amlab.platform.sweep import run_sweep
from amlab.platform.trial import KEY, TrialConfig

REPO = Path(__file__).resolve().parents[1]
LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


def trial_rows(store: Store, name: str) -> list[Trial]:
    with store.session() as s:
        return [t for t in s.query(Trial).all() if t.cell.sweep.name == name]


def trial_processes() -> list[psutil.Process]:
    """The Ray actor processes running a Tune function trial right now."""
    out = []
    for p in psutil.process_iter(["cmdline"]):
        if any("ImplicitFunc" in part for part in p.info["cmdline"] or []):
            out.append(p)
    return out


def handed(folder: Path) -> list[TrialConfig]:
    """What each trial under `folder` was handed: its TrialConfig, as Tune keeps it (pickled) in its experiment state."""
    configs = [pickle.loads(bytes.fromhex(json.loads(trial)["config"][KEY]["value"]))
               for state in folder.rglob("experiment_state-*.json") for trial, _ in json.loads(state.read_text())["trial_data"]]
    assert all(isinstance(c, TrialConfig) for c in configs)
    return configs


def names_a_store(config: TrialConfig, settings) -> bool:
    """Whether a pickled TrialConfig holds any of the driver's store URLs (even redacted, by their database)."""
    held = pickle.dumps(config)
    urls = [settings.db_url, settings.mlflow_uri, settings.optuna_url]
    return any(url.split("://", 1)[-1].encode() in held for url in urls if url)


@pytest.mark.ray
def test_a_killed_trial_worker_is_retried_from_its_checkpoint(ray_local, settings):
    name = "retried"
    launch = plan(Kind.SWEEP, {
        "name": name, "mechanisms": {"lstm": {"d_model": 16}}, "tasks": {"copy": {"max_len": 4, "test_lens": [4, 8]}},
        "seeds": [0], "train": {"steps": 1500, "batch_size": 8, "eval_every": 100, "log_every": 100, "eval_batches": 1},
        "search": {"trials": 1, "scheduler": "fifo"}, "resources": {"max_failures": 1},
    })
    store, outcome = Store(settings.db_url), {}
    temp_before = set(Path(tempfile.gettempdir()).glob("amctl-*"))
    driver = threading.Thread(target=lambda: outcome.update(result=run_sweep(launch, settings)))
    driver.start()
    deadline, killed = time.time() + 300, None
    while time.time() < deadline and killed is None:  # past its first checkpoints, kill the trial's process
        running = [t for t in trial_rows(store, name) if t.status == Status.RUNNING and t.steps_done >= 300]
        procs = trial_processes()
        if running and len(procs) == 1:
            killed = running[0].mlflow_run_id
            procs[0].kill()
        time.sleep(0.2)
    assert killed, "no trial got past step 300"
    driver.join(600)
    assert outcome["result"].status == Status.FINISHED

    rows = trial_rows(store, name)
    assert {t.status for t in rows} == {Status.FINISHED} and len(rows) == 2  # the cell is valued: search + seed 0
    again = next(t for t in rows if t.mlflow_run_id == killed)
    assert again.steps_done == 1500 and again.error.startswith("attempt 1 failed, retried:")
    client = MlflowClient(settings.mlflow_uri)
    assert client.get_run(killed).data.tags["amctl.retries"] == "1"
    steps = [m.step for m in client.get_metric_history(killed, "train/loss")]
    assert steps == list(range(100, 1501, 100)), "the retried trial logged a step twice or lost one"
    with store.session() as s:
        cell = store.sweep(s, name).cells[0]
        assert cell.status == Status.FINISHED and cell.value is not None
    # the killed attempt left no checkpoint temporaries in the system temp dir (they live in the trial's folder)
    assert not {p for p in set(Path(tempfile.gettempdir()).glob("amctl-*")) - temp_before
                if p.name.startswith(("amctl-ckpt-", "amctl-final-"))}
    # nor on the sweep's storage: no temporary copied there with Tune's folders, no final folder left once logged
    on_storage = Path(settings.ray_storage, name)
    assert not [p for p in on_storage.rglob("*") if p.name.startswith(("amctl-ckpt-", "amctl-final-", "scratch"))]
    assert not list((on_storage / "final").glob("*")), "a trial's final folder outlived its logging"

    # what each trial was handed names no store: workers never open one (platform/outbox.py)
    configs = handed(Path(settings.ray_storage, name))
    assert len(configs) == 2 and not any(names_a_store(c, settings) for c in configs)


def running(p: psutil.Process) -> bool:
    """Still running: a zombie (dead, not yet reaped by whoever adopted it) is not."""
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.embedded
def test_an_embedded_ray_listens_on_loopback_only(tmp_path, monkeypatch):
    """`amctl launch run` with no cluster starts its own Ray: no port of it may be reachable from the network, it
    runs none of the head processes a single fixed node has no use for, its trial runs in the one worker started
    with it, and none of its processes outlive the launch."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")} | {"AMCTL_HOME": str(tmp_path)}
    cmd = [sys.executable, str(REPO / "amctl.py"), "launch", "run", "-m", "lstm", "-t", "copy", "--json",
           "--set", "train.steps=4000", "--set", "train.eval_every=1000", "--set", "mechanism.d_model=16"]
    started = time.time()
    run = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    listening: dict[str, set[str]] = {}
    commands: list[str] = []
    workers: dict[int, list[str]] = {}  # every Ray worker process seen (idle, or running the trial): its titles
    try:
        deadline = time.time() + 240
        while time.time() < deadline and run.poll() is None:
            tree = psutil.Process(run.pid).children(recursive=True)
            for p in tree:
                if (title := command_line(p)).startswith(("ray::IDLE", "ray::ImplicitFunc")):
                    workers.setdefault(p.pid, []).append(f"{time.time() - started:.1f} {title[:40]}")
            if any("ImplicitFunc" in command_line(p) for p in tree):  # a trial is training
                commands = [command_line(p) for p in tree]
                for p in tree:
                    try:
                        names = p.name()
                        listening.setdefault(names, set()).update(
                            c.laddr.ip for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN)
                    except psutil.NoSuchProcess:
                        continue
                break
            time.sleep(0.1)
        out, err = run.communicate(timeout=300)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, err[-3000:]
    # the launch does not wait out Ray's graceful teardown (ray_runtime.stop_ray_at_exit), yet leaves none of its
    # processes: not the raylet's agents either, which outlive a raylet killed alone by a minute
    deadline = time.time() + 10
    while (left := [p for p in tree if running(p)]) and time.time() < deadline:
        time.sleep(0.2)
    assert not left, f"Ray's processes outlived the launch: {[p.name() for p in left]}"
    assert {"gcs_server", "raylet"} <= set(listening), f"Ray's processes were not seen: {sorted(listening)}"
    # ray_runtime._lean_head: no dashboard head, no autoscaler monitor, no log monitor; the raylet's agents run
    assert any("DashboardAgent" in c for c in commands) and any("RuntimeEnvAgent" in c for c in commands), commands
    unneeded = [c for c in commands if any(f"/{name}.py" in c for name in ("dashboard", "monitor", "log_monitor"))]
    assert not unneeded, f"an embedded head ran processes it has no use for: {unneeded}"
    # the trial's actor took the worker prestarted with Ray (ray_runtime.await_prestarted), not a second one
    assert len(workers) == 1, f"{len(workers)} Ray workers were started for one trial: {workers}"
    exposed = {name: ips - LOOPBACK for name, ips in listening.items() if ips - LOOPBACK}
    assert not exposed, f"listening beyond loopback: {exposed}"
    assert sum(len(ips) for ips in listening.values()) >= 2
    # what a trial is handed names no store: workers never open one (platform/outbox.py)
    monkeypatch.setenv("AMCTL_HOME", str(tmp_path))
    configs = handed(tmp_path)
    assert len(configs) == 1 and not names_a_store(configs[0], Settings.load())


PRESTARTED = """
import json, os, psutil, ray
from amlab.platform import ray_runtime
from amlab.platform.settings import Settings
ray_runtime.ensure_ray(Settings.load())
ray_runtime.await_prestarted()
registered = len(ray._private.state.state.workers())  # before anything asked for a worker
idle = [p.pid for p in psutil.Process().children(recursive=True) if p.cmdline()[:1] == ["ray::IDLE"]]
ran_in = ray.get(ray.remote(num_cpus=1)(lambda: os.getpid()).remote())
print(json.dumps({"registered": registered, "idle": idle, "ran_in": ran_in}))
ray_runtime.stop_ray()
"""


@pytest.mark.embedded
def test_an_embedded_ray_starts_one_worker_that_the_first_task_takes(tmp_path):
    """ray_runtime: an embedded Ray prestarts one worker as it starts, registered once await_prestarted returns,
    and the first work asked of Ray runs in it (it imports a trial's modules meanwhile).  It is a new head even
    where Ray's temp folder names a cluster that is gone (`ray_current_cluster`, left by a killed `ray start`)."""
    ray_tmp = Path(tempfile.mkdtemp(prefix="amctl-t-", dir="/tmp"))  # Ray's socket paths must stay short
    (ray_tmp / "ray").mkdir()
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        (ray_tmp / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{s.getsockname()[1]}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")} | {"AMCTL_HOME": str(tmp_path)}
    try:
        done = subprocess.run([sys.executable, "-c", PRESTARTED], env=env | {"RAY_TMPDIR": str(ray_tmp)},
                              capture_output=True, text=True, timeout=300)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["registered"] == 1 and len(seen["idle"]) == 1, seen
    assert seen["ran_in"] == seen["idle"][0], seen


@pytest.mark.ray
def test_a_relaunch_over_a_replaced_store_resumes_nothing_it_does_not_account_for(ray_local, tmp_path):
    """The stores moved aside (as after a corrupted amctl.db), the same launch starts afresh: it must not restore
    the old Tune experiment, whose trials the new store has never heard of."""
    import yaml

    spec = {"name": "replaced", "mechanisms": {"lstm": {"d_model": 8}}, "tasks": {"copy": {"max_len": 4, "test_lens": [4]}},
            "seeds": [0], "train": {"steps": 20, "batch_size": 8, "eval_every": 10, "log_every": 10, "eval_batches": 1},
            "search": {"trials": 1, "scheduler": "fifo"}}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k not in ("AMCTL_DB_URL", "MLFLOW_TRACKING_URI", "AMCTL_OPTUNA_URL")}
    env |= {"AMCTL_HOME": str(home), "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address}
    cmd = [sys.executable, str(REPO / "amctl.py"), "launch", "sweep", str(tmp_path / "spec.yaml"), "--json"]
    for attempt in ("first", "over a replaced store"):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{attempt}: {done.stderr[-3000:]}"
        rows = trial_rows(Store(f"sqlite:///{home / 'amctl.db'}"), "replaced")
        assert len(rows) == 2 and {t.status for t in rows} == {Status.FINISHED} and all(t.steps_done == 20 for t in rows)
        aside = tmp_path / "aside"
        aside.mkdir(exist_ok=True)
        for db in ("amctl.db", "mlflow.db", "optuna.db"):
            for part in home.glob(f"{db}*"):  # with its -wal and -shm, if any
                part.rename(aside / f"{part.name}.{attempt.split()[0]}")
    assert (home / "ray" / "replaced").is_dir()  # the old Tune folder was there all along


@pytest.mark.embedded
def test_ctrl_c_while_ray_starts_is_honoured(tmp_path):
    """SIGINT as soon as the embedded Ray's first processes exist (before any trial; Ray starts on a thread while
    the driver imports and opens its records): exit 130, nothing RUNNING, and none of Ray's processes left."""
    import signal

    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")} | {"AMCTL_HOME": str(tmp_path)}
    cmd = [sys.executable, str(REPO / "amctl.py"), "launch", "run", "-m", "lstm", "-t", "copy", "--json",
           "--set", "train.steps=100000", "--set", "mechanism.d_model=8"]
    run = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and run.poll() is None:
            ray_procs = [p for p in psutil.Process(run.pid).children(recursive=True) if p.is_running()]
            if {p.name() for p in ray_procs} & {"gcs_server", "raylet"}:
                break
            time.sleep(0.05)
        assert run.poll() is None, run.stderr.read()[-3000:]
        run.send_signal(signal.SIGINT)
        out, err = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 130, err[-3000:]
    _, alive = psutil.wait_procs(ray_procs, timeout=30)
    assert not alive, f"Ray's processes outlived the launch: {[p.name() for p in alive]}"
    store = Store(f"sqlite:///{tmp_path / 'amctl.db'}")
    with store.session() as s:
        rows, sweeps = s.query(Trial).all(), store.sweeps(s)
        assert len(sweeps) == 1 and sweeps[0].status == Status.KILLED  # recorded, then closed: not left RUNNING
        assert all(t.status != Status.RUNNING for t in rows) and all(c.status != Status.RUNNING for c in sweeps[0].cells)


def test_a_restored_trial_whose_latest_checkpoint_tune_deleted_resumes_from_its_newest_whole_one(tmp_path):
    """Tune's saved state can name a checkpoint its `num_to_keep` deleted before the next save (a driver killed
    in between): the restoring driver points the trial at its newest whole checkpoint, never at a broken one."""
    import torch
    from ray import tune
    from ray.train._internal.session import _TrainingResult
    from ray.train._internal.storage import StorageContext
    from ray.tune.experiment import Trial as TuneTrial

    from amlab.platform.callbacks import repoint
    from amlab.platform.sessions import CHECKPOINT

    storage = StorageContext(storage_path=str(tmp_path), experiment_dir_name="exp", trial_dir_name="trial")
    tune.register_trainable("amctl_probe", lambda config: None)
    live = TuneTrial("amctl_probe", config={}, storage=storage, checkpoint_config=tune.CheckpointConfig(num_to_keep=2))
    live.create_placement_group_factory()  # as the controller does when it adds a trial
    folder = Path(live.storage.trial_fs_path)

    def checkpoint(i: int) -> None:  # as the trial persists one and the driver registers it
        path = folder / f"checkpoint_{i:06d}"
        path.mkdir(parents=True)
        torch.save({"step": i}, path / CHECKPOINT)
        live.on_checkpoint(_TrainingResult(checkpoint=tune.Checkpoint(str(path)), metrics={}))

    for i in range(3):
        checkpoint(i)
    saved = live.get_json_state()  # the experiment state: its latest is checkpoint 2
    for i in (3, 4):
        checkpoint(i)  # registering 4 deletes 2, the saved state's latest
    broken = folder / "checkpoint_000005"
    broken.mkdir()
    (broken / CHECKPOINT).write_bytes((folder / "checkpoint_000004" / CHECKPOINT).read_bytes()[:-40])  # a cut copy
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint_000003", "checkpoint_000004", "checkpoint_000005"]

    restored = TuneTrial.from_json_state(saved[0])
    restored.restore_run_metadata(saved[1])
    assert restored.checkpoint.path.endswith("checkpoint_000002") and not os.path.exists(restored.checkpoint.path)
    repoint(restored)
    assert restored.checkpoint.path.endswith("checkpoint_000004")
    assert torch.load(Path(restored.checkpoint.path) / CHECKPOINT)["step"] == 4
    assert restored.storage.current_checkpoint_index == 5  # its next checkpoint is 5, where the broken copy was
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint_000003", "checkpoint_000004"]

    again = restored.run_metadata.checkpoint_manager
    repoint(restored)  # a trial whose latest checkpoint exists is left as it is
    assert restored.run_metadata.checkpoint_manager is again

    for p in folder.iterdir():  # nothing whole left: the trial starts over, from checkpoint index 0
        (p / CHECKPOINT).write_bytes(b"cut")
    restored = TuneTrial.from_json_state(saved[0])
    restored.restore_run_metadata(saved[1])
    repoint(restored)
    assert restored.checkpoint is None and restored.storage.current_checkpoint_index == 0
    assert list(folder.iterdir()) == []
