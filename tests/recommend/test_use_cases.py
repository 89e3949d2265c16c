"""The recommendation use cases below Flask: real database, in-memory index, behaviour from arrays."""

from __future__ import annotations

import datetime as dt
import time

import numpy as np
import pytest
from sqlalchemy import update

from service.recommend.behaviour import Snapshot
from service.recommend.recommender import Engine, also_engaged, for_user, from_examples, similar_items, trending_items
from service.settings import load_settings
from service.store.events import History
from service.store.models import EPOCH, Item
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
                   times=[NOW - e[3] for e in ordered])


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


# --- never an empty page while anything is recommendable: the fallbacks ------------------------


def recommend_for(world, history: History, *consumed: str, **kwargs):
    """for_user with ``history``; ``consumed`` (external ids) is what exclude_seen leaves out."""
    return for_user(world["engine"], session=world["session"], settings=world["settings"], user_id="u", now=NOW,
                    history=history, consumed={world["pks"][c] for c in consumed}, **kwargs)


def test_a_user_with_only_low_ratings_gets_the_fallbacks_named_and_their_dislikes_push_away(world):
    low = history_of(world, ("boot", "rating", 1.0, 600), ("knife", "rating", 2.0, 300))
    answer = recommend_for(world, low, "boot", "knife", k=3)
    # Nothing liked: no "personalized" with an empty page, but trending then the newest items.
    assert answer.strategy == "trending+newest" and ids(world, answer) == ["jacket", "kettle", "rain-guide"]
    assert [r.signals for r in answer.recs] == [("trending",), ("trending",), ("new",)]
    everything = ids(world, recommend_for(world, low, "boot", "knife", k=8))
    # Look-alikes of the boot and the knife sink below unrelated items of their fallback ...
    assert everything[:3] == ["jacket", "kettle", "rain-guide"]
    assert set(everything[3:]) == {"runner", "sandal", "whetstone-guide"}
    # ... and the disliked items themselves never come back, even when seen items may.
    assert not {"boot", "knife"} & set(ids(world, recommend_for(world, low, k=8, exclude_seen=False)))
    # Nothing trending in the window: all-time popularity answers first.
    world["engine"].trending_window_days = 1e-9
    quiet = recommend_for(world, low, "boot", "knife", k=3)
    assert quiet.strategy == "popular+newest" and ids(world, quiet) == ["jacket", "kettle", "rain-guide"]


def test_negative_examples_alone_are_answered_by_the_fallbacks(world):
    answer = from_examples(world["engine"], session=world["session"], settings=world["settings"], now=NOW, k=8,
                           negative=[world["pks"]["boot"]])
    got = ids(world, answer)
    assert answer.strategy == "trending+newest" and got[:2] == ["jacket", "kettle"] and "boot" not in got
    assert got.index("rain-guide") < min(got.index("runner"), got.index("sandal"))


def test_a_history_decades_old_still_personalizes_like_a_fresh_one(world):
    # 30 years at a 7-day half-life: plain decay underflows to 0.0 and the purchase would weigh nothing.
    ancient = recommend_for(world, history_of(world, ("boot", "purchase", None, 30 * 365 * 86_400.0)), "boot", k=4)
    fresh = recommend_for(world, history_of(world, ("boot", "purchase", None, 600)), "boot", k=4)
    assert ancient.strategy == fresh.strategy == "personalized"
    assert ids(world, ancient) == ids(world, fresh) and ids(world, fresh)[:2] == ["jacket", "runner"]
    # Without anything trending either (the reported empty page), the content and co-engagement still answer.
    world["engine"].trending_window_days = 1e-9
    quiet = recommend_for(world, history_of(world, ("boot", "purchase", None, 30 * 365 * 86_400.0)), "boot", k=4)
    assert quiet.strategy == "personalized" and ids(world, quiet)[:2] == ["jacket", "runner"]


def test_a_short_personalized_page_is_filled_in_order_without_repeats_and_within_filters(world):
    bought = history_of(world, ("boot", "purchase", None, 600))
    # Co-engagement alone knows only the jacket: trending, then the newest items fill the page.
    answer = recommend_for(world, bought, "boot", k=4, weights={"co_engagement": 1.0})
    got = ids(world, answer)
    assert answer.strategy == "personalized+trending+newest" and got == ["jacket", "kettle", "rain-guide",
                                                                          "whetstone-guide"]
    assert [r.signals[0] for r in answer.recs] == ["co_engagement", "trending", "new", "new"]
    # The offline evaluation scores a single source alone: no fallbacks.
    alone = recommend_for(world, bought, "boot", k=4, weights={"co_engagement": 1.0}, fallbacks=False)
    assert alone.strategy == "personalized" and ids(world, alone) == ["jacket"]
    # Filters and exclusions hold on every fallback item; the page stays short when nothing else matches.
    outdoor = recommend_for(world, bought, "boot", k=4, weights={"co_engagement": 1.0}, category="outdoor")
    assert outdoor.strategy == "personalized+newest" and ids(world, outdoor) == ["jacket", "rain-guide"]
    low = history_of(world, ("knife", "rating", 1.0, 600))
    kitchen = recommend_for(world, low, "knife", "kettle", k=8, category="kitchen")
    assert ids(world, kitchen) == ["whetstone-guide"] and kitchen.strategy == "newest"
    articles = recommend_for(world, low, "knife", k=8, kinds=["article"])
    assert sorted(ids(world, articles)) == ["rain-guide", "whetstone-guide"]
    for answer in (kitchen, articles):
        assert len(set(ids(world, answer))) == len(answer.recs)


def test_cold_start_fills_the_page_with_popular_then_newest_items(world):
    world["engine"].trending_window_days = 1 / 24 / 4  # the last 15 minutes: only the kettle trends
    answer = for_user(world["engine"], session=world["session"], settings=world["settings"], user_id="nobody",
                      now=NOW, k=8, history=History(user_id=None))
    got = ids(world, answer)
    assert answer.strategy == "cold_start" and got[:3] == ["kettle", "jacket", "boot"] and len(set(got)) == 8


def test_nothing_recommendable_is_an_empty_page_not_an_error(world):
    pks, session = world["pks"], world["session"]
    session.execute(update(Item).values(deleted_at=EPOCH + dt.timedelta(seconds=NOW)))
    session.flush()
    bought = recommend_for(world, history_of(world, ("boot", "purchase", None, 600)), k=5)
    low = recommend_for(world, history_of(world, ("boot", "rating", 1.0, 600)), k=5)
    cold = for_user(world["engine"], session=session, settings=world["settings"], user_id="nobody", now=NOW, k=5,
                    history=History(user_id=None))
    examples = from_examples(world["engine"], session=session, settings=world["settings"], now=NOW, k=5,
                             negative=[pks["boot"]])
    assert [(a.strategy, a.recs) for a in (bought, low, cold, examples)] == [
        ("personalized", []), ("trending", []), ("cold_start", []), ("trending", [])]
