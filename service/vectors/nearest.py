"""Nearest items in one embedding space: the main index plus the fresh delta, best first.

Search and recommendations both start here. Items replaced or deleted since the build are
taken from the delta (or dropped), never from the stale main index.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from service.vectors.delta import Delta
from service.vectors.index_store import LoadedSpace


Candidate = tuple[int, float, tuple[str, ...]]  # item id, score, signals


def vector_candidates(space: LoadedSpace, delta: Delta | None, query: np.ndarray, n: int) -> tuple[list[Candidate], bool]:
    """The ``n`` nearest items from the main index and the fresh delta, best first.

    Items replaced or deleted since the build are taken from the delta (or dropped), never from
    the stale main index. Returns (candidates, exhausted).
    """
    lists, exhausted = vector_candidates_many(space, delta, np.asarray(query).reshape(1, -1), n)
    return lists[0], exhausted


def vector_candidates_many(space: LoadedSpace, delta: Delta | None, queries: np.ndarray,
                           n: int) -> tuple[list[list[Candidate]], bool]:
    """:func:`vector_candidates` for each row of ``queries``, with one search of the main index
    (a batch costs FAISS far less than one call per query)."""
    from service.vectors.vector_index import search

    queries = np.ascontiguousarray(queries, dtype=np.float32)
    shadowed = delta.shadowed if delta is not None else set()
    out: list[list[Candidate]] = [[] for _ in range(len(queries))]
    main_n = min(n + len(shadowed), space.count)
    if main_n > 0 and len(queries):
        all_scores, all_rows = search(space.index, queries, main_n, space.params)
        for found, rows, scores in zip(out, all_rows, all_scores):
            keep = rows >= 0
            ids = space.ids[rows[keep]]
            found.extend((item_id, float(score), ("semantic",))
                         for item_id, score in zip(ids.tolist(), scores[keep].tolist()) if item_id not in shadowed)
    if delta is not None:
        for found, query in zip(out, queries):
            d_scores, d_ids = delta.search(query, n)
            found.extend((int(i), float(s), ("semantic", "fresh")) for i, s in zip(d_ids, d_scores))
            found.sort(key=lambda c: -c[1])
    available = space.count + (len(delta.vectors) if delta is not None else 0)
    return [found[:n] for found in out], n >= available


def vectors_of(space: LoadedSpace, delta: Delta | None, item_ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Vectors of items in a space, fresh ones first: (matrix with zero rows where missing, found mask).

    An item replaced since the build takes its delta vector; a deleted one (tombstone) has none.
    """
    ids = np.asarray(item_ids, dtype=np.int64)
    out = np.zeros((len(ids), space.dim), dtype=np.float32)
    found = np.zeros(len(ids), dtype=bool)
    rows = space.rows_of(ids)
    usable = rows >= 0
    if delta is not None and (delta.vectors or delta.tombstones):
        shadowed = delta.shadowed
        usable &= np.fromiter((i not in shadowed for i in ids.tolist()), dtype=bool, count=len(ids))
        for pos, item_id in enumerate(ids.tolist()):
            if item_id in delta.vectors:
                out[pos], found[pos] = delta.vectors[item_id], True
    if usable.any():
        # One gather from the memory-mapped array: a Python loop per row costs ten times more.
        out[usable] = space.vectors[rows[usable]]
        found |= usable
    return out, found
