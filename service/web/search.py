"""Search-bar endpoints: text, text-to-image, image upload, more-like-this, typeahead."""

from __future__ import annotations

import base64
import io
import time
from typing import Any

import numpy as np
from flask import request
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import ValidationError
from sqlalchemy import select

from service.web.security import require_read
from service.web.schemas import ImageSearchForm, ImageSearchUpload, SearchArgs, SearchOut, SimilarBody, SuggestArgs, SuggestOut, parse_ranges
from service.web.runtime import Runtime, db_session, runtime
from service.web.errors import APIError, invalid
from service.vectors.index_store import LoadedSpace, LoadedVersion
from service.store.models import Item
from service.store.items import Filters
from service.search.hybrid import search_text, search_vector
from service.web.schemas import item_json
from service.vectors.nearest import vectors_of

blp = Blueprint("search", __name__, description="Semantic, keyword, hybrid and image search; typeahead")

# Images we decode for search-by-image (checked on the bytes, not the client's Content-Type).
IMAGE_FORMATS = {"JPEG", "PNG", "WEBP", "GIF", "BMP"}


@blp.before_request
def _auth() -> None:
    require_read()


# --- argument helpers ------------------------------------------------------------------------


def page_args(args: dict[str, Any], rt: Runtime) -> tuple[int, int]:
    k, offset = args["k"], args["offset"]
    if args.get("cursor"):
        try:
            text = base64.urlsafe_b64decode(args["cursor"].encode("ascii") + b"==").decode("ascii")
            if not text.startswith("o:") or not text[2:].isdigit():
                raise ValueError(text)
            offset = int(text[2:])
        except (ValueError, UnicodeError) as exc:  # binascii.Error is a ValueError
            raise invalid("cursor", "not a cursor this service issued") from exc
    if k > rt.settings.max_k:
        raise invalid("k", f"at most {rt.settings.max_k}")
    if offset > rt.settings.max_offset:
        raise invalid("offset", f"at most {rt.settings.max_offset}")
    return k, offset


def cursor_for(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode().rstrip("=")


def filters_from(args: dict[str, Any], exclude: frozenset[int] = frozenset(), require_image: bool = False) -> Filters:
    try:
        ranges = parse_ranges(args.get("range"))
    except ValueError as exc:
        raise invalid("range", str(exc)) from exc
    return Filters(
        kinds=tuple(dict.fromkeys(args.get("kind") or ())),
        category=args.get("category"),
        tags=tuple(args.get("tags") or ()),
        ranges=ranges,
        exclude=exclude,
        require_image=require_image,
    )


def load_form(schema, data) -> dict[str, Any]:
    try:
        return schema.load(data)
    except ValidationError as exc:
        fields = exc.messages if isinstance(exc.messages, dict) else {"body": exc.messages}
        name = sorted(fields)[0]
        msg = fields[name][0] if isinstance(fields[name], list) else str(fields[name])
        raise APIError(400, f"{name}: {msg}", code="validation_error", details={"fields": fields}) from exc


def respond(*, rt: Runtime, version: LoadedVersion, page, query: str | None, mode: str, space: str,
            k: int, offset: int, started: float) -> dict[str, Any]:
    return {
        "query": query,
        "mode": mode,
        "space": space,
        "k": k,
        "offset": offset,
        "index_version": version.name,
        "took_ms": round((time.perf_counter() - started) * 1000, 2),
        "next_cursor": cursor_for(offset + k) if page.has_more else None,
        "hits": [item_json(item, score=score, signals=sig) for item, score, sig in page.hits],
    }


def vector_search_page(rt: Runtime, space: LoadedSpace, qv: np.ndarray, *,
                       k: int, offset: int, filters: Filters):
    return search_vector(session=db_session(), space=space, delta=rt.deltas.get(space.name), vector=qv,
                         k=k, offset=offset, filters=filters, timer=rt.metrics.stage)


# --- endpoints -------------------------------------------------------------------------------


@blp.route("/search")
class Search(MethodView):
    @blp.arguments(SearchArgs, location="query")
    @blp.response(200, SearchOut)
    @blp.alt_response(400, description="invalid parameter (the message names it)")
    @blp.alt_response(503, description="no index published yet, or the requested space is not available")
    def get(self, args):
        """Search by text: semantic (embeddings), keyword, or hybrid (reciprocal rank fusion).

        ``space=clip`` searches images by text through CLIP's text tower.
        """
        started = time.perf_counter()
        rt = runtime()
        query = args["q"].strip()
        if not query:
            raise invalid("q", "must not be blank")
        if len(query) > rt.settings.max_query_chars:
            raise invalid("q", f"longer than {rt.settings.max_query_chars} characters")
        k, offset = page_args(args, rt)
        mode, space_name = args["mode"], args["space"]
        filters = filters_from(args, require_image=space_name == "clip")
        version = rt.version()
        session = db_session()
        rt.deltas.sync(session)
        space = encode = None
        if mode in ("semantic", "hybrid"):
            space = rt.served_space(version, space_name)
            encode = rt.query_encoder(space_name, version)
        page = search_text(session=session, query=query, mode=mode, k=k, offset=offset, filters=filters,
                           space=space, delta=rt.deltas.get(space_name), encode=encode, timer=rt.metrics.stage)
        if space_name == "text" and offset == 0:  # what users type: the rebuild's recall probes
            rt.query_log.add(query)
        return respond(rt=rt, version=version, page=page, query=query, mode=mode, space=space_name,
                       k=k, offset=offset, started=started)

    @blp.response(200, SearchOut)
    @blp.doc(requestBody={"required": True, "content": {
        "multipart/form-data": {"schema": ImageSearchUpload},
        "application/json": {"schema": SimilarBody},
    }})
    @blp.alt_response(400, description="invalid field")
    @blp.alt_response(404, description="unknown item id (more like this)")
    @blp.alt_response(413, description="upload too large")
    @blp.alt_response(415, description="not a supported image type")
    def post(self):
        """Search by an uploaded image (multipart, field ``image``) or by an item id (JSON, more like this)."""
        started = time.perf_counter()
        rt = runtime()
        if request.mimetype == "multipart/form-data":
            return image_search(rt, started)
        if request.is_json:
            return similar_search(rt, started)
        raise APIError(415, "send multipart/form-data with an image, or JSON with an item_id")


def image_search(rt: Runtime, started: float) -> dict[str, Any]:
    from PIL import Image, UnidentifiedImageError

    form = {key: (values if key in ("kind", "tags", "range") else values[0]) for key, values in request.form.lists()}
    args = load_form(ImageSearchForm(), form)
    upload = request.files.get("image")
    if upload is None or not upload.filename and not upload.content_length:
        raise invalid("image", "missing: send the picture in the multipart field 'image'")
    data = upload.read()
    if not data:
        raise invalid("image", "empty file")
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt, (w, h) = img.format, img.size
    except Image.DecompressionBombError as exc:  # not an OSError: Pillow refused the header's size
        raise invalid("image", f"more pixels than the limit of {rt.settings.max_image_pixels}") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        # Pillow's openers raise several types on malformed headers; all mean "not an image".
        raise APIError(415, "image: not a supported image type (JPEG, PNG, WebP, GIF, BMP)") from exc
    if fmt not in IMAGE_FORMATS:
        raise APIError(415, f"image: {fmt} is not supported (JPEG, PNG, WebP, GIF, BMP)")
    if w * h > rt.settings.max_image_pixels:
        raise invalid("image", f"{w}x{h} pixels is more than the limit of {rt.settings.max_image_pixels}")
    k, offset = page_args(args, rt)
    filters = filters_from(args)
    version = rt.version()
    space = rt.served_space(version, "clip")
    rt.deltas.sync(db_session())
    with rt.metrics.stage("encode"):
        vectors, _ok, errors = rt.clip_encoder(version).encode_images([data])
    if errors:
        raise invalid("image", f"cannot be read: {errors[0]}")
    page = vector_search_page(rt, space, vectors[0], k=k, offset=offset, filters=filters)
    return respond(rt=rt, version=version, page=page, query=None, mode="image", space="clip",
                   k=k, offset=offset, started=started)


def item_vector(rt: Runtime, space: LoadedSpace, item_id: int) -> np.ndarray | None:
    """An item's vector in a space: the fresh one if it changed since the build, else the index's."""
    vectors, found = vectors_of(space, rt.deltas.get(space.name), [item_id])
    return vectors[0] if found[0] else None


def similar_search(rt: Runtime, started: float) -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise invalid("body", "must be a JSON object")
    args = load_form(SimilarBody(), body)
    k, offset = page_args(args, rt)
    version = rt.version()
    space = rt.served_space(version, args["space"])
    session = db_session()
    rt.deltas.sync(session)
    pk = session.scalar(select(Item.id).where(Item.external_id == args["item_id"], Item.deleted_at.is_(None)))
    if pk is None:
        raise APIError(404, f"item_id: no item {args['item_id']!r}")
    vector = item_vector(rt, space, pk)
    if vector is None:
        raise APIError(404, f"item {args['item_id']!r} has no vector in the {space.name} space (no image, or not embedded yet)")
    filters = filters_from(args, exclude=frozenset({pk}))
    page = vector_search_page(rt, space, vector, k=k, offset=offset, filters=filters)
    return respond(rt=rt, version=version, page=page, query=args["item_id"], mode="similar", space=space.name,
                   k=k, offset=offset, started=started)


@blp.route("/suggest")
@blp.arguments(SuggestArgs, location="query")
@blp.response(200, SuggestOut)
def suggest(args):
    """Typeahead: items whose title, or a word of it, starts with ``q`` (answered from memory)."""
    started = time.perf_counter()
    rt = runtime()
    prefix = args["q"]
    if len(prefix) > rt.settings.max_query_chars:
        raise invalid("q", f"longer than {rt.settings.max_query_chars} characters")
    with rt.metrics.stage("suggest"):
        found = rt.suggester(db_session()).suggest(prefix, limit=args["k"], kind=args.get("kind"))
    return {"query": prefix, "suggestions": found, "took_ms": round((time.perf_counter() - started) * 1000, 3)}
