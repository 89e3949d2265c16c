"""Offline evaluation through the real recommendation path: known answers, tuning, the CLI."""

from __future__ import annotations

import json

from click.testing import CliRunner

from indexer.pipeline import Pipeline
from service.cli import cli
from service.recommend.offline_eval import Blend, Evaluator, load_event_log, split_log
from service.settings import load_settings
import pytest

# Loads the real text model, builds indexes or runs servers: `make test-fast` leaves it out.
pytestmark = pytest.mark.slow

# Two tastes: group A engages with a0..a5, group B with b0..b5.
ITEMS = [(f"a{i}", f"Hiking gear number {i}", "outdoor") for i in range(6)] + \
        [(f"b{i}", f"Kitchen tool number {i}", "kitchen") for i in range(6)]


def write_world(tmp_path):
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps({"id": i, "kind": "product", "title": t, "category": c}) + "\n" for i, t, c in ITEMS))
    rows = ["event_id,user_id,item_id,type,value,timestamp"]
    n = 0
    for group in "ab":
        for u in range(8):
            for step in range(6):
                n += 1
                # Each user meets the group's items in a rotated order: every item is someone's
                # held-out item and in other people's training data.
                rows.append(f"e{n},{group}{u},{group}{(u + step) % 6},purchase,,2026-01-0{1 + u % 7}T10:{step:02d}:00Z")
    # A rating of 2 is not a positive interaction: it must not enter the log.
    rows.append(f"e{n + 1},a0,b0,rating,2,2026-01-01T09:00:00Z")
    events = tmp_path / "events.csv"
    events.write_text("\n".join(rows) + "\n")
    return items, events


def test_recsys_eval_scores_the_real_path_tunes_and_writes_settings(tmp_path, settings, monkeypatch):
    for key in [k for k in __import__("os").environ if k.startswith("RECSYS_")]:
        monkeypatch.delenv(key)
    items, events = write_world(tmp_path)
    runner = CliRunner()
    base = ["--data-dir", str(settings.data_dir), "--database-url", settings.sqlalchemy_url]

    def run(*args):
        res = runner.invoke(cli, [*base, *args], catch_exceptions=False)
        assert res.exit_code == 0, res.output
        return res.output

    run("import", "items", str(items))
    run("import", "events", str(events))
    # Without an index the content source is off, behaviour still answers.
    out = run("eval", "--holdout", "1", "--valid", "1", "--json", str(tmp_path / "r.json"))
    assert "16 users evaluated" in out and "content from index none" in out
    report = json.loads((tmp_path / "r.json").read_text())
    co = report["results"]["co-engagement only"]
    assert co["recall"] == 1.0 and co["ndcg"] == 1.0 and co["n_users"] == 16
    assert report["results"]["content only"]["recall"] == 0.0  # no index: nothing to search
    assert 0 < co["coverage"] <= 1 and 0 <= co["pop_percentile"] <= 1
    res = runner.invoke(cli, [*base, "eval", "--write-settings"])
    assert res.exit_code == 2 and "--tune" in res.output
    s = load_settings({"data_dir": settings.data_dir, "database_url": settings.sqlalchemy_url}, environ={})
    # Built with a model (this world is small: lower the training threshold).
    Pipeline(s.__class__(**{**s.__dict__, "clip_enabled": False, "train_min_interactions": 20}), _factory(s)).run()
    out = run("eval", "--holdout", "1", "--valid", "1", "--tune", "--write-settings", "--json", str(tmp_path / "r2.json"))
    assert "best on validation" in out and "wrote the tuned blend" in out
    # The published model saw the held-out events, so its recipe is refit on the split's world.
    refit = [v for k, v in json.loads((tmp_path / "r2.json").read_text())["results"].items()
             if k.startswith("published model, refit")]
    assert len(refit) == 1 and refit[0]["blend_weights"]["model"] == 1.0 and refit[0]["ndcg"] > 0.5
    # Content is scored the way the published version serves it (the training stage's choice).
    from service.vectors import artifacts
    published = artifacts.read_manifest(artifacts.version_dir(s.index_path, artifacts.current_version(s.index_path)))
    assert json.loads((tmp_path / "r2.json").read_text())["content_scoring"] == published["behaviour"]["profile"]["way"]
    written = json.loads((settings.data_dir / "settings.json").read_text())
    assert written["blend_weights"]["co_engagement"] == 1.0 and "event_half_life_days" in written
    assert load_settings({"data_dir": settings.data_dir}, environ={}).blend_weights == written["blend_weights"]


def _factory(settings):
    from service.store.db import make_engine, make_session_factory

    return make_session_factory(make_engine(settings))


def test_the_log_is_read_in_chunks_alike_and_marks_each_pairs_first_positive(tmp_path, settings, session_factory,
                                                                              monkeypatch):
    import numpy as np

    import service.store.events as store_events
    from service.store.importing import import_events, import_items

    items, events = write_world(tmp_path)
    # A pair first rated low (not positive), then bought twice: the first purchase is its positive.
    events.write_text(events.read_text() + "x1,a1,b3,rating,1,2026-01-09T00:00:00Z\n"
                      "x2,a1,b3,purchase,,2026-01-09T01:00:00Z\nx3,a1,b3,purchase,,2026-01-09T02:00:00Z\n")
    import_items(items, session_factory=session_factory, progress=False)
    import_events(events, session_factory=session_factory, event_types=settings.event_types, progress=False)
    logs = []
    for chunk in (7, 10_000):
        monkeypatch.setattr(store_events, "EVENT_READ_CHUNK", chunk)
        with session_factory() as session:
            logs.append(load_event_log(session, settings, queries=True))
    small, whole = logs
    assert len(whole) == 100 and whole.queries == [None] * 100
    for name in ("users", "items", "times", "weights", "positive"):
        assert np.array_equal(getattr(small, name), getattr(whole, name)), name
    assert small.types == whole.types and small.values == whole.values
    seen, expected = set(), []  # the first positive row of each (user, item), in row order
    for row, (u, i, w) in enumerate(zip(whole.users.tolist(), whole.items.tolist(), whole.weights.tolist())):
        if w > 0 and (u, i) not in seen:
            seen.add((u, i))
            expected.append(row)
    assert whole.positive.tolist() == expected
    assert whole.types[97:] == ["rating", "purchase", "purchase"] and 97 not in expected and 98 in expected
    assert 99 not in expected


def test_the_split_holds_out_the_latest_positives_and_the_evaluator_answers_from_the_rest(tmp_path, settings, session_factory):
    from service.store.importing import import_events, import_items

    items, events = write_world(tmp_path)
    import_items(items, session_factory=session_factory, progress=False)
    import_events(events, session_factory=session_factory, event_types=settings.event_types, progress=False)
    with session_factory() as session:
        log = load_event_log(session, settings)
    assert len(log) == 97 and len(log.positive) == 96  # every event is kept; the low rating is not a positive
    split = split_log(log, n_test=1, n_valid=1)
    assert len(split.users) == 16 and len(split.test_idx) == 16 and len(split.valid_idx) == 16
    ev = Evaluator(log, split, None, settings, session_factory, k=3)
    user = log.users[log.positive[split.test_idx[0]]]
    history, consumed = ev.history(user, "test")
    held = log.positive[split.test_idx[0]]
    world = ev.world("test")
    # The held-out event (and anything of that user from then on) is not in the user's history,
    # and the clock is the last event left in the world: never a held-out one's time.
    assert log.items[held] not in history.item_ids and log.items[held] not in consumed
    assert all(t < float(log.times[held]) for t in history.times)
    assert world.now == log.times[world.rows].max() and held not in set(world.rows.tolist())
    # The low rating is in the user's history (the endpoint reads every event), not in the truth.
    a0 = next(u for u, name in log.user_names.items() if name == "a0")
    assert "rating" in ev.history(a0, "test")[0].types
    assert ev.run(Blend({"co_engagement": 1.0}, fallbacks=False), phase="test")["recall"] == 1.0
    assert ev.run(Blend({"trending": 1.0}, fallbacks=False), phase="valid")["n_users"] == 16
