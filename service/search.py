"""Search: vector candidates (main index + fresh delta), keyword candidates, fusion, filters, pages.

The functions here take what they need (a loaded space, a delta, a session, a query vector) and
return item ids with scores and the signals that found them; request parsing and JSON live in
``service.api``. Filters are checked on the hydrated rows, and candidate sources are asked for
more (4x at a time) until the page is full or the source is exhausted, so a filtered page is
never short while matches exist (the over-fetch idea of implicit's FAISS wrapper).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence
from urllib.parse import quote

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.delta import Delta
from service.images import is_key
from service.index_store import LoadedSpace
from service.items import chunked
from service.models import Item

# Reciprocal rank fusion constant (Cormack et al. 2009; Qdrant, Weaviate and Marqo use 60 too).
RRF_K = 60
# Largest candidate list one request may pull while filling a filtered page.
MAX_CANDIDATES = 20_000

Candidate = tuple[int, float, tuple[str, ...]]  # item id, score, signals


@dataclass(frozen=True)
class Filters:
    """Conditions a hit must meet; empty means no filter."""

    kinds: tuple[str, ...] = ()
    category: str | None = None
    tags: tuple[str, ...] = ()
    ranges: Mapping[str, tuple[float | None, float | None]] = field(default_factory=dict)
    exclude: frozenset[int] = frozenset()
    # Image search (the CLIP space): keyword hits without an image do not belong in the results.
    require_image: bool = False

    @property
    def active(self) -> bool:
        return bool(self.kinds or self.category or self.tags or self.ranges or self.exclude or self.require_image)

    def matches(self, item: Item) -> bool:
        if item.id in self.exclude:
            return False
        if self.require_image and not is_key(item.image_location):
            return False
        if self.kinds and item.kind not in self.kinds:
            return False
        if self.category and item.category != self.category:
            return False
        if self.tags and not set(self.tags) <= set(item.tags or ()):
            return False
        for name, (low, high) in self.ranges.items():
            value = (item.attributes or {}).get(name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                return False
            if (low is not None and value < low) or (high is not None and value > high):
                return False
        return True


def vector_candidates(space: LoadedSpace, delta: Delta | None, query: np.ndarray, n: int) -> tuple[list[Candidate], bool]:
    """The ``n`` nearest items from the main index and the fresh delta, best first.

    Items replaced or deleted since the build are taken from the delta (or dropped), never from
    the stale main index. Returns (candidates, exhausted).
    """
    from service.vector_index import search

    query = np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32)
    shadowed = delta.shadowed if delta is not None else set()
    out: list[Candidate] = []
    main_n = min(n + len(shadowed), space.count)
    if main_n > 0:
        scores, rows = search(space.index, query, main_n, space.params)
        rows, scores = rows[0], scores[0]
        keep = rows >= 0
        ids = space.ids[rows[keep]]
        for item_id, score in zip(ids.tolist(), scores[keep].tolist()):
            if item_id not in shadowed:
                out.append((item_id, float(score), ("semantic",)))
    if delta is not None:
        d_scores, d_ids = delta.search(query, n)
        out.extend((int(i), float(s), ("semantic", "fresh")) for i, s in zip(d_ids, d_scores))
        out.sort(key=lambda c: -c[1])
    available = space.count + (len(delta.vectors) if delta is not None else 0)
    return out[:n], n >= available


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


def load_items(*, session: Session, ids: Iterable[int]) -> dict[int, Item]:
    """Live items by primary key (deleted ones are left out)."""
    wanted = list(dict.fromkeys(ids))
    found: dict[int, Item] = {}
    for chunk in chunked(wanted):
        for item in session.scalars(select(Item).where(Item.id.in_(chunk), Item.deleted_at.is_(None))):
            found[item.id] = item
    return found


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


def item_json(item: Item, *, score: float | None = None, signals: Sequence[str] = (), text_chars: int = 300) -> dict[str, Any]:
    """The public view of an item (no server file paths, no outside URLs: images come from the store).

    Legacy image locations (not store keys) count as no image.
    """
    image = f"/items/{quote(item.external_id, safe='')}/image" if is_key(item.image_location) else None
    out: dict[str, Any] = {
        "id": item.external_id,
        "kind": item.kind,
        "title": item.title,
        "text": item.text if len(item.text) <= text_chars else item.text[: text_chars - 1] + "…",
        "category": item.category,
        "tags": list(item.tags or []),
        "attributes": dict(item.attributes or {}),
        "image_url": image,
    }
    if score is not None:
        out["score"] = round(float(score), 6)
        out["signals"] = list(signals)
    return out
