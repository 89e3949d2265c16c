"""User and event data access. Functions take ``(*, session, ...)`` and never commit."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
from sqlalchemy import String, func, insert, select, text, type_coerce
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session

from service.store.items import chunked, item_ids_by_external
from service.store.models import Event, User, to_seconds, utcnow
from service.store.records import EventRecord


@dataclass
class EventWriteResult:
    """Outcome of one batch, per input position: ``accepted``, ``duplicate`` or a rejection reason."""

    inserted: int = 0
    duplicates: int = 0
    rejected: dict[int, str] = field(default_factory=dict)
    statuses: list[str] = field(default_factory=list)


def _insert_ignoring_conflicts(session: Session, table, rows: list[dict], conflict_column: str) -> set:
    """INSERT ... ON CONFLICT DO NOTHING on both backends (a concurrent writer may win a race).

    Answers the ``conflict_column`` values this statement really inserted: a row a concurrent
    writer stored first is not among them, so callers count what was written, not what was tried.
    Executed on the session's connection (Core): the ORM bulk path costs about twice as much per
    row and we need no objects back.
    """
    connection = session.connection()
    dialect = connection.dialect.name
    if dialect == "postgresql":
        return _pg_insert_returning(connection, table.__table__, rows, conflict_column)
    if dialect == "sqlite":
        stmt = sqlite.insert(table.__table__).on_conflict_do_nothing(index_elements=[conflict_column])
    else:
        stmt = insert(table.__table__)
    # Plain executemany, not INSERT ... RETURNING: SQLAlchemy renders RETURNING as multi-row
    # VALUES statements, which slows the event import by about a fifth on SQLite.
    written = connection.execute(stmt, rows).rowcount
    keys = [row[conflict_column] for row in rows]
    if written == len(rows):
        return set(keys)
    return _sqlite_rows_written(session, table.__table__, keys, conflict_column, written)


def _sqlite_rows_written(session: Session, table, keys: list, conflict_column: str, written: int) -> set:
    """Which ``written`` of ``keys`` this transaction inserted, when a concurrent writer stored the others.

    SQLite has one writer at a time: from our INSERT until our commit nobody else writes, so every
    conflicting row was committed before it, and a new rowid is the largest so far + 1. Ours are
    therefore the ``written`` largest ids among the keys.
    """
    column = table.c[conflict_column]
    found: list = []
    for chunk in chunked(keys):
        found += session.execute(select(table.c.id, column).where(column.in_(chunk))).all()
    found.sort(reverse=True)
    return {key for _id, key in found[:written]}


def _pg_insert_returning(connection, table, rows: list[dict], conflict_column: str) -> set:
    """PostgreSQL: one ``INSERT ... SELECT FROM unnest(<one array per column>) ON CONFLICT DO
    NOTHING RETURNING`` for the whole batch.

    About a third less time than executemany, where SQLAlchemy's RETURNING path (multi-row
    VALUES) would take twice as long: the import stays fast and still learns what it wrote.
    """
    names = list(rows[0])
    quote = connection.dialect.identifier_preparer.quote
    arrays = ", ".join(f"CAST(:c{i} AS {table.c[n].type.compile(dialect=connection.dialect)}[])"
                       for i, n in enumerate(names))
    sql = text(f"INSERT INTO {quote(table.name)} ({', '.join(quote(n) for n in names)}) "
               f"SELECT * FROM unnest({arrays}) "
               f"ON CONFLICT ({quote(conflict_column)}) DO NOTHING RETURNING {quote(conflict_column)}")
    params = {f"c{i}": [row[n] for row in rows] for i, n in enumerate(names)}
    return set(connection.execute(sql, params).scalars())


def ensure_users(*, session: Session, external_ids: Iterable[str]) -> dict[str, int]:
    """Map external user ids to primary keys, creating the users that do not exist yet."""
    wanted = list(dict.fromkeys(external_ids))
    found: dict[str, int] = {}
    for chunk in chunked(wanted):
        found.update(dict(session.execute(select(User.external_id, User.id).where(User.external_id.in_(chunk))).all()))
    missing = [u for u in wanted if u not in found]
    if missing:
        now = utcnow()
        _insert_ignoring_conflicts(session, User, [{"external_id": u, "created_at": now} for u in missing], "external_id")
        for chunk in chunked(missing):
            found.update(dict(session.execute(select(User.external_id, User.id).where(User.external_id.in_(chunk))).all()))
    return found


def existing_event_ids(*, session: Session, client_ids: Iterable[str]) -> set[str]:
    """The client event ids among ``client_ids`` that are already stored."""
    wanted = list(dict.fromkeys(client_ids))
    found: set[str] = set()
    for chunk in chunked(wanted):
        found.update(session.scalars(select(Event.client_event_id).where(Event.client_event_id.in_(chunk))))
    return found


def record_events(*, session: Session, records: Sequence[EventRecord]) -> EventWriteResult:
    """Store a batch of events: unknown items are rejected per event, duplicates are skipped.

    Users are created on first sight. Duplicates are events whose client id is already stored
    or appears earlier in the same batch.
    """
    result = EventWriteResult(statuses=[""] * len(records))
    items = item_ids_by_external(session=session, external_ids=(r.item_external_id for r in records))
    stored = existing_event_ids(session=session, client_ids=(r.client_event_id for r in records))
    keep: list[int] = []
    seen: set[str] = set()
    for pos, rec in enumerate(records):
        if rec.item_external_id not in items:
            result.rejected[pos] = f"unknown item {rec.item_external_id!r}"
            result.statuses[pos] = "rejected"
        elif rec.client_event_id in stored or rec.client_event_id in seen:
            result.duplicates += 1
            result.statuses[pos] = "duplicate"
        else:
            seen.add(rec.client_event_id)
            keep.append(pos)
    if keep:
        users = ensure_users(session=session, external_ids=(records[p].user_external_id for p in keep))
        rows = [
            {
                "client_event_id": r.client_event_id,
                "user_id": users[r.user_external_id],
                "item_id": items[r.item_external_id],
                "type": r.type,
                "value": r.value,
                "occurred_at": r.occurred_at,
                "recommendation_id": r.recommendation_id,
                "query": r.query,
            }
            for r in (records[p] for p in keep)
        ]
        written = _insert_ignoring_conflicts(session, Event, rows, "client_event_id")
        for pos in keep:
            # Not written: a concurrent batch stored the same client id after our check above.
            if records[pos].client_event_id in written:
                result.statuses[pos] = "accepted"
                result.inserted += 1
            else:
                result.statuses[pos] = "duplicate"
                result.duplicates += 1
    return result


def count_events(*, session: Session) -> dict[str, int]:
    """Events per type."""
    return {t: n for t, n in session.execute(select(Event.type, func.count()).group_by(Event.type))}


def count_users(*, session: Session) -> int:
    return session.scalar(select(func.count()).select_from(User)) or 0


@dataclass
class History:
    """A user's most recent events, newest first (empty for an unknown user)."""

    user_id: int | None
    item_ids: list[int] = field(default_factory=list)
    types: list[str] = field(default_factory=list)
    values: list[float | None] = field(default_factory=list)
    times: list[float] = field(default_factory=list)  # Unix seconds
    # True when these are all of the user's events (no more than the limit exist).
    complete: bool = True


def user_history(*, session: Session, external_id: str, limit: int) -> History:
    """The last ``limit`` events of a user (read from the ``ix_events_user_history`` index alone)."""
    user_id = session.scalar(select(User.id).where(User.external_id == external_id))
    history = History(user_id)
    if user_id is None:
        return history
    # Core rows, and SQLite's stored text parsed by numpy at once: ORM rows with a datetime each
    # cost ~0.4 ms more of a 500-event history (2.3 against 1.9 ms), on every request.
    # One row past the limit tells whether these are all of the user's events: a user with
    # exactly ``limit`` events then has a complete history, and ``consumed_items`` needs no
    # second read of them (1.3 ms of a 500-event user's request).
    rows = session.connection().execute(
        select(Event.item_id, Event.type, Event.value, _stored_time(session))
        .where(Event.user_id == user_id).order_by(Event.occurred_at.desc(), Event.id.desc()).limit(limit + 1)
    ).all()
    history.complete = len(rows) <= limit
    rows = rows[:limit]
    if rows:
        history.item_ids, history.types, history.values, times = (list(column) for column in zip(*rows))
        history.times = seconds_since_epoch(times).tolist()
    return history


def _stored_time(session: Session):
    """``events.occurred_at`` as :func:`seconds_since_epoch` reads it fastest: SQLite's stored text."""
    if session.get_bind().dialect.name == "sqlite":
        return type_coerce(Event.occurred_at, String)
    return Event.occurred_at


def consumed_items(*, session: Session, history: History, types: Sequence[str], limit: int = 50_000) -> set[int]:
    """Items the user already consumed (any event of the given types), for exclusion.

    Read from the history when it holds every event of the user; else one query over all of them.
    """
    if not types or history.user_id is None:
        return set()
    if history.complete:
        return {item for item, t in zip(history.item_ids, history.types) if t in types}
    return set(session.scalars(
        select(Event.item_id).where(Event.user_id == history.user_id, Event.type.in_(list(types))).distinct().limit(limit)
    ))


def active_users(*, session: Session, limit: int, recent_events: int = 50_000) -> list[tuple[str, int, object]]:
    """(external id, event count, last event time) of the most recently active users.

    Only the last ``recent_events`` events are scanned (by primary key), so the cost stays flat
    however long the log grows; counts are over that window.
    """
    floor = (session.scalar(select(func.max(Event.id))) or 0) - recent_events
    last = func.max(Event.occurred_at)
    rows = session.execute(
        select(User.external_id, func.count(Event.id), last)
        .join(Event, Event.user_id == User.id).where(Event.id > floor).group_by(User.id, User.external_id)
        .order_by(last.desc()).limit(limit)
    ).all()
    return [(u, int(n), t) for u, n, t in rows]


def event_watermark(session: Session) -> dict[str, int]:
    """How many events are stored and the newest id: what a model or a fine-tune has seen."""
    count, last = session.execute(select(func.count(Event.id), func.max(Event.id))).one()
    return {"events": int(count or 0), "max_event_id": int(last or 0)}


# Rows turned into arrays at a time: a whole log as SQLAlchemy rows took 4.2 GiB at 10M events
# (a Row, a datetime and a fresh type string each).
EVENT_READ_CHUNK = 100_000


@dataclass
class EventColumns:
    """Events as columns, in id order: what the behaviour model and the training stage read."""

    ids: np.ndarray
    users: np.ndarray
    items: np.ndarray
    types: list[str]  # one string object per distinct type, not one per row
    values: list[float | None]
    times: np.ndarray  # Unix seconds
    queries: list[str | None] | None = None  # each event's search query, when read with them

    def __len__(self) -> int:
        return len(self.ids)

    def tail(self, n: int) -> "EventColumns":
        """The newest ``n`` events (all when there are fewer), as copies: a slice of a whole log
        must not keep the log's arrays alive."""
        if len(self) <= n:
            return self
        keep = slice(len(self) - n, None)
        return EventColumns(self.ids[keep].copy(), self.users[keep].copy(), self.items[keep].copy(), self.types[keep],
                            self.values[keep], self.times[keep].copy(),
                            self.queries[keep] if self.queries is not None else None)


def read_events(*, session: Session, after_id: int = 0, newest: int | None = None,
                queries: bool = False) -> EventColumns:
    """Events with ``id > after_id`` in id order; only the newest ``newest`` of them when given
    (read newest first, so a bounded window never touches older rows)."""
    # The stored text, parsed by numpy at once (1M: 0.09 s) rather than by SQLAlchemy's result
    # processor, a datetime per row, on a worker's start-up path.
    when = _stored_time(session)
    stmt = select(Event.id, Event.user_id, Event.item_id, Event.type, Event.value, when,
                  *([Event.query] if queries else []))
    if after_id:
        stmt = stmt.where(Event.id > after_id)
    stmt = stmt.order_by(Event.id.desc()).limit(newest) if newest is not None else stmt.order_by(Event.id)
    ids, users, items, times = [], [], [], []
    types: list[str] = []
    values: list[float | None] = []
    texts: list[str | None] = []
    one_of: dict[str, str] = {}
    # Core rows (not ORM ones: half the time) in chunks, a server-side cursor on PostgreSQL.
    for rows in session.connection().execute(stmt.execution_options(yield_per=EVENT_READ_CHUNK)).partitions():
        n = len(rows)
        ids.append(np.fromiter((r[0] for r in rows), dtype=np.int64, count=n))
        users.append(np.fromiter((r[1] for r in rows), dtype=np.int64, count=n))
        items.append(np.fromiter((r[2] for r in rows), dtype=np.int64, count=n))
        types.extend(one_of.setdefault(r[3], r[3]) for r in rows)
        values.extend(r[4] for r in rows)
        times.append(seconds_since_epoch([r[5] for r in rows]))
        if queries:
            texts.extend(r[6] for r in rows)
    order = slice(None, None, -1 if newest is not None else 1)  # read newest first: back to id order
    cat = lambda parts, dtype: np.ascontiguousarray(np.concatenate(parts)[order] if parts else np.zeros(0, dtype))  # noqa: E731
    return EventColumns(cat(ids, np.int64), cat(users, np.int64), cat(items, np.int64), types[order], values[order],
                        cat(times, np.float64), texts[order] if queries else None)


def seconds_since_epoch(values: Sequence) -> np.ndarray:
    """Stored event times (naive-UTC datetimes, or SQLite's text of them) as Unix seconds,
    equal to :func:`~service.store.models.to_seconds` of each."""
    if values and all(isinstance(v, str) for v in values):
        try:
            parsed = np.array(values, dtype="datetime64[us]")
        except ValueError:  # text in a form numpy does not read: one at a time below
            parsed = None
        if parsed is not None and not np.isnat(parsed).any():
            return parsed.astype(np.int64) / 1e6
    return np.fromiter((to_seconds(v if isinstance(v, dt.datetime) else dt.datetime.fromisoformat(v)) for v in values),
                       dtype=np.float64, count=len(values))
