"""A fresh SQLite MLflow database is a copy of one this MLflow version already migrated, cached per machine.

MLflow creates a new database by running every one of its Alembic migrations: about 1 s more than opening
an existing one on 2 cores (`bench/startup.py`), spent again by every fresh AMCTL_HOME: each test home, each
benchmark home, a home whose first launch joins a warm cluster (a cold launch hides most of it behind Ray's
start).  The result depends only on MLflow's version, so the first fresh home on a machine migrates a
database in the cache folder and every fresh home after it copies that file.  MLflow then opens the copy as
an existing database: it checks the schema is at its head revision and creates the Default experiment, which
the cached file leaves out because its artifact location belongs to the home that opens it.  Without a
writable cache folder MLflow migrates as before.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from contextlib import closing
from pathlib import Path

from amlab.platform.locks import sqlite_file


def cache_dir() -> Path:
    """`$XDG_CACHE_HOME/amctl`, else `~/.cache/amctl`: per user and machine, never inside a home."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "amctl"


def seed(url: str) -> bool:
    """Give a not yet existing SQLite database at `url` the migrated MLflow schema; whether it did.

    The caller holds the database's first-use lock (locks.first_use), so no other process creates it meanwhile.
    """
    path = sqlite_file(url)
    if path is None or path.exists():
        return False
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        template = _template()
        os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))  # private, like amctl's store
        shutil.copyfile(template, partial)
        os.replace(partial, path)  # never a half-copied database under the real name
    except (OSError, sqlite3.Error):
        partial.unlink(missing_ok=True)
        return False
    return True


def _template() -> Path:
    """The cached, migrated database of the installed MLflow version: built once, published by an atomic rename
    (two processes building at once each publish a complete file)."""
    import mlflow
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    folder = cache_dir()
    target = folder / f"mlflow-{mlflow.__version__}-schema.db"
    if target.exists():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        db = Path(tmp) / "schema.db"
        SqlAlchemyStore(f"sqlite:///{db}", tmp).engine.dispose()  # every migration, as a fresh MlflowClient runs them
        with closing(sqlite3.connect(db)) as c:
            c.execute("DELETE FROM experiments WHERE experiment_id = 0")  # see the module docstring
            c.commit()
        os.replace(db, target)
    return target
