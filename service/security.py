"""API keys (constant-time comparison) and per-client rate limiting."""

from __future__ import annotations

import hmac
import threading
import time
from typing import Iterable

from flask import Request

from service.errors import APIError


def presented_key(request: Request) -> str | None:
    """The key from ``X-API-Key`` or ``Authorization: Bearer ...``."""
    key = request.headers.get("X-API-Key")
    if key:
        return key.strip()
    auth = request.headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return None


def key_matches(key: str | None, allowed: Iterable[str]) -> bool:
    """True when ``key`` equals one of ``allowed``; every comparison is constant-time."""
    if not key:
        return False
    result = False
    for candidate in allowed:
        # No early exit: the time taken does not reveal which key (or how much of it) matched.
        result |= hmac.compare_digest(key.encode(), candidate.encode())
    return result


def require_key(request: Request, allowed: tuple[str, ...], what: str) -> None:
    """Raise 401 without a key, 403 with a wrong one. No keys configured means open access."""
    if not allowed:
        return
    key = presented_key(request)
    if key is None:
        raise APIError(401, f"{what} needs an API key (X-API-Key header)", headers={"WWW-Authenticate": "Bearer"})
    if not key_matches(key, allowed):
        raise APIError(403, f"this API key may not use {what}")


class RateLimiter:
    """Token bucket per client: ``per_minute`` requests per minute, bursts up to the same number.

    In-process: with several gunicorn workers each enforces the limit on its own share of traffic.
    """

    def __init__(self, per_minute: int, max_clients: int = 100_000):
        self.rate = per_minute / 60.0
        self.capacity = float(per_minute)
        self.max_clients = max_clients
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def check(self, client: str) -> None:
        """Take one token for ``client`` or raise 429 with Retry-After."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(client, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.rate)
            if tokens < 1.0:
                wait = (1.0 - tokens) / self.rate
                self._buckets[client] = (tokens, now)
                raise APIError(429, "rate limit exceeded", details={"retry_after_s": round(wait, 2)},
                               headers={"Retry-After": str(max(1, int(wait + 0.999)))})
            if len(self._buckets) >= self.max_clients and client not in self._buckets:
                self._buckets.clear()  # bounded memory: forget everyone rather than grow forever
            self._buckets[client] = (tokens - 1.0, now)
