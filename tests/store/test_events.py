"""Event writes under concurrency, on both databases: ``accepted`` counts what was really stored."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from sqlalchemy import func, select

from service.store import events
from service.store.events import record_events
from service.store.items import upsert_items
from service.store.models import Event
from service.store.records import EventRecord, ItemRecord

T0 = dt.datetime(2026, 1, 1)


def _event(n: int) -> EventRecord:
    return EventRecord(client_event_id=f"e{n}", user_external_id=f"u{n % 3}", item_external_id=f"p{n % 4}",
                       type="view", value=None, occurred_at=T0 + dt.timedelta(seconds=n))


@pytest.fixture
def catalog(session_factory):
    with session_factory() as s:
        upsert_items(session=s, records=[ItemRecord(external_id=f"p{i}", kind="product", title=f"P{i}") for i in range(4)])
        s.commit()
    return session_factory


def _race(session_factory, batches: list[list[EventRecord]]) -> list:
    """Record each batch in its own thread and session; answers each batch's result."""
    results: list = [None] * len(batches)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            with session_factory() as s:
                results[i] = record_events(session=s, records=batches[i])
                s.commit()
        except BaseException as exc:  # re-raised in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(batches))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    return results


def _stored(session_factory) -> int:
    with session_factory() as s:
        return s.scalar(select(func.count()).select_from(Event))


def test_racing_batches_with_the_same_ids_count_each_event_once(catalog, monkeypatch):
    # Both batches pass the "already stored?" check before either inserts: the overlap is
    # decided by the INSERT itself, which must report only the rows it wrote.
    barrier = threading.Barrier(2, timeout=30)
    check = events.existing_event_ids

    def check_then_wait(**kwargs):
        found = check(**kwargs)
        barrier.wait()
        return found

    monkeypatch.setattr(events, "existing_event_ids", check_then_wait)
    a = [_event(n) for n in range(0, 60)]
    b = [_event(n) for n in range(30, 90)]
    ra, rb = _race(catalog, [a, b])
    assert ra.inserted + rb.inserted == _stored(catalog) == 90
    assert ra.duplicates + rb.duplicates == 30
    # Each overlapping event is accepted by exactly one batch, a duplicate in the other.
    for n in range(30, 60):
        pair = {ra.statuses[n], rb.statuses[n - 30]}
        assert pair == {"accepted", "duplicate"}, (n, pair)
    assert ra.statuses[:30] == ["accepted"] * 30 and rb.statuses[30:] == ["accepted"] * 30


def test_identical_batches_racing_accept_each_event_once(catalog):
    batch = [_event(n) for n in range(200)]
    results = _race(catalog, [batch, list(batch), list(batch)])
    assert sum(r.inserted for r in results) == _stored(catalog) == 200
    assert sum(r.duplicates for r in results) == 400
    for pos in range(200):
        assert sorted(r.statuses[pos] for r in results) == ["accepted", "duplicate", "duplicate"]


def test_read_events_gives_columns_in_id_order_and_the_newest_window(catalog, monkeypatch):
    """Both backends: the columns equal the stored rows, in chunks or not, whole or the newest N."""
    import numpy as np

    from service.store.models import to_seconds

    records = [EventRecord(client_event_id=f"r{n}", user_external_id=f"u{n % 3}", item_external_id=f"p{n % 4}",
                           type=("view", "rating", "purchase")[n % 3], value=4.5 if n % 3 == 1 else None,
                           occurred_at=T0 + dt.timedelta(seconds=n, microseconds=n * 7919 % 1_000_000),
                           query="trail shoes" if n == 5 else None) for n in range(23)]
    with catalog() as s:
        record_events(session=s, records=records)
        s.commit()
        rows = s.execute(select(Event.id, Event.user_id, Event.item_id, Event.type, Event.value, Event.occurred_at,
                                Event.query).order_by(Event.id)).all()
    for chunk in (4, 1000):
        monkeypatch.setattr(events, "EVENT_READ_CHUNK", chunk)
        with catalog() as s:
            whole = events.read_events(session=s, queries=True)
            newest = events.read_events(session=s, newest=10)
            after = events.read_events(session=s, after_id=int(rows[19][0]))
        assert whole.ids.tolist() == [r[0] for r in rows]
        assert whole.users.tolist() == [r[1] for r in rows] and whole.items.tolist() == [r[2] for r in rows]
        assert whole.types == [r[3] for r in rows] and whole.values == [r[4] for r in rows]
        assert whole.times.tolist() == [to_seconds(r[5]) for r in rows]  # exact, microseconds included
        assert whole.queries == [r[6] for r in rows]
        assert newest.ids.tolist() == whole.ids[-10:].tolist() and newest.times.tolist() == whole.times[-10:].tolist()
        assert newest.types == whole.types[-10:] and newest.queries is None
        assert after.ids.tolist() == whole.ids[20:].tolist()
    assert len({id(t) for t in whole.types}) == 3  # one string object per type
    with catalog() as s:
        assert len(events.read_events(session=s, after_id=int(rows[-1][0]))) == 0
        assert events.read_events(session=s, after_id=int(rows[-1][0])).times.dtype == np.float64


def test_seconds_since_epoch_equals_to_seconds_for_every_stored_form():
    from service.store.models import to_seconds

    stamps = [dt.datetime(2026, 10, 2, 2, 54, 17, 123456), dt.datetime(1999, 12, 31, 23, 59, 59, 999999),
              dt.datetime(2026, 1, 1)]
    expected = [to_seconds(t) for t in stamps]
    assert events.seconds_since_epoch(stamps).tolist() == expected
    assert events.seconds_since_epoch([t.strftime("%Y-%m-%d %H:%M:%S.%f") for t in stamps]).tolist() == expected
    # Text numpy cannot read goes one at a time (fromisoformat); no microseconds is fine too.
    assert events.seconds_since_epoch(["2026-01-01 00:00:00", "2026-01-01T00:00:00"]).tolist() == [expected[2]] * 2
    assert events.seconds_since_epoch(["2026-10-02 02:54:17.123456", "20261002T025417.123456"]).tolist() == \
        [expected[0]] * 2
    assert events.seconds_since_epoch([]).tolist() == []
