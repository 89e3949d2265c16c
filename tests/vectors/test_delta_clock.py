"""The delta of fresh vectors across replicas: rows are stamped with the database's clock, and a
row stamped before the newest one applied (a slow commit, or a writer whose stamp lags) still
reaches every replica's delta within ``REREAD_SECONDS``. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import time

import numpy as np
from sqlalchemy import update

from service.store.db import database_utcnow, session_scope
from service.store.models import FreshVector, Item
from service.vectors import delta as delta_module
from service.vectors.delta import DeltaSet, write_fresh


def add_items(factory, n: int) -> list[int]:
    with session_scope(factory) as session:
        rows = [Item(external_id=f"i{i}", kind="product", title=f"item {i}", content_hash="0" * 64) for i in range(n)]
        session.add_all(rows)
        session.flush()
        return [r.id for r in rows]


def vector(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).random(4, dtype=np.float32)
    return v / np.linalg.norm(v)


def test_rows_are_stamped_with_the_database_clock(session_factory):
    ids = add_items(session_factory, 1)
    with session_scope(session_factory) as session:
        before = database_utcnow(session)
        write_fresh(session=session, item_id=ids[0], space="text", encoder_revision="r", vector=vector(0))
    with session_scope(session_factory) as session:
        after = database_utcnow(session)
        stamped = session.get(FreshVector, (ids[0], "text")).written_at
    assert before <= stamped <= after
    host = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    assert abs((after - host).total_seconds()) < 60  # UTC on both sides, whatever the server's zone


def test_a_row_stamped_before_the_newest_applied_one_is_not_skipped(session_factory, tmp_path, monkeypatch):
    monkeypatch.setattr(delta_module, "REREAD_SECONDS", 0.2)
    first, late = add_items(session_factory, 2)
    deltas = DeltaSet(tmp_path)  # another replica: its signal file never changes
    with session_scope(session_factory) as session:
        deltas.reset("v", database_utcnow(session) - dt.timedelta(seconds=10), {"text": (4, "r")})
        write_fresh(session=session, item_id=first, space="text", encoder_revision="r", vector=vector(1))
    with session_scope(session_factory) as session:
        deltas.sync(session)
    assert set(deltas.get("text").vectors) == {first}
    # A replica whose write was stamped 2 s earlier (its transaction committed only now).
    with session_scope(session_factory) as session:
        write_fresh(session=session, item_id=late, space="text", encoder_revision="r", vector=vector(2))
        session.flush()
        session.execute(update(FreshVector).where(FreshVector.item_id == late)
                        .values(written_at=deltas._synced_until - dt.timedelta(seconds=2)))
    with session_scope(session_factory) as session:
        deltas.sync(session)  # max(written_at) did not move: only the periodic re-read finds it
    time.sleep(0.25)
    with session_scope(session_factory) as session:
        deltas.sync(session)
    assert set(deltas.get("text").vectors) == {first, late}
