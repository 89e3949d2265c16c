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
