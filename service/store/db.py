"""Engines, sessions and migrations.

Data-access functions elsewhere take ``(*, session, ...)`` and never commit: the request or the
CLI command owns the transaction through :func:`session_scope`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from pathlib import Path
from typing import Iterator

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker

from service.settings import Settings

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets readers (the service) run while a writer (an import) commits.
    cur.execute("PRAGMA journal_mode=WAL")
    # FULL: a commit is on disk before we answer 2xx (NORMAL can lose the last commits on power loss).
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


def make_engine(settings: Settings | str) -> Engine:
    """Create an engine for the configured database (SQLite gets WAL and foreign keys)."""
    url = settings if isinstance(settings, str) else settings.sqlalchemy_url
    echo = False if isinstance(settings, str) else settings.sql_echo
    kwargs: dict = {"echo": echo, "future": True}
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # One connection may be used by the thread that did not create it (Flask threads).
        kwargs["connect_args"] = {"check_same_thread": False}
    else:
        kwargs["pool_pre_ping"] = True
    engine = create_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Session factory; objects stay readable after commit (we hand them to JSON encoders)."""
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextlib.contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One transaction: commit on success, roll back on any exception, always close."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def database_utcnow(session: Session) -> dt.datetime:
    """The database server's clock as naive UTC (PostgreSQL), else this host's.

    Replicas and indexer hosts compare timestamps they wrote (fresh vectors against a version's
    read time): one clock for all of them means host clock skew cannot hide a write. SQLite lives
    on one host, whose clock is the database's anyway.
    """
    if session.get_bind().dialect.name == "postgresql":
        return session.scalar(text("SELECT timezone('utc', clock_timestamp())"))
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def alembic_config(engine: Engine):
    """An Alembic Config pointing at ``migrations/`` and bound to ``engine``."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Run migrations up to ``revision``."""
    from alembic import command

    command.upgrade(alembic_config(engine), revision)


def downgrade(engine: Engine, revision: str = "base") -> None:
    """Run migrations down to ``revision``."""
    from alembic import command

    command.downgrade(alembic_config(engine), revision)


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None when it was never migrated."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str:
    """The newest revision shipped in ``migrations/``."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()  # type: ignore[return-value]


# Keyword-search objects that migration 0002 creates in SQL only and the models do not declare:
# the FTS5 table and its shadow tables (``items_fts*``), the PostgreSQL column and its index.
KEYWORD_OBJECT_PREFIX = "items_fts"
KEYWORD_OBJECTS = ("search_vector", "ix_items_search_vector")


def include_object(obj, name, type_, reflected, compare_to) -> bool:
    """Autogenerate filter: leave out database-only keyword-search objects."""
    if reflected and compare_to is None and name:
        if name.startswith(KEYWORD_OBJECT_PREFIX) or name in KEYWORD_OBJECTS:
            return False
    return True


def drift(engine: Engine) -> list:
    """Differences between the models and the migrated database (empty when they agree)."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from service.store.models import Base

    with engine.connect() as conn:
        ctx = MigrationContext.configure(
            conn,
            opts={"compare_type": True, "compare_server_default": True, "include_object": include_object},
        )
        return compare_metadata(ctx, Base.metadata)
