"""Validated item and event records: the one place raw input (files, JSON bodies) is checked.

``parse_item`` and ``parse_event`` turn a raw mapping into a typed record or raise
:class:`FieldError` naming the field, so the import CLI and the HTTP API report the same reasons.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from service.store.fetch import FetchRefused, parse_url
from service.store.images import KEY_PREFIX, is_key
from service.store.models import ITEM_KINDS, MAX_EVENT_QUERY_CHARS

MAX_ID_LEN = 255
MAX_TITLE_LEN = 500
MAX_TEXT_LEN = 100_000
MAX_TAGS = 100
MAX_LOCATION_LEN = 2048


class FieldError(ValueError):
    """A field of one record is missing or invalid."""

    def __init__(self, field_name: str, reason: str):
        super().__init__(f"{field_name}: {reason}")
        self.field = field_name
        self.reason = reason


@dataclass(frozen=True)
class ImageRef:
    """An item's image as given, before it is put in the image store.

    ``kind``: ``key`` (a blob already in the store), ``url`` (http or https, fetched through the
    guard) or ``path`` (a local file; the import CLI only).
    """

    kind: str
    value: str


@dataclass(frozen=True)
class ItemRecord:
    external_id: str
    kind: str
    title: str
    text: str = ""
    # The image store key (sha256:...); set by ingestion, never by parsing.
    image_location: str | None = None
    category: str | None = None
    tags: tuple[str, ...] = ()
    attributes: Mapping[str, Any] = field(default_factory=dict)
    deleted: bool = False
    # The image reference still to ingest (``image_location`` is None until then).
    image: ImageRef | None = None

    @property
    def content_hash(self) -> str:
        """sha256 over every content field: equal hash means nothing to update or re-embed."""
        payload = json.dumps(
            [self.kind, self.title, self.text, self.image_location, self.category, list(self.tags), self.attributes],
            sort_keys=True,
            ensure_ascii=False,
            separators=(",", ":"),
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class EventRecord:
    client_event_id: str
    user_external_id: str
    item_external_id: str
    type: str
    value: float | None
    occurred_at: dt.datetime
    recommendation_id: str | None = None
    query: str | None = None  # the search query that led to the event


def _required_str(raw: Mapping[str, Any], name: str, max_len: int, aliases: Sequence[str] = ()) -> str:
    value = _get(raw, name, aliases)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise FieldError(name, "required")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise FieldError(name, f"must be a string, got {type(value).__name__}")
    value = value.strip()
    if len(value) > max_len:
        raise FieldError(name, f"longer than {max_len} characters")
    return check_chars(value, name)


# NUL cannot be stored in PostgreSQL text; a lone surrogate cannot be encoded as UTF-8 at all.
_BAD_CHARS = re.compile("[\x00\ud800-\udfff]")


def check_chars(value: str, name: str) -> str:
    """Return ``value``, or raise FieldError when it holds a NUL or an unpaired surrogate."""
    found = _BAD_CHARS.search(value)
    if found is not None:
        what = "a NUL character" if found.group() == "\x00" else "an unpaired surrogate (not valid Unicode)"
        raise FieldError(name, f"contains {what}")
    return value


def _optional_str(raw: Mapping[str, Any], name: str, max_len: int, aliases: Sequence[str] = ()) -> str | None:
    value = _get(raw, name, aliases)
    if value is None or value == "":
        return None
    return _required_str({name: value}, name, max_len)


def _get(raw: Mapping[str, Any], name: str, aliases: Sequence[str] = ()) -> Any:
    for key in (name, *aliases):
        if key in raw:
            return raw[key]
    return None


def _parse_bool(value: Any, name: str) -> bool:
    if value is None or value == "":
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in {"true", "1", "yes"}:
        return True
    if isinstance(value, str) and value.strip().lower() in {"false", "0", "no"}:
        return False
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise FieldError(name, f"must be true or false, got {value!r}")


def _parse_tags(value: Any) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                raise FieldError("tags", f"invalid JSON list ({exc.msg})") from exc
        else:
            # CSV convention: "outdoor|running".
            value = [t for t in text.split("|")]
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise FieldError("tags", "must be a list of strings")
    tags = tuple(dict.fromkeys(t.strip() for t in value if t.strip()))
    if len(tags) > MAX_TAGS:
        raise FieldError("tags", f"more than {MAX_TAGS} tags")
    if any(len(t) > MAX_ID_LEN for t in tags):
        raise FieldError("tags", f"a tag is longer than {MAX_ID_LEN} characters")
    return tags


def _parse_attributes(value: Any) -> dict[str, Any]:
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise FieldError("attributes", f"invalid JSON object ({exc.msg})") from exc
    if not isinstance(value, dict):
        raise FieldError("attributes", "must be an object")
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise FieldError("attributes", f"not JSON-serialisable ({exc})") from exc
    return value


def _coerce_scalar(text: str) -> Any:
    """CSV extra columns become attributes; numbers stay numbers so range filters work."""
    try:
        number = float(text)
    except ValueError:
        return text
    if math.isfinite(number):
        return int(number) if number.is_integer() and "." not in text and "e" not in text.lower() else number
    return text


# "scheme:" of two or more letters (a one-letter one would be a Windows drive).
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+:")
PATHS_CLI_ONLY = "file paths are accepted only by the import CLI"


def parse_image_ref(value: str, *, allow_paths: bool) -> ImageRef:
    """Classify an ``image`` value without touching the filesystem or the network.

    Raises:
        FieldError: a malformed store key or URL, another URL scheme, or a file path when
            ``allow_paths`` is False (the HTTP API never reads server paths).
    """
    if value.startswith(KEY_PREFIX):
        if not is_key(value):
            raise FieldError("image", "not a valid image store key (sha256: and 64 lowercase hex digits)")
        return ImageRef("key", value)
    if value.lower().startswith(("http://", "https://")):
        try:
            parse_url(value)
        except FetchRefused as exc:
            raise FieldError("image", exc.reason) from exc
        return ImageRef("url", value)
    if _SCHEME.match(value):
        raise FieldError("image", "unsupported URL scheme (use http or https)")
    if not allow_paths:
        raise FieldError("image", PATHS_CLI_ONLY)
    return ImageRef("path", value)


def resolve_image_location(value: str, *, base_dir: Path, root: Path) -> Path:
    """The real path of an import CLI image path; it must lie inside ``root``, symlinks resolved.

    A relative ``value`` is relative to ``base_dir`` (the folder of the imported file).

    Raises:
        FieldError: a ``..`` component, a real path outside the real ``root``, or no such file.
    """
    raw = Path(value)
    if ".." in raw.parts:
        raise FieldError("image", "'..' is not allowed in image paths")
    path = raw if raw.is_absolute() else Path(base_dir) / raw
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    if os.path.commonpath([real_root, real]) != real_root:
        raise FieldError("image", "the path leads outside the import root (import_root)")
    if not os.path.isfile(real):
        raise FieldError("image", "file not found")
    return Path(real)


ITEM_FIELDS = {"id", "external_id", "kind", "title", "text", "image", "image_location", "category", "tags", "attributes", "deleted"}


def parse_item(raw: Mapping[str, Any], *, allow_paths: bool = False, extra_as_attributes: bool = False) -> ItemRecord:
    """Validate one catalog row; never touches the filesystem or the network.

    The image comes back as ``record.image`` (a reference); ingestion puts it in the image store
    and sets ``image_location`` (see :mod:`service.store.image_sources`).

    Args:
        raw: the row (``id``, ``kind``, ``title``, ``text``, ``image``, ``category``, ``tags``,
            ``attributes``, ``deleted``).
        allow_paths: accept local file paths as ``image`` (the import CLI; never over HTTP).
        extra_as_attributes: put unknown keys into ``attributes`` (CSV columns) instead of rejecting.

    Raises:
        FieldError: the first invalid field.
    """
    if not isinstance(raw, Mapping):
        raise FieldError("(row)", "must be an object")
    external_id = _required_str(raw, "id", MAX_ID_LEN, aliases=("external_id",))
    deleted = _parse_bool(raw.get("deleted"), "deleted")
    if deleted:
        # A tombstone only needs the id; the rest of the row is ignored.
        return ItemRecord(external_id=external_id, kind="product", title="", deleted=True)
    kind = _required_str(raw, "kind", 16)
    if kind not in ITEM_KINDS:
        raise FieldError("kind", f"must be one of {', '.join(ITEM_KINDS)}, got {kind!r}")
    title = _required_str(raw, "title", MAX_TITLE_LEN)
    text = _get(raw, "text") or ""
    if not isinstance(text, str):
        raise FieldError("text", "must be a string")
    if len(text) > MAX_TEXT_LEN:
        raise FieldError("text", f"longer than {MAX_TEXT_LEN} characters")
    image_value = _optional_str(raw, "image", MAX_LOCATION_LEN, aliases=("image_location",))
    image = parse_image_ref(image_value, allow_paths=allow_paths) if image_value else None
    if kind == "image" and image is None:
        raise FieldError("image", "required for items of kind image")
    attributes = _parse_attributes(raw.get("attributes"))
    unknown = [k for k in raw if k not in ITEM_FIELDS]
    if unknown and not extra_as_attributes:
        raise FieldError(unknown[0], "unknown field")
    for key in unknown:
        value = raw[key]
        if value not in (None, ""):
            attributes[key] = _coerce_scalar(value) if isinstance(value, str) else value
    return ItemRecord(
        external_id=external_id,
        kind=kind,
        title=title,
        text=text.strip(),
        category=_optional_str(raw, "category", MAX_ID_LEN),
        tags=_parse_tags(raw.get("tags")),
        attributes=attributes,
        image=image,
    )


# Events: the documented bounds (settings event_value_limit and max_future_skew_seconds
# override them for the API and the import).
EVENT_VALUE_LIMIT = 1_000_000.0
MAX_FUTURE_SKEW_SECONDS = 300.0
EARLIEST_EVENT = dt.datetime(1970, 1, 1)


def parse_timestamp(value: Any, name: str = "timestamp", *, latest: dt.datetime | None = None) -> dt.datetime:
    """ISO 8601 (``Z`` or an offset; naive means UTC) or Unix seconds -> naive UTC.

    Args:
        latest: the newest acceptable time (now plus the allowed clock skew); None = no bound.
            A far-future time would otherwise count as "now" in every decay for years.

    Raises:
        FieldError: not a time, before 1970, or after ``latest``.
    """
    if isinstance(value, bool):
        raise FieldError(name, "must be ISO 8601 or Unix seconds")
    if isinstance(value, (int, float)) or (isinstance(value, str) and _is_number(value)):
        seconds = float(value)
        if not math.isfinite(seconds) or not 0 <= seconds < 4_102_444_800:  # before 2100
            raise FieldError(name, f"Unix time out of range: {str(value)[:40]!r}")
        parsed = dt.datetime.fromtimestamp(seconds, dt.timezone.utc).replace(tzinfo=None)
    else:
        if not isinstance(value, str) or not value.strip():
            raise FieldError(name, "must be ISO 8601 or Unix seconds")
        text = value.strip()
        if len(text) > 64:
            raise FieldError(name, "not an ISO 8601 time (too long)")
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = dt.datetime.fromisoformat(text)
            if parsed.tzinfo is not None:
                parsed = parsed.astimezone(dt.timezone.utc).replace(tzinfo=None)
        except (ValueError, OverflowError) as exc:  # OverflowError: year 1 with a positive offset
            raise FieldError(name, f"not an ISO 8601 time: {text[:40]!r}") from exc
    if parsed < EARLIEST_EVENT:
        raise FieldError(name, "before 1970-01-01")
    if latest is not None and parsed > latest:
        raise FieldError(name, f"in the future (after {latest.isoformat(timespec='seconds')}Z, the allowed clock skew)")
    return parsed


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def derive_event_id(user: str, item: str, type_: str, value: float | None, occurred_at: dt.datetime) -> str:
    """Deterministic id for events sent without one, so re-importing a file is idempotent."""
    key = "\x1f".join([user, item, type_, "" if value is None else repr(value), occurred_at.isoformat()])
    return "derived:" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:40]


EVENT_FIELDS = {"event_id", "client_event_id", "user_id", "user", "item_id", "item", "type", "value", "timestamp",
                "recommendation_id", "query"}


def parse_event(
    raw: Mapping[str, Any],
    *,
    event_types: Sequence[str],
    default_time: dt.datetime | None = None,
    value_limit: float = EVENT_VALUE_LIMIT,
    max_future_skew_seconds: float = MAX_FUTURE_SKEW_SECONDS,
    now: dt.datetime | None = None,
) -> EventRecord:
    """Validate one event row.

    Args:
        raw: ``event_id``, ``user_id``, ``item_id``, ``type``, ``value``, ``timestamp``,
            ``recommendation_id``, ``query`` (the search query that led to the event).
        event_types: accepted types (built-in plus configured custom ones).
        default_time: used when ``timestamp`` is absent (the API passes "now"); without it a
            timestamp is required whenever ``event_id`` is absent, so derived ids are stable.
        value_limit: ``|value|`` may not exceed it (one huge rating would swamp everyone's
            trending and co-engagement).
        max_future_skew_seconds: how far past ``now`` (default: the clock) a timestamp may lie.

    Raises:
        FieldError: the first invalid field.
    """
    if not isinstance(raw, Mapping):
        raise FieldError("(row)", "must be an object")
    unknown = [k for k in raw if k not in EVENT_FIELDS]
    if unknown:
        raise FieldError(unknown[0], "unknown field")
    user = _required_str(raw, "user_id", MAX_ID_LEN, aliases=("user",))
    item = _required_str(raw, "item_id", MAX_ID_LEN, aliases=("item",))
    type_ = _required_str(raw, "type", 32)
    if type_ not in event_types:
        raise FieldError("type", f"must be one of {', '.join(event_types)}, got {type_!r}")
    value_raw = raw.get("value")
    value: float | None
    if value_raw is None or value_raw == "":
        value = None
    else:
        if isinstance(value_raw, bool):
            raise FieldError("value", "must be a number")
        try:
            value = float(value_raw)
        except (TypeError, ValueError, OverflowError) as exc:
            raise FieldError("value", f"must be a number, got {str(value_raw)[:40]!r}") from exc
        if not math.isfinite(value):
            raise FieldError("value", "must be finite")
        if abs(value) > value_limit:
            raise FieldError("value", f"must be between {-value_limit:g} and {value_limit:g}")
    if type_ == "rating" and value is None:
        raise FieldError("value", "required for rating events")
    client_id = _optional_str(raw, "event_id", MAX_ID_LEN, aliases=("client_event_id",))
    ts_raw = raw.get("timestamp")
    if ts_raw is None or ts_raw == "":
        if default_time is None:
            raise FieldError("timestamp", "required (or give event_id)" if client_id is None else "required")
        occurred_at = default_time
    else:
        latest = (now or dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)) + dt.timedelta(
            seconds=max_future_skew_seconds)
        occurred_at = parse_timestamp(ts_raw, latest=latest)
    if client_id is None:
        client_id = derive_event_id(user, item, type_, value, occurred_at)
    return EventRecord(
        client_event_id=client_id,
        user_external_id=user,
        item_external_id=item,
        type=type_,
        value=value,
        occurred_at=occurred_at,
        recommendation_id=_optional_str(raw, "recommendation_id", 64),
        query=_optional_str(raw, "query", MAX_EVENT_QUERY_CHARS),
    )
