"""Item and event writes. An item written here is embedded at once and searchable before the next
rebuild (the fresh delta); a deleted item never comes back in results."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from flask import redirect, request, send_file
from flask.views import MethodView
from flask_smorest import Blueprint
from sqlalchemy import select

from service.api import require_read, require_write
from service.api.schemas import EventsOut, ItemIn, ItemOut, ItemWriteOut
from service.app import Runtime, db_session, runtime
from service.delta import touch_signal, write_fresh
from service.errors import APIError, invalid
from service.events import record_events
from service.items import upsert_items
from service.models import Item, utcnow
from service.records import FieldError, ItemRecord, parse_event, parse_item
from service.search import item_json

log = logging.getLogger("recsys.service")
blp = Blueprint("items", __name__, description="Catalog items and behaviour events")

MAX_EVENTS_PER_REQUEST = 1000


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
        with rt.metrics.stage("encode"):
            vector = rt.text_encoder().encode([f"{item.title}\n{item.text}".strip()])[0]
        write_fresh(session=session, item_id=item.id, space="text",
                    encoder_revision=version.spaces["text"].encoder["revision"], vector=vector)
        searchable["text"] = True
    if "clip" in version.spaces and not rt.clip_error:
        revision = version.spaces["clip"].encoder["revision"]
        vector = None
        if item.image_location:
            with rt.metrics.stage("encode"):
                vectors, _ok, bad = rt.clip_encoder().encode_images([item.image_location])
            if bad:
                errors["clip"] = bad[0]
            else:
                vector = vectors[0]
        # No (usable) image: a tombstone keeps the item's old image vector out of image results.
        write_fresh(session=session, item_id=item.id, space="clip", encoder_revision=revision, vector=vector)
        searchable["clip"] = vector is not None
    return searchable, errors


@blp.route("/items/<string:item_id>")
class ItemView(MethodView):
    @blp.response(200, ItemOut)
    def get(self, item_id: str):
        """One item."""
        require_read()
        return item_json(_live_item(item_id), text_chars=100_000)

    @blp.arguments(ItemIn)
    @blp.response(200, ItemWriteOut)
    @blp.alt_response(201, schema=ItemWriteOut, description="created")
    @blp.doc(security=[{"ApiKey": []}])
    def put(self, body: dict[str, Any], item_id: str):
        """Create or replace an item; it is embedded and searchable at once."""
        require_write()
        rt = runtime()
        raw = {"id": item_id, **body}
        try:
            record = parse_item(raw, base_dir=None)
        except FieldError as exc:
            raise invalid(exc.field, exc.reason) from exc
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
@blp.response(200, description="the item's image")
def item_image(item_id: str):
    """The item's image file (or a redirect to its URL)."""
    require_read()
    item = _live_item(item_id)
    if not item.image_location:
        raise APIError(404, f"item {item_id!r} has no image")
    if item.image_location.startswith(("http://", "https://")):
        return redirect(item.image_location)
    path = Path(item.image_location)
    if not path.is_file():
        raise APIError(404, f"the image of item {item_id!r} is missing on the server")
    return send_file(path, max_age=3600)


@blp.route("/events", methods=["POST"])
@blp.response(200, EventsOut)
@blp.doc(security=[{"ApiKey": []}], requestBody={"content": {"application/json": {"schema": {
    "oneOf": [{"$ref": "#/components/schemas/EventIn"},
              {"type": "array", "items": {"$ref": "#/components/schemas/EventIn"}},
              {"type": "object", "properties": {"events": {"type": "array", "items": {"$ref": "#/components/schemas/EventIn"}}}}]}}}})
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
            valid.append(parse_event(raw, event_types=rt.settings.event_types, default_time=now))
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
