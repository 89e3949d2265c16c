"""Typeahead suggestions over item titles, answered from memory.

:class:`Suggester` keeps a sorted array of word starts in normalised titles (bisect finds the
prefix range) over a min-segment-tree of ranks (the best matches of a range come out in
O(limit * log n), however many titles share the prefix).
"""

from __future__ import annotations

import math
import threading
import unicodedata
from array import array
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from heapq import heapify, heappop, heappush
from typing import Any, Iterable, Mapping, Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.search.keyword import WORD
from service.store.models import ITEM_KINDS, Item

MAX_SUGGEST_LIMIT = 50
# Each entry packs (item index << OFFSET_BITS) | character offset of a word start.
OFFSET_BITS = 10
_OFFSET_MASK = (1 << OFFSET_BITS) - 1
_NO_SCORE = 2**31 - 1
# Ranges this small are ranked by sorting them; the tree walk pays off above it.
_SMALL_RANGE = 48


def normalize_text(value: str) -> str:
    """Case- and accent-folded words of ``value`` joined by single spaces."""
    if not value.isascii():
        value = "".join(ch for ch in unicodedata.normalize("NFKD", value) if not unicodedata.combining(ch))
    return " ".join(WORD.findall(value.casefold()))


def normalize_prefix(prefix: str) -> str:
    """The typed prefix in title-key form; a trailing separator is kept as one space.

    "trail " then matches the word "trail" but not "trailblaze".
    """
    if not isinstance(prefix, str):
        raise TypeError(f"prefix must be a string, got {type(prefix).__name__}")
    words = normalize_text(prefix)
    if words and not WORD.fullmatch(prefix[-1]) and not unicodedata.combining(prefix[-1]):
        words += " "
    return words


@dataclass(frozen=True)
class _KindIndex:
    """One kind's word starts, sorted by the text that follows them, and a rank tree."""

    entries: array  # 'q': packed (item index, offset), sorted by title suffix
    tree: array  # 'i': min-segment-tree over entry scores; leaves at [n, 2n)
    n: int


@dataclass(frozen=True)
class _Snapshot:
    """An immutable build; refresh swaps in a new one so readers never lock."""

    keys: list[str]  # normalised title + " " per item, items in rank order
    external_ids: list[str]
    titles: list[str]
    kinds: bytes  # index into ITEM_KINDS per item
    categories: list[str | None]
    by_kind: dict[str, _KindIndex]
    category_keys: list[tuple[str, int, int]]  # (suffix at a word start, 1 if not the start, category index)
    category_names: list[str]
    category_counts: list[dict[str, int]]
    stamp: tuple | None


def _build_tree(scores: "Any") -> array:
    import numpy as np

    n = len(scores)
    tree = np.full(2 * n, _NO_SCORE, dtype=np.int32)
    tree[n:] = scores
    hi = n
    # Nodes [lo, hi) depend only on nodes >= hi when lo = ceil(hi / 2): fill level by level.
    while hi > 1:
        lo = (hi + 1) // 2
        tree[lo:hi] = np.minimum(tree[2 * lo : 2 * hi : 2], tree[2 * lo + 1 : 2 * hi : 2])
        hi = lo
    out = array("i")
    out.frombytes(tree.tobytes())
    return out


def _build(rows: Iterable[Sequence[Any]], popularity: Mapping[int, float], stamp: tuple | None) -> _Snapshot:
    import numpy as np

    kind_code = {k: i for i, k in enumerate(ITEM_KINDS)}
    items = []
    for item_id, external_id, title, kind, category in rows:
        if kind not in kind_code:
            raise ValueError(f"item {external_id!r} has unknown kind {kind!r}")
        key = normalize_text(title or "")
        if key:
            score = float(popularity.get(item_id, 0.0))
            if not math.isfinite(score):
                raise ValueError(f"popularity of item {item_id!r} must be finite, got {score!r}")
            items.append((-score, len(key), key, item_id, external_id, title, kind, category))
    # Rank order, so an item's index doubles as its rank: more popular, then shorter titles.
    items.sort(key=lambda r: r[:4])
    n_items = len(items)
    if n_items >= 2**30:
        raise ValueError(f"too many items for the suggester: {n_items}")
    interned: dict[str, str] = {}
    keys = [r[2] + " " for r in items]
    external_ids = [r[4] for r in items]
    titles = [r[5] for r in items]
    kinds = bytes(kind_code[r[6]] for r in items)
    categories = [None if r[7] is None else interned.setdefault(r[7], r[7]) for r in items]
    del items

    per_kind: dict[str, list[int]] = {k: [] for k in ITEM_KINDS}
    for idx, key in enumerate(keys):
        packed = per_kind[ITEM_KINDS[kinds[idx]]]
        base = idx << OFFSET_BITS
        packed.append(base)
        offset = key.find(" ")
        while 0 <= offset < len(key) - 1 and offset + 1 <= _OFFSET_MASK:
            packed.append(base | (offset + 1))
            offset = key.find(" ", offset + 1)

    by_kind: dict[str, _KindIndex] = {}
    for kind, packed in per_kind.items():
        if not packed:
            continue
        packed.sort(key=lambda e: keys[e >> OFFSET_BITS][e & _OFFSET_MASK :])
        entries = array("q", packed)
        del packed[:]
        arr = np.frombuffer(entries, dtype=np.int64)
        # Title-start matches (offset 0) rank before word matches, then by item rank.
        scores = np.where((arr & _OFFSET_MASK) == 0, 0, n_items) + (arr >> OFFSET_BITS)
        by_kind[kind] = _KindIndex(entries=entries, tree=_build_tree(scores.astype(np.int32)), n=len(entries))

    counts: dict[str, dict[str, int]] = {}
    for idx, category in enumerate(categories):
        if category is not None:
            per = counts.setdefault(category, {})
            per[ITEM_KINDS[kinds[idx]]] = per.get(ITEM_KINDS[kinds[idx]], 0) + 1
    category_names = sorted(counts)
    category_keys = []
    for ci, name in enumerate(category_names):
        words = normalize_text(name).split()
        for w in range(len(words)):
            category_keys.append((" ".join(words[w:]) + " ", int(w > 0), ci))
    category_keys.sort()
    return _Snapshot(
        keys=keys,
        external_ids=external_ids,
        titles=titles,
        kinds=kinds,
        categories=categories,
        by_kind=by_kind,
        category_keys=category_keys,
        category_names=category_names,
        category_counts=[counts[name] for name in category_names],
        stamp=stamp,
    )


def catalog_stamp(*, session: Session) -> tuple:
    """(row count, newest updated_at, highest id) over all items, soft-deleted ones included.

    Every write the importer makes moves updated_at (soft deletes too) and hard deletes move
    the count, so an unchanged stamp means an unchanged catalog.
    """
    row = session.execute(select(func.count(), func.max(Item.updated_at), func.max(Item.id)).select_from(Item)).one()
    return tuple(row)


def _check_limit(limit: int) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_SUGGEST_LIMIT:
        raise ValueError(f"limit must be an integer from 1 to {MAX_SUGGEST_LIMIT}, got {limit!r}")


def _check_kind(kind: str | None) -> None:
    if kind is not None and kind not in ITEM_KINDS:
        raise ValueError(f"unknown kind {kind!r}; use one of {', '.join(ITEM_KINDS)}")


class Suggester:
    """Typeahead over live item titles, answered from memory.

    A title matches when the prefix starts the title or any word in it, ignoring case and
    accents. Title-start matches come first, then word matches; within each, more popular
    items (when a popularity mapping is given), then shorter titles.

    Readers never lock: :meth:`refresh` builds a complete new structure and then swaps one
    reference, so a concurrent :meth:`suggest` sees either the old or the new catalog.
    """

    def __init__(self) -> None:
        self._snapshot = _build((), {}, None)
        self._popularity: Mapping[int, float] = {}
        self._refresh_lock = threading.Lock()

    @classmethod
    def load(cls, session: Session, popularity: Mapping[int, float] | None = None) -> "Suggester":
        """A suggester over the live items in the database."""
        suggester = cls()
        suggester.refresh(session, popularity=popularity)
        return suggester

    @classmethod
    def from_rows(
        cls, rows: Iterable[Sequence[Any]], popularity: Mapping[int, float] | None = None
    ) -> "Suggester":
        """A suggester over (id, external_id, title, kind, category) rows, without a database."""
        suggester = cls()
        suggester._popularity = dict(popularity or {})
        suggester._snapshot = _build(rows, suggester._popularity, None)
        return suggester

    def refresh(self, session: Session, popularity: Mapping[int, float] | None = None) -> int:
        """Rebuild from the live items and swap it in; returns the number of titles.

        ``popularity`` (item id -> score, higher first) replaces the current mapping; None keeps
        it, so a refresh triggered by :meth:`needs_refresh` does not forget popularity.
        """
        with self._refresh_lock:
            if popularity is not None:
                self._popularity = dict(popularity)
            # The stamp is read first: a change landing during the read makes the next
            # needs_refresh() true rather than being missed.
            stamp = catalog_stamp(session=session)
            rows = session.execute(
                select(Item.id, Item.external_id, Item.title, Item.kind, Item.category).where(Item.deleted_at.is_(None))
            )
            self._snapshot = _build(rows, self._popularity, stamp)
            return len(self._snapshot.keys)

    def needs_refresh(self, session: Session) -> bool:
        """Whether the catalog changed since the last refresh.

        One aggregate query; the count scans an index (about 9 ms at 100k items on SQLite), so
        call it on a timer or after writes, not on every keystroke.
        """
        snapshot = self._snapshot
        return snapshot.stamp is None or snapshot.stamp != catalog_stamp(session=session)

    def __len__(self) -> int:
        return len(self._snapshot.keys)

    def suggest(self, prefix: str, limit: int = 8, kind: str | None = None) -> list[dict[str, Any]]:
        """Up to ``limit`` items whose title or a word of it starts with ``prefix``, best first.

        Each result is {"id": external id, "title", "kind", "category"}.

        Raises:
            ValueError: limit outside 1..MAX_SUGGEST_LIMIT or an unknown kind.
        """
        _check_limit(limit)
        _check_kind(kind)
        key = normalize_prefix(prefix)
        if not key:
            return []
        snapshot = self._snapshot  # one read: the rest of the call uses this build only
        n_items = len(snapshot.keys)
        found: list[int] = []  # scores
        for name in (kind,) if kind is not None else ITEM_KINDS:
            index = snapshot.by_kind.get(name)
            if index is not None:
                found.extend(_best_scores(index, snapshot.keys, key, limit, n_items))
        found.sort()
        del found[limit:]
        results = []
        for score in found:
            idx = score % n_items
            results.append(
                {
                    "id": snapshot.external_ids[idx],
                    "title": snapshot.titles[idx],
                    "kind": ITEM_KINDS[snapshot.kinds[idx]],
                    "category": snapshot.categories[idx],
                }
            )
        return results

    def suggest_categories(self, prefix: str, limit: int = 5, kind: str | None = None) -> list[dict[str, Any]]:
        """Categories whose name or a word of it starts with ``prefix``, with live item counts.

        Name-start matches first, then by count. Each result is {"category", "count"}.
        """
        _check_limit(limit)
        _check_kind(kind)
        key = normalize_prefix(prefix)
        if not key:
            return []
        snapshot = self._snapshot
        keys = snapshot.category_keys
        lo = bisect_left(keys, (key,))
        best: dict[int, tuple] = {}
        for i in range(lo, len(keys)):
            suffix, word_match, ci = keys[i]
            if not suffix.startswith(key):
                break
            per_kind = snapshot.category_counts[ci]
            count = per_kind.get(kind, 0) if kind is not None else sum(per_kind.values())
            if count:
                rank = (word_match, -count, snapshot.category_names[ci])
                if ci not in best or rank < best[ci]:
                    best[ci] = rank
        ranked = sorted(best.items(), key=lambda kv: kv[1])[:limit]
        return [{"category": snapshot.category_names[ci], "count": -rank[1]} for ci, rank in ranked]


def _best_scores(index: _KindIndex, keys: list[str], prefix: str, limit: int, n_items: int) -> list[int]:
    """Scores of the best ``limit`` distinct items among entries that start with ``prefix``."""
    width = len(prefix)

    def entry_key(e: int) -> str:
        offset = e & _OFFSET_MASK
        return keys[e >> OFFSET_BITS][offset : offset + width]

    entries, tree, n = index.entries, index.tree, index.n
    lo = bisect_left(entries, prefix, key=entry_key)
    hi = bisect_right(entries, prefix, lo=lo, key=entry_key)
    if lo >= hi:
        return []
    seen: set[int] = set()
    out: list[int] = []
    if hi - lo <= _SMALL_RANGE:
        for score in sorted(tree[n + lo : n + hi]):
            idx = score % n_items
            if idx not in seen:
                seen.add(idx)
                out.append(score)
                if len(out) == limit:
                    break
        return out
    # Cover [lo, hi) with whole subtrees, then expand the cheapest node first: leaves come
    # out in score order and only O(limit * log n) nodes are touched.
    heap = []
    left, right = lo + n, hi + n
    while left < right:
        if left & 1:
            heap.append((tree[left], left))
            left += 1
        if right & 1:
            right -= 1
            heap.append((tree[right], right))
        left >>= 1
        right >>= 1
    heapify(heap)
    while heap:
        score, node = heappop(heap)
        if node >= n:
            idx = score % n_items
            if idx not in seen:
                seen.add(idx)
                out.append(score)
                if len(out) == limit:
                    break
        else:
            child = 2 * node
            heappush(heap, (tree[child], child))
            heappush(heap, (tree[child + 1], child + 1))
    return out
