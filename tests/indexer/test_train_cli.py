"""``recsys-indexer build`` with its training stage, ``train`` alone, and the quality gate's exit code,
on the embedded SQLite default with the real text model; then the service serving the model."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import indexer.pipeline as pipeline
import indexer.train as train
from indexer.cli import EXIT_GATE, cli
from service.cli import cli as recsys
from service.recommend import collab
from service.recommend.ranking import COLD_RANKS, PROFILE_WAYS
from service.settings import load_settings
from service.vectors import artifacts
from service.web.app import create_app

pytestmark = pytest.mark.slow  # the real text model

TASTES, PER_TASTE, USERS, PER_USER = 3, 12, 60, 6


@pytest.fixture
def run(tmp_path, monkeypatch):
    """A catalog of three tastes and users who each stick to one, imported through the CLI."""
    for key in ("RECSYS_DATABASE_URL", "RECSYS_RECALL_FLOOR", "RECSYS_INDEX_MEMORY_BUDGET_MB"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("RECSYS_CLIP_ENABLED", "false")
    data = tmp_path / "data"
    items, events = tmp_path / "items.jsonl", tmp_path / "events.csv"
    items.write_text("".join(json.dumps({"id": f"t{t}-{i}", "kind": "product", "title": f"Taste {t} product {i}"}) + "\n"
                             for t in range(TASTES) for i in range(PER_TASTE)))
    rng = np.random.default_rng(3)
    lines = ["event_id,user_id,item_id,type,value,timestamp"]
    for u in range(USERS):
        for step, i in enumerate(rng.choice(PER_TASTE, size=PER_USER, replace=False).tolist()):
            lines.append(f"e{u}-{step},u{u},t{u % TASTES}-{i},purchase,,2026-03-{1 + u % 20:02d}T{step:02d}:00:00Z")
    events.write_text("\n".join(lines) + "\n")
    runner = CliRunner()
    for args in (["db", "upgrade"], ["import", "items", str(items)], ["import", "events", str(events)]):
        res = runner.invoke(recsys, ["--data-dir", str(data), *args])
        assert res.exit_code == 0, res.output

    def invoke(*args):
        return runner.invoke(cli, ["--data-dir", str(data), *args], catch_exceptions=False)

    invoke.data = data
    return invoke


def _bad_fit(family, data, **params):
    """Any family, then its scores replaced by a fixed random ranking: a model worth refusing."""
    model = collab.fit(family, data, **params)
    noise = np.random.default_rng(1).random(len(model.item_ids)).astype(np.float32)
    model.score_rows = lambda x, _noise=noise: np.broadcast_to(_noise, np.shape(x)).copy()
    return model


def test_build_trains_then_the_gate_refuses_a_worse_model_until_forced(run, monkeypatch):
    built = run("build")
    assert built.exit_code == 0, built.output
    assert "model " in built.output and "NDCG@10" in built.output
    index_dir = load_settings({"data_dir": run.data}, environ={}).index_path
    first = artifacts.current_version(index_dir)
    section = artifacts.read_manifest(artifacts.version_dir(index_dir, first))["behaviour"]
    assert section["status"] == "trained" and section["interactions"] == USERS * PER_USER
    status = json.loads(run("status", "--json").output)
    assert status["model"]["family"] == section["family"] and "files" not in status["model"]
    # How content is scored was chosen on validation, every way scored, the best kept (ties: the first).
    profile = section["profile"]
    assert profile["space"] == "text" and set(profile["validation_ndcg"]) == set(PROFILE_WAYS)
    scores = profile["validation_ndcg"]
    assert profile["way"] == max(PROFILE_WAYS, key=scores.__getitem__)
    assert status["model"]["profile"] == profile and f"content scored by {profile['way']}" in built.output
    # So was the cold place's bar: the widest within the tolerance of no place (see test_train).
    place = section["cold_place"]
    assert place["rank"] in COLD_RANKS and set(place["validation_ndcg"]) == {str(r) for r in COLD_RANKS}
    ok = [r for r in COLD_RANKS if place["validation_ndcg"][str(r)] >= place["without_place"] * (1 - place["tolerance"])]
    assert place["rank"] == max(ok, default=COLD_RANKS[0])
    assert status["model"]["cold_place"] == place and f"cold place from content rank {place['rank']}" in built.output

    # The same data, a deliberately bad model: refused, kept unpublished, exit code 4.
    real_train = train.train_model
    # Validation would blend a bad model out; here it is made to miss it, so the gate must act.
    monkeypatch.setattr(train, "choose_blend", lambda *_a: ({"model": 1.0}, 0.0))
    monkeypatch.setattr(train, "choose_ranker", lambda *_a: (None, {"used": False, "reason": "forced off"}))
    monkeypatch.setattr(pipeline, "train_model", lambda *a, **k: real_train(*a, **{**k, "fit": _bad_fit}))
    refused = run("train")
    assert refused.exit_code == EXIT_GATE, refused.output
    assert "refused by the quality gate" in refused.output and "gate REFUSED" in refused.output
    assert artifacts.current_version(index_dir) == first
    newest = artifacts.list_versions(index_dir)[0]
    assert newest.name != first and not newest.published and newest.manifest["spaces_from"] == first
    assert json.loads(run("status", "--json").output)["last_build"]["message"].startswith("refused by the quality gate")

    forced = run("train", "--force")
    assert forced.exit_code == 0, forced.output
    published = artifacts.current_version(index_dir)
    manifest = artifacts.read_manifest(artifacts.version_dir(index_dir, published))
    assert published not in (first, newest.name) and manifest["behaviour"]["gate"]["forced"] is True
    # The spaces were reused, not rebuilt: the same files (hard links) under the new version.
    old_ids = artifacts.version_dir(index_dir, first) / "text" / artifacts.IDS_FILE
    new_ids = artifacts.version_dir(index_dir, published) / "text" / artifacts.IDS_FILE
    assert old_ids.read_bytes() == new_ids.read_bytes()


def test_the_service_serves_the_trained_model_and_a_new_event_counts_at_once(run, monkeypatch):
    assert run("build").exit_code == 0
    for key in ("RECSYS_CLIP_ENABLED",):
        monkeypatch.delenv(key, raising=False)
    app = create_app({"data_dir": str(run.data), "clip_enabled": False})
    client = app.test_client()
    status = client.get("/status").get_json()
    assert status["model"]["served"] is True and status["model"]["status"] == "trained"
    hits = client.get("/users/u0/recommendations?k=5").get_json()["hits"]
    assert any("model" in h["signals"] for h in hits)
    assert all(h["id"].startswith("t0-") for h in hits)  # u0's taste
    # A brand-new user: cold start, then one purchase of taste 2 turns the page to taste 2 at once.
    assert client.get("/users/newbie/recommendations?k=5").get_json()["strategy"] == "cold_start"
    posted = client.post("/events", json={"user_id": "newbie", "item_id": "t2-0", "type": "purchase"})
    assert posted.status_code in (200, 201, 202), posted.get_data(as_text=True)
    after = client.get("/users/newbie/recommendations?k=5").get_json()
    assert after["strategy"].startswith("personalized")
    assert after["hits"] and all(h["id"].startswith("t2-") for h in after["hits"][:3])


def test_an_item_whose_events_left_the_workers_window_is_still_known(run, monkeypatch, tmp_path):
    """A worker holds only the newest ``behaviour_max_events``, and the model lists only liked
    items; the trained version's list of every touched item keeps an old disliked item from
    passing for new (and taking the cold place)."""
    import dataclasses

    from sqlalchemy import select

    from service.recommend.recommender import is_cold
    from service.store.items import item_ids_by_external
    from service.store.models import Event
    from service.web.recommend import _engine
    from service.web.runtime import db_session, runtime

    items, events = tmp_path / "old.jsonl", tmp_path / "old.csv"
    items.write_text(json.dumps({"id": "disliked", "kind": "product", "title": "Taste 0 product, disliked"}) + "\n")
    # Its one event, then five more: the window below holds those five (the newest ids) only.
    events.write_text("event_id,user_id,item_id,type,value,timestamp\nold-1,u0,disliked,rating,1,2026-01-01T00:00:00Z\n"
                      + "".join(f"late-{i},u1,t1-{i},view,,2026-03-30T00:00:00Z\n" for i in range(5)))
    for args in (["import", "items", str(items)], ["import", "events", str(events)]):
        res = CliRunner().invoke(recsys, ["--data-dir", str(run.data), *args])
        assert res.exit_code == 0, res.output
    assert run("build").exit_code == 0
    monkeypatch.delenv("RECSYS_CLIP_ENABLED", raising=False)
    app = create_app({"data_dir": str(run.data), "clip_enabled": False, "behaviour_max_events": 5})
    with app.test_request_context():
        engine, _version = _engine(runtime())
        touched = sorted(db_session().scalars(select(Event.item_id).distinct()))
        assert engine.touched is not None and engine.behaviour.event_count == 5
        assert not is_cold(engine, touched).any()
        # The window and the model alone would call the disliked item new.
        without = is_cold(dataclasses.replace(engine, touched=None), touched)
        disliked = item_ids_by_external(session=db_session(), external_ids=["disliked"])["disliked"]
        assert [i for i, c in zip(touched, without) if c] == [disliked]


def test_a_worker_starts_from_the_versions_event_window_unless_it_is_another_databases(run, monkeypatch, caplog,
                                                                                     event_reads):
    """The build writes the newest events into the version; a worker loads them from there and
    reads only newer events from SQL, and ignores a window whose rows this database does not hold."""
    import sqlalchemy as sa

    from service.web.runtime import runtime

    built = run("build")
    assert built.exit_code == 0
    line = f"event window {USERS * PER_USER} events, ids 1-{USERS * PER_USER} (the whole log)"
    assert line in built.output and line in run("status").output
    monkeypatch.delenv("RECSYS_CLIP_ENABLED", raising=False)
    calls = event_reads
    calls.clear()  # the worker's reads from here on
    config = {"data_dir": str(run.data), "clip_enabled": False}
    app = create_app(config)
    with app.app_context():
        rt = runtime()
        meta = rt.store.current.manifest["behaviour"]["window"]
        assert meta["complete"] and meta["events"] == USERS * PER_USER
        assert calls == [{"after_id": 0, "newest": 1_000_000}]  # max(last id - ID_OVERLAP, 0): nothing newer here
        assert rt.behaviour.event_count == USERS * PER_USER
        engine = rt.engine
    # Another database behind the same version (here: one row changed under it): SQL answers.
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE events SET item_id = (SELECT MIN(id) FROM items) "
                             "WHERE id = (SELECT MAX(id) FROM events)"))
    calls.clear()
    with caplog.at_level("WARNING", logger="recsys.service"):
        app = create_app(config)
    assert calls == [{"newest": 1_000_000}]
    assert any("does not match this database" in r.getMessage() for r in caplog.records)


def test_finetune_cli_skips_without_behaviour_and_exits_4_when_its_gate_refuses(run, monkeypatch):
    import indexer.finetune_stage as finetune_stage

    assert run("build").exit_code == 0
    monkeypatch.setenv("RECSYS_FINETUNE_MIN_PAIRS", "100000")
    res = run("finetune")
    assert res.exit_code == 0 and "fewer than finetune_min_pairs=100000" in res.output
    monkeypatch.setenv("RECSYS_FINETUNE_MIN_PAIRS", "20")
    # The gate's decisions are tested in tests/indexer/test_finetune.py; here: what the CLI does with a refusal.
    monkeypatch.setattr(finetune_stage, "gate", lambda new, old, tol: ("content_ndcg_at_10 0.1 < published 0.5", {}))
    res = run("finetune")
    assert res.exit_code == EXIT_GATE, res.output
    assert "fine-tuned text encoder" in res.output and "REFUSED" in res.output
    status = json.loads(run("status", "--json").output)
    assert "encoder" not in status  # the published version still has the pretrained encoder
    assert status["last_build"]["status"] == "ready" and "fine-tuned text encoder" in status["last_build"]["message"]
