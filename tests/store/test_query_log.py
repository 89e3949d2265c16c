"""The search query log: what is kept (and what never is), its bound, and the worker's buffer."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from service.store import query_log
from service.store.models import SearchQuery
from service.store.query_log import QueryLogBuffer, loggable, record_queries, recent_queries


@pytest.mark.parametrize("text", [
    "jane.doe@example.com shoes", "call me 555 123 4567", "order 1234567", "card 4111-1111-1111-1111",
    "x", "   ", "nul\x00byte", "lone \ud800 surrogate", "a" * 600,
])
def test_personal_or_unstorable_texts_are_never_logged(text):
    assert loggable(text) is None


@pytest.mark.parametrize("text, kept", [
    ("  trail   running shoes ", "trail running shoes"), ("12.5 kg dumbbell", "12.5 kg dumbbell"),
    ("shoes under 100", "shoes under 100"), ("iphone 15 case", "iphone 15 case"), ("東京 ramen 🍜", "東京 ramen 🍜"),
])
def test_ordinary_queries_are_logged_with_whitespace_collapsed(text, kept):
    assert loggable(text) == kept


def test_counts_add_up_and_the_log_keeps_the_most_recent(session_factory):
    with session_factory() as session:
        record_queries(session, {"a shoe": 1, "b shoe": 2}, keep=3, today=dt.date(2026, 1, 1))
        record_queries(session, {"a shoe": 4, "c shoe": 1}, keep=3, today=dt.date(2026, 1, 2))
        session.commit()
        rows = {q.text: (q.count, q.last_seen) for q in session.scalars(select(SearchQuery))}
        assert rows == {"a shoe": (5, dt.date(2026, 1, 2)), "b shoe": (2, dt.date(2026, 1, 1)),
                        "c shoe": (1, dt.date(2026, 1, 2))}
        record_queries(session, {"d shoe": 1}, keep=3, today=dt.date(2026, 1, 3))
        session.commit()
        assert recent_queries(session, 10) == ["d shoe", "a shoe", "c shoe"]  # "b shoe", the oldest, is gone
        assert recent_queries(session, 1) == ["d shoe"]


def test_the_buffer_writes_in_batches_and_never_when_off(session_factory, monkeypatch):
    now = [0.0]
    buffer = QueryLogBuffer(session_factory, keep=100, clock=lambda: now[0])
    started = []
    monkeypatch.setattr(buffer, "_start_flush", lambda: started.append(1))
    for text in ("rain jacket", "rain jacket", "me@example.org", "tent"):
        buffer.add(text)
    assert started == []  # not due yet: nothing written
    with session_factory() as session:
        assert recent_queries(session, 10) == []
    now[0] = query_log.FLUSH_SECONDS
    buffer.add("tent")
    assert len(started) == 1  # one background flush started
    buffer.add("stove")
    assert len(started) == 1  # single flight
    assert buffer.flush() == 3
    with session_factory() as session:
        assert {(q.text, q.count) for q in session.scalars(select(SearchQuery))} == {
            ("rain jacket", 2), ("tent", 2), ("stove", 1)}
    off = QueryLogBuffer(session_factory, keep=0)
    off.add("anything")
    assert off.flush() == 0


def test_the_pending_set_is_bounded(session_factory, monkeypatch):
    monkeypatch.setattr(query_log, "PENDING_MAX", 3)
    buffer = QueryLogBuffer(session_factory, keep=100, clock=lambda: 0.0)
    for n in range(10):
        buffer.add(f"query {n} words")
    buffer.add("query 0 words")  # one already held still counts
    assert buffer.flush() == 3
    with session_factory() as session:
        assert sorted((q.text, q.count) for q in session.scalars(select(SearchQuery))) == [
            ("query 0 words", 2), ("query 1 words", 1), ("query 2 words", 1)]
