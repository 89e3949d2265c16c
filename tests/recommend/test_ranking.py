"""Pure ranking arithmetic and the in-memory behaviour snapshot, with hand-checked answers."""

from __future__ import annotations

import numpy as np
import pytest

from service.recommend.behaviour import Catalog, Snapshot
from service.recommend.ranking import (MAX_EVENT_WEIGHT, MIN_HISTORY_DECAY, blend, decay, event_weights, history_decay, mmr,
                                      profile_vector, scale, top_n)

DAY = 86_400.0


def test_event_weights_follow_types_and_rating_values():
    w = event_weights(["view", "purchase", "rating", "rating", "rating", "share"], [None, None, 5, 3, 1, None],
                      {"view": 1, "purchase": 8, "rating": 1}, rating_neutral=3)
    assert w.tolist() == [1, 8, 2, 0, -2, 1]


def test_event_weights_equal_the_per_event_rule_on_hostile_values():
    types = ["rating", "view", "rating", "rating", "custom", "rating", "purchase", "rating"] * 50
    values = [4.5, None, None, float("nan"), 7.0, float("inf"), None, -1e300] * 50
    weights, neutral = {"view": 0.5, "purchase": 8.0, "rating": 2.0}, 3.0
    expected = []
    for t, v in zip(types, values):  # the rule as documented, one event at a time
        w = weights.get(t, 1.0) * (v - neutral) if t == "rating" and v is not None else weights.get(t, 1.0)
        expected.append(0.0 if not np.isfinite(w) else float(np.clip(w, -MAX_EVENT_WEIGHT, MAX_EVENT_WEIGHT)))
    assert event_weights(types, values, weights, neutral).tolist() == expected
    assert event_weights(types, np.array(values, dtype=object), weights, neutral).tolist() == expected
    assert event_weights([], [], weights, neutral).tolist() == []
    assert event_weights(["view"], [None], {}, neutral).tolist() == [1.0]


def test_decay_halves_per_half_life_and_ignores_future_times():
    assert decay(np.array([0, 30 * DAY, 60 * DAY, -5 * DAY]), 30).tolist() == [1.0, 0.5, 0.25, 1.0]


def test_history_decay_is_plain_decay_until_the_whole_history_would_underflow():
    recent = np.array([0.0, 7 * DAY, 14 * DAY])
    assert history_decay(recent, 7).tolist() == decay(recent, 7).tolist() == [1.0, 0.5, 0.25]
    # Decades old: plain decay is 0.0 for every event; relative to the newest, the ratios survive.
    ancient = np.array([30 * 365 * DAY, 30 * 365 * DAY + 7 * DAY, 30 * 365 * DAY + 14 * DAY])
    assert decay(ancient, 7).max() == 0.0
    assert history_decay(ancient, 7).tolist() == [MIN_HISTORY_DECAY, MIN_HISTORY_DECAY / 2, MIN_HISTORY_DECAY / 4]
    assert np.float32(history_decay(ancient, 7)[0]) > 0  # co-engagement sums in float32
    assert history_decay(np.zeros(0), 7).tolist() == []


def test_profile_is_the_weighted_mean_minus_dislikes():
    v = np.eye(3, dtype=np.float32)
    p = profile_vector(v, np.array([3.0, 1.0, 0.0]))
    assert p == pytest.approx(np.array([3, 1, 0]) / np.sqrt(10))
    with_neg = profile_vector(v, np.array([1.0, 0.0, -1.0]), negative_weight=0.5)
    assert with_neg == pytest.approx(np.array([1, 0, -0.5]) / np.sqrt(1.25))
    assert profile_vector(v, np.array([0.0, -1.0, 0.0])) is None


def test_scale_and_blend_weigh_sources_and_name_signals_by_contribution():
    assert scale({1: 2.0, 2: 1.0, 3: -1.0}) == {1: 1.0, 2: 0.5, 3: 0.0}
    out = blend({"profile": {1: 0.9, 2: 0.45}, "co_engagement": {2: 10.0, 3: 5.0}},
                {"profile": 1.0, "co_engagement": 2.0})
    assert out[1] == (1.0, ("profile",))
    assert out[2][0] == pytest.approx(2.5) and out[2][1] == ("co_engagement", "profile")
    assert out[3] == (1.0, ("co_engagement",))
    # A source without a weight still names the signal but adds nothing.
    assert blend({"trending": {7: 3.0}}, {})[7] == (0.0, ("trending",))


def test_top_n_orders_best_first_with_ties_by_index():
    assert top_n(np.array([0.1, 0.5, 0.5, 0.9, 0.0]), 3).tolist() == [3, 1, 2]
    assert top_n(np.array([1.0]), 5).tolist() == [0]


def test_mmr_trades_relevance_for_novelty():
    # Items 0 and 1 are near-duplicates; 2 is different but a little less relevant.
    vecs = np.array([[1, 0], [0.995, 0.0998], [0, 1]], dtype=np.float32)
    rel = np.array([1.0, 0.95, 0.8])
    assert mmr(rel, vecs, 2, 0.0) == [0, 1]
    assert mmr(rel, vecs, 2, 0.5) == [0, 2]
    assert mmr(rel, None, 3, 0.9) == [0, 1, 2]


def checkerboard() -> Snapshot:
    """Users 0-3 engage with items 10-14, users 4-7 with items 20-24; user 8 bridges one pair."""
    users, items = [], []
    for u in range(4):
        for i in range(10, 15):
            users.append(u), items.append(i)
    for u in range(4, 8):
        for i in range(20, 25):
            users.append(u), items.append(i)
    users += [8, 8]
    items += [10, 20]
    n = len(users)
    times = np.arange(n, dtype=np.float64) * 60
    catalog = Catalog({**{i: "product" for i in range(10, 15)}, **{i: "article" for i in range(20, 25)}},
                      {**{i: "outdoor" for i in range(10, 15)}, **{i: "kitchen" for i in range(20, 25)}})
    return Snapshot(np.array(users), np.array(items), np.ones(n), times, catalog)


def test_co_engagement_recommends_the_missing_square_of_the_checkerboard():
    snap = checkerboard()
    got = snap.co_engaged({10: 1.0, 11: 1.0, 12: 1.0, 13: 1.0}, n=10, exclude={10, 11, 12, 13})
    assert max(got, key=got.get) == 14 and 10 not in got
    assert set(snap.co_engaged({10: 1.0}, n=3)) >= {10}  # a seed is its own neighbour unless excluded
    # Other-block items only come through the bridging user, far behind.
    assert all(got[i] < got[14] / 2 for i in got if i >= 20)
    assert snap.best_seed({10: 1.0, 21: 5.0}, [14, 22]) == {14: 10, 22: 21}
    assert snap.co_engaged({999: 1.0}, n=5) == {} and snap.co_engaged({10: -1.0}, n=5) == {}


def test_trending_respects_window_filters_and_exclusions():
    users = np.array([1, 2, 3, 1, 2])
    items = np.array([5, 5, 6, 7, 7])
    now = 100 * DAY
    times = np.array([now - 1 * DAY, now - 2 * DAY, now - 0.1 * DAY, now - 30 * DAY, now - 31 * DAY])
    snap = Snapshot(users, items, np.ones(5), times, Catalog({5: "product", 6: "article", 7: "product"}, {5: "a", 6: "b", 7: "a"}))
    week = snap.trending(now=now, window_days=7, half_life_days=3, n=10)
    assert list(week) == [5, 6]  # 7 is outside the window
    month = snap.trending(now=now, window_days=60, half_life_days=1000, n=10)
    assert list(month)[0] in (5, 7) and set(month) == {5, 6, 7}
    assert list(snap.trending(now=now, window_days=60, half_life_days=3, n=10, kinds=["product"], category="a")) == [5, 7]
    assert list(snap.trending(now=now, window_days=7, half_life_days=3, n=10, exclude={5})) == [6]


def test_disliked_events_stay_out_of_co_engagement_and_trending():
    snap = Snapshot(np.array([1, 1, 2]), np.array([5, 6, 5]), np.array([1.0, -2.0, 1.0]), np.zeros(3))
    assert 6 not in snap.co_engaged({5: 1.0}, n=5)
    assert list(snap.trending(now=0, window_days=1, half_life_days=1, n=5)) == [5]


def test_soft_max_terms_let_the_closest_liked_item_count_most():
    from service.recommend.ranking import soft_max_terms

    # Two liked items far apart; "middle" is 0.707 from both, "near" 0.97 from one and 0 from the other.
    sims = np.array([[0.707, 0.97], [0.707, 0.0]])
    weights = np.array([[1.0], [1.0]])
    mean_like = soft_max_terms(sims, weights, 1).sum(0)
    soft = soft_max_terms(sims, weights, 8).sum(0)
    assert mean_like[0] > mean_like[1] and soft[1] > soft[0]
    # Negative similarity adds nothing (it is not a reason to like an item).
    assert soft_max_terms(np.array([-0.9]), np.array([2.0]), 3)[0] == 0.0


@pytest.mark.parametrize("section, space, power", [
    ({"profile": {"space": "text", "way": "pow8"}}, "text", 8),
    ({"profile": {"space": "text", "way": "pow3"}}, "clip", 0),  # another space's choice
    ({"profile": {"space": "text", "way": "pow999"}}, "text", 0),  # unknown way
    ({"profile": {"space": "text", "way": ["pow8"]}}, "text", 0),
    ({"profile": "pow8"}, "text", 0),
    ({"status": "trained"}, "text", 0),  # from before the choice existed
    ([1, 2], "text", 0),
    (None, "text", 0),
])
def test_profile_power_of_reads_a_manifest_section_as_untrusted(section, space, power):
    from service.recommend.ranking import profile_power_of

    assert profile_power_of(section, space) == power


def test_the_content_scoring_setting_names_every_way_and_only_those():
    from service.recommend.ranking import PROFILE_WAYS
    from service.settings import CONTENT_SCORINGS

    assert set(CONTENT_SCORINGS) == {"auto", *PROFILE_WAYS}


@pytest.mark.parametrize("section, rank", [
    ({"cold_place": {"rank": 50}}, 50),
    ({"cold_place": {"rank": None}}, None),  # nothing chosen (no content, or a forced bar)
    ({"cold_place": {"rank": 0}}, None),
    ({"cold_place": {"rank": -5}}, None),
    ({"cold_place": {"rank": 10**9}}, None),
    ({"cold_place": {"rank": 20.0}}, None),
    ({"cold_place": {"rank": True}}, None),
    ({"cold_place": {"rank": "20"}}, None),
    ({"cold_place": 20}, None),
    ({"status": "trained"}, None),  # from before the choice existed
    ("cold", None),
    (None, None),
])
def test_cold_rank_of_reads_a_manifest_section_as_untrusted(section, rank):
    from service.recommend.ranking import cold_rank_of

    assert cold_rank_of(section) == rank
