"""The rebuild pipeline end to end on a small real catalog: real MiniLM, tiny CLIP, real FAISS."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from indexer.pipeline import BuildError, Pipeline, garbage_collect, publish_version
from service.vectors import artifacts
from service.store.db import session_scope
from service.vectors.clip_encoder import load_clip_encoder
from service.vectors.text_encoder import load_text_encoder
from service.store.images import ImageStore
from service.store.importing import import_items
from service.store.models import IndexVersion, Item
from service.settings import load_settings
from service.vectors.vector_index import read_index, search
from tests.fixtures_clip import write_tiny_clip_checkpoint, write_tiny_clip_config

# Loads the real text model, builds indexes or runs servers: `make test-fast` leaves it out.
pytestmark = pytest.mark.slow

COLORS = {"red": (200, 30, 30), "blue": (30, 60, 200), "green": (30, 160, 60)}


@pytest.fixture(scope="session")
def text_encoder():
    return load_text_encoder(load_settings(environ={}))


@pytest.fixture(scope="session")
def clip_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip")
    cfg = write_tiny_clip_config(folder)
    return cfg, write_tiny_clip_checkpoint(folder, cfg)


def make_catalog(folder: Path, n: int = 24) -> Path:
    (folder / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    names = list(COLORS)
    for i in range(n):
        color = names[i % 3]
        row = {"id": f"p{i}", "kind": "product", "title": f"{color} running shoe model {i}",
               "text": f"A {color} lightweight shoe for road running, size {30 + i}.", "category": "shoes"}
        if i % 2 == 0:
            Image.new("RGB", (40, 40), COLORS[color]).save(folder / "img" / f"p{i}.png")
            row["image"] = f"img/p{i}.png"
        rows.append(row)
    rows.append({"id": "a1", "kind": "article", "title": "How to clean suede", "text": "Brush gently, then protect it."})
    path = folder / "items.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def env(tmp_path, engine, session_factory, clip_files, text_encoder):
    cfg, ckpt = clip_files
    settings = load_settings(
        {"data_dir": tmp_path / "data", "database_url": engine.url.render_as_string(hide_password=False),
         "clip_model": str(cfg), "clip_pretrained": str(ckpt)},
        environ={},
    )
    import_items(make_catalog(tmp_path / "catalog"), session_factory=session_factory, settings=settings, progress=False)
    calls = {"text": 0}

    def load_text(_settings):
        calls["text"] += 1
        return text_encoder

    def pipeline(**kw):
        kw.setdefault("load_text_encoder", load_text)
        kw.setdefault("load_clip_encoder", load_clip_encoder)
        return Pipeline(settings, session_factory, **kw)

    return settings, session_factory, pipeline, calls


def published_manifest(settings):
    version = artifacts.current_version(settings.index_path)
    return version, artifacts.verify_version(artifacts.version_dir(settings.index_path, version))


def test_build_publishes_text_and_clip_spaces(env, session_factory):
    settings, factory, pipeline, _ = env
    report = pipeline().run()
    assert report.status == "published"
    version, manifest = published_manifest(settings)
    assert version == report.version
    text, clip = manifest["spaces"]["text"], manifest["spaces"]["clip"]
    assert (text["count"], text["dim"], text["embedded"]) == (25, 384, 25)
    assert (clip["count"], clip["dim"]) == (12, 32)
    assert text["recall_at_10"] >= 0.95 and text["encoder"]["revision"]
    assert {"read", "embed:text", "index:text", "verify:text", "embed:clip"} <= set(manifest["timings"])
    assert {"publish", "total"} <= set(report.timings)
    # The written index finds each item's own vector first, and ids map back to items.
    folder = artifacts.version_dir(settings.index_path, version) / "text"
    index, ids = read_index(folder / "index.faiss"), np.load(folder / "ids.npy")
    with session_scope(factory) as s:
        pk = s.scalar(select(Item.id).where(Item.external_id == "a1"))
    query = pipeline().loaders["text"](settings).encode(["How to clean suede\nBrush gently, then protect it."])
    _scores, rows = search(index, query, 3, manifest["spaces"]["text"]["search_params"])
    assert ids[rows[0][0]] == pk
    with session_scope(factory) as s:
        row = s.scalar(select(IndexVersion).where(IndexVersion.version == version))
        assert row.status == "published" and row.item_count == 25


def test_unchanged_rebuild_does_nothing_and_forced_rebuild_embeds_nothing(env):
    settings, _factory, pipeline, calls = env
    first = pipeline().run()
    again = pipeline().run()
    assert again.status == "up-to-date" and again.version == first.version
    assert calls["text"] == 1  # no model loaded when nothing changed
    forced = pipeline().run(force=True)
    assert forced.version != first.version
    text = forced.manifest["spaces"]["text"]
    assert (text["embedded"], text["cached"]) == (0, 25)
    assert forced.manifest["spaces"]["clip"]["embedded"] == 0
    full = pipeline().run(full=True)
    assert full.manifest["spaces"]["text"]["embedded"] == 25


def test_changed_and_deleted_items_only_are_reembedded(env, tmp_path):
    settings, factory, pipeline, _ = env
    pipeline().run()
    change = tmp_path / "change.jsonl"
    change.write_text(json.dumps({"id": "a1", "kind": "article", "title": "How to clean suede shoes", "text": "Brush."}) + "\n"
                      + json.dumps({"id": "p1", "deleted": True}) + "\n")
    import_items(change, session_factory=factory, progress=False)
    report = pipeline().run()
    text = report.manifest["spaces"]["text"]
    assert (text["count"], text["embedded"], text["cached"]) == (24, 1, 23)
    with session_scope(factory) as s:
        p1 = s.scalar(select(Item.id).where(Item.external_id == "p1"))
    ids = np.load(artifacts.version_dir(settings.index_path, report.version) / "text" / "ids.npy")
    assert p1 not in ids


def test_broken_images_are_reported_not_fatal(env, tmp_path):
    settings, factory, pipeline, _ = env
    # The blob in the store is what gets embedded (the catalog's file was copied at import).
    # Identical pictures share one blob, so every item showing it breaks with it.
    with session_scope(factory) as s:
        key = s.scalar(select(Item.image_location).where(Item.external_id == "p0"))
        sharing = len(s.scalars(select(Item.id).where(Item.image_location == key)).all())
    ImageStore.from_settings(settings).path_of(key).write_bytes(b"this is not a png")
    report = pipeline().run()
    clip = report.manifest["spaces"]["clip"]
    assert sharing > 1 and clip["count"] == 12 - sharing and clip["error_count"] == sharing
    assert list(clip["errors"].values())[0]


def test_default_clip_settings_skip_the_space_with_one_message(env, monkeypatch, caplog):
    settings, factory, _pipeline, _ = env
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    default_clip = load_settings({"data_dir": settings.data_dir, "database_url": settings.database_url}, environ={})
    report = Pipeline(default_clip, factory, load_text_encoder=_pipeline().loaders["text"]).run()
    assert "clip" not in report.manifest["spaces"]
    reason = report.manifest["skipped_spaces"]["clip"]
    assert "RECSYS_CLIP_PRETRAINED" in reason
    assert len([r for r in caplog.records if "CLIP space skipped" in r.getMessage()]) == 1


def test_a_failing_stage_leaves_the_published_version(env):
    settings, factory, pipeline, _ = env
    first = pipeline().run()

    def broken(*_a, **_k):
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        pipeline(index_builder=broken).run(force=True)
    assert artifacts.current_version(settings.index_path) == first.version
    assert artifacts.stale_builds(settings.index_path) == []
    assert [v.name for v in artifacts.list_versions(settings.index_path)] == [first.version]
    with session_scope(factory) as s:
        statuses = sorted(s.scalars(select(IndexVersion.status)))
    assert statuses == ["failed", "published"]


def test_publish_rollback_and_gc(env):
    settings, factory, pipeline, _ = env
    v1 = pipeline().run().version
    v2 = pipeline().run(force=True).version
    v3 = pipeline().run(force=True, publish=False).version
    assert artifacts.current_version(settings.index_path) == v2
    publish_version(settings, factory, v1)  # roll back
    assert artifacts.current_version(settings.index_path) == v1
    removed = garbage_collect(settings, factory, keep=2)
    assert removed == [v2]
    assert {v.name for v in artifacts.list_versions(settings.index_path)} == {v1, v3}
    # A corrupt version is refused and the pointer stays.
    (artifacts.version_dir(settings.index_path, v3) / "text" / "ids.npy").write_bytes(b"garbage")
    with pytest.raises(artifacts.ArtifactError):
        publish_version(settings, factory, v3)
    assert artifacts.current_version(settings.index_path) == v1


def test_empty_catalog_is_a_clear_error(tmp_path, engine, session_factory, text_encoder):
    settings = load_settings({"data_dir": tmp_path, "database_url": engine.url.render_as_string(hide_password=False),
                              "clip_enabled": False}, environ={})
    with pytest.raises(BuildError, match="no live items"):
        Pipeline(settings, session_factory, load_text_encoder=lambda s: text_encoder).run()
    assert artifacts.current_version(settings.index_path) is None


KILL_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from indexer.pipeline import Pipeline, build_space_index
    from service.store.db import make_engine, make_session_factory
    from service.settings import load_settings
    import json
    settings = load_settings(json.loads(sys.argv[1]), environ={})
    def slow(sv, folder, s, *, progress):
        info = build_space_index(sv, folder, s, progress=progress)
        print("HALF-WRITTEN", flush=True)
        time.sleep(120)
        return info
    Pipeline(settings, make_session_factory(make_engine(settings)), index_builder=slow).run(force=True)
    """
)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_killed_build_leaves_the_published_version_serving(env, sig):
    settings, factory, pipeline, _ = env
    first = pipeline().run()
    overrides = {"data_dir": str(settings.data_dir), "database_url": settings.database_url,
                 "clip_enabled": False}
    # A shell without job control starts background jobs with SIGINT ignored, and children inherit
    # that (Python then installs no KeyboardInterrupt handler): restore the default for the build.
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, json.dumps(overrides)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2],
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 240
    line = ""
    while "HALF-WRITTEN" not in line and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            pytest.fail(f"build exited early: {proc.stderr.read()[-2000:]}")
    os.kill(proc.pid, sig)
    proc.wait(timeout=60)

    assert artifacts.current_version(settings.index_path) == first.version
    assert [v.name for v in artifacts.list_versions(settings.index_path)] == [first.version]
    version, manifest = published_manifest(settings)  # still verifies, checksums included
    read_index(artifacts.version_dir(settings.index_path, version) / "text" / "index.faiss")
    if sig == signal.SIGKILL:
        # The half-written folder is private and clearly named; gc removes it.
        assert len(artifacts.stale_builds(settings.index_path)) == 1
        assert garbage_collect(settings, factory, keep=1)[0].startswith(artifacts.BUILDING_PREFIX)
    else:
        assert artifacts.stale_builds(settings.index_path) == []  # Ctrl-C cleans up after itself
        with session_scope(factory) as s:
            assert "failed" in set(s.scalars(select(IndexVersion.status)))
    assert artifacts.stale_builds(settings.index_path) == []


def test_verify_accepts_many_identical_vectors_and_still_catches_an_index_of_other_vectors(tmp_path):
    """One placeholder picture on many items gives identical vectors: which copies fill a top 10
    is arbitrary, and the build must not fail for it; an index of other vectors still fails."""
    import faiss

    from indexer.pipeline import SpaceVectors, verify_space
    from service.vectors.vector_index import write_index

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(40, 8)).astype(np.float32)
    vectors[:30] = vectors[0]  # 30 items share one picture
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    sv = SpaceVectors("clip", {"name": "x", "revision": "r", "dim": 8}, np.arange(40, dtype=np.int64), vectors)
    for stored, ok in ((vectors, True), (rng.normal(size=(40, 8)).astype(np.float32), False)):
        index = faiss.IndexFlatIP(8)
        index.add(np.ascontiguousarray(stored))
        write_index(index, tmp_path / artifacts.INDEX_FILE)
        np.save(tmp_path / artifacts.IDS_FILE, sv.ids)
        if ok:
            verify_space(tmp_path, sv)
        else:
            with pytest.raises(BuildError, match="finds only"):
                verify_space(tmp_path, sv)
