"""Content scored from liked items two ways (``ranking.PROFILE_WAYS``): one mean profile vector,
or a soft maximum over the liked items, served through ``for_user`` on a real database and a
FAISS index whose geometry makes the two disagree."""

from __future__ import annotations

import time

import faiss
import numpy as np
import pytest
from sqlalchemy import select

from service.recommend.behaviour import Snapshot
from service.recommend.recommender import Engine, for_user
from service.settings import load_settings
from service.store.events import History
from service.store.items import upsert_items
from service.store.models import Item
from service.store.records import ItemRecord
from service.vectors.delta import Delta
from service.vectors.index_store import LoadedSpace
from service.vectors.nearest import nearest_many, similarities_to_all, vector_candidates
from service.vectors.vector_index import is_exhaustive

DIM = 6
NOW = time.time()


def unit(*xs: float) -> np.ndarray:
    v = np.zeros(DIM, np.float32)
    v[: len(xs)] = xs
    return v / np.linalg.norm(v)


# Two liked items on axes 0 and 1. "middle" sits between them (cosine 0.71 to each), so their
# mean profile points straight at it; "near-a" is almost "a" itself (0.97) and unlike "b".
# "also-near-a" is a little less like "a" (0.96) and leans another way than "near-a" does, towards
# "x" (the axis "near-a" leans to); "far" is like nothing liked.
VECTORS = {
    "a": unit(1, 0), "b": unit(0, 1), "middle": unit(1, 1), "near-a": unit(0.97, 0, 0.24),
    "also-near-a": unit(0.96, 0, 0, 0.28), "x": unit(0, 0, 1), "far": unit(0, 0, 0, 0, 1),
}


@pytest.fixture(params=["flat", "hnsw"])
def world(request, session_factory, tmp_path):
    """The catalog in an exhaustive index (every item scored by one product) or a graph index
    (one search per liked item), the two paths of ``recommender._soft_max``."""
    with session_factory() as session:
        upsert_items(session=session, records=[ItemRecord(external_id=e, kind="product", title=e) for e in VECTORS])
        session.commit()
        pks = dict(session.execute(select(Item.external_id, Item.id)).all())
    rows = sorted((pks[e], v) for e, v in VECTORS.items())
    ids = np.array([pk for pk, _ in rows], dtype=np.int64)
    vectors = np.stack([v for _, v in rows])
    index = faiss.IndexFlatIP(DIM) if request.param == "flat" else faiss.IndexHNSWFlat(DIM, 8, faiss.METRIC_INNER_PRODUCT)
    index.add(vectors)
    assert is_exhaustive(index) == (request.param == "flat")
    space = LoadedSpace("text", index, ids, vectors, {}, {"name": "axes", "revision": "r1", "dim": DIM})
    empty = Snapshot(np.array([], dtype=np.int64), np.array([], dtype=np.int64), np.array([]), np.array([]))
    settings = load_settings({"data_dir": tmp_path}, environ={})
    with session_factory() as session:
        yield {"pks": pks, "name": {v: k for k, v in pks.items()}, "space": space, "snapshot": empty,
               "settings": settings, "session": session}


def page(world, power: int, liked=("a", "b"), disliked=(), delta: Delta | None = None, max_seeds: int = 32) -> list[str]:
    """A content-only page for someone who liked ``liked`` (newest first) and rated ``disliked`` low."""
    engine = Engine(world["space"], delta, world["snapshot"], candidates_per_source=20, profile_power=power,
                    profile_max_seeds=max_seeds)
    names = [*liked, *disliked]
    history = History(user_id=None, item_ids=[world["pks"][n] for n in names],
                      types=["purchase"] * len(liked) + ["rating"] * len(disliked),
                      values=[None] * len(liked) + [1.0] * len(disliked),
                      times=[NOW - 60 * (j + 1) for j in range(len(names))])
    answer = for_user(engine, session=world["session"], settings=world["settings"], user_id="u", now=NOW, k=3,
                      history=history, consumed={world["pks"][n] for n in names}, weights={"profile": 1.0},
                      fallbacks=False)
    return [world["name"][r.item.id] for r in answer.recs]


def test_the_mean_finds_the_middle_and_the_soft_maximum_finds_what_is_close_to_one_liked_item(world):
    assert page(world, 0)[0] == "middle"
    assert page(world, 8) == ["near-a", "also-near-a", "middle"]  # middle still scores, lower


def test_only_the_heaviest_liked_items_are_searched_from(world):
    assert page(world, 8, liked=("b", "a"))[0] == "near-a"
    # One seed: "b", the newest, so the heaviest; nothing is close to it but "middle".
    assert page(world, 8, liked=("b", "a"), max_seeds=1) == ["middle"]


def test_a_disliked_item_pushes_its_look_alikes_down_under_the_soft_maximum(world):
    assert page(world, 8, liked=("a",))[:2] == ["near-a", "also-near-a"]
    # "x" rated low: "near-a" leans towards it (cosine 0.24), "also-near-a" does not.
    assert page(world, 8, liked=("a",), disliked=("x",))[:2] == ["also-near-a", "near-a"]


def test_a_fresh_item_in_the_delta_is_found_by_the_soft_maximum(world):
    delta = Delta("text", DIM, "r1")
    session = world["session"]
    upsert_items(session=session, records=[ItemRecord(external_id="fresh", kind="product", title="fresh")])
    session.commit()
    fresh = session.scalar(select(Item.id).where(Item.external_id == "fresh"))
    world["name"][fresh] = "fresh"
    delta.vectors[fresh] = unit(0.99, 0, 0.14)  # closer to "a" than "near-a" is
    assert page(world, 8, delta=delta)[0] == "fresh"


def test_the_batched_search_equals_one_search_per_query(world):
    delta = Delta("text", DIM, "r1")
    delta.vectors[world["pks"]["middle"]] = unit(0, 0, 0, 0, 0, 1)  # replaced since the build: shadows its row
    queries = np.stack([VECTORS["a"], VECTORS["b"], unit(1, 1, 1)])
    for d in (None, delta):
        ids, scores, exhausted = nearest_many(world["space"], d, queries, 4)
        for q, row_ids, row_scores in zip(queries, ids, scores):
            one, one_exhausted = vector_candidates(world["space"], d, q, 4)
            assert [(i, s) for i, s, _signals in one] == list(zip(row_ids.tolist(), row_scores.tolist()))
            assert exhausted == one_exhausted
    # "middle"'s stale vector (0.82 like the third query) never comes back; its fresh one leads on axis 5.
    ids, scores, _exhausted = nearest_many(world["space"], delta, queries, 4)
    assert dict(zip(ids[2].tolist(), scores[2].tolist())).get(world["pks"]["middle"], 0.0) < 1e-6
    one, _ = vector_candidates(world["space"], delta, unit(0, 0, 0, 0, 0, 1), 1)
    assert one[0][0] == world["pks"]["middle"] and one[0][2] == ("semantic", "fresh")


def test_similarities_to_all_leave_stale_rows_out_and_take_fresh_ones(world):
    delta = Delta("text", DIM, "r1")
    delta.vectors[world["pks"]["middle"]] = unit(0, 0, 0, 0, 0, 1)  # replaced
    delta.tombstones.add(world["pks"]["far"])  # deleted
    ids, sims = similarities_to_all(world["space"], delta, np.stack([VECTORS["a"], unit(0, 0, 0, 0, 0, 1)]))
    assert sorted(ids.tolist()) == sorted(pk for name, pk in world["pks"].items() if name != "far")
    middle = ids.tolist().index(world["pks"]["middle"])
    assert sims[0, middle] == pytest.approx(0.0, abs=1e-6) and sims[1, middle] == pytest.approx(1.0)
