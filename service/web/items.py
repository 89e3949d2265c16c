"""Item and event writes. An item written here is embedded at once and searchable before the next
rebuild (the fresh delta); a deleted item never comes back in results."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import logging
from typing import Any

from flask import request, send_file
from flask.views import MethodView
from flask_smorest import Blueprint
from sqlalchemy import select

from service.web.security import require_read, require_write
from service.web.schemas import EventIn, EventsOut, ItemIn, ItemOut, ItemWriteOut
from service.web.search import load_form
from service.web.runtime import Runtime, db_session, runtime
from service.web.boundary import parse_json_body
from service.vectors.delta import touch_signal, write_fresh
from service.vectors.encoders import EncoderUnavailable
from service.web.errors import APIError, invalid
from service.store.events import record_events
from service.store.image_sources import INGEST_ERRORS, too_large
from service.store.images import is_key, key_of
from service.store.items import embedding_text, upsert_items
from service.store.models import Item, utcnow
from service.store.records import FieldError, ItemRecord, parse_event, parse_item
from service.web.schemas import item_json

log = logging.getLogger("recsys.service")
blp = Blueprint("items", __name__, description="Catalog items and behaviour events")

MAX_EVENTS_PER_REQUEST = 1000
LEGACY_IMAGE = "legacy image location (not in the image store): run `recsys images migrate`"

# PUT /items/{id}: JSON, or multipart with the item as JSON in ``item`` and the picture in ``image``.
ITEM_REQUEST_BODY = {"content": {
    "application/json": {"schema": ItemIn},
    "multipart/form-data": {"schema": {"type": "object", "properties": {
        "item": {"type": "string", "description": "the item as a JSON object (the ItemIn fields, without image fields)"},
        "image": {"type": "string", "format": "binary", "description": "JPEG, PNG, WebP, GIF or BMP"},
    }, "required": ["item"]}},
}}


def _live_item(external_id: str) -> Item:
    item = db_session().scalar(select(Item).where(Item.external_id == external_id, Item.deleted_at.is_(None)))
    if item is None:
        raise APIError(404, f"no item {external_id!r}")
    return item


def embed_fresh(rt: Runtime, item: Item) -> tuple[dict[str, bool], dict[str, str]]:
    """Embed a written item into every served space's delta (in the caller's transaction)."""
    version = rt.store.current
    searchable: dict[str, bool] = {}
    errors: dict[str, str] = {}
    if version is None:
        return searchable, {"index": "no index published yet: the first build will include this item"}
    session = db_session()
    if "text" in version.spaces:
        revision = version.spaces["text"].encoder["revision"]
        try:
            encoder = rt.text_encoder(version)
        except EncoderUnavailable as exc:
            encoder, errors["text"] = None, f"text encoder unavailable ({exc}): the next rebuild includes this item"
        if encoder is not None and encoder.revision != revision:
            # Possible when queries are served by the version's ONNX export: its torch encoder
            # was not needed to serve it. A vector from other weights would not match the index.
            errors["text"] = (f"this service's text encoder ({encoder.name}) is not the one index version "
                              f"{version.name} was built with: the next rebuild includes this item")
            encoder = None
        if encoder is not None:
            with rt.metrics.stage("encode"):
                vector = encoder.encode([embedding_text(item.title, item.text)])[0]
            write_fresh(session=session, item_id=item.id, space="text", encoder_revision=revision, vector=vector)
        searchable["text"] = encoder is not None
    if "clip" in version.spaces and not rt.clip_error:
        revision = version.spaces["clip"].encoder["revision"]
        vector = None
        data = _stored_image(rt, item, errors)
        if data is not None:
            # Bytes, not the blob's path: an encoder error message then names no server file.
            with rt.metrics.stage("encode"):
                vectors, _ok, bad = rt.clip_encoder(version).encode_images([data])
            if bad:
                errors["clip"] = bad[0]
            else:
                vector = vectors[0]
        # No (usable) image: a tombstone keeps the item's old image vector out of image results.
        write_fresh(session=session, item_id=item.id, space="clip", encoder_revision=revision, vector=vector)
        searchable["clip"] = vector is not None
    return searchable, errors


def _stored_image(rt: Runtime, item: Item, errors: dict[str, str]) -> bytes | None:
    """The item's image bytes from the store; legacy locations and missing blobs count as none."""
    if not item.image_location:
        return None
    if not is_key(item.image_location):
        errors["clip"] = LEGACY_IMAGE
        return None
    store = rt.images
    if not store.exists(item.image_location):
        errors["clip"] = "the image is missing from the image store"
        return None
    return store.read(item.image_location)


def _item_body(rt: Runtime) -> tuple[dict[str, Any], bytes | None]:
    """The item fields and the uploaded picture of a PUT: JSON, or multipart (``item`` + ``image``)."""
    if request.mimetype == "multipart/form-data":
        where = "item"
        text = request.form.get("item")
        if text is None:
            raise invalid("item", "missing: send the item as a JSON object in the form field 'item'")
        body = parse_json_body(text, rt.settings.max_json_depth)
        upload = request.files.get("image")
        data = upload.read() if upload is not None else None
        if upload is not None and not data:
            raise invalid("image", "empty file")
    elif request.is_json:
        where, body, data = "body", request.get_json(silent=True), None
    else:
        raise APIError(415, "send the item as JSON, or as multipart/form-data with the fields item and image")
    if not isinstance(body, dict):
        raise invalid(where, "must be a JSON object")
    return body, data


def _decode_base64(text: str) -> bytes:
    """``image_base64``: plain base64 or a ``data:<type>;base64,`` URL."""
    if text.startswith("data:"):
        header, sep, text = text.partition(",")
        if not sep or not header.endswith(";base64"):
            raise invalid("image_base64", "a data: URL must be base64 (data:image/png;base64,...)")
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise invalid("image_base64", "not valid base64") from exc
    if not data:
        raise invalid("image_base64", "empty")
    return data


def _image_error(field: str, exc: Exception) -> APIError:
    """An ingestion failure as a 4xx naming the field (413 when over the size limit)."""
    reason = getattr(exc, "reason", "cannot be used")
    if too_large(exc):
        return APIError(413, f"{field}: {reason}", code="payload_too_large", details={"field": field, "reason": reason})
    return invalid(field, reason)


def _ingested(rt: Runtime, item_id: str, args: dict[str, Any], upload: bytes | None) -> ItemRecord:
    """Validate the item, then put its image in the store; the record carries the store key."""
    encoded = args.pop("image_base64", None)
    given = [name for name, value in (("image", args.get("image")), ("image_base64", encoded), ("image file", upload))
             if value]
    if len(given) > 1:
        raise invalid("image", f"give only one of {', '.join(given)}")
    field, data = ("image_base64", _decode_base64(encoded)) if encoded else ("image", upload)
    raw = {"id": item_id, **args}
    if data is not None:
        raw["image"] = key_of(data)  # validated as a key now, stored below once the rest passed
    try:
        record = parse_item(raw)
    except FieldError as exc:
        raise invalid(exc.field, exc.reason) from exc
    sources = rt.image_sources
    try:
        if data is not None:
            key = sources.from_bytes(data)
        elif record.image is not None:
            key = sources.ingest(record.image)
        else:
            return record
    except INGEST_ERRORS as exc:
        raise _image_error(field, exc) from exc
    return dataclasses.replace(record, image_location=key, image=None)


@blp.route("/items/<string:item_id>")
class ItemView(MethodView):
    @blp.response(200, ItemOut)
    def get(self, item_id: str):
        """One item."""
        require_read()
        return item_json(_live_item(item_id), text_chars=100_000)

    @blp.response(200, ItemWriteOut)
    @blp.alt_response(201, schema=ItemWriteOut, description="created")
    @blp.alt_response(400, description=(
        "invalid field, named in the message; for image: a file path, a bad or refused URL (private, loopback, "
        "link-local or metadata address), a fetch that failed, not a supported image, too many pixels"))
    @blp.alt_response(413, description="body or image larger than the limit")
    @blp.alt_response(415, description="neither JSON nor multipart/form-data")
    @blp.doc(security=[{"ApiKey": []}], requestBody=ITEM_REQUEST_BODY)
    def put(self, item_id: str):
        """Create or replace an item; it is embedded and searchable at once.

        The image is an upload (``image_base64`` in JSON, or multipart with the item as JSON in
        the field ``item`` and the picture in the file field ``image``), an http(s) URL in
        ``image`` that the service fetches, or ``sha256:<hex>`` naming an image already stored.
        File paths are refused: only the import CLI reads local files.
        """
        require_write()
        rt = runtime()
        body, upload = _item_body(rt)
        record = _ingested(rt, item_id, load_form(ItemIn(), body), upload)
        session = db_session()
        counts = upsert_items(session=session, records=[record])
        status = "inserted" if counts.inserted else "updated" if counts.updated else "unchanged"
        searchable: dict[str, bool] = {}
        errors: dict[str, str] = {}
        if status != "unchanged":
            session.flush()
            item = session.scalar(select(Item).where(Item.external_id == record.external_id))
            searchable, errors = embed_fresh(rt, item)
        session.commit()
        if searchable:
            touch_signal(rt.settings.index_path)
        return {"id": item_id, "status": status, "searchable": searchable, "errors": errors}, 201 if status == "inserted" else 200

    @blp.response(200, ItemWriteOut)
    @blp.doc(security=[{"ApiKey": []}])
    def delete(self, item_id: str):
        """Soft-delete an item; it leaves results at once."""
        require_write()
        rt = runtime()
        item = _live_item(item_id)
        session = db_session()
        upsert_items(session=session, records=[ItemRecord(external_id=item_id, kind=item.kind, title="", deleted=True)])
        version = rt.store.current
        spaces = list(version.spaces) if version is not None else []
        for space in spaces:
            write_fresh(session=session, item_id=item.id, space=space,
                        encoder_revision=version.spaces[space].encoder["revision"], vector=None)
        session.commit()
        if spaces:
            touch_signal(rt.settings.index_path)
        return {"id": item_id, "status": "deleted", "searchable": {s: False for s in spaces}, "errors": {}}


@blp.route("/items/<string:item_id>/image")
@blp.response(200, description="the item's image (JPEG, PNG, WebP, GIF or BMP), from the image store")
@blp.alt_response(404, description="no such item, or it has no stored image")
def item_image(item_id: str):
    """The item's image, served from the image store only (never a redirect, never another file)."""
    require_read()
    rt = runtime()
    item = _live_item(item_id)
    store = rt.images
    key = item.image_location
    if not is_key(key) or not store.exists(key):
        raise APIError(404, f"item {item_id!r} has no image")
    response = send_file(store.path_of(key), mimetype=store.mimetype(key), max_age=3600,
                         etag=key.removeprefix("sha256:"), conditional=True)
    response.headers["X-Content-Type-Options"] = "nosniff"
    if rt.settings.read_requires_key:
        # Behind a key: shared caches must not hand it to others.
        response.cache_control.public = False
        response.cache_control.private = True
    return response


@blp.route("/events", methods=["POST"])
@blp.response(200, EventsOut)
@blp.alt_response(400, description="not an event, a non-empty list of events or {\"events\": [...]}; too many events")
# EventIn as a class (not a "$ref" string): apispec then publishes it in components.
@blp.doc(security=[{"ApiKey": []}], requestBody={"required": True, "content": {"application/json": {"schema": {
    "oneOf": [EventIn,
              {"type": "array", "items": EventIn, "minItems": 1, "maxItems": MAX_EVENTS_PER_REQUEST},
              {"type": "object", "required": ["events"], "additionalProperties": False, "properties": {"events": {
                  "type": "array", "items": EventIn, "minItems": 1, "maxItems": MAX_EVENTS_PER_REQUEST}}}]}}}})
def post_events():
    """Record one event or a batch; duplicates (same event_id) are skipped, bad events rejected one by one.

    Stored durably (committed) before the response. A body that is not an event, a list of
    events or ``{"events": [...]}`` is a 400 and nothing is stored.
    """
    require_write()
    rt = runtime()
    body = request.get_json(silent=True)
    if isinstance(body, dict) and "events" in body and set(body) == {"events"}:
        body = body["events"]
    batch = body if isinstance(body, list) else [body] if isinstance(body, dict) else None
    if batch is None or not batch:
        raise invalid("body", "send an event object, a non-empty list of events, or {\"events\": [...]}")
    if len(batch) > MAX_EVENTS_PER_REQUEST:
        raise invalid("events", f"at most {MAX_EVENTS_PER_REQUEST} events per request")
    if not all(isinstance(e, dict) for e in batch):
        raise invalid("events", "every event must be a JSON object")
    now = utcnow()
    results: list[dict[str, Any]] = [{} for _ in batch]
    valid, positions = [], []
    for pos, raw in enumerate(batch):
        try:
            valid.append(parse_event(raw, event_types=rt.settings.event_types, default_time=now, now=now,
                                     value_limit=rt.settings.event_value_limit,
                                     max_future_skew_seconds=rt.settings.max_future_skew_seconds))
            positions.append(pos)
        except FieldError as exc:
            results[pos] = {"index": pos, "status": "rejected", "reason": f"{exc.field}: {exc.reason}"}
    session = db_session()
    outcome = record_events(session=session, records=valid)
    session.commit()
    for j, pos in enumerate(positions):
        results[pos] = {"index": pos, "status": outcome.statuses[j], "event_id": valid[j].client_event_id}
        if j in outcome.rejected:
            results[pos]["reason"] = outcome.rejected[j]
    for j, rec in enumerate(valid):
        if rec.recommendation_id and outcome.statuses[j] == "accepted":
            rt.metrics.attributed_events.labels(rec.type).inc()
    rejected = sum(1 for r in results if r["status"] == "rejected")
    return {"accepted": outcome.inserted, "duplicates": outcome.duplicates, "rejected": rejected, "results": results}
