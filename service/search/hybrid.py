"""Search: vector candidates (main index + fresh delta), keyword candidates, fusion, filters, pages.

The functions here take what they need (a loaded space, a delta, a session, a query vector) and
return item ids with scores and the signals that found them; request parsing and JSON live in
``service.web.openapi``. Filters are checked on the hydrated rows, and candidate sources are asked for
more (4x at a time) until the page is full or the source is exhausted, so a filtered page is
never short while matches exist (the over-fetch idea of implicit's FAISS wrapper).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from sqlalchemy.orm import Session

from service.store.items import Filters, load_items
from service.store.models import Item
from service.vectors.nearest import Candidate

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


