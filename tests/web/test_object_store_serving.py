"""Versions in an S3 store (moto's server on loopback), built by the indexer on one host and
served by two service instances with index directories of their own (their local caches), over
real HTTP: publish, a new version, rollback, a version whose object is corrupt in the store, and a
publish that lost the compare-and-swap to a rollback made during its build."""

from __future__ import annotations

import json
import os
import time

import pytest
import requests

from indexer.pipeline import Pipeline, build_space_index, publish_version
from service.settings import load_settings
from service.store.db import make_engine, make_session_factory, upgrade
from service.store.importing import import_items
from service.vectors import artifacts
from service.vectors.object_store import PointerConflict, RemoteStore
from service.web.app import create_app
from tests.s3_server import new_bucket, s3_endpoint, storage_options
from tests.web.test_replicas import CATALOG, search, serving

# Loads the real text model and runs servers (`make test-fast` leaves it out).
pytestmark = pytest.mark.slow

PADDLE = {"id": "paddle", "kind": "product", "title": "Inflatable paddle board", "category": "water-sports",
          "text": "A stand-up paddle board that inflates in minutes, for lakes and calm sea."}
QUERY = "inflatable paddle board for a calm lake"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """One SQLite database and one bucket; settings of the indexer host and of service hosts a, b."""
    root = tmp_path_factory.mktemp("object-store")
    with s3_endpoint() as endpoint, pytest.MonkeyPatch.context() as mp:
        for key in [k for k in os.environ if k.startswith("RECSYS_")]:
            mp.delenv(key)
        common = {"database_url": f"sqlite:///{root / 'shared.db'}", "clip_enabled": False,
                  "artifact_url": f"s3://{new_bucket(endpoint)}/indexes",
                  "artifact_options": storage_options(endpoint), "index_poll_seconds": 0.3}
        overrides = {name: {**common, "data_dir": str(root / name)} for name in ("indexer", "a", "b")}
        settings = {name: load_settings(o, environ={}) for name, o in overrides.items()}
        engine = make_engine(settings["indexer"])
        upgrade(engine)
        factory = make_session_factory(engine)
        (root / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in CATALOG))
        import_items(root / "items.jsonl", session_factory=factory, progress=False)
        yield {"root": root, "overrides": overrides, "settings": settings, "factory": factory,
               "store": RemoteStore.from_settings(settings["indexer"])}
        engine.dispose()


def status(base: str) -> dict:
    resp = requests.get(f"{base}/status", timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.json()


def wait_for(bases: list[str], check, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        states = [status(b) for b in bases]
        if all(check(s) for s in states):
            return
        assert time.monotonic() < deadline, f"{what}: {[(s['index_version'], s.get('artifact_store')) for s in states]}"
        time.sleep(0.2)


def test_two_hosts_serve_what_the_store_publishes(world):
    s, factory, store = world["settings"], world["factory"], world["store"]
    v1 = Pipeline(s["indexer"], factory).run().version
    assert store.read_pointer().version == v1 and store.list_versions() == [v1]

    with serving(create_app(world["overrides"]["a"])) as a, serving(create_app(world["overrides"]["b"])) as b:
        # A new host fetches the published version (checksums verified) before it serves.
        for base, name in ((a, "a"), (b, "b")):
            st = status(base)
            assert st["index_version"] == v1 and st["artifact_store"]["published"] == v1, st
            assert artifacts.version_dir(s[name].index_path, v1).is_dir()  # its own local copy
        assert all(h["id"] != "paddle" for h in search(a, QUERY, "semantic"))

        # A rebuild on the indexer host reaches both hosts through the store alone.
        (world["root"] / "more.jsonl").write_text(json.dumps(PADDLE) + "\n")
        import_items(world["root"] / "more.jsonl", session_factory=factory, progress=False)
        v2 = Pipeline(s["indexer"], factory).run().version
        wait_for([a, b], lambda st: st["index_version"] == v2, "both hosts serve the new version")
        for base in (a, b):
            hit = search(base, QUERY, "semantic")[0]
            assert hit["id"] == "paddle" and "fresh" not in hit.get("signals", []), hit  # from the index

        # Rollback: the store's pointer back to v1, both hosts follow (from their local caches).
        publish_version(s["indexer"], factory, v1)
        wait_for([a, b], lambda st: st["index_version"] == v1, "both hosts roll back")

        # v3 is uploaded, then one object is damaged in the store (same size), then published:
        # both hosts refuse it after checking its checksums and keep serving v1.
        v3 = Pipeline(s["indexer"], factory).run(force=True, publish=False).version
        store.upload(artifacts.version_dir(s["indexer"].index_path, v3), v3)
        target = store._version_path(v3, "text", artifacts.VECTORS_FILE)
        data = bytearray(store.fs.cat_file(target))
        data[-5] ^= 0x40
        store.fs.pipe_file(target, bytes(data))
        store.swap_pointer(v3, store.read_pointer())
        wait_for([a, b], lambda st: v3 in (st["artifact_store"]["refused"] or {}), "both hosts refuse v3")
        for base in (a, b):
            st = status(base)
            assert st["index_version"] == v1 and "checksum" in st["artifact_store"]["refused"][v3], st
            assert search(base, "waterproof rain jacket", "semantic")[0]["id"] == "jacket"
        for name in ("a", "b"):
            assert not artifacts.version_dir(s[name].index_path, v3).exists()


def test_a_build_does_not_overwrite_a_rollback_made_while_it_ran(world):
    s, factory, store = world["settings"], world["factory"], world["store"]
    before = store.read_pointer().version
    older = [v for v in store.list_versions() if v != before][-1]
    rolled = []

    def index_then_roll_back(*args, **kwargs):
        # Another operator rolls back while this build is indexing.
        if not rolled:
            publish_version(s["indexer"], factory, older)
            rolled.append(older)
        return build_space_index(*args, **kwargs)

    with pytest.raises(PointerConflict):
        Pipeline(s["indexer"], factory, index_builder=index_then_roll_back).run(force=True)
    assert store.read_pointer().version == older == artifacts.current_version(s["indexer"].index_path)
