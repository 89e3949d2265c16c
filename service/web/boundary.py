"""Request boundary checks that hold for every endpoint: text, JSON bodies and JSON responses.

Every string a client sends (path segments, query and form fields, JSON keys and values) is
checked here once, before any handler runs: a NUL byte (PostgreSQL text cannot hold one), a lone
UTF-16 surrogate (not encodable as UTF-8, so no database or file can store it) or nesting deeper
than ``max_json_depth`` is a 400 that names the field. Responses go through
:class:`SafeJSONProvider`, which can never write NaN or Infinity (not JSON): a non-finite number
becomes ``null``.
"""

from __future__ import annotations

import json
import math
from typing import Any

from flask import Flask, current_app, request
from flask.json.provider import DefaultJSONProvider

from service.store.records import FieldError, check_chars
from service.web.errors import APIError, invalid

# Longest query or form value accepted (the request line itself is capped by gunicorn).
MAX_PARAM_CHARS = 4096


def check_text(value: str, field: str) -> str:
    """Return ``value`` or raise a 400 naming ``field`` when it holds a NUL or a lone surrogate."""
    try:
        return check_chars(value, field)
    except FieldError as exc:
        raise invalid(exc.field, exc.reason) from exc


def _shown(name: str) -> str:
    """A client-given name as it may appear in an error message (hostile characters escaped)."""
    return name if name.isprintable() else name.encode("unicode_escape").decode("ascii")


def _check_tree(value: Any, path: str, depth: int, limit: int) -> None:
    """Walk a parsed JSON value: depth, and every key and string."""
    if depth > limit:
        raise invalid(path or "body", f"nested deeper than {limit} levels")
    if isinstance(value, str):
        check_text(value, path or "body")
    elif isinstance(value, dict):
        for key, item in value.items():
            name = f"{path}.{_shown(key)}" if path else _shown(key)
            check_text(key, name)
            _check_tree(item, name, depth + 1, limit)
    elif isinstance(value, list):
        for pos, item in enumerate(value):
            _check_tree(item, f"{path}[{pos}]", depth + 1, limit)


def parse_json_body(data: bytes | str, limit: int) -> Any:
    """Parse a request body: strict JSON (no NaN/Infinity), bounded depth, clean strings.

    Raises:
        APIError: 400 naming the problem; never RecursionError or UnicodeDecodeError.
    """
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise invalid("body", f"not UTF-8 (byte {exc.start})") from exc

    def refuse_constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        value = json.loads(data, parse_constant=refuse_constant)
    except RecursionError as exc:
        raise invalid("body", f"nested deeper than {limit} levels") from exc
    except ValueError as exc:
        raise invalid("body", f"invalid JSON ({exc})") from exc
    _check_tree(value, "", 0, limit)
    return value


def finite(value: Any) -> Any:
    """A copy of ``value`` where every NaN or infinite number is None (numpy scalars become Python)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    if hasattr(value, "dtype") and hasattr(value, "item"):  # numpy scalar or 0-d array
        return finite(value.item())
    return value


class SafeJSONProvider(DefaultJSONProvider):
    """Flask's JSON provider, made strict both ways.

    ``loads`` (request bodies) applies :func:`parse_json_body`; ``dumps`` (every response)
    replaces non-finite numbers with null and then refuses NaN outright (``allow_nan=False``),
    so an invalid JSON document can never leave the service.
    """

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        limit = current_app.extensions["recsys"].settings.max_json_depth if current_app else 32
        return parse_json_body(s, limit)

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        kwargs.setdefault("default", self.default)
        kwargs.setdefault("ensure_ascii", self.ensure_ascii)
        kwargs.setdefault("sort_keys", self.sort_keys)
        return json.dumps(finite(obj), allow_nan=False, **kwargs)


def _check_request() -> None:
    """Before every request: path, query and form strings, and the JSON body."""
    for name, value in (request.view_args or {}).items():
        if isinstance(value, str):
            check_text(value, name)
    for name, value in request.args.items(multi=True):
        check_text(name, _shown(name))
        check_text(value, _shown(name))
        if len(value) > MAX_PARAM_CHARS:
            raise invalid(name, f"longer than {MAX_PARAM_CHARS} characters")
    if request.mimetype in ("multipart/form-data", "application/x-www-form-urlencoded"):
        for name, value in request.form.items(multi=True):
            # werkzeug hands over a part whose name it cannot parse (name="x\") as None.
            if name is None:
                raise invalid("body", "a form part without a usable name")
            check_text(name, _shown(name))
            check_text(value, _shown(name))
    if request.is_json and request.content_length != 0 and request.method in ("POST", "PUT", "PATCH"):
        # Parsed once here through SafeJSONProvider.loads (Flask caches it for the handler);
        # webargs parses the raw bytes again, which is safe once they passed these checks.
        if request.get_data(cache=True):
            request.get_json()


def register_boundary(app: Flask) -> None:
    """Install the JSON provider and the request checks on ``app``."""
    app.json_provider_class = SafeJSONProvider
    app.json = SafeJSONProvider(app)
    app.before_request(_check_request)


__all__ = ["APIError", "SafeJSONProvider", "check_text", "finite", "parse_json_body", "register_boundary"]
