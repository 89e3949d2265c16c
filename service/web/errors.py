"""One JSON error shape for every 4xx/5xx: ``{"error": {"code", "message", "details"}}``.

Endpoints raise :class:`APIError` (or let Flask/werkzeug raise HTTP exceptions); the handlers
registered here render all of them, request-validation errors from flask-smorest/webargs
included. Unexpected exceptions are logged with their traceback and answered with a generic 500:
no stack trace ever reaches a client.
"""

from __future__ import annotations

import errno
import logging
from typing import Any

from flask import Flask, current_app, g, jsonify
from werkzeug.exceptions import HTTPException

log = logging.getLogger("recsys.service")

# Stable, machine-readable codes for HTTP statuses we answer with.
_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}


class APIError(Exception):
    """An error the client should see, with an HTTP status and a stable code."""

    def __init__(self, status: int, message: str, *, code: str | None = None, details: Any = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code or _CODES.get(status, "error")
        self.message = message
        self.details = details
        self.headers = headers or {}


def invalid(field: str, reason: str) -> APIError:
    """A 400 naming the offending field."""
    return APIError(400, f"{field}: {reason}", code="validation_error", details={"field": field, "reason": reason})


def error_response(status: int, code: str, message: str, details: Any = None, headers: dict | None = None):
    # The app's after-request hook counts it in recsys_errors_total{code}.
    g.error_code = code
    body = {"error": {"code": code, "message": message, "details": details if details is not None else {}}}
    response = jsonify(body)
    response.status_code = status
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def _validation_details(exc: HTTPException) -> dict[str, Any] | None:
    """webargs puts ``{location: {field: [messages]}}`` on ``exc.data['messages']``."""
    data = getattr(exc, "data", None) or {}
    messages = data.get("messages")
    if not isinstance(messages, dict):
        return None
    fields: dict[str, Any] = {}
    for _location, per_field in messages.items():
        if isinstance(per_field, dict):
            fields.update(per_field)
    return {"fields": fields}


def register_error_handlers(app: Flask) -> None:
    """Render APIError, every HTTPException and any other exception as the JSON error shape."""

    @app.errorhandler(APIError)
    def _api_error(exc: APIError):
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        status = exc.code or 500
        details = _validation_details(exc)
        if details is not None:
            # Request validation: a 400 that names the fields, like every other validation error.
            fields = ", ".join(sorted(details["fields"])) or "request"
            first = next(iter(details["fields"].values()), ["invalid"])
            reason = first[0] if isinstance(first, list) and first and isinstance(first[0], str) else str(first)
            return error_response(400, "validation_error", f"{fields}: {reason}", details)
        headers = {}
        if status == 405 and getattr(exc, "valid_methods", None):
            headers["Allow"] = ", ".join(exc.valid_methods)
        return error_response(status, _CODES.get(status, "error"), exc.description or exc.name, None, headers)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        outage = outage_of(exc)
        if outage is not None:
            dependency, reason = outage
            log.error("%s unavailable: %s: %s", dependency, type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
            retry = _retry_after()
            return error_response(
                503, "unavailable", f"the {dependency} is unavailable ({reason}); nothing was changed, retry later",
                {"dependency": dependency, "reason": reason, "retry_after_s": retry}, {"Retry-After": str(retry)})
        log.exception("unhandled error")
        return error_response(500, "internal_error", "internal error; the request was not completed")


# errno values that mean "the disk cannot take this write", not "the code is wrong".
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO}


def outage_of(exc: BaseException) -> tuple[str, str] | None:
    """``(dependency, reason)`` when ``exc`` means a dependency is down or full, else None.

    Database errors that are about the connection or the server (SQLAlchemy's OperationalError,
    InterfaceError, pool timeouts, invalidated connections) are outages; so is a full or
    read-only disk, whether SQLite or the filesystem reports it.
    """
    from sqlalchemy import exc as sa_exc

    if isinstance(exc, OSError) and exc.errno in _DISK_ERRNOS:
        return "disk", "full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else errno.errorcode.get(exc.errno, "error").lower()
    if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError)) or (
            isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated):
        text = str(getattr(exc, "orig", exc)).lower()
        if "disk is full" in text or "disk i/o error" in text or "no space left" in text:
            return "disk", "full"
        if "no such table" in text or "does not exist" in text:
            return "database", "not migrated: run `recsys db upgrade`"
        if "locked" in text or "busy" in text:
            return "database", "busy"
        if isinstance(exc, sa_exc.TimeoutError):
            return "database", "no free connection"
        return "database", "unreachable"
    return None


def _retry_after() -> int:
    try:
        return int(current_app.extensions["recsys"].settings.outage_retry_after_seconds)
    except (RuntimeError, KeyError, AttributeError):
        return 5
