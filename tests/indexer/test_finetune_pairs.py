"""Fine-tuning pairs: only positive behaviour, only inside the window, never from held-out events."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from indexer.finetune_pairs import EventRows, build_pairs
from service.recommend.offline_eval import load_event_log
from service.store.events import record_events
from service.store.items import upsert_items
from service.store.records import EventRecord, ItemRecord

HOUR = 3600.0


def rows(*events) -> EventRows:
    """(user, item, weight, hours, query) tuples as the builder's input."""
    return EventRows(np.array([e[0] for e in events]), np.array([e[1] for e in events]),
                     np.array([e[2] for e in events], dtype=float), np.array([e[3] * HOUR for e in events]),
                     [e[4] for e in events])


def test_items_pair_only_within_the_window_and_only_when_liked():
    ev = rows((1, 10, 1.0, 0, None), (1, 11, 2.0, 1, None), (1, 12, 1.0, 30, None),  # 12 is a day later
              (1, 13, -2.0, 1.5, None),  # a low rating: never a pair
              (2, 11, 1.0, 0, None), (2, 10, 1.0, 2, None), (2, 10, 1.0, 3, None))  # repeats add up; no self pairs
    pairs = build_pairs(ev, window_seconds=6 * HOUR).item_pairs
    assert pairs == {(10, 11): pytest.approx(1.0 + 1.0 + 1.0)}


def test_held_out_events_never_make_pairs():
    ev = rows((1, 10, 1.0, 0, "red shoe"), (1, 11, 1.0, 1, None), (1, 12, 1.0, 2, "blue kettle"))
    keep = np.array([True, True, False])  # the last event is held out
    pairs = build_pairs(ev, window_seconds=6 * HOUR, keep=keep)
    assert pairs.item_pairs == {(10, 11): 1.0}
    assert pairs.query_pairs == {("red shoe", 10): 1.0}
    with pytest.raises(ValueError):
        build_pairs(ev, window_seconds=HOUR, keep=[True])


def test_a_heavy_user_is_capped_nearest_first():
    ev = rows(*[(1, 100 + i, 1.0, i * 0.1, None) for i in range(30)])
    pairs = build_pairs(ev, window_seconds=100 * HOUR, max_pairs_per_user=5).item_pairs
    assert len(pairs) == 5 and all(b - a == 1 for a, b in pairs)  # the five nearest in time


def test_queries_of_stored_clicks_become_query_pairs(session_factory, settings):
    with session_factory() as session:
        upsert_items(session=session, records=[ItemRecord(external_id=e, kind="product", title=e) for e in ("a", "b")])
        record_events(session=session, records=[
            EventRecord("e1", "u", "a", "click", None, dt.datetime(2026, 1, 1), query="espresso"),
            EventRecord("e2", "u", "b", "click", None, dt.datetime(2026, 1, 1, 0, 10)),
            EventRecord("e3", "u", "b", "rating", 1.0, dt.datetime(2026, 1, 1, 0, 20), query="kettle")])  # disliked
        session.commit()
        ev = EventRows.from_log(load_event_log(session, settings, queries=True))
    pairs = build_pairs(ev, window_seconds=HOUR)
    assert [q for q, _ in pairs.query_pairs] == ["espresso"]
    assert len(pairs.item_pairs) == 1
