"""Bulk import of catalogs and events from JSON Lines or CSV files.

Both imports validate the whole file first. By default a file is all-or-nothing: one bad row
and nothing is written. With ``skip_bad`` the bad rows are left out and listed in a report.
Items are written in one transaction; events in batches (one transaction each) after the
validation pass, so a crash half way leaves whole batches, and re-running the import is safe
because events are idempotent by client event id.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import io
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from sqlalchemy.orm import Session, sessionmaker
from tqdm import tqdm

from service.store.db import session_scope
from service.store.events import record_events
from service.store.items import UpsertCounts, chunked, item_ids_by_external, upsert_items
from service.store.records import EventRecord, FieldError, ImageRef, ItemRecord, parse_event, parse_item
from service.settings import Settings

FORMATS = ("jsonl", "csv")


@dataclass(frozen=True)
class RowError:
    file: str
    line: int
    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.field}: {self.reason}"


@dataclass
class ImportSummary:
    file: str
    rows: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    duplicates: int = 0
    rejected: int = 0
    errors: list[RowError] = field(default_factory=list)
    report_path: str | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "errors"}
        out["errors"] = [e.__dict__ for e in self.errors[:20]]
        return out


class ImportRejected(Exception):
    """The file had bad rows and nothing was written (all-or-nothing mode)."""

    def __init__(self, summary: ImportSummary):
        self.summary = summary
        first = summary.errors[0] if summary.errors else None
        super().__init__(
            f"{summary.rejected} bad row(s) in {summary.file}; nothing was written"
            + (f" (first: {first})" if first else "")
        )


def detect_format(path: Path, fmt: str | None = None) -> str:
    """``jsonl`` or ``csv`` from the explicit choice or the file name (``.gz`` allowed)."""
    if fmt:
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
        return fmt
    name = path.name.lower().removesuffix(".gz")
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if name.endswith(".csv"):
        return "csv"
    raise ValueError(f"cannot tell the format of {path.name}: name it .jsonl or .csv, or pass --format")


def _open_text(path: Path) -> io.TextIOBase:
    if path.name.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def iter_raw_rows(path: Path, fmt: str) -> Iterator[tuple[int, dict[str, Any] | FieldError]]:
    """Yield (line number, row dict or a FieldError for an unreadable line)."""
    with _open_text(path) as fh:
        if fmt == "jsonl":
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    yield lineno, FieldError("(line)", f"invalid JSON: {exc.msg} at column {exc.colno}")
                    continue
                if not isinstance(row, dict):
                    yield lineno, FieldError("(line)", "each line must be a JSON object")
                    continue
                yield lineno, row
        else:
            reader = csv.DictReader(fh)
            if not reader.fieldnames:
                return
            start = reader.line_num + 1
            for row in reader:
                if None in row:
                    yield start, FieldError("(line)", f"more values than the {len(reader.fieldnames)} header columns")
                elif any(v is None for v in row.values()):
                    yield start, FieldError("(line)", "fewer values than header columns")
                else:
                    yield start, row
                start = reader.line_num + 1


def _validated(
    path: Path, fmt: str, parse: Callable[[dict[str, Any]], Any]
) -> Iterator[tuple[int, Any | RowError]]:
    for lineno, raw in iter_raw_rows(path, fmt):
        if isinstance(raw, FieldError):
            yield lineno, RowError(str(path), lineno, raw.field, raw.reason)
            continue
        try:
            yield lineno, parse(raw)
        except FieldError as exc:
            yield lineno, RowError(str(path), lineno, exc.field, exc.reason)


def _validate_all(path: Path, fmt: str, parse: Callable[[dict[str, Any]], Any], summary: ImportSummary, what: str,
                  progress: bool) -> list[tuple[int, Any]]:
    """Parse every row: good ones returned as (line, record), bad ones added to ``summary.errors``."""
    good: list[tuple[int, Any]] = []
    for lineno, rec in tqdm(_validated(path, fmt, parse), desc=f"validate {what}", unit=" rows", disable=not progress):
        summary.rows += 1
        if isinstance(rec, RowError):
            summary.errors.append(rec)
        else:
            good.append((lineno, rec))
    return good


def write_report(errors: list[RowError], path: Path) -> None:
    """Write rejected rows as CSV: file, line, field, reason."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "line", "field", "reason"])
        for e in errors:
            writer.writerow([e.file, e.line, e.field, e.reason])


def _finish_validation(summary: ImportSummary, skip_bad: bool, report: Path | None) -> None:
    summary.rejected = len(summary.errors)
    if summary.errors and report is not None:
        write_report(summary.errors, report)
        summary.report_path = str(report)
    if summary.errors and not skip_bad:
        raise ImportRejected(summary)


def import_items(
    path: Path,
    *,
    session_factory: sessionmaker[Session],
    settings: Settings | None = None,
    import_root: Path | None = None,
    fmt: str | None = None,
    skip_bad: bool = False,
    report: Path | None = None,
    progress: bool = True,
) -> ImportSummary:
    """Upsert a catalog file by external id in one transaction, its images put in the image store.

    Image paths are relative to the file and must lie inside ``import_root`` (default: the
    setting, else the file's folder); URLs are fetched through the guard. An image that cannot
    be stored is a bad row like any other.

    Args:
        settings: the image store, fetch guard and import root; needed when rows have images.

    Raises:
        ImportRejected: bad rows and ``skip_bad`` is False (nothing written).
        ValueError: rows have images but no ``settings`` were given.
    """
    import time

    started = time.perf_counter()
    path = Path(path)
    fmt = detect_format(path, fmt)

    def parse(raw: dict[str, Any]) -> ItemRecord:
        return parse_item(raw, allow_paths=True, extra_as_attributes=(fmt == "csv"))

    summary = ImportSummary(file=str(path))
    parsed: list[tuple[int, ItemRecord]] = _validate_all(path, fmt, parse, summary, "items", progress)
    if any(rec.image is not None for _, rec in parsed):
        if settings is None:
            raise ValueError("import_items: the catalog has images; pass settings (the image store)")
        base_dir = Path(os.path.realpath(path)).parent
        root = Path(import_root or settings.import_root or base_dir)
        parsed = _ingest_images(parsed, summary, settings=settings, base_dir=base_dir, root=root, progress=progress)
        summary.errors.sort(key=lambda e: e.line)
    records = [rec for _, rec in parsed]
    _finish_validation(summary, skip_bad, report)

    counts = UpsertCounts()
    with session_scope(session_factory) as session:
        for chunk in tqdm(list(chunked(records, 1000)), desc="write items", unit=" batches", disable=not progress):
            counts.add(upsert_items(session=session, records=chunk))
    summary.inserted, summary.updated = counts.inserted, counts.updated
    summary.unchanged, summary.deleted = counts.unchanged, counts.deleted
    summary.seconds = time.perf_counter() - started
    return summary


def _ingest_images(
    parsed: list[tuple[int, ItemRecord]], summary: ImportSummary, *, settings: Settings, base_dir: Path, root: Path,
    progress: bool,
) -> list[tuple[int, ItemRecord]]:
    """Put every row's image in the store (``image_workers`` at a time); failures become row errors."""
    from service.store.image_sources import INGEST_ERRORS, ImageSources

    sources = ImageSources.from_settings(settings)
    refs = list(dict.fromkeys(rec.image for _, rec in parsed if rec.image is not None))

    def ingest(ref: ImageRef) -> str | Exception:
        try:
            return sources.ingest(ref, base_dir=base_dir, root=root)
        except INGEST_ERRORS as exc:
            return exc

    with ThreadPoolExecutor(max_workers=settings.image_workers, thread_name_prefix="import-image") as pool:
        outcomes = dict(zip(refs, tqdm(pool.map(ingest, refs), total=len(refs), desc="store images",
                                       unit=" images", disable=not progress)))
    kept: list[tuple[int, ItemRecord]] = []
    for lineno, rec in parsed:
        outcome = outcomes.get(rec.image) if rec.image is not None else None
        if isinstance(outcome, Exception):
            summary.errors.append(RowError(str(summary.file), lineno, "image", outcome.reason))  # type: ignore[attr-defined]
        elif outcome is not None:
            kept.append((lineno, dataclasses.replace(rec, image_location=outcome, image=None)))
        else:
            kept.append((lineno, rec))
    return kept


def import_events(
    path: Path,
    *,
    session_factory: sessionmaker[Session],
    event_types: tuple[str, ...],
    fmt: str | None = None,
    skip_bad: bool = False,
    report: Path | None = None,
    batch_size: int = 5000,
    progress: bool = True,
    event_limits: dict[str, float] | None = None,
) -> ImportSummary:
    """Import an event log: validate everything (fields and item references), then write batches.

    ``event_limits`` (``value_limit``, ``max_future_skew_seconds``) override the documented
    bounds of :func:`service.store.records.parse_event`.

    Raises:
        ImportRejected: bad rows and ``skip_bad`` is False (nothing written).
    """
    import time

    started = time.perf_counter()
    path = Path(path)
    fmt = detect_format(path, fmt)

    def parse(raw: dict[str, Any]) -> EventRecord:
        return parse_event(raw, event_types=event_types, **(event_limits or {}))

    summary = ImportSummary(file=str(path))
    records: list[tuple[int, EventRecord]] = _validate_all(path, fmt, parse, summary, "events", progress)

    # Item references are checked before anything is written, so all-or-nothing holds for them too.
    with session_scope(session_factory) as session:
        known = item_ids_by_external(session=session, external_ids={r.item_external_id for _, r in records})
    good: list[EventRecord] = []
    for lineno, rec in records:
        if rec.item_external_id in known:
            good.append(rec)
        else:
            summary.errors.append(RowError(str(path), lineno, "item_id", f"unknown item {rec.item_external_id!r}"))
    summary.errors.sort(key=lambda e: e.line)
    _finish_validation(summary, skip_bad, report)

    bar = tqdm(total=len(good), desc="write events", unit=" events", disable=not progress)
    for batch in chunked(good, batch_size):
        with session_scope(session_factory) as session:
            result = record_events(session=session, records=batch)
        summary.inserted += result.inserted
        summary.duplicates += result.duplicates
        # An item deleted between validation and write: count it rather than fail the batch.
        summary.rejected += len(result.rejected)
        bar.update(len(batch))
    bar.close()
    summary.seconds = time.perf_counter() - started
    return summary
