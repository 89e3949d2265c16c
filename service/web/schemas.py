"""Request and response schemas: they validate requests and generate ``/openapi.json``."""

from __future__ import annotations

import datetime as dt
from typing import Any, Sequence
from urllib.parse import quote

from flask_smorest.fields import Upload
from marshmallow import EXCLUDE, INCLUDE, RAISE, Schema, fields, validate

from service.store.images import is_key
from service.store.models import ITEM_KINDS, Item

# Hard caps; the configured limits (max_k, max_query_chars, ...) are checked in the views.
_K = validate.Range(min=1, max=1000)


def setting(name: str, description: str | None = None) -> dict:
    """Field metadata naming the setting that limits it: ``/openapi.json`` states that app's value
    (the maximum, maxLength or maxItems; see ``service.web.openapi.register_api``), not the hard cap."""
    meta = {"x-setting": name}
    if description:
        meta["description"] = description
    return meta


class UtcDateTime(fields.DateTime):
    """A datetime the database holds naive in UTC, rendered with its offset (a valid date-time)."""

    def _serialize(self, value, attr, obj, **kwargs):
        if isinstance(value, dt.datetime) and value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return super()._serialize(value, attr, obj, **kwargs)


class CommaList(fields.List):
    """A list given as repeated parameters or comma-separated (``kind=product,article``)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        elif isinstance(value, list) and len(value) == 1 and isinstance(value[0], str) and "," in value[0]:
            value = [v for v in value[0].split(",") if v.strip()]
        return super()._deserialize(value, attr, data, **kwargs)


class FilterArgs(Schema):
    class Meta:
        unknown = EXCLUDE

    kind = CommaList(fields.String(validate=validate.OneOf(ITEM_KINDS)), metadata={"description": "item kinds, comma-separated"})
    category = fields.String(validate=validate.Length(min=1, max=255))
    tags = CommaList(fields.String(validate=validate.Length(min=1, max=255)), metadata={"description": "all must be present"})
    range = fields.List(
        fields.String(validate=validate.Regexp(r"^[A-Za-z0-9_.-]{1,64}:[^:]*:[^:]*$", error="use name:min:max")),
        metadata={"description": "numeric attribute range, repeatable: price:10:50, rating:4:"},
    )


class PageArgs(Schema):
    k = fields.Integer(load_default=10, validate=_K, metadata=setting("max_k"))
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0), metadata=setting("max_offset"))
    cursor = fields.String(metadata={"description": "next_cursor of a previous page (overrides offset)"})


class SearchArgs(FilterArgs, PageArgs):
    q = fields.String(required=True, validate=validate.Length(min=1), metadata=setting("max_query_chars", "the query text"))
    mode = fields.String(load_default="hybrid", validate=validate.OneOf(["semantic", "keyword", "hybrid"]))
    space = fields.String(load_default="text", validate=validate.OneOf(["text", "clip"]),
                          metadata={"description": "text: sentence embeddings; clip: text-to-image through CLIP"})


class SimilarBody(FilterArgs, PageArgs):
    class Meta:
        unknown = RAISE

    item_id = fields.String(required=True, validate=validate.Length(min=1, max=255))
    space = fields.String(load_default="text", validate=validate.OneOf(["text", "clip"]))


class ImageSearchForm(FilterArgs, PageArgs):
    """Form fields sent with an uploaded image (multipart/form-data, file field ``image``)."""


class ImageSearchUpload(ImageSearchForm):
    """The whole multipart body of a search by image, for the document (the view reads the file itself)."""

    image = Upload(required=True, metadata={"description": "JPEG, PNG, WebP, GIF or BMP"})


class RecommendArgs(FilterArgs):
    k = fields.Integer(load_default=10, validate=_K, metadata=setting("max_k"))
    exclude_seen = fields.Boolean(load_default=True, metadata={"description": "leave out items the user already consumed"})
    diversity = fields.Float(validate=validate.Range(min=0, max=1),
                             metadata={"description": "0 = relevance only, 1 = most diverse (maximal marginal relevance)"})
    explain = fields.Boolean(load_default=False, metadata={"description": "add reasons to each item"})


class ItemRecommendArgs(FilterArgs):
    k = fields.Integer(load_default=10, validate=_K, metadata=setting("max_k"))
    space = fields.String(load_default="text", validate=validate.OneOf(["text", "clip"]))
    explain = fields.Boolean(load_default=False)


class TrendingArgs(Schema):
    class Meta:
        unknown = EXCLUDE

    k = fields.Integer(load_default=10, validate=_K, metadata=setting("max_k"))
    kind = CommaList(fields.String(validate=validate.OneOf(ITEM_KINDS)))
    category = fields.String(validate=validate.Length(min=1, max=255))
    window = fields.String(validate=validate.Regexp(r"^\d+(\.\d+)?[hdw]?$", error="use hours, days or weeks: 24h, 7d, 2w"),
                           metadata={"description": "how far back: 24h, 7d, 2w (a bare number is days)"})


class RecommendBody(Schema):
    """POST /recommend: examples, an anonymous session, or a user, plus the usual knobs."""

    class Meta:
        unknown = RAISE

    positive = fields.List(fields.String(validate=validate.Length(min=1, max=255)), load_default=list)
    negative = fields.List(fields.String(validate=validate.Length(min=1, max=255)), load_default=list)
    positive_vectors = fields.List(fields.List(fields.Float()), load_default=list)
    negative_vectors = fields.List(fields.List(fields.Float()), load_default=list)
    session = fields.List(fields.String(validate=validate.Length(min=1, max=255)), load_default=list,
                          metadata={"description": "an anonymous session: recently seen item ids, oldest first"})
    user_id = fields.String(validate=validate.Length(min=1, max=255))
    strategy = fields.String(load_default="average", validate=validate.OneOf(["average", "best_score"]))
    k = fields.Integer(load_default=10, validate=_K, metadata=setting("max_k"))
    kind = fields.List(fields.String(validate=validate.OneOf(ITEM_KINDS)), load_default=list)
    category = fields.String(validate=validate.Length(min=1, max=255))
    diversity = fields.Float(validate=validate.Range(min=0, max=1))
    explain = fields.Boolean(load_default=False)
    exclude_seen = fields.Boolean(load_default=True)


class SuggestArgs(Schema):
    class Meta:
        unknown = EXCLUDE

    q = fields.String(required=True, metadata=setting("max_query_chars", "the start of a title or of a word in it"))
    k = fields.Integer(load_default=8, validate=validate.Range(min=1, max=50))
    kind = fields.String(validate=validate.OneOf(ITEM_KINDS))


class ItemOut(Schema):
    id = fields.String()
    kind = fields.String()
    title = fields.String()
    text = fields.String()
    category = fields.String(allow_none=True)
    tags = fields.List(fields.String())
    attributes = fields.Dict()
    image_url = fields.String(allow_none=True)


class HitOut(ItemOut):
    # null only if a score came out non-finite (the JSON writer never sends NaN).
    score = fields.Float(allow_none=True)
    signals = fields.List(fields.String(), metadata={"description": "semantic, keyword, fresh"})


class SearchOut(Schema):
    query = fields.String(allow_none=True)
    mode = fields.String()
    space = fields.String()
    k = fields.Integer()
    offset = fields.Integer()
    index_version = fields.String()
    took_ms = fields.Float()
    next_cursor = fields.String(allow_none=True)
    hits = fields.List(fields.Nested(HitOut))


class ReasonOut(Schema):
    signal = fields.String()
    text = fields.String()
    item_id = fields.String(allow_none=True, metadata={"description": "the item behind the reason, when there is one"})


class RecHitOut(HitOut):
    reasons = fields.List(fields.Nested(ReasonOut))


class RecommendOut(Schema):
    user_id = fields.String(allow_none=True)
    item_id = fields.String(allow_none=True)
    recommendation_id = fields.String(metadata={"description": "send it with events to attribute clicks"})
    strategy = fields.String(metadata={"description": (
        "who answered: personalized, session or examples (the person's seeds); similar, also or also+similar "
        "(an item's neighbours); trending; cold_start (no history: trending, popular, then newest items). "
        "A page the seeds leave short is filled by the fallbacks co_engagement, trending, popular (all-time) "
        "and newest, in that order, named joined by '+' (personalized+trending, trending+newest); a history "
        "with nothing liked (only low ratings) is answered by the fallbacks alone")})
    index_version = fields.String(allow_none=True)
    took_ms = fields.Float()
    hits = fields.List(fields.Nested(RecHitOut))


class UserOut(Schema):
    id = fields.String()
    events = fields.Integer()
    last_event_at = UtcDateTime(allow_none=True)


class UsersOut(Schema):
    users = fields.List(fields.Nested(UserOut))


class UsersArgs(Schema):
    class Meta:
        unknown = EXCLUDE

    k = fields.Integer(load_default=20, validate=validate.Range(min=1, max=1000))


class SuggestionOut(Schema):
    id = fields.String()
    title = fields.String()
    kind = fields.String()
    category = fields.String(allow_none=True)


class SuggestOut(Schema):
    query = fields.String()
    suggestions = fields.List(fields.Nested(SuggestionOut))
    took_ms = fields.Float()


class ItemIn(Schema):
    """Body of PUT /items/{id}: the import format (the id comes from the path)."""

    class Meta:
        unknown = RAISE

    kind = fields.String(required=True, validate=validate.OneOf(ITEM_KINDS))
    title = fields.String(required=True, validate=validate.Length(min=1, max=500))
    text = fields.String(load_default="")
    image = fields.String(allow_none=True, metadata={"description": (
        "an http(s) URL (the service fetches it; private, loopback and metadata addresses are refused) or "
        "sha256:<64 hex>, an image already in the store; never a file path"
    )})
    image_base64 = fields.String(allow_none=True, metadata={"description": (
        "the image bytes in base64 (a data: URL too): JPEG, PNG, WebP, GIF or BMP"
    )})
    category = fields.String(allow_none=True)
    tags = fields.List(fields.String(), load_default=list)
    attributes = fields.Dict(load_default=dict)


class ItemWriteOut(Schema):
    id = fields.String()
    status = fields.String(metadata={"description": "inserted, updated, unchanged or deleted"})
    searchable = fields.Dict(keys=fields.String(), values=fields.Boolean(),
                             metadata={"description": "per space: true when embedded into the fresh delta"})
    errors = fields.Dict(keys=fields.String(), values=fields.String(), metadata={"description": "per space: why not"})


class EventIn(Schema):
    class Meta:
        unknown = RAISE

    event_id = fields.String()
    user_id = fields.String(required=True)
    item_id = fields.String(required=True)
    type = fields.String(required=True)
    value = fields.Float(allow_none=True)
    timestamp = fields.Raw(metadata={"description": "ISO 8601 or Unix seconds; default now"})
    recommendation_id = fields.String(allow_none=True)
    query = fields.String(allow_none=True, metadata={
        "description": "the search query that led to this event (a click on a search result), at most 512 characters"})


class EventResultOut(Schema):
    index = fields.Integer(metadata={"description": "position in the request"})
    status = fields.String(metadata={"description": "accepted, duplicate or rejected"})
    event_id = fields.String(metadata={"description": "the client event id (given or derived); absent when rejected"})
    reason = fields.String(metadata={"description": "why it was rejected"})


class EventsOut(Schema):
    accepted = fields.Integer()
    duplicates = fields.Integer()
    rejected = fields.Integer()
    results = fields.List(fields.Nested(EventResultOut))


class ErrorDetailOut(Schema):
    code = fields.String(required=True, metadata={"description": "stable, machine-readable: validation_error, not_found, ..."})
    message = fields.String(required=True)
    details = fields.Dict(required=True, metadata={"description": "per code: the field, the valid choices, retry_after_s, ..."})


class ErrorOut(Schema):
    """The body of every 4xx and 5xx answer (service/errors.py)."""

    error = fields.Nested(ErrorDetailOut, required=True)


# Documentation only (``ops.json_doc``): these views return plain dicts, which a response
# schema would filter down to the fields it lists.


class HealthOut(Schema):
    status = fields.String(required=True, metadata={"description": "ok"})
    checks = fields.Dict(keys=fields.String(), values=fields.String(), metadata={"description": "readiness: database, index"})


class StatusOut(Schema):
    class Meta:
        unknown = INCLUDE  # also build time, skipped spaces, auth mode, latency per route, ...

    index_version = fields.String(required=True, allow_none=True)
    spaces = fields.Dict(keys=fields.String(), values=fields.Dict(), required=True,
                         metadata={"description": "per space: count, dim, index_key, recall_at_10, encoder, fresh"})
    refused = fields.Dict(keys=fields.String(), values=fields.String(),
                          metadata={"description": "versions that could not be served, with the reason"})
    model = fields.Dict(allow_none=True, metadata={
        "description": "the version's collaborative model: status, family, params, fitted blend, content scoring "
                       "(profile), test metrics (model, without_model, published_recipe), quality gate, training "
                       "watermark, served"})
    encoder = fields.Dict(allow_none=True, metadata={
        "description": "the fine-tuned text encoder the version's text space was built with (absent: the "
                       "pretrained text_model): name, revision, base model, held-out metrics against the encoder "
                       "it replaced, gate, training watermark and cost"})
    clip_encoder = fields.Dict(allow_none=True, metadata={
        "description": "the fine-tuned CLIP encoder the version's clip space was built with (absent: clip_model "
                       "with clip_pretrained): as encoder"})
    query_encoder = fields.Dict(allow_none=True, metadata={
        "description": "how text queries become vectors here: configured and serving backend (torch, onnx, "
                       "onnx-int8), the backend the version exported, its measured agreement with torch (cosines, "
                       "top-10 agreement, single-query ms) and, when torch serves instead, why"})
    artifact_store = fields.Dict(allow_none=True, metadata={
        "description": "with artifact_url set: the store this host serves from, the version it publishes, when it "
                       "was last read (Unix time), the last problem, and versions refused (failed verification)"})


class ReloadOut(StatusOut):
    swapped = fields.Boolean(required=True, metadata={"description": "a newer version is now served"})


def parse_ranges(values: list[str] | None) -> dict[str, tuple[float | None, float | None]]:
    """``["price:10:50", "rating:4:"]`` -> {"price": (10, 50), "rating": (4, None)}.

    Raises:
        ValueError: a bound that is not a number, or min > max.
    """
    out: dict[str, tuple[float | None, float | None]] = {}
    for raw in values or []:
        name, low, high = raw.split(":")
        try:
            bounds = (float(low) if low else None, float(high) if high else None)
        except ValueError as exc:
            raise ValueError(f"{raw!r}: bounds must be numbers") from exc
        if bounds[0] is not None and bounds[1] is not None and bounds[0] > bounds[1]:
            raise ValueError(f"{raw!r}: min is greater than max")
        out[name] = bounds
    return out


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
