"""One driver per sweep name: a second driver is refused while the first beats; a dead one's sweep shows INTERRUPTED
and is taken over.  No Ray: the drivers here are small processes that only hold the lease."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta

import pytest
from rich.console import Console
from sqlalchemy.exc import OperationalError
from typer.testing import CliRunner

import amctl
from amlab.platform import lease, records, views
from amlab.platform.api import plan
from amlab.platform.errors import SweepActive
from amlab.platform.settings import Settings
from amlab.platform.status import Kind, Status
from amlab.platform.store import Store, Sweep, now

HOLD = """
import sys, time
from amlab.platform import lease
from amlab.platform.store import Store
store = Store(sys.argv[1])
with store.session() as s:
    assert lease.acquire(s, "x") is not None
    s.commit()
lease.HEARTBEAT_S = 0.2
with lease.Heartbeat(store, "x"):
    print("held", flush=True)
    time.sleep(120)
"""

RACE = """
import sys, time
from amlab.platform import lease
from amlab.platform.errors import SweepActive
from amlab.platform.status import Kind
from amlab.platform.store import Store, Sweep
store = Store(sys.argv[1])
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
try:
    with store.session() as s:
        if lease.acquire(s, "new") is None:
            s.add(row := Sweep(name="new", kind=Kind.SWEEP, spec={}, config_hash="h"))
            lease.hold(row)
        time.sleep(0.3)  # open_launch's MLflow calls
        s.commit()
    print("won", flush=True)
    time.sleep(2)  # a driver that won runs on
except SweepActive:
    print("refused", flush=True)
"""


@pytest.fixture
def store(tmp_path) -> Store:
    store = Store(f"sqlite:///{tmp_path / 'amctl.db'}")
    with store.session() as s:
        row = Sweep(name="x", kind=Kind.SWEEP, spec={}, config_hash="h")
        s.add(row)
        store.set_status(s, row, Status.RUNNING)
        s.commit()
    return store


def row(store: Store, name: str = "x") -> Sweep:
    with store.session() as s:
        return store.sweep(s, name)


def set_lease(store: Store, driver: str | None, age_s: float | None) -> None:
    with store.session() as s:
        sweep = store.sweep(s, "x")
        sweep.driver, sweep.heartbeat_at = driver, None if age_s is None else now() - timedelta(seconds=age_s)
        s.commit()


def test_a_second_driver_is_refused_while_the_first_beats_and_takes_over_once_it_is_killed(store):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(store.engine.url), "x"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        first = row(store).heartbeat_at
        with store.session() as s, pytest.raises(SweepActive) as refused:
            lease.acquire(s, "x")
        assert refused.value.exit_code == 2
        assert f"sweep 'x' is being run by driver {socket.gethostname()}:{holder.pid} (last heartbeat" in str(refused.value)
        assert "amctl cancel x" in str(refused.value)
        time.sleep(0.6)
        assert row(store).heartbeat_at > first, "the holder's heartbeat moves on"
        assert lease.liveness(row(store)) is lease.Liveness.ALIVE and lease.effective_status(row(store)) == Status.RUNNING
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()

    dead = row(store)
    assert dead.driver == f"{socket.gethostname()}:{holder.pid}", "a killed driver cannot free its lease"
    assert lease.liveness(dead) is lease.Liveness.GONE, "on its own host, a driver whose process is gone is gone at once"
    assert lease.effective_status(dead) == lease.INTERRUPTED
    with store.session() as s:
        assert lease.acquire(s, "x").driver == lease.me()
        s.commit()
    assert row(store).driver == lease.me()
    with store.session() as s:  # the same process may take its own lease again
        assert lease.acquire(s, "x") is not None


def test_drivers_launching_one_new_name_at_once_one_wins(store):
    start = time.time() + 1.5  # all past their imports
    racers = [subprocess.Popen([sys.executable, "-c", RACE, str(store.engine.url), str(start)], stdout=subprocess.PIPE,
                               text=True) for _ in range(4)]
    outcomes = sorted(p.communicate(timeout=120)[0].strip() for p in racers)
    assert outcomes == ["refused"] * 3 + ["won"]


def test_a_driver_on_another_host_is_gone_once_its_heartbeat_is_stale(store, monkeypatch):
    set_lease(store, "elsewhere:1", age_s=0)
    with store.session() as s, pytest.raises(SweepActive, match="driver elsewhere:1 .last heartbeat 0 s ago"):
        lease.acquire(s, "x")
    monkeypatch.setattr(lease, "STALE_S", 1.0)
    set_lease(store, "elsewhere:1", age_s=2)
    assert lease.liveness(row(store)) is lease.Liveness.GONE
    with store.session() as s:
        assert lease.acquire(s, "x").driver == lease.me()
        s.commit()
    assert lease.liveness(row(store)) is lease.Liveness.ALIVE


def test_the_heartbeat_moves_on_and_frees_the_lease_on_the_way_out(store, monkeypatch):
    monkeypatch.setattr(lease, "HEARTBEAT_S", 0.05)
    with store.session() as s:
        lease.acquire(s, "x")
        s.commit()
    taken = row(store).heartbeat_at
    with lease.Heartbeat(store, "x") as beat:
        time.sleep(0.3)
        assert row(store).heartbeat_at > taken and row(store).driver == lease.me()
    assert beat.failed == 0
    assert (row(store).driver, row(store).heartbeat_at) == (None, None)

    with store.session() as s:
        lease.acquire(s, "x")
        s.commit()
    with pytest.raises(RuntimeError, match="boom"), lease.Heartbeat(store, "x"):
        raise RuntimeError("boom")
    assert row(store).driver is None, "an error in the body frees the lease too"


def test_a_failed_beat_is_counted_and_the_next_one_retries(store, monkeypatch):
    monkeypatch.setattr(lease, "HEARTBEAT_S", 0.05)
    with store.session() as s:
        lease.acquire(s, "x")
        s.commit()
    taken, opened, calls = row(store).heartbeat_at, store.session, []

    def flaky():
        calls.append(1)
        if len(calls) <= 2:
            raise OperationalError("UPDATE sweeps", {}, Exception("database is locked"))
        return opened()

    monkeypatch.setattr(store, "session", flaky)
    with lease.Heartbeat(store, "x") as beat:
        time.sleep(0.4)
        assert beat._thread.is_alive() and beat.failed == 2
        assert row(store).heartbeat_at > taken, "it kept beating after the failures"
    monkeypatch.setattr(store, "session", opened)
    assert row(store).driver is None


def test_a_lease_another_driver_took_over_is_left_alone(store, monkeypatch):
    monkeypatch.setattr(lease, "HEARTBEAT_S", 0.05)
    with lease.Heartbeat(store, "x"):
        set_lease(store, "elsewhere:1", age_s=0)
        time.sleep(0.2)
    assert row(store).driver == "elsewhere:1"


def test_status_shows_a_running_sweep_whose_driver_is_gone_as_interrupted(store, tmp_path, monkeypatch):
    monkeypatch.setenv("AMCTL_HOME", str(tmp_path))
    set_lease(store, "elsewhere:1", age_s=120)

    res = CliRunner().invoke(amctl.app, ["status", "--json"])
    assert res.exit_code == 0, res.output
    (shown,) = json.loads(res.output)
    assert shown["status"] == "RUNNING" and shown["effective_status"] == "INTERRUPTED"
    assert shown["driver"]["host_pid"] == "elsewhere:1" and shown["driver"]["alive"] is False
    assert 119 < shown["driver"]["heartbeat_age_s"] < 180
    assert row(store).driver == "elsewhere:1", "a reader writes nothing"

    console = Console(width=200, record=True)
    for name in (None, "x"):
        console.print(views.status_table(views.status_rows(store, name), name))
    text = console.export_text()
    assert text.count("INTERRUPTED (driver gone, last heartbeat 12") == 2 and "amctl resume x" in text
    assert not views.active(views.status_rows(store, None)), "status --watch stops at an interrupted sweep"

    set_lease(store, None, None)  # RUNNING with no lease at all (a store from before leases, or a lost row update)
    assert views.status_rows(store, "x")[0]["effective_status"] == "INTERRUPTED"
    set_lease(store, "elsewhere:1", age_s=0)
    (alive,) = views.status_rows(store, "x")
    assert alive["effective_status"] == "RUNNING" and alive["driver"]["alive"] is True and views.active([alive])


def test_open_launch_takes_the_lease_before_it_records_anything(tmp_path, monkeypatch):
    home = tmp_path / "home"
    settings = Settings(home=home, db_url=f"sqlite:///{tmp_path / 'amctl.db'}", mlflow_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                        artifacts=(tmp_path / "artifacts").as_uri(), optuna_url=f"sqlite:///{tmp_path / 'optuna.db'}",
                        ray_storage=str(tmp_path / "ray"))
    launch = plan(Kind.RUN, {"mechanism": {"name": "lstm", "d_model": 16}, "task": {"name": "copy", "max_len": 4}})
    ctx, pending = records.open_launch(launch, settings)
    store = Store(settings.db_url)
    assert len(pending) == 1 and row(store, launch.name).driver == lease.me()

    with store.session() as s:
        sweep = store.sweep(s, launch.name)
        sweep.driver, sweep.heartbeat_at = "elsewhere:1", now()
        s.commit()
        before = len(store.transitions(s, "sweep", sweep.id))
    with pytest.raises(SweepActive, match="elsewhere:1"):
        records.open_launch(launch, settings)
    with store.session() as s:
        assert store.sweep(s, launch.name).driver == "elsewhere:1"
        assert len(store.transitions(s, "sweep", store.sweep(s, launch.name).id)) == before

    monkeypatch.setattr(lease, "STALE_S", 0.0)  # that driver died: the relaunch takes over
    assert records.open_launch(launch, settings)[1] and row(store, launch.name).driver == lease.me()

    with store.session() as s:  # all cells finished: nothing will run, so the relaunch leaves the name free
        for cell in store.sweep(s, launch.name).cells:
            cell.status = Status.FINISHED
        s.commit()
    assert records.open_launch(launch, settings)[1] == [] and row(store, launch.name).driver is None


def test_finalize_links_and_closes_the_trial_run_a_killed_driver_never_recorded(tmp_path, monkeypatch):
    """A driver killed between creating a trial's MLflow run and recording its id leaves the run RUNNING and the
    trial's row without it: the next finalize of that sweep links the two and closes both KILLED.  A RUNNING trial
    run no row knows at all (an older amctl created runs before rows) is closed KILLED; another sweep's is left."""
    from amlab.platform import tracking
    from amlab.platform.spec import validate_run
    from amlab.platform.status import Phase

    settings = Settings(home=tmp_path, db_url=f"sqlite:///{tmp_path / 'amctl.db'}",
                        mlflow_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", artifacts=(tmp_path / "artifacts").as_uri(),
                        optuna_url=f"sqlite:///{tmp_path / 'optuna.db'}",
                        ray_storage=str(tmp_path / "ray"))
    launch = plan(Kind.SWEEP, {"name": "orphans", "mechanisms": {"lstm": {"d_model": 8}}, "tasks": {"copy": {"max_len": 4}},
                               "seeds": [0], "train": {"steps": 10, "eval_every": 5, "log_every": 5},
                               "search": {"trials": 1, "scheduler": "fifo"}})
    ctx, pending = records.open_launch(launch, settings)
    records.start(ctx, pending)
    cell = pending[0]
    recorded = records.open_trial(ctx, cell, "recorded", Phase.SEARCH, validate_run(cell.base))
    created: list[str] = []

    def killed_after_creating(*args, **kwargs):  # the run exists in MLflow; the driver dies before recording it
        created.append(start_run(*args, **kwargs))
        raise KeyboardInterrupt

    start_run = tracking.start_run
    monkeypatch.setattr(tracking, "start_run", killed_after_creating)
    with pytest.raises(KeyboardInterrupt):
        records.open_trial(ctx, cell, "unrecorded", Phase.SEARCH, validate_run(cell.base))
    monkeypatch.setattr(tracking, "start_run", start_run)
    orphan = tracking.start_run(ctx.client, ctx.experiment_id, "orphan", {}, {"amctl.kind": "trial", "amctl.sweep": "orphans",
                                                                          "amctl.tune_trial_id": "orphan"},
                                parent=ctx.cell_runs[cell.key])
    other = tracking.start_run(ctx.client, ctx.experiment_id, "other", {}, {"amctl.kind": "trial", "amctl.sweep": "another"})
    store = Store(settings.db_url)
    with store.session() as s:
        assert {t.trial_key: t.mlflow_run_id for c in store.sweep(s, "orphans").cells for t in c.trials} == {
            "recorded": recorded, "unrecorded": None}
    assert ctx.client.get_run(created[0]).info.status == "RUNNING"
    assert records.finalize(ctx, launch.cells, interrupted=True) == Status.KILLED
    with store.session() as s:
        rows = {t.trial_key: (t.mlflow_run_id, t.status) for c in store.sweep(s, "orphans").cells for t in c.trials}
    assert rows == {"recorded": (recorded, Status.KILLED), "unrecorded": (created[0], Status.KILLED)}
    assert ctx.client.get_run(created[0]).info.status == "KILLED"
    assert ctx.client.get_run(orphan).info.status == "KILLED"
    assert ctx.client.get_run(recorded).info.status == "KILLED"  # its store row was PENDING: closed as before
    assert ctx.client.get_run(other).info.status == "RUNNING"  # another sweep's run is not this finalize's
