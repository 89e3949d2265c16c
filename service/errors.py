"""One JSON error shape for every 4xx/5xx: ``{"error": {"code", "message", "details"}}``.

Endpoints raise :class:`APIError` (or let Flask/werkzeug raise HTTP exceptions); the handlers
registered here render all of them, request-validation errors from flask-smorest/webargs
included. Unexpected exceptions are logged with their traceback and answered with a generic 500:
no stack trace ever reaches a client.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, g, jsonify
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
        log.exception("unhandled error")
        return error_response(500, "internal_error", "internal error; the request was not completed")
