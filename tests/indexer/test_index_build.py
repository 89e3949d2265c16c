"""Building, tuning, searching and (de)serialising FAISS indexes on small structured data."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import faiss
import numpy as np
import pytest

from indexer.index_build import (
    RecallTooLow,
    TuneResult,
    build_index,
    measure_recall,
    tune_search_params,
)
from indexer.index_choice import IndexSpec, choose_index
from service.vectors.vector_index import find_layer, make_search_params, read_index, search, write_index

N, DIM, LATENT = 10_000, 384, 12


def structured(n: int, seed: int) -> np.ndarray:
    """Unit vectors near a 12-d subspace of R^384 (cf. faiss tests' get_dataset_2).

    Uniform noise would make every approximate index look equally bad; real embeddings,
    like these, have far fewer effective dimensions than coordinates.
    """
    basis = np.random.default_rng(1234).standard_normal((LATENT, DIM)).astype(np.float32)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, LATENT), dtype=np.float32) @ basis
    x += 0.1 * rng.standard_normal((n, DIM), dtype=np.float32)
    faiss.normalize_L2(x)
    return x


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return structured(N, seed=0)


@pytest.fixture(scope="module")
def queries() -> np.ndarray:
    # Held out: same distribution, not in the index.
    return structured(200, seed=1)


def spec(
    key: str,
    param: str | None = None,
    start: int | None = None,
    top: int | None = None,
    train: int = 0,
    ef_construction: int | None = None,
) -> IndexSpec:
    return IndexSpec(key, DIM, "ip", param, start, top, train, 0, ef_construction)


SPECS = {
    "flat": spec("Flat"),
    "hnsw": spec("HNSW16,Flat", "efSearch", 1, 256, ef_construction=40),
    "hnsw_sq8": spec("HNSW16,SQ8", "efSearch", 1, 256, train=5_000, ef_construction=40),
    "ivf_flat": spec("IVF64,Flat", "nprobe", 1, 64, train=5_000),
    "ivf_sq8": spec("IVF64,SQ8", "nprobe", 1, 64, train=5_000),
    # "np": no polysemous training (50x slower, and only for Hamming filtering).
    "ivf_pq": spec("IVF64,PQ8np", "nprobe", 1, 64, train=N),
}


@pytest.fixture(scope="module")
def built(data) -> dict:
    return {name: build_index(data, s, progress=False) for name, s in SPECS.items()}


def exact_topk(base: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-(q @ base.T), axis=1, kind="stable")[:, :k]


# --- build ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, kind, params, min_recall",
    [
        ("flat", faiss.IndexFlat, None, 0.999),
        ("hnsw", faiss.IndexHNSWFlat, {"efSearch": 64}, 0.95),
        ("hnsw_sq8", faiss.IndexHNSWSQ, {"efSearch": 64}, 0.9),
        # Every list probed: IVF-Flat is exact.
        ("ivf_flat", faiss.IndexIVFFlat, {"nprobe": 64}, 0.999),
        ("ivf_sq8", faiss.IndexIVFScalarQuantizer, {"nprobe": 64}, 0.9),
        # 8 bytes for 384 dimensions: lossy by design.
        ("ivf_pq", faiss.IndexIVFPQ, {"nprobe": 64}, 0.3),
    ],
)
def test_build_each_family(built, data, name, kind, params, min_recall):
    index = built[name]
    assert isinstance(index, kind)
    assert index.ntotal == N and index.is_trained and index.d == DIM
    assert index.metric_type == faiss.METRIC_INNER_PRODUCT
    assert measure_recall(index, data, k=10, sample=300, params=params) >= min_recall


def test_build_sets_build_and_search_defaults(built):
    assert built["hnsw"].hnsw.efConstruction == 40
    assert built["hnsw"].hnsw.efSearch == 1
    assert built["ivf_flat"].nprobe == 1


def test_build_from_choose_index(data):
    for prefer_graph, key in ((False, "IVF256,Flat"), (True, "HNSW16,Flat")):
        chosen = choose_index(N, DIM, 4096, flat_max_vectors=1_000, hnsw_m=16, prefer_graph=prefer_graph)
        assert chosen.factory_key == key
        index = build_index(data, chosen, progress=False)
        result = tune_search_params(index, data, chosen, floor=0.95, sample=300)
        assert result.recall >= 0.95


def test_build_rejects_bad_input(data):
    with pytest.raises(ValueError, match="float32"):
        build_index(data.astype(np.float64), SPECS["flat"], progress=False)
    with pytest.raises(ValueError, match="2-D"):
        build_index(data[0], SPECS["flat"], progress=False)
    with pytest.raises(ValueError, match="dimension 128"):
        build_index(data[:, :128].copy(), SPECS["flat"], progress=False)
    with pytest.raises(ValueError, match="empty"):
        build_index(data[:0], SPECS["flat"], progress=False)
    with pytest.raises(ValueError, match="training vectors"):
        build_index(data[:100], SPECS["ivf_flat"], progress=False)
    bad = data[:1000].copy()
    bad[500, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        build_index(bad, SPECS["flat"], progress=False)
    with pytest.raises(ValueError, match="metric"):
        build_index(data, IndexSpec("Flat", DIM, "l2", None, None, None, 0, 0), progress=False)


@pytest.mark.skipif(faiss.get_num_gpus() > 0, reason="checks the no-GPU error")
def test_build_use_gpu_true_without_gpu(data):
    with pytest.raises(ValueError, match="no GPU"):
        build_index(data[:1000], SPECS["flat"], use_gpu=True, progress=False)


@pytest.mark.parametrize(
    "budget_mb, expected",
    [(100, "HNSW16,Flat"), (15.5, "IVF256,Flat"), (6, "HNSW16,SQ8"), (4.5, "IVF256,SQ8"), (1.0, "IVF256,PQ16np")],
)
def test_memory_estimate_matches_artifact(data, budget_mb, expected, tmp_path):
    chosen = choose_index(N, DIM, budget_mb, flat_max_vectors=1, hnsw_m=16, prefer_graph=True)
    assert chosen.factory_key == expected
    write_index(build_index(data, chosen, progress=False), tmp_path / "i.faiss")
    size = (tmp_path / "i.faiss").stat().st_size
    assert abs(size - chosen.memory_bytes) / size < 0.05, (size, chosen.memory_bytes)


# --- recall -----------------------------------------------------------------------------------


def test_measure_recall_matches_numpy(built, data):
    # sample >= n: every vector is a query, so the exact answer is a plain matrix product.
    q = data[:2000]
    small = build_index(q, SPECS["hnsw"], progress=False)
    expected = exact_topk(q, q, 10)
    _, approx = small.search(q, 10)  # efSearch=1 default: far from exact
    manual = np.mean([len(np.intersect1d(a, e)) / 10 for a, e in zip(approx, expected)])
    assert measure_recall(small, q, k=10, sample=10_000) == pytest.approx(manual, abs=1e-3)
    assert manual < 0.95


def test_measure_recall_is_seeded(built, data):
    index = built["hnsw"]
    first = measure_recall(index, data, sample=200, params={"efSearch": 4}, seed=7)
    assert measure_recall(index, data, sample=200, params={"efSearch": 4}, seed=7) == first


def test_measure_recall_rejects_bad_input(built, data):
    index = built["flat"]
    with pytest.raises(ValueError, match="holds"):
        measure_recall(index, data[:100])
    with pytest.raises(ValueError, match="k must"):
        measure_recall(index, data, k=0)
    with pytest.raises(ValueError, match="k must"):
        measure_recall(index, data, k=N + 1)
    with pytest.raises(ValueError, match="sample"):
        measure_recall(index, data, sample=0)
    with pytest.raises(ValueError, match="float32"):
        measure_recall(index, data.astype(np.float16))
    with pytest.raises(ValueError, match="do not apply"):
        measure_recall(index, data, params={"nprobe": 4})


# --- tuning -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["hnsw", "ivf_flat"])
def test_tuning_reaches_the_floor(built, data, name):
    s = SPECS[name]
    start = measure_recall(built[name], data, sample=500, params={s.search_param: s.search_start})
    assert start < 0.95  # tuning has work to do
    result = tune_search_params(built[name], data, s, floor=0.95, sample=500)
    assert isinstance(result, TuneResult)
    chosen = result.params[s.search_param]
    assert result.recall >= 0.95
    assert measure_recall(built[name], data, sample=500, params=result.params) == result.recall
    values = [p[s.search_param] for p, _ in result.tried]
    assert values[0] == s.search_start
    # Every value tried below the answer missed the floor; the answer is the smallest that met it.
    assert all(r < 0.95 for p, r in result.tried if p[s.search_param] < chosen)
    assert min(v for (v, (_, r)) in zip(values, result.tried) if r >= 0.95) == chosen


def test_tuning_flat_is_exact_without_search(built, data):
    assert tune_search_params(built["flat"], data, SPECS["flat"]) == TuneResult(
        {}, 1.0, [({}, 1.0)], recall_catalog=1.0, tried_detail=[(1.0, None)]
    )


def test_tuning_compressed_exact_index_is_measured_once(data):
    sq8 = spec("SQ8", train=5_000)
    index = build_index(data, sq8, progress=False)
    result = tune_search_params(index, data, sq8, floor=0.5, sample=300)
    assert result.params == {} and len(result.tried) == 1 and 0.5 <= result.recall < 1.0
    with pytest.raises(RecallTooLow, match="defaults"):
        tune_search_params(index, data, sq8, floor=1.0, sample=300)


def test_tuning_raises_when_floor_unreachable(built, data):
    s = SPECS["ivf_pq"]  # 8-byte codes cannot rank like exact search, whatever nprobe
    with pytest.raises(RecallTooLow) as caught:
        tune_search_params(built["ivf_pq"], data, s, floor=0.99, sample=300)
    err = caught.value
    assert isinstance(err, RuntimeError)
    assert err.floor == 0.99 and err.best_recall < 0.99
    assert [p["nprobe"] for p, _ in err.tried] == [1, 2, 4, 8, 16, 32, 64]
    assert err.best_recall == max(r for _, r in err.tried)
    assert "0.99" in str(err) and "nprobe=64" in str(err) and "best recall" in str(err)


def test_tuning_raises_at_search_max(built, data):
    capped = spec("HNSW16,Flat", "efSearch", 1, 2)
    with pytest.raises(RecallTooLow, match="efSearch=2"):
        tune_search_params(built["hnsw"], data, capped, floor=0.999, sample=300)


@pytest.mark.parametrize("floor", [0, -0.5, 1.01, True])
def test_tuning_rejects_bad_floor(built, data, floor):
    with pytest.raises(ValueError, match="floor"):
        tune_search_params(built["hnsw"], data, SPECS["hnsw"], floor=floor)


def test_tuning_rejects_a_spec_without_a_range(built, data):
    with pytest.raises(ValueError, match="search_start"):
        tune_search_params(built["hnsw"], data, spec("HNSW16,Flat", "efSearch", 64, 32))


# --- search -----------------------------------------------------------------------------------


def _with_param(index, key: str, value):
    """A private copy of ``index`` with ``key`` set on it: the reference for per-call params."""
    copy = faiss.clone_index(index)
    if key == "efSearch":
        find_layer(copy, faiss.IndexHNSW).hnsw.efSearch = value
    elif key == "nprobe":
        faiss.extract_index_ivf(copy).nprobe = value
    elif key == "k_factor":
        faiss.downcast_index(copy).k_factor = value
    return copy


@pytest.mark.parametrize(
    "name, key, values",
    [
        ("hnsw", "efSearch", [1, 8, 64]),
        ("hnsw_sq8", "efSearch", [1, 8, 64]),
        ("ivf_flat", "nprobe", [1, 4, 32]),
        ("ivf_sq8", "nprobe", [1, 4, 32]),
        ("ivf_pq", "nprobe", [1, 4, 32]),
    ],
)
def test_search_params_equal_setting_the_index(built, queries, name, key, values):
    index = built[name]
    before = find_layer(index, faiss.IndexHNSW).hnsw.efSearch if key == "efSearch" else index.nprobe
    results = []
    for value in values:
        D, I = search(index, queries, 10, {key: value})
        D_ref, I_ref = _with_param(index, key, value).search(queries, 10)
        np.testing.assert_array_equal(I, I_ref)
        np.testing.assert_array_equal(D, D_ref)
        results.append(I)
    assert not np.array_equal(results[0], results[-1])  # the parameter really took effect
    after = find_layer(index, faiss.IndexHNSW).hnsw.efSearch if key == "efSearch" else index.nprobe
    assert after == before  # the shared index was not touched


@pytest.mark.parametrize(
    "key, params",
    [
        ("IDMap,HNSW16,Flat", {"efSearch": 8}),
        ("IDMap2,IVF64,Flat", {"nprobe": 4}),
        ("IVF64,Flat,RFlat", {"nprobe": 4, "k_factor": 4}),
        ("HNSW16,Flat,RFlat", {"efSearch": 8}),
        ("PCA64,IVF64,Flat", {"nprobe": 4}),
        ("IVF64_HNSW16,Flat", {"nprobe": 4, "quantizer_efSearch": 4}),
    ],
)
def test_search_params_through_wrappers(data, queries, key, params):
    index = faiss.index_factory(DIM, key, faiss.METRIC_INNER_PRODUCT)
    index.train(data[:5000])
    if "IDMap" in key:
        index.add_with_ids(data, np.arange(N, dtype=np.int64) + 10**9)
    else:
        index.add(data)
    D, I = search(index, queries, 10, params)
    reference = faiss.clone_index(index)
    for k, v in params.items():
        if k == "quantizer_efSearch":
            faiss.downcast_index(faiss.extract_index_ivf(reference).quantizer).hnsw.efSearch = v
        else:
            reference = _with_param(reference, k, v)
    D_ref, I_ref = reference.search(queries, 10)
    np.testing.assert_array_equal(I, I_ref)
    np.testing.assert_allclose(D, D_ref, rtol=1e-6)
    D_default, I_default = search(index, queries, 10, None)
    assert not np.array_equal(I, I_default)


def test_search_flat_and_defaults(built, data):
    D, I = search(built["flat"], data[:5], 3, None)
    assert I.shape == D.shape == (5, 3)
    np.testing.assert_array_equal(I[:, 0], np.arange(5))
    assert search(built["flat"], data[:5], 3, {})[1].tolist() == I.tolist()
    # k beyond the collection pads with -1.
    tiny = faiss.IndexFlatIP(DIM)
    tiny.add(data[:2])
    assert search(tiny, data[:1], 4)[1][0].tolist()[2:] == [-1, -1]


@pytest.mark.parametrize(
    "q, k, params, message",
    [
        ("1d", 10, None, "2-D"),
        ("f64", 10, None, "float32"),
        ("list", 10, None, "numpy array"),
        ("dim", 10, None, "dimension 100"),
        ("nan", 10, None, "NaN"),
        ("ok", 0, None, "k must"),
        ("ok", True, None, "k must"),
        ("ok", 2.0, None, "k must"),
        ("ok", 10, {"ef": 8}, "unknown search parameter 'ef'"),
        ("ok", 10, {"nprobe": 8}, r"\['nprobe'\] do not apply to IndexHNSWFlat"),
        ("ok", 10, {"efSearch": 0}, "positive"),
        ("ok", 10, {"efSearch": -3}, "positive"),
        ("ok", 10, {"efSearch": "64"}, "positive"),
        ("ok", 10, {"efSearch": True}, "positive"),
        ("ok", 10, {"efSearch": 2.5}, "integer"),
        ("ok", 10, [("efSearch", 8)], "mapping"),
    ],
)
def test_search_rejects_bad_input(built, queries, q, k, params, message):
    arrays = {
        "ok": queries,
        "1d": queries[0],
        "f64": queries.astype(np.float64),
        "list": queries.tolist(),
        "dim": queries[:, :100].copy(),
        "nan": np.where(np.arange(DIM) == 3, np.nan, queries).astype(np.float32),
    }
    with pytest.raises(ValueError, match=message):
        search(built["hnsw"], arrays[q], k, params)


def test_efsearch_on_flat_is_rejected(built):
    with pytest.raises(ValueError, match="do not apply to IndexFlat"):
        make_search_params(built["flat"], {"efSearch": 8})


@pytest.mark.parametrize(
    "name, key, values", [("hnsw", "efSearch", [1, 2, 8, 32, 128]), ("ivf_flat", "nprobe", [1, 2, 4, 16, 64])]
)
def test_concurrent_searches_get_their_own_params(built, queries, name, key, values):
    index = built[name]
    expected = {v: _with_param(index, key, v).search(queries, 10)[1] for v in values}
    barrier = threading.Barrier(len(values))

    def work(value):
        barrier.wait()  # start together so the calls really overlap
        return [(value, search(index, queries, 10, {key: value})[1]) for _ in range(5)]

    with ThreadPoolExecutor(max_workers=len(values)) as pool:
        for batch in pool.map(work, values):
            for value, ids in batch:
                np.testing.assert_array_equal(ids, expected[value])


# --- files ------------------------------------------------------------------------------------


def _mapped(path: Path) -> bool:
    maps = Path("/proc/self/maps")
    return maps.exists() and str(path) in maps.read_text()


@pytest.mark.parametrize("name", list(SPECS))
def test_read_index_round_trips(built, queries, name, tmp_path):
    index = built[name]
    path = tmp_path / f"{name}.faiss"
    write_index(index, path)
    expected = index.search(queries, 10)
    for mmap in (True, False):
        loaded = read_index(path, mmap=mmap)
        assert isinstance(loaded, type(index)) and loaded.ntotal == N
        params = {SPECS[name].search_param: 8} if SPECS[name].search_param else None
        np.testing.assert_array_equal(
            search(loaded, queries, 10, params)[1], search(index, queries, 10, params)[1]
        )
        D, I = loaded.search(queries, 10)
        np.testing.assert_array_equal(I, expected[1])
        np.testing.assert_array_equal(D, expected[0])
        if Path("/proc/self/maps").exists():
            assert _mapped(path) == mmap
        del loaded


def test_rewrite_leaves_mapped_readers_on_the_old_file(built, queries, tmp_path):
    path = tmp_path / "live.faiss"
    write_index(built["flat"], path)
    live = read_index(path, mmap=True)
    before = live.search(queries, 5)[1]
    write_index(built["ivf_pq"], path)  # a new version lands under the same name
    np.testing.assert_array_equal(live.search(queries, 5)[1], before)
    assert isinstance(read_index(path), faiss.IndexIVFPQ)
    assert [p.name for p in tmp_path.iterdir()] == ["live.faiss"]  # no temporary left behind


def test_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_index(tmp_path / "missing.faiss")
    with pytest.raises(ValueError, match="faiss.Index"):
        write_index("not an index", tmp_path / "x.faiss")
