"""The rebuild on a Ray cluster (issue 14): the same vectors, index and model as in one process.

One local Ray cluster (2 CPUs) serves the whole module. The catalog's texts differ in length, so
the partitions matter: sentence-transformers pads per length-sorted batch, and only the same
partitions on both paths give the same bits. A worker killed while embedding is retried; one that
dies every time fails the build, and then nothing is published.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

import indexer.pipeline as pipeline_module
from indexer.pipeline import BuildError, Pipeline, embed_space
from indexer import ray_cluster
from indexer.ray_cluster import LazyCluster, RayUnavailable
from indexer.ray_embed import EmbedActor, EncoderSource, RayTextEmbedder, encoder_source
from indexer.ray_train import RayFit
from indexer.train import TrainResult
from service.recommend import collab
from service.settings import load_settings
from service.store.db import make_engine, make_session_factory, upgrade
from service.store.events import record_events
from service.store.items import upsert_items
from service.store.records import EventRecord, ItemRecord
from service.vectors import artifacts
from service.vectors.index_store import load_space
from service.vectors.vector_index import read_index

# The modules under test import Ray only when they run; these tests need it.
ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

TASTES, PER_TASTE, USERS, PER_USER = 3, 20, 90, 8
PARTITION = 8  # 60 items: 8 partitions, both paths
WORDS = "light breathable mesh upper with a firm heel and a soft foam midsole for long road runs".split()


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def small_partitions():
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pipeline_module, "EMBED_PARTITION", PARTITION)
        yield


@pytest.fixture(scope="module")
def world(tmp_path_factory, cluster, small_partitions):
    """A catalog of texts of many lengths and taste-shaped purchases, built once in this process."""
    from service.vectors.text_encoder import load_text_encoder

    root = tmp_path_factory.mktemp("ray-world")
    url = f"sqlite:///{root / 'recsys.db'}"
    engine = make_engine(url)
    upgrade(engine)
    factory = make_session_factory(engine)
    rng = np.random.default_rng(3)
    with factory() as session:
        upsert_items(session=session, records=[
            ItemRecord(external_id=f"t{t}-{i}", kind="product", title=f"taste {t} item {i}", category=f"c{t}",
                       text=" ".join(rng.choice(WORDS, size=int(rng.integers(0, 60)))))
            for t in range(TASTES) for i in range(PER_TASTE)])
        start, events = dt.datetime(2026, 1, 1), []
        for u in range(USERS):
            for step, i in enumerate(rng.choice(PER_TASTE, size=PER_USER, replace=False).tolist()):
                events.append(EventRecord(f"e{u}-{step}", f"u{u}", f"t{u % TASTES}-{i}", "purchase", None,
                                          start + dt.timedelta(days=u % 10, hours=step)))
        record_events(session=session, records=events)
        session.commit()
    local = load_settings({"data_dir": root / "data", "database_url": url}, environ={})
    encoder = load_text_encoder(local)
    report = Pipeline(local, factory, load_text_encoder=lambda _s: encoder).run()
    assert report.status == "published" and report.manifest["behaviour"]["status"] == "trained"
    on_ray = load_settings({"data_dir": root / "data", "database_url": url, "ray_address": "auto"}, environ={})
    yield {"local": local, "ray": on_ray, "factory": factory, "encoder": encoder, "version": report.version}
    engine.dispose()


def version_arrays(settings, version: str) -> dict[str, np.ndarray]:
    folder = artifacts.version_dir(settings.index_path, version)
    return {"ids": np.load(folder / "text" / artifacts.IDS_FILE),
            "vectors": np.load(folder / "text" / artifacts.VECTORS_FILE),
            "ntotal": np.array(read_index(folder / "text" / artifacts.INDEX_FILE).ntotal)}


def die_once(flag: Path) -> type:
    """An actor whose worker process exits on the first partition any actor is given."""

    class DiesOnce(EmbedActor):
        def __call__(self, batch):
            try:
                os.unlink(flag)  # only one actor wins the flag
            except FileNotFoundError:
                return super().__call__(batch)
            os._exit(1)

    return DiesOnce


def no_training(*_args, **_kw) -> TrainResult:
    return TrainResult({"status": "skipped", "reason": "not what this test is about"})


class AlwaysDies(EmbedActor):
    def __init__(self, settings, source):  # no model: it never embeds anything
        pass

    def __call__(self, batch):
        os._exit(1)


@pytest.mark.slow
def test_ray_rebuild_gives_the_same_vectors_index_and_model(world):
    settings = world["ray"]
    pipeline = Pipeline(settings, world["factory"], load_text_encoder=lambda _s: world["encoder"])
    assert isinstance(pipeline.embedder, functools.partial)  # chosen by ray_address
    assert isinstance(pipeline.embedder.keywords["text_embedder"], RayTextEmbedder)
    report = pipeline.run(full=True)  # everything re-embedded, on the cluster's actors
    assert report.status == "published" and report.manifest["spaces"]["text"]["embedded"] == TASTES * PER_TASTE
    here, there = version_arrays(settings, world["version"]), version_arrays(settings, report.version)
    assert np.array_equal(here["ids"], there["ids"]) and int(here["ntotal"]) == int(there["ntotal"]) == 60
    assert np.array_equal(here["vectors"], there["vectors"])  # bit for bit
    # Training ran on the cluster too: the same recipe, and the model's arrays within 1e-6.
    old = artifacts.read_manifest(artifacts.version_dir(settings.index_path, world["version"]))["behaviour"]
    new = report.manifest["behaviour"]
    assert (new["family"], new["params"]) == (old["family"], old["params"])
    for name in (f for f in old["files"] if f.endswith(".npy")):  # the chosen model's arrays
        a = np.load(artifacts.version_dir(settings.index_path, world["version"]) / collab.MODEL_DIR / name)
        b = np.load(artifacts.version_dir(settings.index_path, report.version) / collab.MODEL_DIR / name)
        assert a.shape == b.shape and np.allclose(a, b, rtol=0, atol=1e-6), name
    assert not pipeline.cluster.connected  # the connection ends with the run (the module's cluster stays up)
    assert ray.is_initialized()


@pytest.mark.slow
def test_a_worker_killed_while_embedding_is_retried(world, tmp_path):
    settings = world["ray"]
    flag = tmp_path / "die-once"
    flag.touch()
    embedder = RayTextEmbedder(settings, LazyCluster("auto"), actor=die_once(flag))
    pipeline = Pipeline(settings, world["factory"], load_text_encoder=lambda _s: world["encoder"],
                        embedder=functools.partial(embed_space, text_embedder=embedder), trainer=no_training)
    report = pipeline.run(full=True)
    assert not flag.exists()  # a worker did die
    assert report.status == "published"
    assert np.array_equal(version_arrays(settings, report.version)["vectors"],
                          version_arrays(settings, world["version"])["vectors"])


@pytest.mark.slow
def test_a_worker_dying_every_time_fails_the_build_and_publishes_nothing(world):
    settings = world["ray"]
    index_dir = settings.index_path
    current, versions = artifacts.current_version(index_dir), artifacts.list_versions(index_dir)
    cache = sorted((p.relative_to(index_dir), p.stat().st_mtime_ns) for p in (index_dir / "cache").rglob("*"))
    embedder = RayTextEmbedder(settings, LazyCluster("auto"), actor=AlwaysDies, retries=1)
    pipeline = Pipeline(settings, world["factory"], load_text_encoder=lambda _s: world["encoder"],
                        embedder=functools.partial(embed_space, text_embedder=embedder), trainer=no_training)
    with pytest.raises(BuildError, match="text embedding on Ray failed"):
        pipeline.run(full=True)
    assert pipeline.failed_stage == "embed:text"
    assert artifacts.current_version(index_dir) == current
    assert [v.name for v in artifacts.list_versions(index_dir)] == [v.name for v in versions]
    assert not list(index_dir.glob(f"{artifacts.BUILDING_PREFIX}*"))
    assert sorted((p.relative_to(index_dir), p.stat().st_mtime_ns) for p in (index_dir / "cache").rglob("*")) == cache
    space = load_space(artifacts.version_dir(index_dir, current) / "text", "text",
                       artifacts.read_manifest(artifacts.version_dir(index_dir, current))["spaces"]["text"])
    assert len(space.ids) == TASTES * PER_TASTE  # the published version still loads


@pytest.fixture(scope="module")
def interactions():
    """300 users x 150 items, a few popular items and a long tail (EASE's Gram is dense enough)."""
    rng = np.random.default_rng(11)
    users, items = 300, 150
    p = 1.0 / np.arange(1, items + 1) ** 0.7
    rows = np.repeat(np.arange(users), 12)
    cols = np.concatenate([rng.choice(items, 12, replace=False, p=p / p.sum()) for _ in range(users)])
    m = sp.csr_matrix((np.log1p(rng.integers(1, 5, len(rows))).astype(np.float32), (rows, cols)), shape=(users, items))
    return collab.Interactions(m, np.arange(1000, 1000 + items, dtype=np.int64), np.arange(users).astype(str))


def test_ease_on_ray_matches_the_local_fit(cluster, interactions):
    fit = RayFit(LazyCluster("auto"), workers=3)  # 3 user partitions: partial Grams summed on the driver
    local = collab.fit("ease", interactions, l2=20.0, max_items=120, binary=False)
    remote = fit("ease", interactions, l2=20.0, max_items=120, binary=False)
    assert np.array_equal(local.item_ids, remote.item_ids) and local.params == remote.params
    assert np.abs(local.B).max() > 0.01  # a model worth comparing
    assert np.allclose(local.B, remote.B, rtol=0, atol=1e-6)


def test_item_knn_on_ray_matches_the_local_fit(cluster, interactions):
    fit = RayFit(LazyCluster("auto"))
    params = {"neighbours": 20, "user_damping": 0.5, "block": 16}  # 10 row blocks, in groups on 2 workers
    local, remote = collab.fit("item_knn", interactions, **params), fit("item_knn", interactions, **params)
    assert local.params == remote.params and len(local.arrays["data"]) > 1000
    for name in collab.ItemKnnModel.ARRAYS:  # the same per-block code on the same data: equal arrays
        assert np.array_equal(local.arrays[name], remote.arrays[name]), name


def test_factor_stays_local(interactions):
    fit = RayFit(LazyCluster("ray://127.0.0.1:1"))  # never connected: factor fits need no cluster
    model = fit("factor", interactions, factors=8)
    assert np.array_equal(model.arrays["factors"], collab.fit("factor", interactions, factors=8).arrays["factors"])


def test_an_address_that_does_not_answer_is_refused_before_ray_init():
    # ray.init itself retries a dead GCS address for minutes: the port is probed first.
    with pytest.raises(RayUnavailable, match="no Ray cluster answers at 127.0.0.1:1"):
        ray_cluster._check_reachable("127.0.0.1:1")
    with pytest.raises(RayUnavailable, match="no Ray cluster answers"):
        ray_cluster._check_reachable("ray://127.0.0.1:1")


@pytest.mark.slow
def test_actors_load_a_fine_tuned_encoder_from_its_folder(world, tmp_path):
    from service.vectors.text_encoder import load_text_encoder

    settings, encoder = world["ray"], world["encoder"]
    assert encoder_source(settings, encoder) == EncoderSource(None, encoder.name, encoder.revision)  # by setting
    encoder.model.save(str(tmp_path / "tuned"))
    tuned = load_text_encoder(settings, path=tmp_path / "tuned", name=f"{encoder.name}+finetuned")
    source = encoder_source(settings, tuned)
    assert source == EncoderSource(str(tmp_path / "tuned"), tuned.name, tuned.revision)
    assert EmbedActor(settings, source).encoder.revision == tuned.revision  # what an actor does


def test_without_ray_the_embed_stage_fails_with_a_build_error(monkeypatch, tmp_path):
    def missing():
        raise RayUnavailable("ray_address is set but Ray is not installed")

    monkeypatch.setattr(ray_cluster, "import_ray", missing)
    settings = load_settings({"data_dir": tmp_path, "ray_address": "auto"}, environ={})
    encoder = type("Encoder", (), {"name": "sentence-transformers/all-MiniLM-L6-v2", "revision": "r1", "dim": 4,
                                   "model": object()})()
    embedder = RayTextEmbedder(settings, LazyCluster("auto"))
    with pytest.raises(BuildError, match="not installed"):
        embedder(list(range(3 * pipeline_module.EMBED_PARTITION)), encoder, session=None)
