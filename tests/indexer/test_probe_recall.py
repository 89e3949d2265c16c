"""Recall measured on query-like probes, not only on catalog vectors (no model, ~2 s).

Catalog vectors sit inside tight clusters, where HNSW finds their neighbours with a tiny beam;
real queries land between clusters, where the same beam misses. Probes here are normalised
mixtures of two cluster centres.
"""

from __future__ import annotations

import dataclasses

import faiss
import numpy as np
import pytest

from indexer.index_build import RecallTooLow, build_index, measure_recall, tune_search_params
from indexer.index_choice import choose_index

# N: past index_choice's flat_max_vectors (40k), so the build stage picks HNSW as a real one would.
N, DIM, LATENT, CLUSTERS, FLOOR = 40_960, 32, 8, 200, 0.95


@pytest.fixture(scope="module")
def clustered():
    """Unit vectors in 200 tight clusters of an 8-d subspace of R^32, and 500 between-cluster probes."""
    rng = np.random.default_rng(0)
    basis = rng.standard_normal((LATENT, DIM)).astype(np.float32)
    centres = (rng.standard_normal((CLUSTERS, LATENT)).astype(np.float32) @ basis).astype(np.float32)
    faiss.normalize_L2(centres)
    labels = rng.integers(0, CLUSTERS, N)
    noise = rng.standard_normal((N, LATENT)).astype(np.float32) @ basis / np.sqrt(LATENT)
    vectors = (centres[labels] + 0.02 * noise).astype(np.float32)
    faiss.normalize_L2(vectors)
    prng = np.random.default_rng(1)
    a, b = prng.integers(0, CLUSTERS, 500), prng.integers(0, CLUSTERS, 500)
    w = prng.uniform(0.3, 0.7, (500, 1)).astype(np.float32)
    probes = (w * centres[a] + (1 - w) * centres[b]).astype(np.float32)
    faiss.normalize_L2(probes)
    return vectors, probes


@pytest.fixture(scope="module")
def hnsw(clustered):
    vectors, _ = clustered
    spec = choose_index(N, DIM, 4096, hnsw_m=16, hnsw_ef_search=8, hnsw_ef_search_max=512, prefer_graph=True)
    assert spec.factory_key == "HNSW16,Flat" and spec.search_start == 8
    return spec, build_index(vectors, spec, progress=False)


def test_catalog_recall_hides_what_probes_show(clustered, hnsw):
    vectors, probes = clustered
    spec, index = hnsw
    start = {"efSearch": spec.search_start}
    # Catalog vectors: the start value already passes.
    assert measure_recall(index, vectors, sample=500, params=start) >= FLOOR
    blind = tune_search_params(index, vectors, spec, floor=FLOOR, sample=500)
    # ... and smaller ones may too: the tuner halves down to the first that fails.
    assert blind.params["efSearch"] <= spec.search_start and blind.recall >= FLOOR
    assert blind.recall_probes is None and blind.probe_count == 0
    assert all(r < FLOOR for p, r in blind.tried if p["efSearch"] < blind.params["efSearch"])

    tuned = tune_search_params(index, vectors, spec, floor=FLOOR, sample=500, probes=probes)
    first_catalog, first_probes = tuned.tried_detail[0]
    assert first_catalog >= FLOOR and first_probes < 0.85  # the defect: 0.986 vs 0.724 measured
    assert tuned.params["efSearch"] > spec.search_start
    assert tuned.recall_probes >= FLOOR and tuned.recall_catalog >= FLOOR
    assert tuned.recall == min(tuned.recall_catalog, tuned.recall_probes)
    assert tuned.probe_count == len(probes)
    assert [r for _, r in tuned.tried] == [min(c, p) for c, p in tuned.tried_detail]
    # Every value below the answer missed the floor on one of the two sets.
    chosen = tuned.params["efSearch"]
    assert all(r < FLOOR for p, r in tuned.tried if p["efSearch"] < chosen)


def test_probes_refuse_a_search_max_too_small(clustered, hnsw):
    vectors, probes = clustered
    spec, index = hnsw
    capped = dataclasses.replace(spec, search_max=16)
    assert tune_search_params(index, vectors, capped, floor=FLOOR, sample=500).params["efSearch"] <= 8
    with pytest.raises(RecallTooLow) as caught:
        tune_search_params(index, vectors, capped, floor=FLOOR, sample=500, probes=probes)
    err = caught.value
    assert [p["efSearch"] for p, _ in err.tried] == [8, 16]
    assert err.best_recall < FLOOR and all(c >= FLOOR and p < FLOOR for c, p in err.detail)
    assert "probes" in str(err)


def test_flat_is_exact_and_searches_no_probes(clustered):
    vectors, probes = clustered
    small = vectors[:2_000]
    spec = choose_index(len(small), DIM, 4096)
    assert spec.factory_key == "Flat"
    index = build_index(small, spec, progress=False)
    result = tune_search_params(index, small, spec, probes=probes)
    assert (result.params, result.recall, result.recall_probes, result.probe_count) == ({}, 1.0, 1.0, 500)


def test_probes_are_checked(clustered, hnsw):
    vectors, probes = clustered
    spec, index = hnsw
    with pytest.raises(ValueError, match="dimension"):
        tune_search_params(index, vectors, spec, probes=probes[:, :16].copy())
    with pytest.raises(ValueError, match="float32"):
        tune_search_params(index, vectors, spec, probes=probes.astype(np.float64))
    bad = probes.copy()
    bad[3, 0] = np.inf
    with pytest.raises(ValueError, match="probes contain"):
        tune_search_params(index, vectors, spec, probes=bad)


# --- the pipeline's index stage (no model: probes are handed in) ------------------------------


def _space(vectors: np.ndarray, probes=None):
    from indexer.pipeline import SpaceVectors

    ids = np.arange(len(vectors), dtype=np.int64)
    return SpaceVectors("text", {"name": "fake", "revision": "0", "dim": DIM}, ids, vectors, probes=probes)


def _settings(tmp_path):
    from service.settings import load_settings

    return load_settings({"data_dir": tmp_path, "recall_sample": 500}, environ={})


def test_index_stage_records_probe_recall(clustered, tmp_path):
    from indexer.pipeline import build_space_index

    vectors, probes = clustered
    asked: list[int] = []

    def source(count: int) -> np.ndarray:
        asked.append(count)
        return probes[:count]

    info = build_space_index(_space(vectors, source), tmp_path / "text", _settings(tmp_path), progress=False)
    assert asked == [500] and info["probe_count"] == 500
    assert info["recall_probes"] >= 0.95 and info["recall_catalog"] >= 0.95
    assert info["recall_at_10"] == min(info["recall_probes"], info["recall_catalog"])
    assert all("recall_probes" in step for step in info["tuning"])


def test_index_stage_says_where_its_probes_came_from(clustered, tmp_path):
    from indexer.pipeline import build_space_index

    vectors, probes = clustered

    class Logged:  # as TextProbes: logged search queries first, derived texts after
        sources: dict[str, int] = {}

        def __call__(self, count: int) -> np.ndarray:
            self.sources = {"logged_queries": 300, "catalog_derived": count - 300}
            return probes[:count]

    info = build_space_index(_space(vectors, Logged()), tmp_path / "text", _settings(tmp_path), progress=False)
    assert info["probes"].startswith("300 logged search queries + 200 query-like texts")
    assert info["recall_probes"] >= 0.95


def test_index_stage_flat_never_embeds_probes(clustered, tmp_path):
    from indexer.pipeline import build_space_index

    vectors, _ = clustered

    def source(count: int) -> np.ndarray:
        raise AssertionError("a Flat index must not embed probes")

    info = build_space_index(_space(vectors[:1_000], source), tmp_path / "text", _settings(tmp_path), progress=False)
    assert info["index_key"] == "Flat" and info["recall_at_10"] == 1.0
    assert info["probe_count"] == 0 and info["recall_probes"] is None


def test_probe_texts_are_short_and_seeded():
    from indexer.pipeline import probe_texts

    items = [(f"Title number {i} of the catalog", f"word{i} " * 3 + "some longer item text goes on here") for i in range(60)]
    first = probe_texts(items, seed=3)
    assert first == probe_texts(items, seed=3) and first != probe_texts(items, seed=4)
    assert len(first) == 60 and all(1 <= len(t.split()) <= 6 for t in first)
    titles = {t for t, _ in items}
    kinds = {"title" if t in titles else "prefix" if any(x.startswith(t) for x in titles) else "span" for t in first}
    assert kinds == {"title", "prefix", "span"}
    assert probe_texts([("", "")]) == []


def test_text_probes_read_the_sampled_items_and_embed_their_probes(session_factory):
    """The database-to-encoder path: a seeded sample of live items, one probe text each, encoded once."""
    from sqlalchemy import select

    from indexer.pipeline import TextProbes
    from service.store.items import upsert_items
    from service.store.models import Item
    from service.store.records import ItemRecord

    with session_factory() as session:
        upsert_items(session=session, records=[
            ItemRecord(external_id=f"i{n}", kind="product", title=f"Waterproof trail boot model {n}",
                       text="Grippy sole for muddy mountain trails and long wet hikes") for n in range(30)])
        session.commit()
        ids = np.array(sorted(session.scalars(select(Item.id))), dtype=np.int64)

    class FakeEncoder:
        def __init__(self):
            self.calls: list[list[str]] = []

        def encode(self, texts, progress=False):
            self.calls.append(list(texts))
            return np.ones((len(texts), 4), dtype=np.float64)

    encoder = FakeEncoder()
    probes = TextProbes(session_factory, encoder, ids, seed=3)(12)
    assert probes.shape == (12, 4) and probes.dtype == np.float32
    assert len(encoder.calls) == 1 and len(encoder.calls[0]) == 12
    # Each probe is the title, a run of words from the text, or a prefix of the title: a piece of the item.
    text = "Grippy sole for muddy mountain trails and long wet hikes"
    for probe in encoder.calls[0]:
        assert probe and (probe in text or "Waterproof trail boot model".startswith(probe.rstrip("0123456789"))
                          or probe.startswith("Waterproof trail boot model")), probe
    again = FakeEncoder()
    TextProbes(session_factory, again, ids, seed=3)(12)
    assert again.calls == encoder.calls  # repeatable from the seed
    assert TextProbes(session_factory, FakeEncoder(), ids, seed=3)(100).shape[0] == 30  # at most every item


def test_logged_search_queries_come_first_and_catalog_probes_fill_up(session_factory):
    """Real traffic when there is some: the log's most recent texts, then derived probes up to the count."""
    import datetime as dt

    from sqlalchemy import select

    from indexer.pipeline import TextProbes, recall_probe_texts
    from service.store.items import upsert_items
    from service.store.models import Item
    from service.store.query_log import record_queries
    from service.store.records import ItemRecord

    with session_factory() as session:
        upsert_items(session=session, records=[
            ItemRecord(external_id=f"i{n}", kind="product", title=f"Trail boot {n}", text="Grippy sole for mud")
            for n in range(30)])
        record_queries(session, {"old query": 9}, keep=100, today=dt.date(2026, 1, 1))
        record_queries(session, {"boots for mud": 1, "waterproof hiking boot": 3}, keep=100, today=dt.date(2026, 2, 1))
        session.commit()
        ids = np.array(sorted(session.scalars(select(Item.id))), dtype=np.int64)
    texts, sources = recall_probe_texts(session_factory, ids, 10, seed=1)
    assert texts[:3] == ["waterproof hiking boot", "boots for mud", "old query"]  # newest day, then most asked
    assert sources == {"logged_queries": 3, "catalog_derived": 7} and len(texts) == 10
    assert recall_probe_texts(session_factory, ids, 2)[1] == {"logged_queries": 2, "catalog_derived": 0}

    class FakeEncoder:
        def encode(self, texts, progress=False):
            return np.ones((len(texts), 4))

    probes = TextProbes(session_factory, FakeEncoder(), ids)
    assert probes(5).shape == (5, 4) and probes.sources == {"logged_queries": 3, "catalog_derived": 2}
