"""The gunicorn worker the service runs under: gthread, with JSON error pages.

Gunicorn answers some malformed requests itself, before the app sees them (a request line over
``limit_request_line`` gets 414, oversized headers 431, a garbled request line 400), and writes
those answers as HTML. Clients of this API parse one error shape, so this worker writes them as
the service's JSON envelope ``{"error": {"code", "message", "details"}}`` instead::

    gunicorn -w 2 -k service.web.gunicorn_worker.JsonErrorThreadWorker --threads 2 'service.web.app:create_app()'
"""

from __future__ import annotations

import json

from gunicorn import util
from gunicorn.workers.gthread import ThreadWorker

_CODES = {400: "bad_request", 403: "forbidden", 414: "uri_too_long", 417: "expectation_failed",
          431: "headers_too_large", 500: "internal_error", 501: "not_implemented"}


def write_json_error(sock, status_int: int, reason: str, mesg: str) -> None:
    """Gunicorn's ``util.write_error`` with a JSON body (same signature, same framing)."""
    body = json.dumps({"error": {
        "code": _CODES.get(status_int, "error"),
        # Gunicorn's messages echo parts of the raw request; keep them short.
        "message": f"{reason}: {mesg[:200]}" if mesg else reason,
        "details": {},
    }}).encode("utf-8")
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1")
    util.write_nonblock(sock, head + body)


class JsonErrorThreadWorker(ThreadWorker):
    """gunicorn's gthread worker whose own error answers are JSON."""

    def init_process(self) -> None:
        # Gunicorn's worker base calls util.write_error for the errors it answers itself; this
        # process is a worker of this service only, so replacing it here changes nothing else.
        util.write_error = write_json_error
        super().init_process()
