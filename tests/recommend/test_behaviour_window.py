"""A worker's behaviour model keeps only the newest ``max_events`` events: bounded start-up and memory."""

from __future__ import annotations

import datetime as dt

import numpy as np

from service.recommend.behaviour import BehaviourModel
from service.store.events import record_events
from service.store.items import upsert_items
from service.store.records import EventRecord, ItemRecord

START = dt.datetime(2026, 5, 1)


def _add(session_factory, first: int, count: int) -> None:
    with session_factory() as session:
        record_events(session=session, records=[
            EventRecord(f"e{n}", f"u{n % 3}", f"i{n}", "purchase", None, START + dt.timedelta(minutes=n))
            for n in range(first, first + count)])
        session.commit()


def test_only_the_newest_events_are_kept_at_start_and_as_new_ones_arrive(session_factory):
    with session_factory() as session:
        upsert_items(session=session, records=[ItemRecord(external_id=f"i{n}", kind="product", title=f"item {n}")
                                               for n in range(20)])
        session.commit()
        pk = {f"i{n}": i for n, i in enumerate(sorted(session.scalars(__import__("sqlalchemy").select(
            __import__("service.store.models", fromlist=["Item"]).Item.id))))}
    _add(session_factory, 0, 8)
    model = BehaviourModel(event_weights={"purchase": 8.0}, rating_neutral=3.0, max_events=5)
    with session_factory() as session:
        model.refresh(session, force=True)
    assert model.event_count == 5 and model.snapshot.event_count == 5
    assert set(model.snapshot.item_ids.tolist()) == {pk[f"i{n}"] for n in range(3, 8)}  # the newest five
    _add(session_factory, 8, 4)
    with session_factory() as session:
        model.refresh(session, force=True)
    assert model.event_count == 5
    assert set(model.snapshot.item_ids.tolist()) == {pk[f"i{n}"] for n in range(7, 12)}
    times = np.concatenate(model._times)
    assert (np.diff(times) >= 0).all()  # still in arrival order


def test_catalog_changes_reach_the_next_snapshot(session_factory):
    """The first load takes the whole catalog at once; later pulls take what changed since."""
    from sqlalchemy import select

    from service.store.models import Item

    def put(*records):
        with session_factory() as session:
            upsert_items(session=session, records=list(records), now=START + dt.timedelta(hours=len(calls)))
            session.commit()
        calls.append(1)

    calls: list[int] = []
    put(*[ItemRecord(external_id=f"i{n}", kind="product", title=f"item {n}", category="a") for n in range(4)])
    _add(session_factory, 0, 4)
    model = BehaviourModel(event_weights={"purchase": 8.0}, rating_neutral=3.0)
    with session_factory() as session:
        model.refresh(session, force=True)
        pk = {e: i for e, i in session.execute(select(Item.external_id, Item.id))}
    catalog = model.snapshot.catalog
    assert catalog.kinds == {pk[f"i{n}"]: "product" for n in range(4)} and not catalog.deleted
    assert set(catalog.categories.values()) == {"a"}
    with session_factory() as session:  # nothing changed: no new snapshot is due for the catalog
        assert not model._pull_items(session)
    put(ItemRecord(external_id="i1", kind="article", title="item 1", category="b"),
        ItemRecord(external_id="i2", kind="product", title="", deleted=True))
    with session_factory() as session:
        assert model.refresh(session, force=True)
    catalog = model.snapshot.catalog
    assert catalog.kinds[pk["i1"]] == "article" and catalog.categories[pk["i1"]] == "b"
    assert catalog.deleted == frozenset({pk["i2"]})
