"""The search use cases: :func:`search_text` (semantic, keyword or hybrid) and :func:`search_vector`.

The HTTP handlers (``service.web.search``) parse a request, call one of these, and render the
page; benchmarks and tests call the same functions without Flask. They take what they need (a
session, a loaded space with its fresh delta, an encoder function) and return a :class:`Page`
of live items with scores and the signals that found them. Filters are checked on the hydrated
rows, and candidate sources are asked for more (4x at a time) until the page is full or the
source is exhausted, so a filtered page is never short while matches exist (the over-fetch
idea of implicit's FAISS wrapper). Hybrid search fuses the semantic and keyword lists by
reciprocal rank fusion.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, ContextManager, Mapping, Sequence

import numpy as np
from sqlalchemy.orm import Session

from service.search.keyword import MAX_KEYWORD_LIMIT, keyword_search
from service.store.items import Filters, load_items
from service.store.models import Item
from service.vectors.delta import Delta
from service.vectors.index_store import LoadedSpace
from service.vectors.nearest import Candidate, vector_candidates

MODES = ("semantic", "keyword", "hybrid")
# Times one stage of a request (the web layer passes its Prometheus timer); default: no timing.
Timer = Callable[[str], ContextManager]

# Reciprocal rank fusion constant (Cormack et al. 2009; Qdrant, Weaviate and Marqo use 60 too).
RRF_K = 60
# Largest candidate list one request may pull while filling a filtered page.
MAX_CANDIDATES = 20_000


def fuse_rrf(ranked: Mapping[str, Sequence[Candidate]], k0: int = RRF_K) -> list[Candidate]:
    """Reciprocal rank fusion: score = sum over lists of 1 / (k0 + rank); signals are merged."""
    scores: dict[int, float] = {}
    signals: dict[int, list[str]] = {}
    for name, cands in ranked.items():
        for rank, (item_id, _score, sigs) in enumerate(cands, start=1):
            scores[item_id] = scores.get(item_id, 0.0) + 1.0 / (k0 + rank)
            merged = signals.setdefault(item_id, [])
            for s in (name, *sigs):
                if s not in merged:
                    merged.append(s)
    order = sorted(scores, key=lambda i: (-scores[i], i))
    return [(i, scores[i], tuple(signals[i])) for i in order]


@dataclass
class Page:
    hits: list[tuple[Item, float, tuple[str, ...]]]
    has_more: bool


def fill_page(
    *,
    session: Session,
    fetch: Callable[[int], tuple[list[Candidate], bool]],
    k: int,
    offset: int,
    filters: Filters,
) -> Page:
    """Ask ``fetch(n)`` for growing candidate lists until ``offset + k + 1`` hits pass the filters.

    The extra hit tells whether another page exists.
    """
    need = offset + k + 1
    n = need * (4 if filters.active else 1)
    checked: dict[int, Item | None] = {}
    while True:
        cands, exhausted = fetch(min(n, MAX_CANDIDATES))
        new_ids = [c[0] for c in cands if c[0] not in checked]
        if new_ids:
            items = load_items(session=session, ids=new_ids)
            for i in new_ids:
                checked[i] = items.get(i)
        passing = [(checked[i], s, sig) for i, s, sig in cands if checked.get(i) is not None and filters.matches(checked[i])]
        if len(passing) >= need or exhausted or n >= MAX_CANDIDATES:
            return Page(passing[offset : offset + k], len(passing) > offset + k)
        n *= 4




def _untimed(_stage: str) -> ContextManager:
    return contextlib.nullcontext()


def search_text(*, session: Session, query: str, mode: str, k: int, offset: int, filters: Filters,
                space: LoadedSpace | None = None, delta: Delta | None = None,
                encode: Callable[[str], np.ndarray] | None = None, timer: Timer = _untimed) -> Page:
    """One page of results for a text query.

    Args:
        mode: ``semantic`` (the space's nearest items to ``encode(query)``), ``keyword`` (SQL
            full text) or ``hybrid`` (both, fused by reciprocal rank).
        space, delta, encode: the embedding space, its fresh delta and the query encoder (its
            text tower for CLIP); needed unless ``mode`` is ``keyword``.
        timer: context manager per stage (``encode``, ``search``, ``keyword``, ``page``).

    Raises:
        ValueError: an unknown mode, or a semantic mode without a space and an encoder.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    semantic = None
    if mode in ("semantic", "hybrid"):
        if space is None or encode is None:
            raise ValueError(f"{mode} search needs an embedding space and a query encoder")
        with timer("encode"):
            vector = encode(query)

        def semantic(n: int) -> tuple[list[Candidate], bool]:
            with timer("search"):
                return vector_candidates(space, delta, vector, n)

    def keyword(n: int) -> tuple[list[Candidate], bool]:
        with timer("keyword"):
            # Deep pages with filters can ask for more than keyword search serves; fewer than n
            # back then reads as exhausted, which it is.
            found = keyword_search(session=session, query=query, limit=min(n, MAX_KEYWORD_LIMIT),
                                   kinds=filters.kinds or None, category=filters.category)
        return [(i, s, ("keyword",)) for i, s in found], len(found) < n

    if mode == "semantic":
        fetch = semantic
    elif mode == "keyword":
        fetch = keyword
    else:
        def fetch(n: int) -> tuple[list[Candidate], bool]:
            sem, sem_done = semantic(n)
            kw, kw_done = keyword(n)
            return fuse_rrf({"semantic": sem, "keyword": kw}), sem_done and kw_done

    with timer("page"):
        return fill_page(session=session, fetch=fetch, k=k, offset=offset, filters=filters)


def search_vector(*, session: Session, space: LoadedSpace, delta: Delta | None, vector: np.ndarray, k: int,
                  offset: int, filters: Filters, timer: Timer = _untimed) -> Page:
    """One page of the items nearest to ``vector`` in ``space`` (image search, more like this)."""

    def fetch(n: int) -> tuple[list[Candidate], bool]:
        with timer("search"):
            return vector_candidates(space, delta, vector, n)

    with timer("page"):
        return fill_page(session=session, fetch=fetch, k=k, offset=offset, filters=filters)
