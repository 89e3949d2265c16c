"""Fine-tuning CLIP inside `recsys-indexer finetune` (issue 13): pairs, the gate, versions, serving.

The catalog: 36 items in three tastes; every item of a taste shows a noisy picture of its
taste's colour and has a made-up name, and users buy within one taste (some after a search).
A CLIP space built from any sound weights puts a taste's pictures together (same colour, small
noise), so content-only recommendations from it are good, and a fine-tune that collapses the
image tower (every picture to one point) must be refused by the gate. The tiny open_clip config
(random weights) stands in for real CLIP weights, which no package ships.
"""

from __future__ import annotations

import datetime as dt
import functools
import json

import numpy as np
import pytest
from PIL import Image

from indexer.finetune_clip import finetune_clip
from indexer.finetune_clip_stage import clip_pairs, finetune_clip_space
from indexer.finetune_pairs import Pairs
from indexer.finetune_stage import FinetuneResult
from indexer.pipeline import Pipeline, publish_version
from service.settings import load_settings
from service.store.events import record_events
from service.store.images import ImageStore
from service.store.importing import import_items
from service.store.records import EventRecord
from service.vectors import artifacts
from service.vectors.clip_encoder import load_clip_encoder
from service.vectors.text_encoder import load_text_encoder
from tests.fixtures_clip import write_tiny_clip_checkpoint, write_tiny_clip_config

pytestmark = pytest.mark.slow  # builds real versions (MiniLM text space, tiny CLIP space)

START = dt.datetime(2026, 1, 1)
COLORS = [(200, 30, 30), (30, 60, 200), (30, 160, 60)]
SYLLABLES = ["zor", "qui", "bra", "mol", "ten", "glu", "yar", "phe", "cra", "vin", "spl", "orr"]
NAMES = [f"{SYLLABLES[i % 12]}{SYLLABLES[(i * 5 + 3) % 12]}{SYLLABLES[(i * 7 + 1) % 12]}" for i in range(36)]


def taste_of(i: int) -> int:
    return i % 3


@pytest.fixture(scope="module")
def text_encoder():
    return load_text_encoder(load_settings(environ={}))


@pytest.fixture(scope="module")
def clip_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip")
    cfg = write_tiny_clip_config(folder)
    return cfg, write_tiny_clip_checkpoint(folder, cfg)


@pytest.fixture
def world(tmp_path, engine, session_factory, clip_files, text_encoder):
    """(settings, pipeline factory): the catalog imported with its pictures, 60 users' purchases."""
    if engine.dialect.name != "sqlite":
        pytest.skip("fine-tuning through the pipeline runs on SQLite (the text fine-tune's pair test covers PostgreSQL)")
    cfg, ckpt = clip_files
    settings = load_settings({"data_dir": tmp_path / "data", "database_url": engine.url.render_as_string(hide_password=False),
                              "clip_model": str(cfg), "clip_pretrained": str(ckpt), "finetune_min_pairs": 20,
                              "finetune_epochs": 3, "finetune_batch_size": 16, "finetune_clip_learning_rate": 1e-4,
                              "train_min_interactions": 20}, environ={})
    rng = np.random.default_rng(0)
    folder = tmp_path / "catalog"
    (folder / "img").mkdir(parents=True)
    rows = []
    for i, name in enumerate(NAMES):
        pixels = np.clip(np.asarray(COLORS[taste_of(i)], np.float32) + rng.normal(0, 6, (32, 32, 3)), 0, 255)
        Image.fromarray(pixels.astype(np.uint8)).save(folder / "img" / f"n{i}.png")
        rows.append({"id": f"n{i}", "kind": "product", "title": name, "image": f"img/n{i}.png"})
    (folder / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    import_items(folder / "items.jsonl", session_factory=session_factory, settings=settings, progress=False)
    events = []
    for u in range(60):
        members = [i for i in range(len(NAMES)) if taste_of(i) == u % 3]
        for step, i in enumerate(rng.permutation(members)[:5].tolist()):
            query = NAMES[i][:5] if step == 0 and u % 2 else None  # some purchases follow a search
            events.append(EventRecord(f"e{u}-{step}", f"u{u}", f"n{i}", "purchase", None,
                                      START + dt.timedelta(days=u % 7, hours=step), query=query))
    with session_factory() as session:
        record_events(session=session, records=events)
        session.commit()

    def skip_text(*_args, **_kwargs):  # the text fine-tune has its own tests (a real MiniLM fit)
        return FinetuneResult("skipped", None, None, {"status": "skipped"}, message="text fine-tune not in this test")

    def pipeline(**kwargs):
        kwargs.setdefault("finetuner", skip_text)
        return Pipeline(settings, session_factory, load_text_encoder=lambda _s: text_encoder,
                        load_clip_encoder=load_clip_encoder, **kwargs)

    return settings, pipeline


def collapsing_fit(base, pairs, **kwargs):
    """A CLIP fine-tune gone wrong: trained, then every picture mapped to one point (the gate must refuse it)."""
    import torch

    report = finetune_clip(base, pairs, **kwargs)
    state = torch.load(report.out_path, map_location="cpu", weights_only=True)
    proj = state["visual.proj"]
    state["visual.proj"] = proj[:, :1].expand_as(proj).clone()
    torch.save(state, report.out_path)
    return report


def test_clip_pairs_keep_held_out_items_and_queries_out():
    images = {i: (f"/img/{i}.png", f"title {i}") for i in range(6)}
    pairs = Pairs(item_pairs={(0, 1): 3.0, (2, 5): 2.0, (3, 4): 1.0},
                  query_pairs={("red shoe", 2): 5.0, ("held query", 1): 4.0, ("cold query", 5): 1.0})
    got = clip_pairs(pairs, images, exclude={5}, skip_texts={"held query"}, max_pairs=100, seed=0)
    assert got[0] == ("/img/2.png", "red shoe")  # a search click first
    assert all("held query" != text and "cold query" != text for _img, text in got)
    # Neither the cold item's picture nor its title is trained on.
    assert all(img != "/img/5.png" and text != "title 5" for img, text in got)
    own = [pair for pair in got if pair in set(images.values())]
    assert own == [images[i] for i in (0, 1, 2, 3, 4)]  # each other item's own title, after the click
    co = got[1 + 5:]
    assert set(co) <= {("/img/0.png", "title 1"), ("/img/1.png", "title 0"), ("/img/3.png", "title 4"),
                       ("/img/4.png", "title 3")} and len(co) == 2
    assert len(clip_pairs(pairs, images, exclude=set(), skip_texts=set(), max_pairs=3, seed=0)) == 3


def test_finetune_publishes_a_clip_encoder_that_serves_queries_and_rolls_back_with_its_index(world):
    from service.web.app import create_app

    settings, pipeline = world
    first = pipeline().run()
    assert first.status == "published" and "clip" in first.manifest["spaces"]
    base_revision = first.manifest["spaces"]["clip"]["encoder"]["revision"]
    report = pipeline().finetune()
    assert report.status == "published", report.message
    section = report.manifest["clip_encoder"]
    assert section["status"] == "fine-tuned" and section["revision"] != base_revision
    assert section["base"]["revision"] == base_revision and section["watermark"]["events"] == 300
    assert section["base"]["setting"] == {"model": settings.clip_model, "pretrained": settings.clip_pretrained}
    assert report.manifest["spaces"]["clip"]["encoder"]["revision"] == section["revision"]
    assert "encoder" not in report.manifest  # the text space kept its pretrained encoder
    assert section["pairs"]["used"] > section["pairs"]["query_pairs"] > 0 and section["fit"]["best_epoch"] >= 1
    assert section["metrics"]["candidate"]["content_ndcg_at_10"] is not None
    assert section["held_out"]["cold_items"] >= 1
    folder = artifacts.version_dir(settings.index_path, report.version)
    artifacts.verify_version(folder, checksums=True)  # the weights are checksummed with the version
    tuned = load_clip_encoder(settings, path=folder / artifacts.CLIP_ENCODER_DIR / artifacts.CLIP_WEIGHTS)
    assert tuned.revision == section["revision"]

    # A plain rebuild keeps the fine-tuned weights (same base setting) and their cached vectors.
    rebuilt = pipeline().run(force=True)
    assert rebuilt.manifest["clip_encoder"]["revision"] == section["revision"]
    assert rebuilt.manifest["clip_encoder"]["inherited_from"] == report.version
    assert rebuilt.manifest["spaces"]["clip"]["cached"] == len(NAMES)

    app = create_app({"data_dir": str(settings.data_dir), "database_url": settings.database_url,
                      "clip_model": settings.clip_model, "clip_pretrained": settings.clip_pretrained})
    rt = app.extensions["recsys"]
    rt.store.refresh()
    assert rt.store.current.name == rebuilt.version and rt.clip_error is None
    assert rt.clip_encoder().revision == section["revision"]
    with app.test_client() as client:
        got = client.get("/search", query_string={"q": NAMES[0], "space": "clip", "k": 3})
        assert got.status_code == 200, got.get_json()
        assert got.get_json()["index_version"] == rebuilt.version
    served = rt.query_encoder("clip")
    assert np.allclose(served(NAMES[0]), tuned.encode_text(NAMES[0]), atol=1e-5)
    # Rollback: the first version's index and its pretrained CLIP come back together.
    publish_version(settings, _factory(settings), first.version)
    rt.store.refresh()
    assert rt.store.current.name == first.version
    assert rt.clip_encoder().revision == base_revision
    assert not np.allclose(rt.query_encoder("clip")(NAMES[0]), tuned.encode_text(NAMES[0]), atol=1e-3)


def _factory(settings):
    from service.store.db import make_engine, make_session_factory

    return make_session_factory(make_engine(settings))


def test_a_clip_fine_tune_that_collapses_the_image_space_is_not_published(world):
    settings, pipeline = world
    first = pipeline().run()
    report = pipeline(clip_finetuner=functools.partial(finetune_clip_space, fit=collapsing_fit)).finetune()
    assert report.status == "refused", report.message
    assert "fine-tuned CLIP encoder" in report.message
    assert artifacts.current_version(settings.index_path) == first.version
    comparison = report.manifest["clip_encoder"]["gate"]["comparison"]
    assert comparison["content_ndcg_at_10"]["refuses"], comparison

    # A schedule leaves the refused weights out: the catalog has not changed, so nothing is built.
    scheduled = load_settings({**{f: getattr(settings, f) for f in ("data_dir", "database_url", "clip_model",
                                                                   "clip_pretrained", "finetune_min_pairs",
                                                                   "finetune_epochs", "finetune_batch_size",
                                                                   "finetune_clip_learning_rate",
                                                                   "train_min_interactions")},
                               "finetune_on_rebuild": True, "finetune_min_new_events": 1}, environ={})
    again = Pipeline(scheduled, _factory(scheduled), load_text_encoder=pipeline().loaders["text"],
                     load_clip_encoder=load_clip_encoder, finetuner=pipeline().finetuner,
                     clip_finetuner=functools.partial(finetune_clip_space, fit=collapsing_fit)).run()
    assert again.status == "up-to-date" and again.version == first.version
    attempt = json.loads((settings.index_path / "finetune-last.json").read_text())
    assert attempt["clip"] == {"status": "refused", "refused": report.manifest["clip_encoder"]["gate"]["refused"]}


def test_a_version_whose_clip_weights_do_not_load_is_refused_and_the_old_one_keeps_serving(world):
    from service.web.app import create_app

    settings, pipeline = world
    first = pipeline().run()
    tuned = pipeline().finetune(publish=False)
    assert tuned.status == "ready", tuned.message
    app = create_app({"data_dir": str(settings.data_dir), "database_url": settings.database_url,
                      "clip_model": settings.clip_model, "clip_pretrained": settings.clip_pretrained})
    rt = app.extensions["recsys"]
    rt.store.refresh()
    assert rt.store.current.name == first.version
    # The weights are replaced by bytes that are no state dict; the manifest is rewritten to match,
    # so only loading can tell.
    folder = artifacts.version_dir(settings.index_path, tuned.version)
    manifest = artifacts.read_manifest(folder)
    (folder / artifacts.CLIP_ENCODER_DIR / artifacts.CLIP_WEIGHTS).write_bytes(b"not weights")
    manifest["clip_encoder"]["files"] = artifacts.tree_entries(folder / artifacts.CLIP_ENCODER_DIR)
    artifacts.write_json_atomic(folder / artifacts.MANIFEST, manifest)
    artifacts.set_current(settings.index_path, tuned.version)
    rt.store.refresh()
    assert rt.store.current.name == first.version
    with app.test_client() as client:
        got = client.get("/search", query_string={"q": NAMES[1], "space": "clip", "k": 3})
        assert got.status_code == 200 and got.get_json()["index_version"] == first.version
    # A hostile manifest (another host's, through an object store) with a malformed section: refused
    # the same way, never an error per request.
    for section in ("weights.pt", ["x"], {"revision": 7, "name": "x"}):
        manifest["clip_encoder"] = section
        artifacts.write_json_atomic(folder / artifacts.MANIFEST, manifest)
        rt.store.refresh()
        assert rt.store.current.name == first.version, section
        with app.test_client() as client:
            assert client.get("/status").status_code == 200
            got = client.get("/search", query_string={"q": NAMES[1], "space": "clip", "k": 3})
            assert got.status_code == 200 and got.get_json()["index_version"] == first.version


def test_too_few_pictures_skip_the_clip_fine_tune_without_failing_the_command(world):
    settings, pipeline = world
    first = pipeline().run()
    store = ImageStore.from_settings(settings)
    for blob in store.root.rglob("*"):  # every picture gone from the store after the build
        if blob.is_file():
            blob.unlink()
    report = pipeline().finetune()
    assert report.status == "up-to-date" and report.version == first.version
    assert "(image, text) pairs, fewer than" in report.message


def test_a_checkpoint_of_other_pairs_is_dropped_and_the_clip_fine_tune_starts_over(world):
    settings, pipeline = world
    pipeline().run()
    stale = settings.index_path / "finetune" / "clip" / "checkpoint"
    stale.mkdir(parents=True)
    (stale / "state.pt").write_bytes(b"a killed run of other pairs")
    calls = []

    def fit(base, pairs, **kwargs):
        calls.append(kwargs["checkpoint_dir"].exists())
        if kwargs["checkpoint_dir"].exists():
            raise ValueError(f"checkpoint_dir {kwargs['checkpoint_dir']} holds a fine-tuning run of other pairs")
        return finetune_clip(base, pairs, **kwargs)

    report = pipeline(clip_finetuner=functools.partial(finetune_clip_space, fit=fit)).finetune()
    assert calls == [True, False]
    assert report.manifest["clip_encoder"]["status"] in ("fine-tuned", "refused")
