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
    ids, scores, exhausted = nearest_many(space, delta, np.asarray(query).reshape(1, -1), n)
    fresh = delta.vectors if delta is not None else {}
    return [(item, score, ("semantic", "fresh") if item in fresh else ("semantic",))
            for item, score in zip(ids[0].tolist(), scores[0].tolist()) if item >= 0], exhausted


def nearest_many(space: LoadedSpace, delta: Delta | None, queries: np.ndarray,
                 n: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """:func:`vector_candidates` for each row of ``queries`` as arrays, from one batched search
    (FAISS answers a batch for far less than a call per query): (item ids, scores), each
    (rows, <= n), best first, -1 and -inf where a row has fewer; and exhausted."""
    from service.vectors.vector_index import search

    queries = np.ascontiguousarray(queries, dtype=np.float32)
    shadowed = delta.shadowed if delta is not None else set()
    id_parts, score_parts = [np.zeros((len(queries), 0), np.int64)], [np.zeros((len(queries), 0), np.float32)]
    main_n = min(n + len(shadowed), space.count)
    if main_n > 0 and len(queries):
        scores, rows = search(space.index, queries, main_n, space.params)
        ids = np.where(rows >= 0, space.ids[np.maximum(rows, 0)], -1)
        if shadowed:
            ids = np.where(np.isin(ids, np.fromiter(shadowed, np.int64, len(shadowed))), -1, ids)
        id_parts.append(ids)
        score_parts.append(np.where(ids >= 0, scores, -np.inf).astype(np.float32))
    if delta is not None:
        d_scores, d_ids = delta.search_many(queries, n)
        id_parts.append(d_ids)
        score_parts.append(d_scores.astype(np.float32))
    ids, scores = np.concatenate(id_parts, axis=1), np.concatenate(score_parts, axis=1)
    if delta is not None:  # the fresh vectors merged in, the shadowed rows (-inf) to the end
        order = np.argsort(-scores, axis=1, kind="stable")
        ids, scores = np.take_along_axis(ids, order, axis=1), np.take_along_axis(scores, order, axis=1)
    available = space.count + (len(delta.vectors) if delta is not None else 0)
    return ids[:, :n], scores[:, :n], n >= available


def similarities_to_all(space: LoadedSpace, delta: Delta | None, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every usable item's similarity to each query: (item ids, sims shaped (queries, items)),
    from the space's exact vectors (rows replaced or deleted since the build left out) and the
    delta's fresh ones. One matrix product: what an exhaustive index would scan anyway."""
    queries = np.asarray(queries, dtype=np.float32)
    ids, sims = space.ids, queries @ np.asarray(space.vectors).T
    if delta is not None and (delta.vectors or delta.tombstones):
        shadowed = delta.shadowed
        keep = ~np.isin(ids, np.fromiter(shadowed, np.int64, len(shadowed)))
        ids, sims = ids[keep], sims[:, keep]
        if delta.vectors:
            fresh = np.fromiter(delta.vectors, np.int64, len(delta.vectors))
            matrix = np.stack([delta.vectors[i] for i in fresh.tolist()])
            ids, sims = np.concatenate([ids, fresh]), np.concatenate([sims, queries @ matrix.T], axis=1)
    return ids, sims


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
