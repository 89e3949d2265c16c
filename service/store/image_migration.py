"""``recsys images migrate``: move legacy image locations (paths and URLs stored before the image
store existed) into the store, or clear them.

Such values are never read or served by the service. Here a file path inside the import root is
copied into the store, a URL is fetched through the guard, and anything else (or anything that
fails) is cleared, with one report line per item.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.store.image_sources import INGEST_ERRORS, ImageSources, ImageSourceError
from service.store.images import is_key
from service.store.items import chunked
from service.store.models import Item, utcnow
from service.store.records import ItemRecord


@dataclass
class MigrationReport:
    legacy: int = 0
    stored: int = 0
    cleared: int = 0
    lines: list[str] = field(default_factory=list)


def _convert(sources: ImageSources, value: str, root: Path) -> str:
    """The store key for one legacy value (raises an ingestion error when it cannot be used)."""
    if value.lower().startswith(("http://", "https://")):
        return sources.from_url(value)
    if "://" in value or value.lower().startswith("data:"):
        raise ImageSourceError("neither a file path nor an http(s) URL")
    return sources.from_path(value, base_dir=root, root=root)


def migrate_legacy_images(*, session: Session, sources: ImageSources, import_root: Path, workers: int = 4) -> MigrationReport:
    """Convert or clear every legacy ``image_location`` (in the caller's transaction).

    A changed location changes the item's content hash, so the next build re-embeds it.
    """
    report = MigrationReport()
    rows = [(pk, ext, loc) for pk, ext, loc in session.execute(
        select(Item.id, Item.external_id, Item.image_location).where(Item.image_location.is_not(None)).order_by(Item.id)
    ) if not is_key(loc)]
    report.legacy = len(rows)
    values = list(dict.fromkeys(loc for _, _, loc in rows))

    def convert(value: str) -> str | Exception:
        try:
            return _convert(sources, value, import_root)
        except INGEST_ERRORS as exc:
            return exc

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="image-migrate") as pool:
        outcomes = dict(zip(values, pool.map(convert, values)))
    now = utcnow()
    by_pk = {pk: (ext, outcomes[loc]) for pk, ext, loc in rows}
    for chunk in chunked(list(by_pk)):
        for item in list(session.scalars(select(Item).where(Item.id.in_(chunk)))):
            ext, outcome = by_pk[item.id]
            if isinstance(outcome, Exception):
                key = None
                report.cleared += 1
                report.lines.append(f"{ext}: cleared ({getattr(outcome, 'reason', 'unusable')})")
            else:
                key = outcome
                report.stored += 1
                report.lines.append(f"{ext}: stored as {key}")
            record = ItemRecord(external_id=item.external_id, kind=item.kind, title=item.title, text=item.text,
                                image_location=key, category=item.category, tags=tuple(item.tags or ()),
                                attributes=dict(item.attributes or {}))
            item.image_location, item.content_hash, item.updated_at = key, record.content_hash, now
    return report
