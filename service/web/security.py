"""API keys with scopes (read < write < admin) and a per-client rate limit shared by every worker.

Keys come from ``read_keys``, ``api_keys`` (write) and ``admin_keys``; a higher scope includes
the lower ones. With no key configured at all the service is open (development only). The rate
limit is Flask-Limiter keyed on the authenticated identity (a short hash of a valid key, never
the key itself) or, for anonymous and invalid-key requests, the client address; counters live in
``rate_limit_storage_uri`` (Redis shares them across workers and replicas).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import logging
import math
import time
from typing import TYPE_CHECKING, Iterable

from flask import Flask, Request, request

from service.web.errors import APIError, error_response
from service.settings import Settings
from service.web.runtime import runtime

if TYPE_CHECKING:
    from flask_limiter import Limiter

log = logging.getLogger("recsys.service")

# Namespace of the rate-limit counters in shared storage (tests use their own).
RATE_LIMIT_KEY_PREFIX = "recsys"
# A slow or unreachable Redis must not hold requests for long: give up fast, then fall back.
REDIS_TIMEOUT_S = 0.5


class Scope(enum.IntEnum):
    """What a key may do; a higher scope includes every lower one."""

    READ = 1
    WRITE = 2
    ADMIN = 3


def presented_key(request: Request) -> str | None:
    """The key from ``X-API-Key`` or ``Authorization: Bearer ...``."""
    key = request.headers.get("X-API-Key")
    if key:
        return key.strip()
    auth = request.headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return None


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def key_matches(key: str | None, allowed: Iterable[str]) -> bool:
    """True when ``key`` equals one of ``allowed``; every comparison is constant-time."""
    if not key:
        return False
    presented = _digest(key)  # equal-length digests: the time does not reveal the keys' lengths either
    result = False
    for candidate in allowed:
        # No early exit: the time taken does not reveal which key (or how much of it) matched.
        result |= hmac.compare_digest(presented, _digest(candidate))
    return result


def is_open(settings: Settings) -> bool:
    """True when no key is configured at all: open development mode."""
    return not (settings.read_keys or settings.api_keys or settings.admin_keys)


def scope_of(key: str | None, settings: Settings) -> Scope | None:
    """The highest scope of a valid key, or None for no key or an invalid one."""
    # Every list is checked in full, so the time does not depend on which scope matched.
    matches = [(scope, key_matches(key, keys)) for scope, keys in (
        (Scope.READ, settings.read_keys), (Scope.WRITE, settings.api_keys), (Scope.ADMIN, settings.admin_keys))]
    found = [scope for scope, ok in matches if ok]
    return max(found) if found else None


def _identity(settings: Settings, req: Request | None = None) -> tuple[Scope | None, str | None]:
    """(scope, label) of the request's key, computed once per request; the label is a short hash."""
    req = request if req is None else req
    # Cached in the WSGI environ: it lives exactly as long as the request (g can outlive one).
    cached = req.environ.get("recsys.auth_identity")
    if cached is None:
        key = presented_key(req)
        scope = scope_of(key, settings) if key else None
        label = hashlib.sha256(key.encode()).hexdigest()[:16] if key and scope is not None else None
        cached = req.environ["recsys.auth_identity"] = (scope, label)
    return cached


def require_scope(settings: Settings, scope: Scope, what: str) -> None:
    """Raise 401 without a valid key, 403 with a valid key of a lower scope; open mode allows all.

    An invalid key is no identity at all, so it gets the same 401 as no key (RFC 6750).
    """
    if is_open(settings):
        return
    have, _label = _identity(settings)
    if have is None:
        invalid = presented_key(request) is not None
        challenge = 'Bearer error="invalid_token"' if invalid else "Bearer"
        message = f"{what} needs {'a valid' if invalid else 'an'} API key with {scope.name.lower()} scope (X-API-Key header)"
        raise APIError(401, message, details={"required_scope": scope.name.lower()},
                       headers={"WWW-Authenticate": challenge})
    if have < scope:
        raise APIError(403, f"{what} needs an API key with {scope.name.lower()} scope; this one has "
                       f"{have.name.lower()} scope", details={"required_scope": scope.name.lower()})


def rate_limit_key(settings: Settings, req: Request | None = None) -> str:
    """The rate-limit bucket: the valid key's hash, else the client address (so bogus keys share it)."""
    req = request if req is None else req
    _scope, label = _identity(settings, req)
    if label is not None:
        return f"key:{label}"
    return f"addr:{req.remote_addr or 'unknown'}"


def build_limiter(settings: Settings) -> Limiter | None:
    """Flask-Limiter with one app-wide limit per client, or None when the limit is off.

    Storage failure (Redis down): the limit falls back to per-process memory counters with a
    logged warning and Redis is retried with backoff; any other limiter error is logged and the
    request goes through (fail open) rather than answering 500.
    """
    if not settings.rate_limit_per_minute:
        return None
    from flask_limiter import ApplicationLimit, Limiter

    def key() -> str:
        return rate_limit_key(settings)

    per_minute = f"{settings.rate_limit_per_minute}/minute"
    options: dict = {}
    if settings.rate_limit_storage_uri.startswith(("redis://", "rediss://", "redis+unix://")):
        options = {"socket_timeout": REDIS_TIMEOUT_S, "socket_connect_timeout": REDIS_TIMEOUT_S}
    return Limiter(
        key,
        application_limits=[per_minute],
        # The fallback must be app-wide too (a plain limit would count per endpoint).
        in_memory_fallback=[ApplicationLimit(per_minute, key_function=key)],
        # Close to a true rolling minute without storing every hit (fixed windows allow 2x bursts).
        strategy="sliding-window-counter",
        storage_uri=settings.rate_limit_storage_uri,
        storage_options=options,
        key_prefix=RATE_LIMIT_KEY_PREFIX,
        swallow_errors=True,
        # Unmatched URLs (404/405) count too; the default (endpoint) would exempt them.
        request_identifier=lambda: request.endpoint or "unmatched",
    )


def install(app: Flask, limiter: Limiter | None, settings: Settings) -> None:
    """Proxy handling, the rate limit and its 429 answer, docs gating and the open-mode warning."""
    if settings.trusted_proxies:
        from werkzeug.middleware.proxy_fix import ProxyFix

        # Only this many X-Forwarded-For hops are believed: a client cannot spoof its address.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxies)  # type: ignore[method-assign]
    if is_open(settings):
        log.warning("no API key is configured: every endpoint is open (development only; "
                    "set RECSYS_READ_KEYS / RECSYS_API_KEYS / RECSYS_ADMIN_KEYS)")

    if limiter is not None:
        # Registered before the docs gate: requests are counted before any key check (no free guessing).
        limiter.request_filter(lambda: request.path.startswith("/health/"))
        limiter.init_app(app)

    @app.before_request
    def _gate_docs() -> None:
        # /openapi.json and /docs are registered by flask-smorest, so they are gated here.
        path = request.path
        if settings.read_requires_key and (path in ("/openapi.json", "/docs") or path.startswith("/docs/")):
            require_scope(settings, Scope.READ, "the API description")

    if limiter is None:
        return
    from flask_limiter import RateLimitExceeded

    @app.errorhandler(RateLimitExceeded)
    def _rate_limited(exc: RateLimitExceeded):
        retry_after = 60
        current = limiter.current_limit
        if current is not None:
            try:
                # flask-limiter's reset_at is int(reset + 1), up to a second past the window: cap it there.
                window_s = int(current.limit.get_expiry())
                retry_after = min(window_s, max(1, math.ceil(current.reset_at - time.time())))
            except Exception:  # storage trouble while reading the window: the full window is safe
                log.warning("could not read the rate-limit window; answering Retry-After: 60")
        return error_response(429, "rate_limited", f"rate limit exceeded ({exc.description})",
                              {"retry_after_s": retry_after, "limit": exc.description},
                              {"Retry-After": str(retry_after)})


def require_read() -> None:
    """Catalog reads are public unless ``read_requires_key``; then any valid key will do."""
    s = runtime().settings
    if s.read_requires_key:
        require_scope(s, Scope.READ, "this endpoint")


def require_personal() -> None:
    """A user's own data (history, recommendations) needs a read key whenever any key is configured."""
    s = runtime().settings
    if s.read_requires_key or (s.personal_reads_require_key and not is_open(s)):
        require_scope(s, Scope.READ, "reading a user's recommendations")


def require_write() -> None:
    require_scope(runtime().settings, Scope.WRITE, "writing")


def require_admin() -> None:
    require_scope(runtime().settings, Scope.ADMIN, "this admin endpoint")
