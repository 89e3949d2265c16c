"""Recommendations end to end through the Flask app, on SQLite and PostgreSQL.

The catalog is a checkerboard: outdoor people engage with the outdoor items, kitchen people with
the kitchen items, so the right answers are known.
"""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest
from sqlalchemy import select

from indexer.pipeline import Pipeline
from service.web.app import create_app
from service.store.events import active_users, consumed_items, user_history
from service.store.models import Event, User, to_seconds
from service.store.importing import import_events, import_items

# Loads the real text model, builds indexes or runs servers: `make test-fast` leaves it out.
pytestmark = pytest.mark.slow

OUTDOOR = [("o1", "Waterproof hiking boots", "Leather boots with a grippy sole for mountain trails."),
           ("o2", "Trekking poles", "Light carbon poles that take the strain off your knees on descents."),
           ("o3", "Two-person backpacking tent", "A light tent that pitches in minutes on a windy ridge."),
           ("o4", "Down sleeping bag", "Warm to minus ten degrees for cold nights camping in the hills."),
           ("o5", "Hiking backpack 40 litres", "A pack with a rain cover for long day hikes and hut trips.")]
KITCHEN = [("k1", "Cast iron skillet", "Sears steak and bakes cornbread; season it with oil."),
           ("k2", "Chef knife", "A sharp 21 cm blade for slicing vegetables and meat."),
           ("k3", "Stand mixer", "Kneads bread dough and whips cream for cakes."),
           ("k4", "Dutch oven", "Enamelled pot for slow-cooked stews and braises."),
           ("k5", "Pepper mill", "Grinds black pepper from coarse to fine for seasoning.")]
NOW = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0)


def _ts(minutes_ago: float) -> str:
    return (NOW - dt.timedelta(minutes=minutes_ago)).isoformat() + "Z"


@pytest.fixture
def world(tmp_path, settings, session_factory, monkeypatch):
    """The checkerboard catalog and events imported, the text index built, an app over it."""
    for key in [k for k in __import__("os").environ if k.startswith("RECSYS_")]:
        monkeypatch.delenv(key)
    rows = [{"id": i, "kind": "product", "title": t, "text": x, "category": "outdoor"} for i, t, x in OUTDOOR]
    rows += [{"id": i, "kind": "article" if i == "k5" else "product", "title": t, "text": x, "category": "kitchen"}
             for i, t, x in KITCHEN]
    (tmp_path / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    events = ["event_id,user_id,item_id,type,value,timestamp"]
    n = 0
    for group, items in (("out", OUTDOOR), ("kit", KITCHEN)):
        for u in range(6):
            for j, (item, _t, _x) in enumerate(items):
                n += 1
                events.append(f"e{n},{group}{u},{item},{'purchase' if j == 0 else 'view'},,{_ts(600 - n)}")
    # Alice has seen four outdoor items; the fifth is her missing square.
    for j, (item, _t, _x) in enumerate(OUTDOOR[:4]):
        events.append(f"a{j},alice,{item},view,,{_ts(30 - j)}")
    (tmp_path / "events.csv").write_text("\n".join(events) + "\n")
    import_items(tmp_path / "items.jsonl", session_factory=session_factory, progress=False)
    import_events(tmp_path / "events.csv", session_factory=session_factory, event_types=settings.event_types, progress=False)
    overrides = {"data_dir": str(settings.data_dir), "database_url": settings.database_url, "clip_enabled": False,
                 "behaviour_refresh_seconds": 0.2}
    Pipeline(settings.__class__(**{**settings.__dict__, "clip_enabled": False}), session_factory).run()
    app = create_app(overrides)
    app.testing = True
    yield {"client": app.test_client(), "app": app, "factory": session_factory}
    rt = app.extensions["recsys"]
    rt.behaviour.stop()  # its thread holds a connection: the test database is dropped at the end
    rt.engine.dispose()


def hits(resp):
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return [h["id"] for h in resp.get_json()["hits"]]


def post_events(client, events):
    resp = client.post("/events", json=events)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return resp.get_json()


def test_the_held_out_item_ranks_first_and_seen_items_are_excluded(world):
    c = world["client"]
    resp = c.get("/users/alice/recommendations?k=5&explain=true")
    body = resp.get_json()
    assert hits(resp)[0] == "o5"
    assert body["strategy"] == "personalized" and body["recommendation_id"].startswith("r-")
    assert not {"o1", "o2", "o3", "o4"} & set(hits(resp))
    top = body["hits"][0]
    assert "co_engagement" in top["signals"] and top["reasons"]
    assert any(r["signal"] == "co_engagement" and r["item_id"] in {"o1", "o2", "o3", "o4"} and "viewed" in r["text"]
               for r in top["reasons"])
    # Seen items come back when asked for, and filters hold.
    assert set(hits(c.get("/users/alice/recommendations?k=10&exclude_seen=false"))) >= {"o1", "o2", "o3", "o4", "o5"}
    kitchen = hits(c.get("/users/alice/recommendations?k=10&category=kitchen"))
    assert kitchen and all(i.startswith("k") for i in kitchen)
    assert hits(c.get("/users/alice/recommendations?k=10&kind=article")) == ["k5"]


def test_a_new_event_changes_the_next_recommendation_and_replays_change_nothing(world):
    c = world["client"]
    before = hits(c.get("/users/alice/recommendations?k=3"))
    assert before[0] == "o5"
    event = {"event_id": "alice-buys-k1", "user_id": "alice", "item_id": "k1", "type": "purchase",
             "recommendation_id": "r-test"}
    assert post_events(c, [event])["accepted"] == 1
    after = hits(c.get("/users/alice/recommendations?k=3"))
    assert after != before and "k1" not in after and any(i.startswith("k") for i in after)
    replay = post_events(c, [event, event])
    assert replay["accepted"] == 0 and replay["duplicates"] == 2
    assert hits(c.get("/users/alice/recommendations?k=3")) == after


def test_unknown_users_get_a_cold_start_answer_per_category(world):
    c = world["client"]
    body = c.get("/users/stranger/recommendations?k=4&explain=true").get_json()
    assert body["strategy"] == "cold_start" and len(body["hits"]) == 4
    assert all("trending" in h["signals"] for h in body["hits"])
    assert body["hits"][0]["reasons"][0]["text"].startswith("popular in ")
    kitchen = hits(c.get("/users/stranger/recommendations?k=10&category=kitchen"))
    assert sorted(kitchen) == ["k1", "k2", "k3", "k4", "k5"]
    assert hits(c.get("/trending?category=outdoor&window=7d&k=2")) and hits(c.get("/trending?window=0.1h")) == []
    assert hits(c.get("/trending?window=1h")) == ["o4", "o3", "o2", "o1"]  # only alice, most recent first


def test_a_new_item_is_recommendable_through_content_before_anyone_touches_it(world):
    c = world["client"]
    resp = c.put("/items/o6", json={"kind": "product", "title": "Waterproof hiking boots for winter",
                                    "text": "Insulated leather boots with a grippy sole for snowy mountain trails.",
                                    "category": "outdoor"})
    assert resp.status_code == 201
    assert hits(c.get("/items/o1/similar?k=1")) == ["o6"]
    assert "o6" in hits(c.get("/users/alice/recommendations?k=3"))
    # /also falls back to content for an item nobody has engaged with.
    body = c.get("/items/o6/also?k=3").get_json()
    assert body["strategy"] == "also+similar" and body["hits"][0]["id"] == "o1"


def test_also_similar_examples_and_sessions(world):
    c = world["client"]
    also = c.get("/items/k1/also?k=4&explain=true").get_json()
    assert sorted(h["id"] for h in also["hits"]) == ["k2", "k3", "k4", "k5"] and also["strategy"] == "also"
    ex = c.post("/recommend", json={"positive": ["o1"], "negative": ["k2"], "k": 3}).get_json()
    assert ex["strategy"] == "examples" and all(h["id"].startswith("o") for h in ex["hits"])
    best = c.post("/recommend", json={"positive": ["o1", "k2"], "strategy": "best_score", "k": 8}).get_json()
    assert {h["id"][0] for h in best["hits"]} == {"o", "k"}  # both examples are served
    assert not {"o1", "k2"} & {h["id"] for h in best["hits"]}
    session = c.post("/recommend", json={"session": ["k1", "k2"], "k": 3}).get_json()
    assert session["strategy"] == "session" and all(h["id"].startswith("k") for h in session["hits"])
    app = world["app"]
    dim = app.extensions["recsys"].store.current.spaces["text"].dim
    vec = c.post("/recommend", json={"positive_vectors": [[1.0] + [0.0] * (dim - 1)], "k": 2}).get_json()
    assert len(vec["hits"]) == 2


@pytest.mark.parametrize("body, status, field", [
    ({}, 400, "body"),
    ({"positive": ["nope"]}, 404, "nope"),
    ({"positive": ["o1"], "strategy": "median"}, 400, "strategy"),
    ({"positive_vectors": [[1.0, 2.0]]}, 400, "positive_vectors[0]"),
    ({"session": ["o1"], "positive": ["o2"]}, 400, "session"),
    ({"positive": ["o1"], "extra": 1}, 400, "extra"),
    ({"positive": ["o1"], "k": 0}, 400, "k"),
])
def test_recommend_rejects_bad_bodies_clearly(world, body, status, field):
    resp = world["client"].post("/recommend", json=body)
    assert resp.status_code == status, resp.get_data(as_text=True)
    assert field in resp.get_json()["error"]["message"] or field in json.dumps(resp.get_json()["error"]["details"])


def test_bad_parameters_and_unknown_items(world):
    c = world["client"]
    assert c.get("/users/alice/recommendations?diversity=2").status_code == 400
    assert c.get("/users/alice/recommendations?k=5000").status_code == 400
    assert c.get("/users/alice/recommendations?kind=car").status_code == 400
    assert c.get("/items/nope/similar").status_code == 404
    assert c.get("/items/nope/also").status_code == 404
    assert c.get("/trending?window=soon").status_code == 400


def test_events_batch_rejects_unknown_items_one_by_one_and_malformed_batches_whole(world):
    c = world["client"]
    out = post_events(c, [{"user_id": "carol", "item_id": "o1", "type": "view"},
                          {"user_id": "carol", "item_id": "ghost", "type": "view"},
                          {"user_id": "carol", "item_id": "o2", "type": "teleport"}])
    assert out["accepted"] == 1 and out["rejected"] == 2
    assert [r["status"] for r in out["results"]] == ["accepted", "rejected", "rejected"]
    assert "ghost" in out["results"][1]["reason"] and "type" in out["results"][2]["reason"]
    for bad in ([], "text", [{"user_id": "dave", "item_id": "o1", "type": "view"}, 5], {"events": "x"}):
        resp = c.post("/events", json=bad)
        assert resp.status_code == 400, bad
    with world["factory"]() as session:
        assert user_history(session=session, external_id="dave", limit=10).user_id is None
        carol = user_history(session=session, external_id="carol", limit=10)
        assert carol.item_ids and len(carol.item_ids) == 1


def test_diversity_spreads_the_page_across_groups(world):
    c = world["client"]
    post_events(c, [{"user_id": "eve", "item_id": "o1", "type": "purchase"},
                    {"user_id": "eve", "item_id": "k1", "type": "view"}])
    plain = hits(c.get("/users/eve/recommendations?k=4&diversity=0"))
    diverse = hits(c.get("/users/eve/recommendations?k=4&diversity=0.9"))
    groups = lambda ids: {i[0] for i in ids}  # noqa: E731
    assert groups(diverse) == {"o", "k"} and len(diverse) == 4
    assert plain[0].startswith("o")  # the purchase outweighs the view


def test_history_and_users_queries(world):
    with world["factory"]() as session:
        h = user_history(session=session, external_id="alice", limit=2)
        assert len(h.item_ids) == 2 and h.times[0] >= h.times[1] and not h.complete
        # Unix seconds of the stored times (SQLite's text is parsed by numpy, not per row).
        stored = session.scalars(
            select(Event.occurred_at).join(User, User.id == Event.user_id).where(User.external_id == "alice")
            .order_by(Event.occurred_at.desc(), Event.id.desc()).limit(2)).all()
        assert h.times == [to_seconds(t) for t in stored]
        if session.get_bind().dialect.name == "sqlite":  # one range of one index, no table rows (migration 0007)
            plan = session.connection().exec_driver_sql(
                "EXPLAIN QUERY PLAN SELECT item_id, type, value, occurred_at FROM events WHERE user_id = 1 "
                "ORDER BY occurred_at DESC, id DESC LIMIT 2").all()
            assert "COVERING INDEX ix_events_user_history" in str(plan) and "TEMP B-TREE" not in str(plan), plan
        # A truncated history asks SQL; a complete one answers from itself: the same items.
        assert len(consumed_items(session=session, history=h, types=("view",))) == 4
        # Exactly ``limit`` events is all of them (alice has 4).
        assert user_history(session=session, external_id="alice", limit=4).complete
        assert not user_history(session=session, external_id="alice", limit=3).complete
        full = user_history(session=session, external_id="alice", limit=500)
        assert full.complete and consumed_items(session=session, history=full, types=("view",)) == \
            consumed_items(session=session, history=h, types=("view",))
        assert consumed_items(session=session, history=h, types=("purchase",)) == set()
        users = active_users(session=session, limit=3)
        assert users[0][0] == "alice" and users[0][1] == 4
    body = world["client"].get("/users?k=2").get_json()
    assert [u["id"] for u in body["users"]][0] == "alice"


def test_other_users_events_reach_co_engagement_after_a_refresh(world):
    c = world["client"]
    rt = world["app"].extensions["recsys"]
    before = rt.behaviour_snapshot().event_count
    # Two people who bought the pepper mill also bought the tent.
    post_events(c, [{"user_id": f"z{u}", "item_id": i, "type": "purchase"} for u in range(2) for i in ("k5", "o3")])
    with world["factory"]() as session:
        rt.behaviour.refresh(session, force=True)
    assert rt.behaviour.snapshot.event_count == before + 4
    assert "o3" in hits(c.get("/items/k5/also?k=5"))
    assert np.isfinite([h["score"] for h in c.get("/items/k5/also?k=5").get_json()["hits"]]).all()


def test_errors_and_recommendations_are_counted_in_metrics(world):
    c = world["client"]
    assert c.get("/users/alice/recommendations?diversity=2").status_code == 400
    assert c.get("/items/nope/also").status_code == 404
    assert c.get("/users/alice/recommendations?k=2").status_code == 200
    text = c.get("/metrics").get_data(as_text=True)
    assert 'recsys_errors_total{code="validation_error"} 1.0' in text
    assert 'recsys_errors_total{code="not_found"} 1.0' in text
    assert 'recsys_recommendations_total{strategy="personalized"} 1.0' in text
