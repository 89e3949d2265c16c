"""Shared fixtures: settings over a temp data dir, and migrated databases on SQLite and PostgreSQL.

Data-layer tests take the ``engine`` fixture, which runs each test once per backend. PostgreSQL
is the server at 127.0.0.1:5432 (``RECSYS_TEST_POSTGRES_URL`` overrides); each test session
creates a database of its own there and drops it at the end. Where no server answers, those
tests are skipped with the reason, except under ``CI=true`` where that is a failure.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

import service  # noqa: F401 - installs the torchvision hook before any test imports open_clip
from service.store.db import make_engine, make_session_factory, upgrade
from service.store.models import Base
from service.settings import load_settings

# A test process builds hundreds of apps: freezing each one's start-up objects (what a worker
# does once) would keep them all alive. tests/test_heap.py turns it on where it checks it.
os.environ.setdefault("RECSYS_FREEZE_STARTUP_HEAP", "false")

POSTGRES_ADMIN_URL = os.environ.get("RECSYS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() == "true"


def _postgres_available() -> str | None:
    """None when the server answers, else the reason it does not."""
    try:
        eng = create_engine(POSTGRES_ADMIN_URL, connect_args={"connect_timeout": 3})
        with eng.connect() as conn:
            conn.execute(text("SELECT 1"))
        eng.dispose()
        return None
    except Exception as exc:  # any driver or network failure means "not available"
        return f"PostgreSQL not reachable at {POSTGRES_ADMIN_URL}: {type(exc).__name__}: {str(exc).splitlines()[0]}"


def require_postgres() -> None:
    """Skip (locally) or fail (CI=true) when PostgreSQL is unavailable."""
    reason = _postgres_available()
    if reason is None:
        return
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: PostgreSQL tests must run)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def make_postgres_database():
    """Create fresh, empty PostgreSQL databases on demand; all are dropped after the session."""
    require_postgres()
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    created: list[str] = []

    def make() -> str:
        name = f"recsys_test_{uuid.uuid4().hex[:12]}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        created.append(name)
        return admin.url.set(database=name).render_as_string(hide_password=False)

    yield make
    with admin.connect() as conn:
        for name in created:
            conn.execute(text(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"))
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


@pytest.fixture(scope="session")
def postgres_url(make_postgres_database) -> str:
    """The session's PostgreSQL database for data-layer tests."""
    return make_postgres_database()


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'recsys.db'}"


def _database_url(request, backend: str) -> str:
    if backend == "postgresql":
        return request.getfixturevalue("postgres_url")
    return request.getfixturevalue("sqlite_url")


@pytest.fixture(scope="session", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def migrated_engine(request):
    """An engine on a database migrated to head, one per backend, for the whole session."""
    engine = make_engine(_database_url(request, request.param))
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def engine(migrated_engine):
    """The migrated engine, emptied after each test (commits really happen in tests)."""
    yield migrated_engine
    with migrated_engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())


@pytest.fixture
def session_factory(engine):
    return make_session_factory(engine)


@pytest.fixture
def settings(tmp_path: Path, engine):
    """Settings over a temp data dir and the current backend's database."""
    return load_settings(
        {"data_dir": tmp_path / "data", "database_url": engine.url.render_as_string(hide_password=False)},
        environ={},
    )


@pytest.fixture
def event_reads(monkeypatch):
    """The arguments of each ``read_events`` call the behaviour model makes from this test's
    thread (a refresh thread left running by an earlier test's app is not this test's read)."""
    import threading

    import service.recommend.behaviour as behaviour_module
    from service.store.events import read_events

    calls: list[dict] = []
    me = threading.current_thread()

    def spy(**kwargs):
        if threading.current_thread() is me:
            calls.append({k: v for k, v in kwargs.items() if k != "session"})
        return read_events(**kwargs)

    monkeypatch.setattr(behaviour_module, "read_events", spy)
    return calls
