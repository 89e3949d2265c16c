"""Build a FAISS index from an :class:`~indexer.index_choice.IndexSpec`, measure and tune its recall.

Recall@k is measured the way faiss's ``contrib.evaluation.knn_intersection_measure`` does:
``|approx top-k ∩ exact top-k| / k`` averaged over queries, where the exact top-k comes from a
blocked brute-force inner-product search (``contrib.exhaustive_search.knn_ground_truth``), so
the collection is never copied into a second index. Queries are a seeded random sample of the
collection's own vectors, which can be far too optimistic: a catalog vector sits inside its own
cluster, where a graph or inverted-file search finds its neighbours easily, while real queries
(short texts) land between clusters. :func:`tune_search_params` therefore also takes query-like
``probes`` (e.g. embedded titles, text spans and title prefixes) and requires the floor on both.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from indexer.index_choice import IndexSpec
from service.vectors.vector_index import find_layer, search

log = logging.getLogger(__name__)

# Rows per add() call (except HNSW, see _chunk_size): big enough that faiss's OpenMP loops stay
# busy, small enough for a smooth progress bar and bounded temporary copies (64k x 384 = 96 MiB).
ADD_CHUNK = 65_536
# Rows per brute-force block when computing exact neighbours.
_GT_BLOCK = 65_536


class RecallTooLow(RuntimeError):
    """Tuning never reached the recall floor.

    Attributes:
        floor: the recall required.
        best_recall: the highest recall measured.
        best_params: the parameters that gave it.
        tried: every (params, recall) measured, in order (with probes: the lower of the two).
        detail: per entry of ``tried``, (catalog recall, probe recall or None), when known.
    """

    def __init__(
        self,
        floor: float,
        tried: list[tuple[dict, float]],
        detail: list[tuple[float, float | None]] | None = None,
    ):
        self.floor = floor
        self.tried = list(tried)
        self.detail = list(detail) if detail is not None else None
        self.best_params, self.best_recall = max(self.tried, key=lambda t: t[1])
        extra = [""] * len(self.tried)
        if self.detail is not None and any(p is not None for _, p in self.detail):
            extra = [f" (catalog {c:.4f}, probes {p:.4f})" if p is not None else "" for c, p in self.detail]
        steps = ", ".join(f"{_fmt(p)}: {r:.4f}{x}" for (p, r), x in zip(self.tried, extra))
        super().__init__(
            f"recall floor {floor} not reached: best recall {self.best_recall:.4f} at "
            f"{_fmt(self.best_params)}; tried {steps}"
        )


@dataclass(frozen=True)
class TuneResult:
    """Outcome of :func:`tune_search_params`.

    Attributes:
        params: search parameters to pass to ``service.vectors.vector_index.search`` ({} for exact indexes).
        recall: recall@k measured with them: the lower of ``recall_catalog`` and ``recall_probes``.
        tried: every (params, recall) measured, in order (recall: the lower of the two).
        recall_catalog: recall@k on the sample of catalog vectors.
        recall_probes: recall@k on the query-like probes, None when none were given.
        probe_count: how many probes were measured.
        tried_detail: per entry of ``tried``, (catalog recall, probe recall or None).
    """

    params: dict
    recall: float
    tried: list[tuple[dict, float]] = field(default_factory=list)
    recall_catalog: float | None = None
    recall_probes: float | None = None
    probe_count: int = 0
    tried_detail: list[tuple[float, float | None]] = field(default_factory=list)


def build_index(
    vectors: np.ndarray,
    spec: IndexSpec,
    *,
    use_gpu: bool | None = None,
    progress: bool = True,
    seed: int = 0,
) -> Any:
    """Train (on a seeded sample of ``spec.train_size`` rows) and fill the index ``spec`` describes.

    Row ``i`` of ``vectors`` gets id ``i``. Rows are added in chunks behind a tqdm bar when
    ``progress`` (HNSW in a single batch, see ``_chunk_size``). The index's default search knob
    is set to ``spec.search_start``; HNSW indexes also get ``spec.ef_construction``.

    ``use_gpu``: None uses a GPU when faiss sees one, False never does, True requires one.
    On a GPU only IVF families are trained and filled there (k-means and list assignment are
    where the time goes; faiss-gpu has no HNSW, and adding to a Flat index is a copy), then
    the result is converted back to a CPU index for writing.

    Raises:
        ValueError: vectors not a finite 2-D float32 array of ``spec.dim`` columns, fewer rows
            than ``spec.train_size``, a metric other than ``"ip"``, or ``use_gpu=True`` without
            a GPU.
    """
    import faiss

    _check_vectors(vectors, spec.dim)
    if spec.metric != "ip":
        raise ValueError(f"only the inner-product metric is supported, got {spec.metric!r}")
    n = vectors.shape[0]
    if spec.train_size > n:
        raise ValueError(f"spec needs {spec.train_size} training vectors but only {n} were given")

    index = faiss.index_factory(spec.dim, spec.factory_key, faiss.METRIC_INNER_PRODUCT)
    _set_default_param(index, spec)
    if spec.ef_construction is not None:
        find_layer(index, faiss.IndexHNSW).hnsw.efConstruction = spec.ef_construction

    ngpu = faiss.get_num_gpus()
    if use_gpu and ngpu == 0:
        raise ValueError("use_gpu=True but faiss sees no GPU (is faiss-gpu installed?)")
    if (use_gpu or (use_gpu is None and ngpu > 0)) and spec.family == "ivf":
        gpu_index = _build_on_gpu(index, vectors, spec, progress, seed)
        if gpu_index is not None:
            return gpu_index

    if spec.needs_training:
        index.train(_train_sample(vectors, spec.train_size, seed))
    _add_in_chunks(index, vectors, progress, spec.factory_key, _chunk_size(spec, n))
    return index


def measure_recall(
    index: Any,
    vectors: np.ndarray,
    *,
    k: int = 10,
    sample: int = 1000,
    params: Mapping[str, float] | None = None,
    seed: int = 0,
) -> float:
    """Recall@k of ``index`` against exact inner-product search over ``vectors``.

    ``vectors`` must be the indexed collection, row ``i`` stored under id ``i``. Queries are
    ``min(sample, n)`` rows drawn with ``seed``.

    Raises:
        ValueError: vectors not matching the index (shape, dtype, count), ``k`` not in
            ``[1, n]``, ``sample < 1``, or bad ``params`` (see ``service.vectors.vector_index.search``).
    """
    queries, exact = _ground_truth(index, vectors, k, sample, seed)
    return _recall(index, queries, exact, k, params)


def tune_search_params(
    index: Any,
    vectors: np.ndarray,
    spec: IndexSpec,
    *,
    floor: float = 0.95,
    sample: int = 1000,
    k: int = 10,
    seed: int = 0,
    probes: np.ndarray | None = None,
) -> TuneResult:
    """Find the smallest ``spec.search_param`` value whose recall@k reaches ``floor``.

    Recall is measured on ``min(sample, n)`` catalog vectors drawn with ``seed`` and, when
    ``probes`` (query-like vectors, e.g. embedded titles or short text spans; every row is used)
    are given, on them too, each against exact search over all of ``vectors``; a value passes
    only when both reach the floor. Catalog vectors alone are optimistic: they sit inside their
    own clusters, real queries land between them.

    Starts at ``spec.search_start`` and doubles up to ``spec.search_max`` (or, when the start
    already passes, halves down to the first value that fails); once the floor is met, bisects
    between the last failing and the first passing value (to within a quarter of the
    lower one, so the answer is not fitted to the sample's noise). Exact indexes (no search
    parameter) are measured once; a Flat index is exact and returns recall 1.0 untouched
    (probes are not searched).

    Raises:
        ValueError: ``floor`` not in (0, 1], ``probes`` not a finite float32 (m, dim) array with
            m >= 1, or the inputs ``measure_recall`` rejects.
        RecallTooLow: the floor is not reached (on both sets) even at ``spec.search_max``.
    """
    if isinstance(floor, bool) or not isinstance(floor, (int, float)) or not 0 < floor <= 1:
        raise ValueError(f"floor must be in (0, 1], got {floor!r}")
    _check_vectors(vectors, spec.dim)
    if probes is not None:
        _check_vectors(probes, spec.dim)
        if not np.isfinite(probes).all():
            raise ValueError("probes contain NaN or infinite values")
    n_probes = 0 if probes is None else int(probes.shape[0])
    if spec.factory_key == "Flat":
        exact_probes = None if probes is None else 1.0
        return TuneResult(params={}, recall=1.0, tried=[({}, 1.0)], recall_catalog=1.0,
                          recall_probes=exact_probes, probe_count=n_probes, tried_detail=[(1.0, exact_probes)])
    start, top = spec.search_start, spec.search_max
    if spec.search_param is not None and (start is None or top is None or not 1 <= start <= top):
        raise ValueError(f"spec needs 1 <= search_start <= search_max, got {start} and {top}")

    queries, exact = _ground_truth(index, vectors, k, sample, seed)
    if probes is not None:
        probes = np.ascontiguousarray(probes)
    probe_exact = None if probes is None else _exact_topk(probes, vectors, k)
    tried: list[tuple[dict, float]] = []
    detail: list[tuple[float, float | None]] = []

    def measure(value: int | None) -> float:
        params = {} if value is None else {spec.search_param: value}
        on_catalog = _recall(index, queries, exact, k, params)
        on_probes = None if probes is None else _recall(index, probes, probe_exact, k, params)
        recall = on_catalog if on_probes is None else min(on_catalog, on_probes)
        tried.append((params, recall))
        detail.append((on_catalog, on_probes))
        if on_probes is None:
            log.info("recall@%d %s = %.4f", k, _fmt(params), recall)
        else:
            log.info("recall@%d %s = %.4f (catalog %.4f, probes %.4f)", k, _fmt(params), recall, on_catalog, on_probes)
        return recall

    def result(params: dict, at: int) -> TuneResult:
        on_catalog, on_probes = detail[at]
        return TuneResult(params=params, recall=tried[at][1], tried=tried, recall_catalog=on_catalog,
                          recall_probes=on_probes, probe_count=n_probes, tried_detail=detail)

    if spec.search_param is None:
        recall = measure(None)
        if recall < floor:
            raise RecallTooLow(floor, tried, detail)
        return result({}, 0)

    low, value, top = None, spec.search_start, spec.search_max
    while True:
        recall = measure(value)
        if recall >= floor:
            break
        if value >= top:
            raise RecallTooLow(floor, tried, detail)
        low, value = value, min(2 * value, top)
    high, best = value, len(tried) - 1
    # The start already passes: halve while it still does (IVF at 1M x 384 met the floor on
    # query-like probes at nprobe 8, the start; every smaller value searched is time saved).
    while low is None and high > 1:
        value = high // 2
        if measure(value) >= floor:
            high, best = value, len(tried) - 1
        else:
            low = value
    # Bisect (low, high]: recall is monotone in efSearch/nprobe up to sampling noise.
    while low is not None and high - low > max(1, low // 4):
        mid = (low + high) // 2
        recall = measure(mid)
        if recall >= floor:
            high, best = mid, len(tried) - 1
        else:
            low = mid
    return result({spec.search_param: high}, best)


# --- helpers ---------------------------------------------------------------------------------


def _fmt(params: Mapping[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in params.items()) or "defaults"


def _check_vectors(vectors: Any, dim: int) -> None:
    if not isinstance(vectors, np.ndarray):
        raise ValueError(f"vectors must be a numpy array, got {type(vectors).__name__}")
    if vectors.ndim != 2:
        raise ValueError(f"vectors must be 2-D (n, dim), got shape {vectors.shape}")
    if vectors.dtype != np.float32:
        raise ValueError(f"vectors must be float32, got {vectors.dtype}")
    if vectors.shape[1] != dim:
        raise ValueError(f"vectors have dimension {vectors.shape[1]}, expected {dim}")
    if vectors.shape[0] < 1:
        raise ValueError("vectors is empty")


def _set_default_param(index: Any, spec: IndexSpec) -> None:
    """Make a plain ``index.search`` use ``spec.search_start`` (build-time mutation only)."""
    import faiss

    if spec.search_param == "efSearch":
        find_layer(index, faiss.IndexHNSW).hnsw.efSearch = spec.search_start
    elif spec.search_param == "nprobe":
        find_layer(index, faiss.IndexIVF).nprobe = spec.search_start


def _train_sample(vectors: np.ndarray, size: int, seed: int) -> np.ndarray:
    n = vectors.shape[0]
    if size >= n:
        sample = vectors
    else:
        # Sorted rows: a sequential gather is much faster on a memory-mapped array.
        rows = np.sort(np.random.default_rng(seed).choice(n, size, replace=False))
        sample = vectors[rows]
    if not np.isfinite(sample).all():
        raise ValueError("training vectors contain NaN or infinite values")
    return np.ascontiguousarray(sample)


def _add_in_chunks(index: Any, vectors: np.ndarray, progress: bool, label: str, chunk_size: int) -> None:
    from tqdm.auto import tqdm

    n = vectors.shape[0]
    # Checked up front, in blocks: failing after half the adds would waste the work, and a
    # whole-array isfinite() would allocate n*dim booleans.
    for start in range(0, n, ADD_CHUNK):
        if not np.isfinite(vectors[start : start + ADD_CHUNK]).all():
            raise ValueError(f"vectors[{start}:{min(n, start + ADD_CHUNK)}] contain NaN or infinite values")
    with tqdm(total=n, desc=f"add {label}", unit="vec", disable=not progress, leave=False) as bar:
        for start in range(0, n, chunk_size):
            chunk = np.ascontiguousarray(vectors[start : start + chunk_size])
            index.add(chunk)
            bar.update(len(chunk))


def _chunk_size(spec: IndexSpec, n: int) -> int:
    """Rows per ``add`` call: everything at once for HNSW.

    faiss inserts each batch's upper-level nodes before its level-0 nodes, so one batch gives the
    whole collection a complete upper graph to descend; measured on 200k x 384 structured vectors,
    64k-row batches lowered recall@10 at efSearch=32 from 0.980 to 0.973. Other indexes encode
    rows independently and take bounded chunks.
    """
    return max(n, 1) if spec.family == "hnsw" else ADD_CHUNK


def _build_on_gpu(index: Any, vectors: np.ndarray, spec: IndexSpec, progress: bool, seed: int) -> Any:
    """Train and fill ``index`` on GPU 0 and return it on the CPU, or None if faiss-gpu refuses it.

    Untested in CI: the build machines have no GPU and faiss-cpu lacks these symbols.
    """
    import faiss

    resources = faiss.StandardGpuResources()
    try:
        gpu_index = faiss.index_cpu_to_gpu(resources, 0, index)
    except RuntimeError as exc:  # e.g. a PQ code size faiss-gpu does not implement
        log.warning("faiss-gpu cannot hold %s (%s); building on CPU", spec.factory_key, exc)
        return None
    if spec.needs_training:
        gpu_index.train(_train_sample(vectors, spec.train_size, seed))
    _add_in_chunks(gpu_index, vectors, progress, spec.factory_key + " (GPU)", ADD_CHUNK)
    cpu_index = faiss.index_gpu_to_cpu(gpu_index)
    _set_default_param(cpu_index, spec)
    return cpu_index


def _ground_truth(
    index: Any, vectors: np.ndarray, k: int, sample: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Sample queries from ``vectors`` and return them with their exact top-k ids."""
    _check_vectors(vectors, index.d)
    n = vectors.shape[0]
    if index.ntotal != n:
        raise ValueError(f"index holds {index.ntotal} vectors but {n} were given")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n:
        raise ValueError(f"k must be an integer in [1, {n}], got {k!r}")
    if isinstance(sample, bool) or not isinstance(sample, (int, np.integer)) or sample < 1:
        raise ValueError(f"sample must be an integer >= 1, got {sample!r}")
    rows = np.sort(np.random.default_rng(seed).choice(n, min(sample, n), replace=False))
    queries = np.ascontiguousarray(vectors[rows])
    return queries, _exact_topk(queries, vectors, k)


def _exact_topk(queries: np.ndarray, vectors: np.ndarray, k: int) -> np.ndarray:
    """Exact inner-product top-k ids of ``queries`` over all of ``vectors``, in blocks."""
    import faiss
    from faiss.contrib.exhaustive_search import knn_ground_truth

    n = vectors.shape[0]
    blocks = (vectors[i : i + _GT_BLOCK] for i in range(0, n, _GT_BLOCK))
    _, exact = knn_ground_truth(queries, blocks, int(k), metric_type=faiss.METRIC_INNER_PRODUCT)
    return exact


def _recall(
    index: Any, queries: np.ndarray, exact: np.ndarray, k: int, params: Mapping[str, float] | None
) -> float:
    from faiss.contrib.evaluation import knn_intersection_measure

    _, approx = search(index, queries, int(k), params)
    return float(knn_intersection_measure(approx, exact))
