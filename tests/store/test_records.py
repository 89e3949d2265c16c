import datetime as dt

import pytest

from service.store.records import FieldError, ImageRef, derive_event_id, parse_event, parse_item, parse_timestamp
from service.settings import BUILTIN_EVENT_TYPES

TYPES = BUILTIN_EVENT_TYPES


def item(**kw):
    row = {"id": "p1", "kind": "product", "title": "Trail shoe", "text": "Grippy.", "category": "shoes"}
    row.update(kw)
    return row


def test_item_round_trip_and_hash_tracks_content():
    # Parsing never touches the filesystem: the image comes back as a reference to ingest.
    rec = parse_item(item(image="a.png", tags=["run", "trail", "run"], attributes={"price": 9.5}), allow_paths=True)
    assert rec.image == ImageRef("path", "a.png") and rec.image_location is None
    assert rec.tags == ("run", "trail")
    same = parse_item(item(image="a.png", tags=["run", "trail"], attributes={"price": 9.5}), allow_paths=True)
    assert same.content_hash == rec.content_hash
    assert parse_item(item(title="Trail shoe 2")).content_hash != rec.content_hash


@pytest.mark.parametrize(
    "row, field",
    [
        ({"kind": "product", "title": "x"}, "id"),
        (item(kind="video"), "kind"),
        (item(title=""), "title"),
        (item(title="x" * 501), "title"),
        (item(text=5), "text"),
        (item(image="a.png"), "image"),  # a file path, and paths are not allowed (the HTTP API)
        (item(image="/etc/passwd"), "image"),
        (item(image="ftp://host/a.png"), "image"),
        (item(image="file:///etc/passwd"), "image"),
        (item(image="http://user:pw@host/a.png"), "image"),
        (item(image="sha256:1234"), "image"),
        (item(kind="image"), "image"),
        (item(tags="[not json"), "tags"),
        (item(tags=[1, 2]), "tags"),
        (item(attributes="[1]"), "attributes"),
        (item(attributes={"x": float("nan")}), "attributes"),
        (item(colour="red"), "colour"),
        (item(deleted="perhaps"), "deleted"),
    ],
)
def test_bad_items_name_the_field(row, field):
    with pytest.raises(FieldError) as info:
        parse_item(row)
    assert info.value.field == field


def test_csv_conventions_tags_with_pipes_and_extra_columns_as_attributes():
    rec = parse_item(item(tags="a|b", price="12.50", stock="3", color="red"), extra_as_attributes=True)
    assert rec.tags == ("a", "b")
    assert rec.attributes == {"price": 12.5, "stock": 3, "color": "red"}


def test_image_references_are_classified_without_fetching():
    assert parse_item(item(image="https://example.com/x.jpg")).image == ImageRef("url", "https://example.com/x.jpg")
    key = "sha256:" + "ab" * 32
    assert parse_item(item(image=key)).image == ImageRef("key", key)


def test_tombstone_needs_only_the_id():
    assert parse_item({"id": "p1", "deleted": True}).deleted


def test_event_parsing_and_derived_ids_are_stable():
    raw = {"user_id": "u1", "item_id": "p1", "type": "view", "timestamp": "2026-01-02T03:04:05Z"}
    a, b = parse_event(raw, event_types=TYPES), parse_event(dict(raw), event_types=TYPES)
    assert a.client_event_id == b.client_event_id and a.client_event_id.startswith("derived:")
    assert a.occurred_at == dt.datetime(2026, 1, 2, 3, 4, 5)
    c = parse_event({**raw, "type": "click"}, event_types=TYPES)
    assert c.client_event_id != a.client_event_id
    assert parse_event({**raw, "event_id": "e-9"}, event_types=TYPES).client_event_id == "e-9"


@pytest.mark.parametrize(
    "row, field",
    [
        ({"item_id": "p1", "type": "view", "timestamp": 1}, "user_id"),
        ({"user_id": "u", "type": "view", "timestamp": 1}, "item_id"),
        ({"user_id": "u", "item_id": "p", "type": "like", "timestamp": 1}, "type"),
        ({"user_id": "u", "item_id": "p", "type": "rating", "timestamp": 1}, "value"),
        ({"user_id": "u", "item_id": "p", "type": "view", "value": "lots", "timestamp": 1}, "value"),
        ({"user_id": "u", "item_id": "p", "type": "view", "value": "inf", "timestamp": 1}, "value"),
        ({"user_id": "u", "item_id": "p", "type": "view"}, "timestamp"),
        ({"user_id": "u", "item_id": "p", "type": "view", "timestamp": "yesterday"}, "timestamp"),
        ({"user_id": "u", "item_id": "p", "type": "view", "timestamp": 1, "extra": 1}, "extra"),
    ],
)
def test_bad_events_name_the_field(row, field):
    with pytest.raises(FieldError) as info:
        parse_event(row, event_types=TYPES)
    assert info.value.field == field


def test_custom_event_types_are_accepted_when_configured():
    row = {"user_id": "u", "item_id": "p", "type": "share", "timestamp": 1}
    with pytest.raises(FieldError):
        parse_event(row, event_types=TYPES)
    assert parse_event(row, event_types=TYPES + ("share",)).type == "share"


@pytest.mark.parametrize(
    "value, expected",
    [
        ("2026-03-01T10:00:00+02:00", dt.datetime(2026, 3, 1, 8, 0)),
        ("2026-03-01T10:00:00", dt.datetime(2026, 3, 1, 10, 0)),
        (0, dt.datetime(1970, 1, 1)),
        ("1700000000.5", dt.datetime(2023, 11, 14, 22, 13, 20, 500000)),
    ],
)
def test_timestamps_normalise_to_naive_utc(value, expected):
    assert parse_timestamp(value) == expected


def test_derive_event_id_depends_on_every_field():
    t = dt.datetime(2026, 1, 1)
    base = derive_event_id("u", "i", "view", None, t)
    assert base != derive_event_id("u", "i", "view", 1.0, t)
    assert base != derive_event_id("u", "i", "view", None, t + dt.timedelta(seconds=1))


def test_an_event_may_carry_the_search_query_that_led_to_it():
    base = {"user_id": "u", "item_id": "i", "type": "click", "timestamp": "2026-01-01T00:00:00Z"}
    assert parse_event(base, event_types=BUILTIN_EVENT_TYPES).query is None
    assert parse_event({**base, "query": ""}, event_types=BUILTIN_EVENT_TYPES).query is None  # empty CSV cell
    assert parse_event({**base, "query": "red shoes"}, event_types=BUILTIN_EVENT_TYPES).query == "red shoes"
    assert parse_event({**base, "query": "é" * 512}, event_types=BUILTIN_EVENT_TYPES).query == "é" * 512
    for bad in ("x" * 513, "a\x00b", "\udc80"):
        with pytest.raises(FieldError) as err:
            parse_event({**base, "query": bad}, event_types=BUILTIN_EVENT_TYPES)
        assert err.value.field == "query"
