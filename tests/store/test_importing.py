"""Catalog and event import on both databases: upsert, idempotency, all-or-nothing, reports."""

import csv
import io
import json

import pytest
from PIL import Image
from sqlalchemy import func, select

from service.store.events import record_events
from service.store.images import ImageStore, key_of
from service.store.importing import ImportRejected, detect_format, import_events, import_items
from service.store.models import Event, Item, User
from service.store.records import parse_event
from service.settings import BUILTIN_EVENT_TYPES


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_csv(path, header, rows):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def catalog(n=5):
    return [
        {"id": f"p{i}", "kind": "product", "title": f"Item {i}", "text": f"Text {i}", "category": "c", "tags": ["t"]}
        for i in range(n)
    ]


def count(session_factory, model):
    with session_factory() as s:
        return s.scalar(select(func.count()).select_from(model))


def test_items_upsert_by_external_id_and_skip_unchanged(tmp_path, session_factory):
    rows = catalog()
    f = write_jsonl(tmp_path / "items.jsonl", rows)
    first = import_items(f, session_factory=session_factory, progress=False)
    assert (first.inserted, first.updated, first.unchanged, first.rejected) == (5, 0, 0, 0)
    with session_factory() as s:
        before = {i.external_id: i.updated_at for i in s.scalars(select(Item))}

    again = import_items(f, session_factory=session_factory, progress=False)
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 5)
    with session_factory() as s:
        assert {i.external_id: i.updated_at for i in s.scalars(select(Item))} == before

    rows[2]["title"] = "Item 2, renamed"
    rows.append({"id": "p0", "deleted": True})
    changed = import_items(write_jsonl(tmp_path / "items2.jsonl", rows), session_factory=session_factory, progress=False)
    assert (changed.inserted, changed.updated, changed.unchanged, changed.deleted) == (0, 1, 3, 1)
    with session_factory() as s:
        p2 = s.scalar(select(Item).where(Item.external_id == "p2"))
        assert p2.title == "Item 2, renamed" and p2.updated_at > before["p2"]
        assert s.scalar(select(Item).where(Item.external_id == "p0")).deleted_at is not None


def test_one_bad_row_writes_nothing_and_names_line_and_field(tmp_path, session_factory):
    rows = catalog()
    rows[3]["kind"] = "video"
    f = write_jsonl(tmp_path / "items.jsonl", rows)
    with pytest.raises(ImportRejected) as info:
        import_items(f, session_factory=session_factory, progress=False)
    err = info.value.summary.errors[0]
    assert (err.line, err.field) == (4, "kind") and "video" in err.reason
    assert "items.jsonl:4: kind" in str(info.value)
    assert count(session_factory, Item) == 0


def test_skip_bad_imports_good_rows_and_writes_a_report(tmp_path, session_factory):
    f = tmp_path / "items.jsonl"
    f.write_text(json.dumps(catalog(1)[0]) + "\n{not json\n" + json.dumps({"id": "x", "kind": "product"}) + "\n")
    report = tmp_path / "rejected.csv"
    s = import_items(f, session_factory=session_factory, skip_bad=True, report=report, progress=False)
    assert (s.inserted, s.rejected) == (1, 2)
    lines = list(csv.DictReader(open(report)))
    assert [(r["line"], r["field"]) for r in lines] == [("2", "(line)"), ("3", "title")]


def test_csv_items_with_relative_images_and_extra_columns(tmp_path, session_factory, settings):
    (tmp_path / "img").mkdir()
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(buf, format="PNG")
    (tmp_path / "img" / "a.png").write_bytes(buf.getvalue())
    f = write_csv(
        tmp_path / "items.csv",
        ["id", "kind", "title", "text", "image", "category", "tags", "price"],
        [["a", "image", "A", "", "img/a.png", "pics", "x|y", "3.5"],
         ["b", "article", "B", "Body, with a comma", "", "", "", ""]],
    )
    s = import_items(f, session_factory=session_factory, settings=settings, progress=False)
    assert s.inserted == 2
    with session_factory() as sess:
        a = sess.scalar(select(Item).where(Item.external_id == "a"))
        b = sess.scalar(select(Item).where(Item.external_id == "b"))
    # The image went into the store; the row holds its key (tests/store/test_images.py covers the rest).
    assert a.image_location == key_of(buf.getvalue()) and ImageStore.from_settings(settings).exists(a.image_location)
    assert a.tags == ["x", "y"] and a.attributes == {"price": 3.5}
    assert b.image_location is None and b.text == "Body, with a comma" and b.category is None


def events_rows(n, start=0, item="p1"):
    return [[f"e{i}", f"u{i % 3}", item, "view", "", f"2026-01-01T00:00:{i % 60:02d}Z"] for i in range(start, start + n)]


HEADER = ["event_id", "user_id", "item_id", "type", "value", "timestamp"]


def test_events_in_batches_with_duplicates_stored_once(tmp_path, session_factory):
    import_items(write_jsonl(tmp_path / "items.jsonl", catalog()), session_factory=session_factory, progress=False)
    rows = events_rows(25) + events_rows(5)  # the last five repeat e0..e4 inside the file
    f = write_csv(tmp_path / "events.csv", HEADER, rows)
    s = import_events(f, session_factory=session_factory, event_types=BUILTIN_EVENT_TYPES, batch_size=7, progress=False)
    assert (s.rows, s.inserted, s.duplicates, s.rejected) == (30, 25, 5, 0)
    again = import_events(f, session_factory=session_factory, event_types=BUILTIN_EVENT_TYPES, batch_size=7, progress=False)
    assert (again.inserted, again.duplicates) == (0, 30)
    assert count(session_factory, Event) == 25
    assert count(session_factory, User) == 3


def test_events_with_unknown_item_are_all_or_nothing(tmp_path, session_factory):
    import_items(write_jsonl(tmp_path / "items.jsonl", catalog()), session_factory=session_factory, progress=False)
    rows = events_rows(10) + events_rows(1, start=10, item="nope")
    f = write_csv(tmp_path / "events.csv", HEADER, rows)
    with pytest.raises(ImportRejected) as info:
        import_events(f, session_factory=session_factory, event_types=BUILTIN_EVENT_TYPES, progress=False)
    err = info.value.summary.errors[0]
    assert (err.line, err.field) == (12, "item_id")
    assert count(session_factory, Event) == 0 and count(session_factory, User) == 0

    s = import_events(f, session_factory=session_factory, event_types=BUILTIN_EVENT_TYPES, skip_bad=True, progress=False)
    assert (s.inserted, s.rejected) == (10, 1)


def test_record_events_reports_status_per_event(session_factory, tmp_path):
    import_items(write_jsonl(tmp_path / "items.jsonl", catalog(2)), session_factory=session_factory, progress=False)
    recs = [
        parse_event({"event_id": "a", "user_id": "u", "item_id": "p0", "type": "view", "timestamp": 1}, event_types=BUILTIN_EVENT_TYPES),
        parse_event({"event_id": "a", "user_id": "u", "item_id": "p0", "type": "view", "timestamp": 1}, event_types=BUILTIN_EVENT_TYPES),
        parse_event({"event_id": "b", "user_id": "u", "item_id": "zz", "type": "view", "timestamp": 1}, event_types=BUILTIN_EVENT_TYPES),
    ]
    with session_factory.begin() as s:
        result = record_events(session=s, records=recs)
    assert result.statuses == ["accepted", "duplicate", "rejected"]
    assert "zz" in result.rejected[2]


def test_events_for_deleted_items_are_rejected(tmp_path, session_factory):
    import_items(write_jsonl(tmp_path / "i.jsonl", catalog(2) + [{"id": "p1", "deleted": True}]),
                 session_factory=session_factory, progress=False)
    f = write_csv(tmp_path / "events.csv", HEADER, events_rows(1, item="p1"))
    with pytest.raises(ImportRejected):
        import_events(f, session_factory=session_factory, event_types=BUILTIN_EVENT_TYPES, progress=False)


@pytest.mark.parametrize("name, fmt", [("a.jsonl", "jsonl"), ("a.ndjson.gz", "jsonl"), ("A.CSV", "csv")])
def test_detect_format(tmp_path, name, fmt):
    assert detect_format(tmp_path / name) == fmt


def test_detect_format_refuses_unknown_names(tmp_path):
    with pytest.raises(ValueError, match="--format"):
        detect_format(tmp_path / "a.txt")
