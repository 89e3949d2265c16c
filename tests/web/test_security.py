"""Access control (key scopes, private reads, open mode) and the rate limit, on the real app.

The app here has a migrated database and no index: every route these tests need answers without
one (or answers 503, which is neither 401 nor 403), so no encoder is loaded.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid

import pytest
import requests
from flask import Request
from limits import parse
from werkzeug.serving import make_server
from werkzeug.test import EnvironBuilder

from service.web import security
from service.web.app import create_app
from service.store.db import make_engine, upgrade
from service.settings import load_settings

# Loads the real text model, builds indexes or runs servers: `make test-fast` leaves it out.
pytestmark = pytest.mark.slow

KEYS = {"read_keys": '["r-key"]', "api_keys": '["w-key"]', "admin_keys": '["a-key"]'}
REDIS_URL = os.environ.get("RECSYS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("security")
    upgrade(make_engine(load_settings({"data_dir": str(root)}, environ={})))
    return root


@pytest.fixture
def make_app(data_dir, monkeypatch):
    for key in [k for k in os.environ if k.startswith("RECSYS_")]:
        monkeypatch.delenv(key)

    def make(**overrides):
        app = create_app({"data_dir": str(data_dir), "clip_enabled": False, **overrides})
        app.testing = True
        return app

    return make


def assert_error(resp, status):
    assert resp.status_code == status, resp.get_data(as_text=True)
    body = resp.get_json()
    assert set(body) == {"error"} and {"code", "message", "details"} <= set(body["error"])
    return body["error"]


def hdr(key):
    return {"X-API-Key": key} if key else {}


# --- scopes ----------------------------------------------------------------------------------------

EVENT = {"user_id": "u-1", "item_id": "nothing", "type": "view"}
# (method, path, json body, scope needed with keys configured and read_requires_key off)
ROUTES = [
    ("GET", "/users?k=5", None, "admin"),
    ("POST", "/admin/reload", None, "admin"),
    ("PUT", "/items/sec-item", {"kind": "article", "title": "Scoped"}, "write"),
    ("POST", "/events", EVENT, "write"),
    ("GET", "/users/u-1/recommendations?explain=true", None, "read"),
    ("POST", "/recommend", {"user_id": "u-1", "explain": True}, "read"),
    ("GET", "/items/sec-item", None, None),
    ("POST", "/recommend", {"session": ["sec-item"]}, None),
    ("GET", "/trending", None, None),
    ("GET", "/metrics", None, None),
    ("GET", "/status", None, None),
    ("GET", "/openapi.json", None, None),
    ("GET", "/docs", None, None),
    ("GET", "/ui/facets", None, None),
    ("GET", "/health/live", None, None),
]
ORDER = [None, "read", "write", "admin"]


@pytest.fixture(scope="module")
def keyed(data_dir):
    app = create_app({"data_dir": str(data_dir), "clip_enabled": False, **KEYS})
    app.testing = True
    return app.test_client()


@pytest.mark.parametrize("method,path,body,needs", ROUTES, ids=[f"{m} {p}" for m, p, _b, _n in ROUTES])
def test_scope_matrix(keyed, method, path, body, needs):
    for who, key in (("anonymous", None), ("bogus", "not-a-key"), ("read", "r-key"), ("write", "w-key"),
                     ("admin", "a-key")):
        resp = keyed.open(path, method=method, json=body, headers=hdr(key))
        have = who if who in ORDER else None
        if ORDER.index(have) >= ORDER.index(needs):
            assert resp.status_code not in (401, 403), (who, resp.get_data(as_text=True))
        elif have is None:
            # No valid identity (no key or an invalid one): 401 with a challenge.
            err = assert_error(resp, 401)
            assert err["details"]["required_scope"] == needs and resp.headers["WWW-Authenticate"].startswith("Bearer")
            assert "not-a-key" not in resp.get_data(as_text=True)
        else:
            assert assert_error(resp, 403)["details"]["required_scope"] == needs


def test_users_lists_users_for_admins_only(keyed):
    assert keyed.post("/events", json={**EVENT, "item_id": "sec-item"}, headers=hdr("w-key")).status_code == 200
    assert_error(keyed.get("/users"), 401)
    assert_error(keyed.get("/users", headers=hdr("r-key")), 403)
    assert_error(keyed.get("/users", headers={"Authorization": "Bearer w-key"}), 403)
    users = keyed.get("/users", headers={"Authorization": "Bearer a-key"}).get_json()["users"]
    assert "u-1" in [u["id"] for u in users]
    # A user's history stays private: explained recommendations need a read key.
    assert_error(keyed.get("/users/u-1/recommendations?explain=true"), 401)
    assert keyed.get("/users/u-1/recommendations?explain=true", headers=hdr("r-key")).status_code == 200
    assert keyed.get("/status").get_json()["auth"] == "keys"


def test_read_requires_key_covers_catalog_metrics_docs_and_status(make_app):
    client = make_app(read_requires_key=True, read_keys='["r-key"]').test_client()
    for path in ("/search?q=x", "/trending", "/items/x", "/metrics", "/openapi.json", "/docs",
                 "/docs/assets/swagger-ui.css", "/status", "/ui/facets"):
        assert_error(client.get(path), 401)
        assert client.get(path, headers=hdr("r-key")).status_code not in (401, 403), path
    assert client.get("/metrics", headers=hdr("r-key")).status_code == 200
    assert client.get("/openapi.json", headers=hdr("r-key")).get_json()["info"]["title"] == "recsys-search"
    assert client.get("/health/live").status_code == 200
    assert client.get("/health/ready").status_code in (200, 503)  # no index here: 503, never 401


def test_personal_reads_can_be_opened_but_users_stays_admin(make_app):
    client = make_app(personal_reads_require_key=False, **KEYS).test_client()
    assert client.get("/users/u-1/recommendations").status_code == 200
    assert client.post("/recommend", json={"user_id": "u-1"}).status_code == 200
    assert_error(client.get("/users"), 401)


def test_open_mode_allows_everything_and_says_so(make_app, caplog):
    with caplog.at_level(logging.WARNING, logger="recsys.service"):
        client = make_app(read_requires_key=True).test_client()  # no key at all: still open
    assert sum("no API key is configured" in r.getMessage() for r in caplog.records) == 1
    assert client.get("/status").get_json()["auth"] == "open"
    assert client.get("/users").status_code == 200
    assert client.get("/users/u-1/recommendations?explain=true").status_code == 200
    assert client.post("/admin/reload").status_code == 200
    assert client.put("/items/open-item", json={"kind": "article", "title": "Open"}).status_code in (200, 201)


def test_key_comparison_and_scopes():
    s = load_settings({**KEYS, "admin_keys": '["a-key", "r-key"]'}, environ={})
    assert security.scope_of("r-key", s) is security.Scope.ADMIN  # the highest scope wins
    assert security.scope_of("w-key", s) is security.Scope.WRITE
    assert security.scope_of("w-ke", s) is None and security.scope_of("", s) is None
    assert security.key_matches("k", ["x", "k"]) and not security.key_matches(None, ["k"])


# --- rate limit --------------------------------------------------------------------------------------


def test_rotating_keys_do_not_bypass_the_limit(make_app):
    client = make_app(rate_limit_per_minute=3, **KEYS).test_client()
    codes = [client.get("/trending", headers=hdr(uuid.uuid4().hex)).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    resp = client.get("/trending", headers=hdr(uuid.uuid4().hex))
    err = assert_error(resp, 429)
    assert err["code"] == "rate_limited" and 1 <= int(resp.headers["Retry-After"]) <= 60
    assert err["details"]["retry_after_s"] == int(resp.headers["Retry-After"])
    assert_error(client.get("/no-such-page"), 429)  # unmatched URLs count as well
    assert client.get("/health/live").status_code == 200 and client.get("/health/ready").status_code != 429
    # A valid key is its own identity, with its own bucket.
    assert client.get("/trending", headers=hdr("r-key")).status_code == 200
    assert "recsys_errors_total{code=\"rate_limited\"}" in client.get(
        "/metrics", headers=hdr("w-key")).get_data(as_text=True)


def test_retry_after_never_exceeds_the_window(make_app, monkeypatch):
    """flask-limiter rounds reset_at up by a second: half a second into a minute, the window's
    reset read 61 s away for a one-minute window (seen once in CI). Retry-After stays within it."""
    import limits.storage.memory
    import limits.strategies
    from service.web import security as sec

    frozen = _FrozenTime(60 * (int(time.time()) // 60) + 60.5)  # the worst case for that rounding
    for module in (limits.storage.memory, limits.strategies, sec):
        monkeypatch.setattr(module, "time", frozen)
    client = make_app(rate_limit_per_minute=1, **KEYS).test_client()
    assert client.get("/trending", headers=hdr("r-key")).status_code == 200
    resp = client.get("/trending", headers=hdr("r-key"))
    assert_error(resp, 429)
    assert 1 <= int(resp.headers["Retry-After"]) <= 60


class _FrozenTime:
    """The ``time`` module with ``time()`` stopped: a rate window that never slides mid-test."""

    def __init__(self, at: float):
        self.at = at

    def time(self) -> float:
        return self.at

    def __getattr__(self, name):
        return getattr(time, name)


@pytest.fixture
def frozen_limit_clock(monkeypatch):
    """Stop the clock the in-memory limiter counts with (the flood below can outlast a minute on a
    slow machine, and a sliding window would then forget the client's first hits)."""
    import limits.storage.memory
    import limits.strategies

    frozen = _FrozenTime(time.time())
    monkeypatch.setattr(limits.storage.memory, "time", frozen)
    monkeypatch.setattr(limits.strategies, "time", frozen)
    return frozen


def test_a_flood_of_bogus_keys_does_not_reset_a_clients_bucket(make_app, frozen_limit_clock):
    app = make_app(rate_limit_per_minute=5, **KEYS)
    limiter, settings = next(iter(app.extensions["limiter"])), app.extensions["recsys"].settings
    client = app.test_client()
    assert [client.get("/trending", headers=hdr("r-key")).status_code for _ in range(2)] == [200, 200]
    # Distinct bogus keys from another address, straight through the WSGI app: one bucket for all.
    env = EnvironBuilder(path="/trending", environ_base={"REMOTE_ADDR": "10.9.9.9"}).get_environ()
    statuses: dict[str, int] = {}

    def start_response(status, _headers, _exc=None):
        statuses[status[:3]] = statuses.get(status[:3], 0) + 1

    for i in range(2_000):
        body = app.wsgi_app({**env, "HTTP_X_API_KEY": f"bogus-{i}"}, start_response)
        getattr(body, "close", lambda: None)()
    assert statuses == {"200": 5, "429": 1_995}
    # 100,000 more through the app's own key function and counters (the full stack costs ~1 ms
    # a request here): every one lands in the attacker's address bucket.
    item, buckets = parse("5/minute"), set()
    for i in range(100_000):
        bucket = security.rate_limit_key(settings, Request({**env, "HTTP_X_API_KEY": f"flood-{i}"}))
        buckets.add(bucket)
        limiter.limiter.hit(item, security.RATE_LIMIT_KEY_PREFIX, bucket, "global")
    assert buckets == {"addr:10.9.9.9"}
    assert len(limiter.storage.storage) < 10  # a counter or two per client, never one per key
    # The legitimate client still has exactly 3 of its 5 left.
    codes = [client.get("/trending", headers=hdr("r-key")).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]


def test_client_address_comes_from_trusted_proxies_only(make_app):
    spoofed = make_app(rate_limit_per_minute=1).test_client()
    assert spoofed.get("/trending", headers={"X-Forwarded-For": "1.1.1.1"}).status_code == 200
    assert_error(spoofed.get("/trending", headers={"X-Forwarded-For": "2.2.2.2"}), 429)  # not believed
    proxied = make_app(rate_limit_per_minute=1, trusted_proxies=1).test_client()
    assert proxied.get("/trending", headers={"X-Forwarded-For": "1.1.1.1"}).status_code == 200
    assert proxied.get("/trending", headers={"X-Forwarded-For": "2.2.2.2"}).status_code == 200
    assert_error(proxied.get("/trending", headers={"X-Forwarded-For": "9.9.9.9, 1.1.1.1"}), 429)


@pytest.fixture
def redis_prefix(monkeypatch):
    """A key namespace of this test's own in the shared Redis; only its keys are deleted."""
    redis = pytest.importorskip("redis")
    conn = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        conn.ping()
    except redis.RedisError as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"Redis not reachable at {REDIS_URL}: {exc}")
        pytest.skip(f"Redis not reachable at {REDIS_URL}: {exc}")
    prefix = f"recsys-test-{uuid.uuid4().hex}"
    monkeypatch.setattr(security, "RATE_LIMIT_KEY_PREFIX", prefix)
    yield prefix
    keys = list(conn.scan_iter(match=f"*{prefix}*"))
    if keys:
        conn.delete(*keys)
    conn.close()


def test_two_instances_share_the_limit_through_redis(make_app, redis_prefix):
    import redis

    first = make_app(rate_limit_per_minute=3, rate_limit_storage_uri=REDIS_URL).test_client()
    second = make_app(rate_limit_per_minute=3, rate_limit_storage_uri=REDIS_URL).test_client()
    assert [first.get("/trending").status_code, second.get("/trending").status_code,
            first.get("/trending").status_code] == [200, 200, 200]
    resp = second.get("/trending")
    assert_error(resp, 429) and int(resp.headers["Retry-After"]) >= 1
    stored = [k.decode() for k in redis.Redis.from_url(REDIS_URL).scan_iter(match=f"*{redis_prefix}*")]
    assert stored and all("w-key" not in k and "a-key" not in k for k in stored)
    # A valid key's bucket is stored under a hash of the key, never the key itself.
    keyed = make_app(rate_limit_per_minute=3, rate_limit_storage_uri=REDIS_URL, **KEYS).test_client()
    assert keyed.get("/trending", headers=hdr("w-key")).status_code == 200
    stored = [k.decode() for k in redis.Redis.from_url(REDIS_URL).scan_iter(match=f"*{redis_prefix}*")]
    assert any("key:" in k for k in stored) and not any("w-key" in k for k in stored)


def test_redis_down_falls_back_to_per_process_limits(make_app, caplog):
    with caplog.at_level(logging.WARNING, logger="flask-limiter"):
        client = make_app(rate_limit_per_minute=3, rate_limit_storage_uri="redis://127.0.0.1:1/0").test_client()
        codes = [client.get("/trending").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    assert any("falling back to in-memory" in r.getMessage() for r in caplog.records)


def test_rate_limit_over_real_http(make_app):
    app = make_app(rate_limit_per_minute=2, **KEYS)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        codes = [requests.get(f"{base}/trending", headers=hdr(uuid.uuid4().hex), timeout=10).status_code
                 for _ in range(3)]
        assert codes == [200, 200, 429]
        resp = requests.get(f"{base}/trending", headers=hdr("forged"), timeout=10)
        assert resp.status_code == 429 and int(resp.headers["Retry-After"]) >= 1
        assert resp.json()["error"]["code"] == "rate_limited"
        assert requests.get(f"{base}/users", headers=hdr("r-key"), timeout=10).status_code == 403
    finally:
        server.shutdown()
        thread.join(timeout=5)
