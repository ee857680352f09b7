"""The SQL store's schema is owned by Alembic: a store made by release 0.1.0 upgrades in place, nothing lost."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy import inspect

from amlab.platform.migrations import VERSION_TABLE, current, head
from amlab.platform.status import Kind, Phase, Status
from amlab.platform.store import Base, Store

V0_1_0 = Path(__file__).parent / "fixtures" / "store_v0_1_0.sql"  # `.dump` of a store written by release 0.1.0


def columns(store: Store) -> dict[str, set[str]]:
    insp = inspect(store.engine)
    return {t: {c["name"] for c in insp.get_columns(t)} for t in Base.metadata.tables}


def test_a_0_1_0_store_upgrades_in_place(tmp_path):
    db = tmp_path / "amctl.db"
    with sqlite3.connect(db) as conn:
        conn.executescript(V0_1_0.read_text())
        assert "cancel_requested" not in {r[1] for r in conn.execute("PRAGMA table_info(sweeps)")}

    store = Store(f"sqlite:///{db}")
    with store.engine.connect() as conn:
        assert current(conn) == head()
    with store.session() as s:
        sweep = store.sweep(s, "legacy")
        assert sweep.status is Status.FINISHED and sweep.kind is Kind.SWEEP and sweep.cancel_requested is False
        cell = sweep.cells[0]
        assert cell.value == 1.5 and cell.per_seed == {"0": 1.5} and cell.trials[0].phase is Phase.SEARCH
        assert [t.new for t in store.transitions(s, "trial", cell.trials[0].id)] == ["FINISHED"]
        sweep.cancel_requested = True  # the new column is writable
        s.commit()
    assert Store(f"sqlite:///{db}").engine  # opening it again is a no-op
    with Store(f"sqlite:///{db}").session() as s:
        assert Store(f"sqlite:///{db}").sweep(s, "legacy").cancel_requested is True


def test_a_new_store_has_exactly_the_models_schema(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'new.db'}")
    expected = {t.name: {c.name for c in t.columns} for t in Base.metadata.tables.values()}
    assert columns(store) == expected
    assert inspect(store.engine).has_table(VERSION_TABLE)


def test_a_status_outside_the_enum_is_refused(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    with store.session() as s:
        from amlab.platform.store import Sweep

        row = Sweep(name="x", kind=Kind.SWEEP, spec={}, config_hash="h")
        s.add(row)
        try:
            store.set_status(s, row, "CANCELLING")
        except ValueError as e:
            assert "CANCELLING" in str(e)
        else:
            raise AssertionError("an unknown status was written")
