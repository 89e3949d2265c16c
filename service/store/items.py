"""Item data access. Functions take ``(*, session, ...)`` and never commit."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from service.store.images import is_key
from service.store.models import Item, utcnow
from service.store.records import ItemRecord

# Stay far below SQLite's and PostgreSQL's bound-parameter limits in IN (...) lists.
LOOKUP_CHUNK = 900


@dataclass
class UpsertCounts:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0

    def add(self, other: "UpsertCounts") -> None:
        self.inserted += other.inserted
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.deleted += other.deleted


def chunked(values: Sequence, size: int = LOOKUP_CHUNK) -> Iterable[Sequence]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def embedding_text(title: str | None, text: str | None) -> str:
    """What the text space embeds for an item (the rebuild, fresh writes and fine-tuning agree)."""
    return f"{title or ''}\n{text or ''}".strip()


def embedding_texts(session: Session, ids: Sequence[int]) -> dict[int, str]:
    """:func:`embedding_text` of each live or deleted item among ``ids`` that exists."""
    found: dict[int, str] = {}
    for chunk in chunked(ids):
        for pk, title, text in session.execute(select(Item.id, Item.title, Item.text).where(Item.id.in_(chunk))):
            found[pk] = embedding_text(title, text)
    return found


def upsert_items(*, session: Session, records: Sequence[ItemRecord], now: dt.datetime | None = None) -> UpsertCounts:
    """Insert new items, update changed ones, leave unchanged ones untouched; apply tombstones.

    A later record for the same external id in ``records`` wins.

    Raises:
        ValueError: a record whose image was not ingested yet (``record.image`` is set).
    """
    pending = next((r.external_id for r in records if r.image is not None and not r.deleted), None)
    if pending is not None:
        raise ValueError(f"item {pending!r}: its image was not put in the image store (ingest it first)")
    now = now or utcnow()
    latest = {r.external_id: r for r in records}
    existing: dict[str, tuple[int, str, dt.datetime | None]] = {}
    for chunk in chunked(list(latest)):
        rows = session.execute(
            select(Item.external_id, Item.id, Item.content_hash, Item.deleted_at).where(Item.external_id.in_(chunk))
        )
        existing.update({ext: (pk, h, deleted) for ext, pk, h, deleted in rows})

    counts = UpsertCounts()
    new_rows, changed_rows = [], []
    for ext, rec in latest.items():
        found = existing.get(ext)
        if rec.deleted:
            if found and found[2] is None:
                session.execute(update(Item).where(Item.id == found[0]).values(deleted_at=now, updated_at=now))
                counts.deleted += 1
            else:
                counts.unchanged += 1
            continue
        values = {
            "kind": rec.kind,
            "title": rec.title,
            "text": rec.text,
            "image_location": rec.image_location,
            "category": rec.category,
            "tags": list(rec.tags),
            "attributes": dict(rec.attributes),
            "content_hash": rec.content_hash,
            "updated_at": now,
            "deleted_at": None,
        }
        if found is None:
            new_rows.append({"external_id": ext, "created_at": now, **values})
        elif found[1] != rec.content_hash or found[2] is not None:
            changed_rows.append({"pk": found[0], **values})
        else:
            counts.unchanged += 1
    if new_rows:
        session.execute(insert(Item), new_rows)
        counts.inserted = len(new_rows)
    for row in changed_rows:
        pk = row.pop("pk")
        session.execute(update(Item).where(Item.id == pk).values(**row))
    counts.updated = len(changed_rows)
    return counts


def item_ids_by_external(*, session: Session, external_ids: Iterable[str], include_deleted: bool = False) -> dict[str, int]:
    """Map external ids to primary keys for the items that exist (and are not deleted)."""
    wanted = list(dict.fromkeys(external_ids))
    found: dict[str, int] = {}
    for chunk in chunked(wanted):
        stmt = select(Item.external_id, Item.id).where(Item.external_id.in_(chunk))
        if not include_deleted:
            stmt = stmt.where(Item.deleted_at.is_(None))
        found.update(dict(session.execute(stmt).all()))
    return found


def count_items(*, session: Session) -> dict[str, int]:
    """Live items per kind, plus ``deleted``."""
    rows = session.execute(select(Item.kind, func.count()).where(Item.deleted_at.is_(None)).group_by(Item.kind))
    counts = {kind: n for kind, n in rows}
    counts["deleted"] = session.scalar(select(func.count()).where(Item.deleted_at.is_not(None))) or 0
    return counts


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


def load_items(*, session: Session, ids: Iterable[int]) -> dict[int, Item]:
    """Live items by primary key (deleted ones are left out)."""
    wanted = list(dict.fromkeys(ids))
    found: dict[int, Item] = {}
    for chunk in chunked(wanted):
        for item in session.scalars(select(Item).where(Item.id.in_(chunk), Item.deleted_at.is_(None))):
            found[item.id] = item
    return found
