"""A version's event window: the newest events as a file, what a worker's first load starts from."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
import scipy.sparse as sp

from service.recommend import event_window
from service.recommend.behaviour import ID_OVERLAP, BehaviourModel
from service.store.events import EventColumns, read_events, record_events
from service.store.items import upsert_items
from service.store.records import EventRecord, ItemRecord

START = dt.datetime(2026, 5, 1, 12, 0, 0, 123456)
WEIGHTS = {"purchase": 8.0, "view": 1.0, "rating": 2.0, "wishlist": 3.0}


def _add(session_factory, first: int, count: int) -> None:
    """Events of mixed types (ratings with and without a value, a custom type) on 12 items, 4 users."""
    kinds = [("purchase", None), ("view", None), ("rating", 4.5), ("rating", None), ("rating", 1.0), ("wishlist", None),
             ("custom_type", 2.0)]
    with session_factory() as session:
        record_events(session=session, records=[
            EventRecord(f"e{n}", f"u{n % 4}", f"i{(n * 7) % 12}", *kinds[n % len(kinds)],
                        START + dt.timedelta(minutes=n, microseconds=n))
            for n in range(first, first + count)])
        session.commit()


@pytest.fixture
def world(session_factory):
    with session_factory() as session:
        upsert_items(session=session, records=[ItemRecord(external_id=f"i{n}", kind="product", title=f"item {n}")
                                               for n in range(12)])
        session.commit()
    _add(session_factory, 0, 40)
    return session_factory


def _window(session_factory, folder, newest: int | None = None) -> event_window.Window:
    with session_factory() as session:
        ev = read_events(session=session, newest=newest)
    event_window.save(folder, ev)
    complete = newest is None or len(ev) < newest
    return event_window.load(folder, event_window.record(ev, complete=complete))


def _model(max_events: int, source=None) -> BehaviourModel:
    return BehaviourModel(event_weights=WEIGHTS, rating_neutral=3.0, max_events=max_events, window_source=source)


def _same_snapshot(a: BehaviourModel, b: BehaviourModel) -> None:
    sa, sb = a.snapshot, b.snapshot
    assert sa.event_count == sb.event_count
    np.testing.assert_array_equal(sa.touched_ids, sb.touched_ids)
    np.testing.assert_array_equal(sa.item_ids, sb.item_ids)
    np.testing.assert_array_equal(sa.popularity, sb.popularity)
    np.testing.assert_array_equal(sa.times, sb.times)
    assert (sa.iu != sb.iu).nnz == 0 and sp.issparse(sa.iu)
    for name in ("_users", "_items", "_weights", "_times"):
        np.testing.assert_array_equal(np.concatenate(getattr(a, name)), np.concatenate(getattr(b, name)))


def test_a_window_reads_back_as_the_sql_reader_gives_it(world, tmp_path):
    with world() as session:
        ev = read_events(session=session)
    window = _window(world, tmp_path)
    got = window.events
    assert window.complete and len(got) == len(ev) == 40
    for name in ("ids", "users", "items", "times"):
        np.testing.assert_array_equal(getattr(got, name), getattr(ev, name))
        assert getattr(got, name).dtype == getattr(ev, name).dtype
    assert got.types == ev.types and "custom_type" in got.types
    assert got.values == ev.values and None in got.values  # a rating without a value stays None, not NaN
    record = event_window.record(ev, complete=True)
    assert record == {"file": event_window.WINDOW_FILE, "events": 40, "complete": True,
                      "first_event_id": int(ev.ids[0]), "max_event_id": int(ev.ids[-1])}


def test_a_damaged_or_foreign_window_is_refused(world, tmp_path):
    window = _window(world, tmp_path)
    ev = window.events
    good = event_window.record(ev, complete=True)
    with pytest.raises(ValueError, match="not the 41 events"):
        event_window.load(tmp_path, {**good, "events": 41})
    with pytest.raises(ValueError, match="ascending"):
        event_window.load(tmp_path, {**good, "max_event_id": good["max_event_id"] + 1})
    for other in ("../../etc/passwd", "odd.npz", None, "event_window.npz\x00"):
        with pytest.raises(ValueError, match="expected event_window.npz"):
            event_window.load(tmp_path, {**good, "file": other})
    np.savez(tmp_path / event_window.WINDOW_FILE, ids=ev.ids)
    with pytest.raises(ValueError, match="columns"):
        event_window.load(tmp_path, good)
    # Rows of this database: accepted; the same ids naming other users or items: not.
    with world() as session:
        assert event_window.matches_database(session, ev)
        other = event_window.Window(EventColumns(ev.ids, ev.users, ev.items[::-1].copy(), ev.types,
                                                ev.values, ev.times), True)
        assert not event_window.matches_database(session, other.events)


@pytest.mark.parametrize("saved, max_events", [(None, 60), (None, 25), (30, 25)],
                         ids=["whole-log", "longer-than-kept", "newest-30-of-40"])
def test_the_first_load_from_a_window_equals_reading_sql_and_reads_only_newer_events(world, tmp_path, event_reads,
                                                                                    saved, max_events):
    window = _window(world, tmp_path, newest=saved)
    _add(world, 40, 6)  # written after the version: only these come from SQL
    calls = event_reads
    with_window, plain = _model(max_events, lambda _s: window), _model(max_events)
    with world() as session:
        with_window.refresh(session, force=True)
    ids = window.events.ids
    below = int(ids[-max_events]) - 1 if len(ids) >= max_events else 0  # what the window leaves out
    assert calls == [{"after_id": max(int(ids[-1]) - ID_OVERLAP, below), "newest": max_events}]
    with world() as session:
        plain.refresh(session, force=True)
    _same_snapshot(with_window, plain)
    assert with_window.event_count == min(46, max_events) and with_window._floor_id == plain._floor_id
    # Later pulls: the same increments either way.
    _add(world, 46, 5)
    with world() as session:
        with_window.refresh(session, force=True)
        plain.refresh(session, force=True)
    _same_snapshot(with_window, plain)


def test_a_window_shorter_than_what_a_worker_keeps_is_not_used(world, tmp_path, event_reads):
    window = _window(world, tmp_path, newest=30)  # the newest 30 of 40: not every event up to its last id
    assert not window.complete
    calls = event_reads
    model = _model(35, lambda _s: window)
    with world() as session:
        model.refresh(session, force=True)
    assert calls == [{"newest": 35}] and model.event_count == 35


def test_the_window_source_is_asked_once(world, tmp_path):
    asked = []
    model = _model(100, lambda _s: asked.append(1))  # no window: SQL answers
    for _ in range(3):
        with world() as session:
            model.refresh(session, force=True)
    assert asked == [1] and model.event_count == 40
