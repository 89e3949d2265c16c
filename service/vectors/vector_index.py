"""Search, write and read FAISS indexes for the online service.

The service shares one index object between request threads, so nothing here mutates it:
per-call knobs (``efSearch``, ``nprobe``, ...) travel as a ``faiss.SearchParameters`` object
built for that call. This module must not import ``indexer`` (the service ships without it).
faiss is imported on first use so that importing this module stays cheap.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

log = logging.getLogger(__name__)

# Every key ``search`` understands, and what it tunes.
PARAM_KEYS = {
    "efSearch": "HNSW beam width (IndexHNSW*)",
    "nprobe": "inverted lists visited (IndexIVF*)",
    "quantizer_efSearch": "efSearch of an HNSW coarse quantizer (IVF..._HNSW)",
    "k_factor": "IndexRefine: base-index candidates per result before exact re-ranking",
}


def search(
    index: Any, queries: np.ndarray, k: int, params: Mapping[str, float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(scores, ids)`` of the ``k`` best matches of each query, each shaped (n, k).

    ``params`` (e.g. ``{"efSearch": 64}``, ``{"nprobe": 32}``) apply to this call only; keys
    omitted keep the index's own settings. Ids are -1 (scores -inf) where fewer than ``k``
    vectors match. Safe to call from several threads on one index.

    Raises:
        ValueError: queries not a finite 2-D float32 array of the index's dimension, ``k < 1``,
            or a parameter that is unknown, not a positive number, or does not apply to this index.
    """
    _check_queries(index, queries)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    search_params = make_search_params(index, params)
    return index.search(queries, int(k), params=search_params)


def make_search_params(index: Any, params: Mapping[str, float] | None) -> Any:
    """Build the ``faiss.SearchParameters`` tree for ``index`` from a flat dict (None if empty).

    Wrappers are walked the way faiss's own search walks them: ``IndexIDMap``/``IDMap2`` pass
    their parameters through untouched, ``IndexPreTransform`` and ``IndexRefine`` take theirs
    nested (``index_params`` / ``base_index_params``).

    Raises:
        ValueError: unknown key, value not a positive number, or a key no layer of ``index`` uses.
    """
    if not params:
        return None
    if not isinstance(params, Mapping):
        raise ValueError(f"params must be a mapping like {{'efSearch': 64}}, got {params!r}")
    wanted: dict[str, float] = {}
    for key, value in params.items():
        if key not in PARAM_KEYS:
            raise ValueError(f"unknown search parameter {key!r}; known: {sorted(PARAM_KEYS)}")
        numeric = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
        if not numeric or not np.isfinite(value) or value <= 0:
            raise ValueError(f"search parameter {key} must be a positive number, got {value!r}")
        if key != "k_factor" and int(value) != value:
            raise ValueError(f"search parameter {key} must be an integer, got {value!r}")
        wanted[key] = value
    used: set[str] = set()
    built = _params_for(index, wanted, used)
    unused = sorted(set(wanted) - used)
    if unused:
        raise ValueError(f"search parameter(s) {unused} do not apply to {type(index).__name__}")
    return built


def write_index(index: Any, path: str | os.PathLike) -> None:
    """Write a CPU ``index`` to ``path`` atomically (temporary file, fsync, rename).

    The rename matters for readers that memory-mapped the previous file: they keep the old
    inode, whereas overwriting in place would change the pages under their feet.

    Raises:
        ValueError: ``index`` is not a faiss CPU index (convert GPU indexes with
            ``faiss.index_gpu_to_cpu`` first).
    """
    import faiss

    if not isinstance(index, faiss.Index):
        raise ValueError(f"expected a faiss.Index, got {type(index).__name__}")
    if "Gpu" in type(index).__name__:
        raise ValueError(f"cannot write a GPU index ({type(index).__name__}); use faiss.index_gpu_to_cpu first")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        faiss.write_index(index, tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_index(path: str | os.PathLike, mmap: bool = True) -> Any:
    """Read an index written by :func:`write_index`, memory-mapping its bulk data when ``mmap``.

    With faiss >= 1.11 (``IO_FLAG_MMAP_IFC``) the mapping covers the codes of Flat/SQ/PQ
    indexes, HNSW graphs and their storage, and IVF inverted lists (checked on faiss 1.15: the
    process's anonymous memory does not grow on read). Older faiss only has ``IO_FLAG_MMAP``,
    which maps IVF lists alone. Structures neither flag covers (small ones such as coarse
    quantizers and codebooks, fast-scan block lists) are copied into RAM by faiss, i.e. a normal
    read; if faiss rejects the flag altogether the file is read normally and a warning logged.

    A mapped index is read-only and tied to the file: adding to it aborts the process inside
    faiss (``MaybeOwnedVector::resize`` asserts), and the file must not be overwritten in place.

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    import faiss

    target = Path(path)
    if not target.is_file():
        raise FileNotFoundError(f"no index file at {target}")
    if not mmap:
        return faiss.read_index(str(target))
    flag = getattr(faiss, "IO_FLAG_MMAP_IFC", None)
    if flag is None:
        flag = faiss.IO_FLAG_MMAP
    try:
        return faiss.read_index(str(target), flag | faiss.IO_FLAG_READ_ONLY)
    except RuntimeError as exc:
        log.warning("memory-mapped read of %s failed (%s); reading it into RAM", target, exc)
        return faiss.read_index(str(target))


def is_exhaustive(index: Any) -> bool:
    """True for a plain flat index: every search scans every vector (exact answers)."""
    import faiss

    return isinstance(faiss.downcast_index(index) if type(index) is faiss.Index else index, faiss.IndexFlat)


def find_layer(index: Any, kind: type) -> Any:
    """Return the first layer of ``index`` that is a ``kind`` (e.g. ``faiss.IndexHNSW``), or None.

    Walks the wrappers faiss search walks: IDMap/IDMap2, PreTransform, Refine (base index).
    """
    import faiss

    layer = faiss.downcast_index(index) if type(index) is faiss.Index else index
    while layer is not None:
        if isinstance(layer, kind):
            return layer
        if isinstance(layer, (faiss.IndexIDMap, faiss.IndexPreTransform)):
            layer = faiss.downcast_index(layer.index)
        elif isinstance(layer, faiss.IndexRefine):
            layer = faiss.downcast_index(layer.base_index)
        else:
            return None
    return None


def _check_queries(index: Any, queries: Any) -> None:
    if not isinstance(queries, np.ndarray):
        raise ValueError(f"queries must be a numpy array, got {type(queries).__name__}")
    if queries.ndim != 2:
        raise ValueError(f"queries must be 2-D (n, dim), got shape {queries.shape}")
    if queries.dtype != np.float32:
        raise ValueError(f"queries must be float32, got {queries.dtype}")
    if queries.shape[1] != index.d:
        raise ValueError(f"queries have dimension {queries.shape[1]}, index has {index.d}")
    if not np.isfinite(queries).all():
        raise ValueError("queries contain NaN or infinite values")


def _params_for(index: Any, wanted: Mapping[str, float], used: set[str]) -> Any:
    """Recursive part of :func:`make_search_params`; records consumed keys in ``used``."""
    import faiss

    index = faiss.downcast_index(index) if type(index) is faiss.Index else index
    if isinstance(index, faiss.IndexIDMap):  # IDMap2 subclasses it
        return _params_for(faiss.downcast_index(index.index), wanted, used)
    if isinstance(index, faiss.IndexPreTransform):
        inner = _params_for(faiss.downcast_index(index.index), wanted, used)
        return None if inner is None else faiss.SearchParametersPreTransform(index_params=inner)
    if isinstance(index, faiss.IndexRefine):
        inner = _params_for(faiss.downcast_index(index.base_index), wanted, used)
        if inner is None and "k_factor" not in wanted:
            return None
        used.add("k_factor")
        # IndexRefineSearchParameters.k_factor defaults to 1, not the index's own value.
        refine = faiss.IndexRefineSearchParameters(k_factor=float(wanted.get("k_factor", index.k_factor)))
        if inner is not None:
            refine.base_index_params = inner
        return refine
    if isinstance(index, faiss.IndexHNSW):
        if "efSearch" not in wanted:
            return None
        used.add("efSearch")
        return faiss.SearchParametersHNSW(efSearch=int(wanted["efSearch"]))
    if isinstance(index, faiss.IndexIVF):
        quantizer = None
        if "quantizer_efSearch" in wanted:
            coarse = faiss.downcast_index(index.quantizer)
            if isinstance(coarse, faiss.IndexHNSW):
                used.add("quantizer_efSearch")
                quantizer = faiss.SearchParametersHNSW(efSearch=int(wanted["quantizer_efSearch"]))
        if "nprobe" not in wanted and quantizer is None:
            return None
        if "nprobe" in wanted:
            used.add("nprobe")
        # SearchParametersIVF fields override the index's, so copy the ones not being set.
        ivf = faiss.SearchParametersIVF(
            nprobe=int(wanted.get("nprobe", index.nprobe)), max_codes=int(index.max_codes)
        )
        if quantizer is not None:
            ivf.quantizer_params = quantizer
        return ivf
    return None
