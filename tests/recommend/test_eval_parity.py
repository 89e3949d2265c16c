"""`recsys eval` scores exactly the lists users get: the evaluator and the endpoint call one function.

On the demo catalog, the evaluator holds out each user's latest positives. A second database holds
exactly the events the evaluator's world keeps (everything but each evaluated user's held-out
period); the service runs on it with its clock fixed to the evaluator's (the last training event).
For every evaluated user, ``GET /users/{id}/recommendations`` must return the evaluator's list,
item for item, in the same order.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from sqlalchemy import delete, select

from indexer.pipeline import Pipeline
from service.demo import EVENTS_FILE, ITEMS_FILE
from service.recommend import collab
from service.recommend.learned_rank import FEATURES, Ranker, fit_ranker
from service.recommend.offline_eval import Blend, Evaluator, load_event_log, split_log
from service.recommend.ranking import PROFILE_WAYS
from service.settings import load_settings
from service.store.db import make_engine, make_session_factory, upgrade
from service.store.importing import import_events, import_items
from service.store.models import Event, Item
from service.vectors import artifacts
from service.vectors.index_store import load_version
from service.web.app import create_app
from service.web.runtime import Learned

pytestmark = pytest.mark.slow  # the demo catalog and a real MiniLM index


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("parity")
    settings = load_settings({"data_dir": str(root / "full"), "clip_enabled": False}, environ={})
    engine = make_engine(settings)
    upgrade(engine)
    factory = make_session_factory(engine)
    import_items(ITEMS_FILE, session_factory=factory, settings=settings, progress=False)
    import_events(EVENTS_FILE, session_factory=factory, event_types=settings.event_types, progress=False)
    version = Pipeline(settings, factory).run().version
    yield {"root": root, "settings": settings, "factory": factory, "version": version}
    engine.dispose()


def test_evaluator_lists_equal_the_endpoint_lists_for_the_same_world_and_clock(demo, monkeypatch):
    for key in [k for k in os.environ if k.startswith("RECSYS_")]:
        monkeypatch.delenv(key)
    settings, factory = demo["settings"], demo["factory"]
    with factory() as session:
        log = load_event_log(session, settings)
        event_ids = list(session.scalars(select(Event.id).order_by(Event.id)))
        external = dict(session.execute(select(Item.id, Item.external_id)).all())
    split = split_log(log, n_test=2, n_valid=0)
    published = load_version(settings.index_path, demo["version"])
    space = published.spaces["text"]
    # The rebuild trained a model: the endpoint serves it with its fitted blend, so must the evaluator.
    section = published.manifest["behaviour"]
    assert section["status"] == "trained"
    model = collab.load_model(artifacts.version_dir(settings.index_path, demo["version"]) / collab.MODEL_DIR,
                              section["family"], section["params"])
    ev = Evaluator(log, split, space, settings, factory, k=10)
    world = ev.world("test")
    assert len(split.users) > 20 and 0 < len(world.rows) < len(log)

    # The world as a database: a copy without the events the evaluator holds back.
    served_dir = demo["root"] / "served"
    shutil.copytree(settings.data_dir, served_dir, ignore=shutil.ignore_patterns("indexes"))
    kept = set(world.rows.tolist())
    dropped = [event_ids[i] for i in range(len(event_ids)) if i not in kept]
    served_engine = make_engine(load_settings({"data_dir": str(served_dir)}, environ={}))
    with served_engine.begin() as conn:
        for start in range(0, len(dropped), 500):
            conn.execute(delete(Event).where(Event.id.in_(dropped[start:start + 500])))
    served_engine.dispose()

    app = create_app({"data_dir": str(served_dir), "index_dir": str(settings.index_path), "clip_enabled": False})
    runtime = app.extensions["recsys"]
    runtime.clock = lambda: world.now
    client = app.test_client()
    folder = artifacts.version_dir(settings.index_path, demo["version"]) / collab.MODEL_DIR
    ranker = Ranker.load(folder) if section["ranker"]["used"] else None
    served = Blend(section["blend"], settings.co_engagement_popularity_damping, settings.event_half_life_days,
                   served=True)
    users = list(world.by_user)[:40]
    # As published (whatever validation chose: the model blended in or not, the ranker or weights),
    # then with the model blended in by fixed weights and by the ranker, whichever were not.
    cases = [(served, ranker), (Blend({"model": 1.0, "co_engagement": 0.3}, served.damping, served.half_life_days,
                                      served=True), None)]
    if ranker is None:
        groups = [(np.random.default_rng(u).random((30, len(FEATURES))).astype(np.float32),
                   (np.arange(30) == u % 30).astype(np.int32)) for u in range(60)]
        cases.append((served, fit_ranker(groups)))
    # Content scored both ways the training stage may choose (the endpoint reads the choice from
    # the served manifest): the published choice with every case, the other one with the first.
    chosen = section.get("profile", {}).get("way", "mean")
    other = "pow8" if chosen == "mean" else "mean"
    cases = [(blend, r, chosen) for blend, r in cases] + [(served, ranker, other)]
    signals: set[str] = set()
    assert client.get("/status").status_code == 200 and runtime.store.current.name == demo["version"]
    manifest_profile = runtime.store.current.manifest["behaviour"].setdefault("profile", {"space": "text"})
    for blend, case_ranker, way in cases:
        runtime._learned = (demo["version"], Learned(model, dict(blend.weights), case_ranker))
        manifest_profile["way"], ev.profile_power = way, PROFILE_WAYS[way]
        engine = ev.engine("test", blend.damping, model, blend.weights, case_ranker)
        with factory() as session:
            for user in users:
                name = log.user_names[user]
                expected = [external[i] for i in ev.recommend_for(user, blend, "test", session=session, engine=engine)]
                body = client.get(f"/users/{name}/recommendations?k=10").get_json()
                assert body["strategy"] in ("personalized", "cold_start")
                signals |= {s for h in body["hits"] for s in h["signals"]}
                assert [h["id"] for h in body["hits"]] == expected, (name, blend, case_ranker)
        # The metric the evaluator reports is computed over exactly those lists.
        metrics = ev.run(blend, phase="test", model=model, ranker=case_ranker)
        assert metrics["n_users"] == len(world.by_user) and 0 <= metrics["ndcg"] <= 1
    assert len(users) >= 20 and "model" in signals
