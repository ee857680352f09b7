"""The platform registry: sweeps, cells and trials with status and config hashes (SQLAlchemy 2).

Its own database (SQLite in AMCTL_HOME by default, PostgreSQL on a
cluster via AMCTL_DB_URL); MLflow and Optuna keep theirs.  The schema is
owned by Alembic (`platform/migrations`), so a store made by an earlier
release is upgraded in place when it is opened.  Every status change is
also appended to `transitions`, so a sweep's history can be read back.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint, create_engine, event, select
from sqlalchemy import Enum as SAEnum
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

from amlab.platform.errors import StoreError, UnknownSweep
from amlab.platform.status import CellNames, Kind, Phase, Status


def now() -> datetime:
    return datetime.now(timezone.utc)


def _enum(cls, length: int = 16) -> SAEnum:
    """A StrEnum stored as its value in a VARCHAR (no native enum, no CHECK: the schema stays portable)."""
    return SAEnum(cls, native_enum=False, create_constraint=False, length=length, values_callable=lambda e: [m.value for m in e],
                  validate_strings=True)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON}


class Sweep(Base):
    __tablename__ = "sweeps"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[Kind] = mapped_column(_enum(Kind))
    spec: Mapped[dict[str, Any]]
    config_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[Status] = mapped_column(_enum(Status), default=Status.PENDING)
    cancel_requested: Mapped[bool] = mapped_column(default=False)  # `amctl cancel`; the driver stops and clears it
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64))
    driver: Mapped[str | None] = mapped_column(String(200))  # "host:pid" of the driver holding the lease (lease.py)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # its last heartbeat
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now, onupdate=now)
    cells: Mapped[list[Cell]] = relationship(back_populates="sweep", cascade="all, delete-orphan", order_by="Cell.id")


class Cell(Base, CellNames):
    __tablename__ = "cells"
    __table_args__ = (UniqueConstraint("sweep_id", "config_hash"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    sweep_id: Mapped[int] = mapped_column(ForeignKey("sweeps.id"))
    mechanism: Mapped[str] = mapped_column(String(64))
    task: Mapped[str] = mapped_column(String(64))
    mechanism_variant: Mapped[str] = mapped_column(String(200), default="")  # e.g. "d_model=64" (variants.py)
    task_variant: Mapped[str] = mapped_column(String(200), default="")
    axes: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # "mechanism.d_model" / "task.seq_len" -> value
    config_hash: Mapped[str] = mapped_column(String(64), index=True)
    spec: Mapped[dict[str, Any]]
    status: Mapped[Status] = mapped_column(_enum(Status), default=Status.PENDING)
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64))
    metric: Mapped[str | None] = mapped_column(String(64))
    higher_is_better: Mapped[bool | None]
    value: Mapped[float | None] = mapped_column(Float)  # median over seeds of the test metric
    per_seed: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    best_params: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    params_count: Mapped[int | None] = mapped_column(Integer)
    state_size: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now, onupdate=now)
    sweep: Mapped[Sweep] = relationship(back_populates="cells")
    trials: Mapped[list[Trial]] = relationship(back_populates="cell", cascade="all, delete-orphan", order_by="Trial.id")


class Trial(Base):
    __tablename__ = "trials"
    __table_args__ = (UniqueConstraint("cell_id", "trial_key"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    cell_id: Mapped[int] = mapped_column(ForeignKey("cells.id"))
    trial_key: Mapped[str] = mapped_column(String(128))  # the Tune trial id: stable across resumes
    phase: Mapped[Phase] = mapped_column(_enum(Phase), default=Phase.SEARCH)
    seed: Mapped[int] = mapped_column(Integer)
    early_stopped: Mapped[bool] = mapped_column(default=False)
    config: Mapped[dict[str, Any]]
    config_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[Status] = mapped_column(_enum(Status), default=Status.PENDING)
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64))
    steps_done: Mapped[int] = mapped_column(Integer, default=0)
    value: Mapped[float | None] = mapped_column(Float)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)  # a failed trial's reason: the last line of its error
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cell: Mapped[Cell] = relationship(back_populates="trials")


class Transition(Base):
    __tablename__ = "transitions"
    id: Mapped[int] = mapped_column(primary_key=True)
    entity: Mapped[str] = mapped_column(String(8))  # sweep | cell | trial
    entity_id: Mapped[int] = mapped_column(Integer, index=True)
    old: Mapped[str | None] = mapped_column(String(16))
    new: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


class Store:
    """Thin access layer; callers use `with store.session() as s:` and the helpers below."""

    def __init__(self, url: str):
        from sqlalchemy.exc import DatabaseError, OperationalError

        from amlab.platform.migrations import upgrade

        self.engine: Engine = create_engine(url, json_serializer=lambda o: json.dumps(o, default=str))
        path = self.engine.url.database if self.engine.dialect.name == "sqlite" else None
        fresh = bool(path) and not Path(path).exists()
        if path:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        try:
            upgrade(self.engine)
        except (DatabaseError, OperationalError) as e:
            where = path or self.engine.url.render_as_string(hide_password=True)
            reason = str(e.orig).splitlines()[0] if e.orig is not None else type(e).__name__
            todo = (f"move it aside (mv {path} {path}.broken) and amctl starts a new, empty store, or restore it "
                    "from a backup" if path else "check that the server is up and the URL, user and password are right")
            raise StoreError(f"cannot open amctl's store {where} ({reason}): {todo}") from None
        if fresh:
            for suffix in ("", "-wal", "-shm"):  # private to the user, like the home folder
                if Path(path + suffix).exists():
                    os.chmod(path + suffix, 0o600)

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    @staticmethod
    def set_status(s: Session, obj: Sweep | Cell | Trial, status: Status) -> None:
        """Change status and append the transition (no-op when unchanged)."""
        status = Status(status)  # a value outside the enum is a bug: ValueError names it
        if obj.status == status and obj.id is not None:
            return
        old = obj.status if obj.id is not None else None
        obj.status = status
        if isinstance(obj, Trial):
            if status is Status.RUNNING and obj.started_at is None:
                obj.started_at = now()
            if status.terminal:
                obj.ended_at = now()
        s.flush()
        s.add(Transition(entity=type(obj).__name__.lower(), entity_id=obj.id, old=old, new=status))

    def sweep(self, s: Session, name: str) -> Sweep | None:
        return s.scalars(select(Sweep).where(Sweep.name == name)).one_or_none()

    def named(self, s: Session, name: str) -> Sweep:
        """The sweep or run called `name`, or UnknownSweep listing the known names (a name the user typed)."""
        row = self.sweep(s, name)
        if row is None:
            known = ", ".join(x.name for x in self.sweeps(s)[:20]) or "none yet"
            raise UnknownSweep(f"no sweep or run named {name!r}; known: {known}")
        return row

    def sweeps(self, s: Session, kind: Kind | None = None) -> list[Sweep]:
        q = select(Sweep).order_by(Sweep.created_at.desc())
        return list(s.scalars(q.where(Sweep.kind == kind) if kind else q))

    def transitions(self, s: Session, entity: str, entity_id: int) -> list[Transition]:
        q = select(Transition).where(Transition.entity == entity, Transition.entity_id == entity_id).order_by(Transition.id)
        return list(s.scalars(q))
