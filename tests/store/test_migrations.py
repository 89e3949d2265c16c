"""Migrations run up, down to base and up again on SQLite and PostgreSQL, and match the models."""

import pytest
from sqlalchemy import inspect, text

from service.store.db import current_revision, downgrade, drift, head_revision, make_engine, upgrade

TABLES = {"items", "users", "events", "index_versions"}


def _fresh_engine(request, backend, tmp_path):
    if backend == "postgresql":
        return make_engine(request.getfixturevalue("make_postgres_database")())
    return make_engine(f"sqlite:///{tmp_path / 'fresh.db'}")


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_up_down_up_without_drift(request, backend, tmp_path):
    engine = _fresh_engine(request, backend, tmp_path)
    try:
        upgrade(engine)
        assert current_revision(engine) == head_revision()
        assert TABLES <= set(inspect(engine).get_table_names())
        assert drift(engine) == []

        downgrade(engine, "base")
        assert current_revision(engine) is None
        assert not TABLES & set(inspect(engine).get_table_names())

        upgrade(engine)
        assert drift(engine) == []
        names = {ix["name"] for ix in inspect(engine).get_indexes("events")}
        assert {"ix_events_user_history", "ix_events_item_id_occurred_at"} <= names
    finally:
        engine.dispose()


def test_drift_is_detected(tmp_path):
    """The drift check can fail: a column the models do not know shows up."""
    engine = make_engine(f"sqlite:///{tmp_path / 'drift.db'}")
    upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE items ADD COLUMN surprise INTEGER"))
    assert any("surprise" in str(d) for d in drift(engine))


def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'wal.db'}")
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
