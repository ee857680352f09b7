"""One process at a time where a fresh SQLite database is first opened.

amctl's store, MLflow and Optuna each create their schema on first use (with Alembic), and several amctl
processes may open a fresh AMCTL_HOME at once (two launches, a launch and `amctl status`): without a lock
they race ("table sweeps already exists", "Online migration expected to match one row").  A lock file beside
the database serialises that moment; server databases (PostgreSQL) need none here.
"""

from __future__ import annotations

import fcntl
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

from sqlalchemy.engine import make_url


def sqlite_file(url: str) -> Path | None:
    """The file of an SQLite URL (None for another database, or an in-memory one)."""
    try:
        parsed = make_url(url)
    except Exception:  # not an SQLAlchemy URL (e.g. MLflow's http://, file:): nothing to lock
        return None
    return Path(parsed.database) if parsed.get_backend_name() == "sqlite" and parsed.database else None


@contextmanager
def first_use(url: str) -> Iterator[None]:
    """Hold `<database>.lock` while the body opens (and perhaps creates or migrates) the database at `url`."""
    path = sqlite_file(url)
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
            if path.exists():
                wal(path)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def wal(path: Path) -> None:
    """Write-ahead logging, kept by the file itself once set: readers (`amctl status`, the report) then never block
    the driver's and the trials' writes, nor they the readers."""
    with closing(sqlite3.connect(path, timeout=30)) as db:
        if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            db.execute("PRAGMA journal_mode=WAL")
