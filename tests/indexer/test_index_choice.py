"""Table tests for the pure index choice (no faiss, no data)."""

from __future__ import annotations

import math

import pytest

from indexer.index_choice import MIB, IndexSpec, choose_index


@pytest.mark.parametrize(
    "n, dim, budget_mb, expected",
    [
        # Small collections: exact search.
        (1, 384, 4096, "Flat"),
        (19_999, 384, 4096, "Flat"),
        # ... compressed only when the budget forces it (Flat 14.6 MiB, SQ8 3.7 MiB).
        (10_000, 384, 10, "SQ8"),
        (10_000, 384, 1, "PQ64np"),
        # Too few vectors to train 256-centroid PQ codebooks: SQ8 or nothing.
        (5_000, 384, 2, "SQ8"),
        # Exact up to 40k vectors (real queries: HNSW at 20k held recall@10 at 0.982).
        (20_000, 384, 4096, "Flat"),
        (39_999, 384, 4096, "Flat"),
        # Larger: IVF,Flat while it fits (1M x 384 ~ 1478 MiB): it beat HNSW on query-like traffic.
        (40_000, 384, 4096, "IVF1024,Flat"),
        (100_000, 384, 4096, "IVF1024,Flat"),
        (1_000_000, 384, 4096, "IVF4096,Flat"),
        (1_000_000, 768, 4096, "IVF4096,Flat"),
        (10_000_000, 384, 100_000, "IVF16384,Flat"),
        # Then down the accuracy ladder as the budget shrinks.
        (1_000_000, 384, 1700, "IVF4096,Flat"),
        (1_000_000, 384, 1000, "IVF4096,SQ8"),
        (1_000_000, 384, 500, "IVF4096,SQ8"),
        (1_000_000, 384, 200, "IVF4096,PQ192np"),
        (1_000_000, 384, 150, "IVF4096,PQ128np"),
        (1_000_000, 384, 25, "IVF4096,PQ8np"),
        (10_000_000, 384, 4096, "IVF16384,SQ8"),
        # nlist ~ 4 sqrt(n) as a power of two: 1024 at 40k and at 100k, capped at 65536.
        (40_000, 384, 20, "IVF1024,SQ8"),
        (20_000, 384, 10, "SQ8"),  # exact, compressed to fit
        (100_000, 384, 40, "IVF1024,SQ8"),
        (1_000_000_000, 384, 50_000, "IVF65536,PQ32np"),
        # PQ sizes must divide the dimension: 100 -> 50, 25, 20, 10.
        (1_000_000, 100, 60, "IVF4096,PQ50np"),
        (1_000_000, 100, 20, "IVF4096,PQ10np"),
    ],
)
def test_choose_index_table(n, dim, budget_mb, expected):
    spec = choose_index(n, dim, budget_mb)
    assert spec.factory_key == expected
    assert spec.memory_bytes <= budget_mb * MIB
    assert spec.dim == dim and spec.metric == "ip"


@pytest.mark.parametrize(
    "n, dim, budget_mb, expected",
    [
        # prefer_graph: HNSW while it fits (1M x 384 HNSW32,Flat ~ 1724 MiB), IVF and SQ8 below.
        (20_000, 384, 4096, "Flat"),
        (40_000, 384, 4096, "HNSW32,Flat"),
        (1_000_000, 384, 4096, "HNSW32,Flat"),
        (10_000_000, 384, 100_000, "HNSW32,Flat"),
        (1_000_000, 384, 1700, "IVF4096,Flat"),
        (1_000_000, 384, 1000, "HNSW32,SQ8"),
        (1_000_000, 384, 500, "IVF4096,SQ8"),
        (1_000_000, 384, 200, "IVF4096,PQ192np"),
    ],
)
def test_choose_index_table_preferring_graphs(n, dim, budget_mb, expected):
    spec = choose_index(n, dim, budget_mb, prefer_graph=True)
    assert spec.factory_key == expected and spec.memory_bytes <= budget_mb * MIB


@pytest.mark.parametrize(
    "n, dim, budget_mb, message",
    [
        (0, 384, 4096, "n_vectors"),
        (-5, 384, 4096, "n_vectors"),
        (1.5, 384, 4096, "n_vectors"),
        (True, 384, 4096, "n_vectors"),
        (1000, 0, 4096, "dim"),
        (1000, "384", 4096, "dim"),
        (1000, 384, 0, "memory_budget_mb"),
        (1000, 384, -1, "memory_budget_mb"),
        (1000, 384, math.nan, "memory_budget_mb"),
        (1000, 384, math.inf, "memory_budget_mb"),
        (1000, 384, "4G", "memory_budget_mb"),
        # Budgets no candidate fits: the message names the smallest need.
        (500, 384, 0.1, "too small"),
        (1_000_000, 384, 20, "too small"),
        # No PQ for a prime dimension, and SQ8 (d bytes + 8 id bytes) does not fit.
        (1_000_000, 383, 100, "too small"),
        # Too few vectors (5k) to train PQ codebooks, and SQ8 (1.8 MiB) does not fit.
        (5_000, 384, 1, "too small"),
    ],
)
def test_choose_index_rejects_nonsense(n, dim, budget_mb, message):
    with pytest.raises(ValueError, match=message):
        choose_index(n, dim, budget_mb)


def test_error_names_the_smallest_candidate():
    with pytest.raises(ValueError, match=r"IVF4096,PQ8np\) needs 21\.\d MiB"):
        choose_index(1_000_000, 384, 20)


@pytest.mark.parametrize(
    "kwargs", [{"hnsw_m": 1}, {"ivf_nprobe": 0}, {"hnsw_ef_search": 2048}, {"pq_min_bytes": 0}]
)
def test_bad_thresholds_are_rejected(kwargs):
    with pytest.raises(ValueError):
        choose_index(1_000_000, 384, 4096, **kwargs)


def test_hnsw_spec_fields():
    spec = choose_index(1_000_000, 384, 4096, prefer_graph=True)
    assert spec == IndexSpec(
        factory_key="HNSW32,Flat",
        dim=384,
        metric="ip",
        search_param="efSearch",
        search_start=16,
        search_max=1024,
        train_size=0,
        memory_bytes=spec.memory_bytes,
        ef_construction=40,
    )
    assert spec.family == "hnsw" and not spec.needs_training
    # 1536 bytes of vector + ~276 of graph per vector.
    assert 1.75e9 < spec.memory_bytes < 1.85e9


def test_ivf_spec_fields():
    spec = choose_index(1_000_000, 384, 500)
    assert spec.family == "ivf" and spec.needs_training
    assert (spec.search_param, spec.search_start, spec.search_max) == ("nprobe", 8, 4096)
    # Enough points per centroid for k-means, never more than the collection.
    assert 39 * 4096 <= spec.train_size <= 1_000_000


def test_flat_spec_needs_no_tuning():
    spec = choose_index(1000, 384, 4096)
    assert (spec.search_param, spec.search_start, spec.train_size) == (None, None, 0)
    assert spec.memory_bytes == 1000 * 384 * 4
    assert spec.family == "flat"


def test_thresholds_are_keywords():
    assert choose_index(50_000, 384, 4096, flat_max_vectors=100_000).factory_key == "Flat"
    assert choose_index(50_000, 384, 4096, hnsw_m=16, prefer_graph=True).factory_key == "HNSW16,Flat"
    spec = choose_index(50_000, 384, 4096, hnsw_ef_construction=80, hnsw_ef_search=32, prefer_graph=True)
    assert (spec.ef_construction, spec.search_start) == (80, 32)
    with pytest.raises(TypeError):
        choose_index(50_000, 384, 4096, 100_000)  # thresholds are keyword-only


@pytest.mark.parametrize("n", [1_000, 50_000, 1_000_000])
def test_more_budget_never_means_less_memory(n):
    # The ladder is ordered by accuracy, which here tracks memory: a bigger budget never
    # picks a smaller (more compressed) index.
    budgets = [2**i for i in range(-2, 14)]
    chosen = []
    for budget in budgets:
        try:
            chosen.append(choose_index(n, 384, budget).memory_bytes)
        except ValueError:
            chosen.append(0)
    assert chosen == sorted(chosen)


def test_spec_is_frozen():
    spec = choose_index(1000, 384, 4096)
    with pytest.raises(AttributeError):
        spec.factory_key = "HNSW32,Flat"  # type: ignore[misc]
