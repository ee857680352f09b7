"""One driver per sweep name: a lease in the sweep's row (`driver` host:pid, `heartbeat_at`) that its driver keeps fresh.

Two drivers of one name would restore the same live Tune experiment and
write the same records, so `acquire` (called by `records.open_launch`
before it changes anything) refuses a name whose driver is alive.  A driver
killed outright cannot free its lease: the lease counts as gone once its
heartbeat is older than STALE_S, or at once when its host is this one and
its process has exited, and the next launch of the name takes it over.
Readers (`amctl status`) show such a sweep as INTERRUPTED without writing.
"""

from __future__ import annotations

import os
import socket
import threading
from datetime import datetime, timezone
from enum import Enum
from typing import Any

import psutil
from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from amlab.platform.errors import SweepActive
from amlab.platform.status import Status
from amlab.platform.store import Store, Sweep, now

HEARTBEAT_S = 5.0
STALE_S = 30.0  # several missed beats: a busy store or a slow Ray start must not lose a live driver its lease
INTERRUPTED = "INTERRUPTED"  # shown, never stored: the stored status stays what the dead driver left


class Liveness(Enum):
    ALIVE = "alive"  # a driver holds the lease and beats
    GONE = "gone"  # its driver stopped beating (or exited), or the sweep is RUNNING with no lease at all
    NONE = "none"  # no driver, and none expected


def me() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def age(row: Sweep, at: datetime | None = None) -> float | None:
    """Seconds since the row's last heartbeat (SQLite hands back naive datetimes: they were written as UTC)."""
    if row.heartbeat_at is None:
        return None
    beat = row.heartbeat_at if row.heartbeat_at.tzinfo else row.heartbeat_at.replace(tzinfo=timezone.utc)
    return ((at or now()) - beat).total_seconds()


def _exited(driver: str) -> bool:
    """A driver on this host whose process is gone: no need to wait for its heartbeat to go stale."""
    host, _, pid = driver.rpartition(":")
    return host == socket.gethostname() and pid.isdigit() and not psutil.pid_exists(int(pid))


def liveness(row: Sweep, at: datetime | None = None) -> Liveness:
    """Whether the sweep's driver is there, from the row alone (and this host's process table): readers never write."""
    if row.driver is None or row.heartbeat_at is None:
        return Liveness.GONE if row.status == Status.RUNNING else Liveness.NONE
    return Liveness.ALIVE if age(row, at) <= STALE_S and not _exited(row.driver) else Liveness.GONE


def effective_status(row: Sweep, at: datetime | None = None) -> str:
    """What a reader shows: an active sweep whose driver is gone is INTERRUPTED, not RUNNING (it resumes on relaunch)."""
    return INTERRUPTED if Status(row.status).active and liveness(row, at) is Liveness.GONE else str(row.status)


def describe(row: Sweep, at: datetime | None = None) -> dict[str, Any] | None:
    """The lease as plain data for `status --json` (None: no driver holds it)."""
    if row.driver is None:
        return None
    seconds = age(row, at)
    return {"host_pid": row.driver, "heartbeat_age_s": None if seconds is None else round(seconds, 1),
            "alive": liveness(row, at) is Liveness.ALIVE}


def acquire(s: Session, name: str) -> Sweep | None:
    """The sweep's row, locked until the caller commits, with its lease taken for this process (None: a new name).

    SweepActive (exit 2) while another live driver holds it; our own process may take it again.
    """
    if s.get_bind().dialect.name == "sqlite":  # no row locks: a no-op write holds the database's write lock until
        s.execute(update(Sweep).where(Sweep.name == name)  # commit, so that check-then-take is atomic
                  .values(driver=Sweep.driver, updated_at=Sweep.updated_at))
    row = s.scalars(select(Sweep).where(Sweep.name == name).with_for_update()).one_or_none()  # PostgreSQL's row lock
    if row is None:
        return None
    if row.driver != me() and liveness(row) is Liveness.ALIVE:
        raise SweepActive(f"{row.kind} {name!r} is being run by driver {row.driver} (last heartbeat {age(row):.0f} s ago); "
                          f"wait for it to end, or stop it with `amctl cancel {name}` (a driver that died is taken over "
                          f"once its heartbeat is {STALE_S:.0f} s old, or at once from its own host)")
    hold(row)
    return row


def hold(row: Sweep) -> None:
    """Take the lease on a row this session has locked (or just created)."""
    row.driver, row.heartbeat_at = me(), now()


def release(row: Sweep) -> None:
    """Free the lease in the caller's transaction (a launch with nothing left to run)."""
    row.driver, row.heartbeat_at = None, None


class Heartbeat:
    """Keeps this driver's lease fresh while the body runs, and frees it on the way out (also on errors and Ctrl-C).

    The beats run on a daemon thread, one short transaction each, touching only a lease this process still holds.
    A failed write (e.g. SQLite's 'database is locked') is counted in `failed`, not raised: the next beat retries,
    and a lease that could not be freed goes stale on its own.
    """

    def __init__(self, store: Store, name: str):
        self.store, self.name, self.failed = store, name, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"amctl-heartbeat-{name}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._write(driver=None, heartbeat_at=None)

    def _beat(self) -> None:
        while True:
            self._write(heartbeat_at=now())
            if self._stop.wait(HEARTBEAT_S):
                return

    def _write(self, **values: Any) -> None:
        try:
            with self.store.session() as s:
                s.execute(update(Sweep).where(Sweep.name == self.name, Sweep.driver == me()).values(**values))
                s.commit()
        except SQLAlchemyError:
            self.failed += 1
