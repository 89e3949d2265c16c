"""Choose the FAISS index for one embedding space: a pure function of size, dimension and budget.

Nothing here imports faiss or touches data, so the choice is cheap, deterministic and
table-tested (``tests/indexer/test_index_choice.py``), in the spirit of autofaiss's
``get_optimal_index_keys_v2``. The rule, for L2-normalised vectors searched by inner product:

* small collections get an exact ``Flat`` index (compressed to ``SQ8`` or ``PQ`` only when the
  budget forces it);
* larger ones get an inverted-file index, trying candidates from most to least accurate and
  taking the first whose estimated memory fits the budget: ``IVF,Flat`` > ``IVF,SQ8`` >
  ``IVF,PQ`` (largest code first). Graphs (``prefer_graph``: ``HNSW,Flat`` > ``IVF,Flat`` >
  ``HNSW,SQ8`` > ``IVF,SQ8`` > ``IVF,PQ``) lost to IVF on query-like traffic, which lands between
  the catalog's clusters: at 1M x 384, HNSW32 (efConstruction 40) needed efSearch 1024 for
  recall@10 0.958 on such queries (361 searches/s on one thread), IVF4096,Flat nprobe 5 gave
  0.973 at 2,093/s, built in 138 s and took 15% less memory; at 100k, 0.962 at 11,201/s
  against HNSW's 0.963 at 6,059/s (``benchmarks/bench_index.py --query-like``). IVF also
  degrades gracefully: at ``nprobe = nlist`` it is exact, so the tuner can always reach the floor.

PQ keys end in ``np`` (no polysemous training): index_factory otherwise spends ~50x longer
training a code ordering that only helps Hamming-threshold filtering, which we never use.

Memory estimates are the size of the built index held in RAM by the service (the same as the
written artifact, within a few hundred bytes of headers); building needs the input vectors on top.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MIB = 1024 * 1024

# faiss k-means warns below 39 training points per centroid; fewer give poor centroids.
_MIN_POINTS_PER_CENTROID = 39
# A PQ sub-quantizer is a 256-centroid k-means (8-bit codes).
_PQ_CENTROIDS = 256
# faiss HNSW bookkeeping per vector: levels (int32) + offsets (size_t).
_HNSW_NODE_BYTES = 4 + 8
# IVF lists store one int64 id per vector beside its code.
_IVF_ID_BYTES = 8


@dataclass(frozen=True)
class IndexSpec:
    """What to build and how to search it.

    Attributes:
        factory_key: string for ``faiss.index_factory`` (e.g. ``"HNSW32,Flat"``).
        dim: vector dimension.
        metric: always ``"ip"`` (inner product on normalised vectors, i.e. cosine).
        search_param: the per-query knob to tune (``"efSearch"``, ``"nprobe"``), None when exact.
        search_start: its initial value for tuning (also the index default after building).
        search_max: the largest value worth trying (``nlist`` for nprobe).
        train_size: vectors to sample for ``train``; 0 when the index needs no training.
        memory_bytes: estimated size of the built index in RAM.
        ef_construction: HNSW build-time beam width (index_factory cannot express it).
    """

    factory_key: str
    dim: int
    metric: str
    search_param: str | None
    search_start: int | None
    search_max: int | None
    train_size: int
    memory_bytes: int
    ef_construction: int | None = None

    @property
    def family(self) -> str:
        """Index family: ``flat``, ``hnsw`` or ``ivf``."""
        if self.factory_key.startswith("HNSW"):
            return "hnsw"
        if self.factory_key.startswith("IVF"):
            return "ivf"
        return "flat"

    @property
    def needs_training(self) -> bool:
        """Whether ``build_index`` must train before adding."""
        return self.train_size > 0


def choose_index(
    n_vectors: int,
    dim: int,
    memory_budget_mb: float,
    *,
    # Exact search reads n*dim*4 bytes per query: single-threaded on the 2-core build machine,
    # p50 1.6 ms at 20k x 384, 5.2 ms at 60k, 8.8 ms at 100k. HNSW is faster, but at 20k real
    # search-bar queries (short texts between the catalog's clusters) held recall@10 at 0.982 with
    # 16 of 1,000 queries finding none of their top 10 even at efSearch 896 (0.9 ms), against
    # exact answers for 0.7 ms more (benchmarks/bench_peer_txtai.py, docs/benchmarks.md). Exact
    # up to 40k (~3.5 ms), approximate beyond.
    flat_max_vectors: int = 40_000,
    # HNSW graph degree: 32 is faiss's usual choice for 100s of dimensions; 16 builds faster but
    # needs a larger beam (more latency) for the same recall.
    hnsw_m: int = 32,
    # Build-time beam: faiss's default of 40 builds 1M x 384 in ~160 CPU-seconds (well under
    # 3 minutes on 2 idle cores) and reaches recall@10 0.95 at efSearch 64, ~4000 single-query
    # searches/s (benchmarks/bench_index.py). Larger values build proportionally slower.
    hnsw_ef_construction: int = 40,
    # Tuning starts low and doubles; 16 is already >= k for the usual k=10.
    hnsw_ef_search: int = 16,
    # Past ~1024 a graph search costs as much as a large IVF scan; something else is wrong.
    hnsw_ef_search_max: int = 1024,
    # IVF: nlist ~ 4*sqrt(n) (faiss guidelines: 4..16 sqrt(n)), capped so k-means stays tractable.
    ivf_nlist_per_sqrt_n: float = 4.0,
    ivf_max_nlist: int = 65_536,
    ivf_nprobe: int = 8,
    # Training points per IVF centroid: above faiss's 39 minimum, well below its 256 cap, to keep
    # k-means on a 2-core machine to a couple of minutes at 1M vectors.
    ivf_train_per_centroid: int = 40,
    # SQ8 only needs per-dimension ranges: a 64k sample pins them down.
    sq_train_size: int = 65_536,
    # Below 8 bytes per vector PQ recall against exact search collapses for 384-d embeddings.
    pq_min_bytes: int = 8,
    # HNSW graphs first (the ladder before query-like probes were measured; see the module doc).
    prefer_graph: bool = False,
) -> IndexSpec:
    """Pick the most accurate index for ``n_vectors`` x ``dim`` that fits ``memory_budget_mb`` (MiB).

    Raises:
        ValueError: a non-positive size, dimension or budget, or a budget too small for any
            candidate (the message names the smallest estimate).
    """
    _check_int("n_vectors", n_vectors, 1)
    _check_int("dim", dim, 1)
    if isinstance(memory_budget_mb, bool) or not isinstance(memory_budget_mb, (int, float)):
        raise ValueError(f"memory_budget_mb must be a number, got {memory_budget_mb!r}")
    if not math.isfinite(memory_budget_mb) or memory_budget_mb <= 0:
        raise ValueError(f"memory_budget_mb must be > 0, got {memory_budget_mb!r}")
    for name, value in (
        ("flat_max_vectors", flat_max_vectors),
        ("hnsw_m", hnsw_m),
        ("hnsw_ef_construction", hnsw_ef_construction),
        ("hnsw_ef_search", hnsw_ef_search),
        ("hnsw_ef_search_max", hnsw_ef_search_max),
        ("ivf_max_nlist", ivf_max_nlist),
        ("ivf_nprobe", ivf_nprobe),
        ("ivf_train_per_centroid", ivf_train_per_centroid),
        ("sq_train_size", sq_train_size),
        ("pq_min_bytes", pq_min_bytes),
    ):
        _check_int(name, value, 1)
    if hnsw_m < 2:
        raise ValueError(f"hnsw_m must be >= 2, got {hnsw_m}")
    if hnsw_ef_search > hnsw_ef_search_max:
        raise ValueError(f"hnsw_ef_search {hnsw_ef_search} exceeds hnsw_ef_search_max {hnsw_ef_search_max}")
    if not ivf_nlist_per_sqrt_n > 0:
        raise ValueError(f"ivf_nlist_per_sqrt_n must be > 0, got {ivf_nlist_per_sqrt_n!r}")

    budget = memory_budget_mb * MIB
    n, d = n_vectors, dim
    # PQ needs a full 256-centroid k-means per sub-quantizer, so enough points to train it.
    pq_trainable = n >= _MIN_POINTS_PER_CENTROID * _PQ_CENTROIDS
    pq_train = min(n, 64 * _PQ_CENTROIDS)
    candidates: list[IndexSpec] = []

    def exact(key: str, memory: float, train_size: int) -> IndexSpec:
        return IndexSpec(key, d, "ip", None, None, None, train_size, int(math.ceil(memory)))

    if n < flat_max_vectors:
        candidates.append(exact("Flat", n * 4 * d, 0))
        candidates.append(exact("SQ8", n * d + 8 * d, min(n, sq_train_size)))
        if pq_trainable:
            for m in _pq_sizes(d, pq_min_bytes):
                candidates.append(exact(f"PQ{m}np", n * m + _PQ_CENTROIDS * d * 4, pq_train))
    else:
        nlist = _nlist(n, ivf_nlist_per_sqrt_n, ivf_max_nlist)
        nprobe = min(ivf_nprobe, nlist)
        ivf_train = min(n, ivf_train_per_centroid * nlist)
        centroids = nlist * d * 4
        # Level 0 holds 2*M neighbours, each upper level M; a node reaches level >= 1 with
        # probability 1/M, so upper levels add about M/(M-1) ~ 1 slot per vector.
        graph = 4 * (2 * hnsw_m + 1) + _HNSW_NODE_BYTES

        def hnsw(storage: str, code_bytes: float, train_size: int) -> IndexSpec:
            return IndexSpec(
                f"HNSW{hnsw_m},{storage}", d, "ip", "efSearch", hnsw_ef_search, hnsw_ef_search_max,
                train_size, int(math.ceil(n * (code_bytes + graph) + (8 * d if storage == "SQ8" else 0))),
                ef_construction=hnsw_ef_construction,
            )

        def ivf(codes: str, code_bytes: float, extra: float, train_size: int) -> IndexSpec:
            return IndexSpec(
                f"IVF{nlist},{codes}", d, "ip", "nprobe", nprobe, nlist, train_size,
                int(math.ceil(n * (code_bytes + _IVF_ID_BYTES) + centroids + extra)),
            )

        if prefer_graph:
            candidates.append(hnsw("Flat", 4 * d, 0))
        candidates.append(ivf("Flat", 4 * d, 0, ivf_train))
        if prefer_graph:
            candidates.append(hnsw("SQ8", d, min(n, sq_train_size)))
        candidates.append(ivf("SQ8", d, 8 * d, ivf_train))
        if pq_trainable:
            for m in _pq_sizes(d, pq_min_bytes):
                # PQ codebooks: m sub-quantizers x 256 centroids x (d/m) floats.
                candidates.append(ivf(f"PQ{m}np", m, _PQ_CENTROIDS * d * 4, max(ivf_train, pq_train)))

    for spec in candidates:
        if spec.memory_bytes <= budget:
            return spec
    smallest = min(candidates, key=lambda s: s.memory_bytes)
    raise ValueError(
        f"memory_budget_mb={memory_budget_mb!r} is too small for {n} x {d} vectors: the smallest "
        f"candidate ({smallest.factory_key}) needs {smallest.memory_bytes / MIB:.1f} MiB"
    )


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")


def _nlist(n: int, per_sqrt_n: float, max_nlist: int) -> int:
    """Power of two nearest ``per_sqrt_n * sqrt(n)``, small enough for k-means to train on ``n``."""
    nlist = 2 ** max(0, round(math.log2(per_sqrt_n * math.sqrt(n))))
    nlist = min(nlist, max_nlist)
    while nlist > 1 and n < _MIN_POINTS_PER_CENTROID * nlist:
        nlist //= 2
    return nlist


def _pq_sizes(dim: int, min_bytes: int) -> list[int]:
    """PQ code sizes (sub-quantizer counts) for ``dim``, most accurate first.

    faiss PQ needs ``m`` to divide ``dim``; ``dim/m >= 2`` because one dimension per
    sub-quantizer costs as much as SQ8 while being less accurate.
    """
    return [m for m in range(dim // 2, min_bytes - 1, -1) if m >= 1 and dim % m == 0]
