"""Alembic migrations of amctl's own store (MLflow and Optuna migrate theirs).

`upgrade(engine)` runs whenever a `Store` opens a database: a new database
gets the whole schema, a store from release 0.1.0 (made before migrations
existed, so without a version table) is stamped at the baseline and
upgraded in place.  Add a schema change as a new file under `versions/`.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine

from amlab.platform.locks import first_use

VERSION_TABLE = "amctl_alembic_version"  # never Alembic's default name: a shared PostgreSQL may hold another app's
BASELINE = "0001"  # the schema of release 0.1.0


def _config(conn: Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent))
    cfg.attributes["connection"] = conn
    return cfg


@cache
def head() -> str:
    return ScriptDirectory(str(Path(__file__).parent)).get_current_head()


def current(conn: Connection) -> str | None:
    return MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()


def upgrade(engine: Engine) -> None:
    """Bring the store's schema to the head revision (a no-op costing one query when it is already there)."""
    with engine.connect() as conn:
        if current(conn) == head():
            return
    with first_use(engine.url.render_as_string(hide_password=False)), engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(7243001)"))  # the same, across a cluster's drivers
        rev = current(conn)
        if rev == head():
            return
        cfg = _config(conn)
        if rev is None and inspect(conn).has_table("sweeps"):
            command.stamp(cfg, BASELINE)
        command.upgrade(cfg, "head")
