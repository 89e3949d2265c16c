"""The recommendation use cases below Flask: real database, in-memory index, behaviour from arrays."""

from __future__ import annotations

import datetime as dt
import time

import numpy as np
import pytest

from service.recommend.behaviour import Snapshot
from service.recommend.recommender import Engine, also_engaged, for_user, from_examples, similar_items, trending_items
from service.settings import load_settings
from service.store.events import History
from service.store.models import EPOCH
from tests.usecase_world import build_world, empty_delta

NOW = time.time()


@pytest.fixture
def world(session_factory, tmp_path):
    pks, space = build_world(session_factory)
    # Behaviour: eight people who bought a boot also bought the jacket; two bought the kettle.
    users, items, times = [], [], []
    for u in range(8):
        users += [u, u]
        items += [pks["boot"], pks["jacket"]]
        times += [NOW - 3600, NOW - 3000]
    for u in (20, 21):
        users.append(u)
        items.append(pks["kettle"])
        times.append(NOW - 60)
    snapshot = Snapshot(np.array(users), np.array(items), np.full(len(items), 8.0), np.array(times))
    engine = Engine(space, empty_delta(), snapshot, trending_window_days=7.0, trending_half_life_days=3.0,
                    candidates_per_source=50)
    settings = load_settings({"data_dir": tmp_path}, environ={})
    with session_factory() as session:
        yield {"pks": pks, "engine": engine, "session": session, "settings": settings,
               "name": {v: k for k, v in pks.items()}}


def ids(world, answer) -> list[str]:
    return [world["name"][r.item.id] for r in answer.recs]


def history_of(world, *events: tuple[str, str, float | None, float]) -> History:
    """(item, type, value, seconds ago) -> the endpoint's History, newest first."""
    ordered = sorted(events, key=lambda e: e[3])
    return History(user_id=None, item_ids=[world["pks"][e[0]] for e in ordered], types=[e[1] for e in ordered],
                   values=[e[2] for e in ordered],
                   times=[EPOCH + dt.timedelta(seconds=NOW - e[3]) for e in ordered])


def test_for_user_blends_behaviour_and_content_and_excludes_what_was_consumed(world):
    history = history_of(world, ("boot", "purchase", None, 600))
    answer = for_user(world["engine"], session=world["session"], settings=world["settings"], user_id="u", now=NOW,
                      k=3, history=history, consumed={world["pks"]["boot"]})
    assert answer.strategy == "personalized"
    got = ids(world, answer)
    assert got[0] == "jacket"  # people who bought the boot bought the jacket
    assert "boot" not in got and "runner" in got  # consumed left out; content finds its neighbour


def test_for_user_without_history_is_cold_start_with_trending(world):
    answer = for_user(world["engine"], session=world["session"], settings=world["settings"], user_id="nobody",
                      now=NOW, k=2, history=History(user_id=None))
    # Eight recent buyers beat two: the jacket (bought after the boot, so decayed less) leads.
    assert answer.strategy == "cold_start" and ids(world, answer)[:2] == ["jacket", "boot"]


def test_for_user_reads_history_from_sql_when_none_is_given(world):
    answer = for_user(world["engine"], session=world["session"], settings=world["settings"], user_id="unknown",
                      now=NOW, k=2)
    assert answer.strategy == "cold_start"


def test_similar_items_is_content_only_and_never_the_item_itself(world):
    answer = similar_items(world["engine"], session=world["session"], settings=world["settings"],
                           item_id=world["pks"]["boot"], now=NOW, k=2)
    assert answer.strategy == "similar" and ids(world, answer) == ["runner", "sandal"]


def test_also_engaged_falls_back_to_content_for_a_niche_item(world):
    popular = also_engaged(world["engine"], session=world["session"], settings=world["settings"],
                           item_id=world["pks"]["boot"], now=NOW, k=1)
    assert popular.strategy == "also" and ids(world, popular) == ["jacket"]
    niche = also_engaged(world["engine"], session=world["session"], settings=world["settings"],
                         item_id=world["pks"]["sandal"], now=NOW, k=2)
    assert niche.strategy == "also+similar" and ids(world, niche) == ["runner", "boot"]  # nearest first


def test_from_examples_session_and_negative_examples(world):
    pks = world["pks"]
    session_answer = from_examples(world["engine"], session=world["session"], settings=world["settings"], now=NOW,
                                   k=2, session_items=[pks["knife"]])
    assert session_answer.strategy == "session" and "knife" not in ids(world, session_answer)
    liked = from_examples(world["engine"], session=world["session"], settings=world["settings"], now=NOW, k=8,
                          positive=[pks["runner"]], negative=[pks["sandal"]])
    got = ids(world, liked)
    assert liked.strategy == "examples" and got[0] == "boot" and "sandal" not in got


def test_trending_items_follow_the_window(world):
    engine = world["engine"]
    recent = trending_items(engine, session=world["session"], settings=world["settings"], now=NOW, k=3)
    assert recent.strategy == "trending" and ids(world, recent) == ["jacket", "boot", "kettle"]
    engine.trending_window_days = 1 / 24 / 4  # the last 15 minutes: only the kettle
    assert ids(world, trending_items(engine, session=world["session"], settings=world["settings"], now=NOW,
                                     k=3)) == ["kettle"]
