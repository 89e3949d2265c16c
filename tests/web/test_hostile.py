"""Hostile input against the real app, on SQLite and on PostgreSQL.

What a hostile client (or an unlucky operator) sends: server file paths and internal URLs as
images, huge and far-future event values, NUL bytes and lone surrogates in every kind of field,
JSON nested 10,000 deep, decompression bombs, forged cursors, a different API key on every
request, a database that goes away under load, and a garbage index pointer. Every answer must be
a 4xx (or 503 for an outage) in the JSON error envelope, never a 500, and never lose or leak data.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image
from sqlalchemy import select, text

from indexer.pipeline import Pipeline
from service.vectors import artifacts
from service.web.app import create_app
from service.store.db import make_engine, make_session_factory, upgrade
from service.store.importing import import_items
from service.store.models import Event, Item, User
from service.settings import load_settings
from tests.conftest import IN_CI

# Loads the real text model, builds indexes or runs servers: `make test-fast` leaves it out.
pytestmark = pytest.mark.slow

CATALOG = [
    {"id": "shoe", "kind": "product", "title": "Red trail running shoe", "category": "shoes",
     "text": "Grippy sole for muddy trails.", "attributes": {"price": 120.0}},
    {"id": "jacket", "kind": "product", "title": "Green waterproof rain jacket", "category": "jackets",
     "text": "Taped seams keep you dry.", "attributes": {"price": 180.0}},
    {"id": "knife", "kind": "product", "title": "Carbon steel chef knife", "category": "kitchen",
     "text": "A sharp blade for vegetables.", "attributes": {"price": 75.0}},
    {"id": "guide", "kind": "article", "title": "Sharpening a knife on a whetstone", "category": "care",
     "text": "Hold the blade at fifteen degrees."},
]


def strict_json(resp) -> object:
    """The body parsed as strict JSON: NaN and Infinity are not JSON and fail here."""

    def refuse(name: str):
        raise AssertionError(f"{name} in a response body: {resp.request.path if hasattr(resp, 'request') else ''}")

    return json.loads(resp.get_data(as_text=True), parse_constant=refuse)


def assert_error(resp, status: int, field: str | None = None) -> dict:
    assert resp.status_code == status, (resp.status_code, resp.get_data(as_text=True)[:300])
    body = strict_json(resp)
    assert set(body) == {"error"} and {"code", "message", "details"} <= set(body["error"])
    # The message never echoes the hostile characters themselves.
    assert not any(c == "\x00" or 0xD800 <= ord(c) <= 0xDFFF for c in body["error"]["message"])
    if field:
        assert field in body["error"]["message"], body["error"]["message"]
    return body["error"]


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def deployment(request, tmp_path_factory):
    """A data dir with the catalog imported and a text index published, on one backend."""
    root = tmp_path_factory.mktemp(f"hostile-{request.param}")
    (root / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in CATALOG))
    overrides = {"data_dir": str(root / "data"), "clip_enabled": False}
    if request.param == "postgresql":
        overrides["database_url"] = request.getfixturevalue("make_postgres_database")()
    settings = load_settings(overrides, environ={})
    engine = make_engine(settings)
    upgrade(engine)
    factory = make_session_factory(engine)
    import_items(root / "items.jsonl", session_factory=factory, progress=False)
    Pipeline(settings, factory).run()
    yield {"root": root, "overrides": overrides, "settings": settings, "factory": factory, "backend": request.param}
    engine.dispose()


@pytest.fixture
def client(deployment, monkeypatch):
    for key in [k for k in os.environ if k.startswith("RECSYS_")]:
        monkeypatch.delenv(key)
    app = create_app(deployment["overrides"])
    app.testing = True
    return app.test_client()


# --- file paths and URLs as images -------------------------------------------------------------


@pytest.mark.parametrize("location", ["/etc/passwd", "../../etc/passwd", "file:///etc/passwd",
                                      "recsys.db", "settings.json", "data/recsys.db"])
def test_server_paths_are_never_accepted_over_http(client, deployment, location):
    if location.endswith(("recsys.db", "settings.json")) and not location.startswith("data/"):
        location = str(Path(deployment["overrides"]["data_dir"]) / location)
    resp = client.put("/items/x-path", json={"kind": "product", "title": "t", "image": location})
    error = assert_error(resp, 400, "image")
    # No file-existence oracle: the answer never names or describes the path.
    assert "not found" not in error["message"] and location not in error["message"]
    got = client.get("/items/x-path/image")
    assert got.status_code == 404 and b"root:" not in got.get_data()


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/x.png", "http://169.254.169.254/latest/meta-data/",
                                 "http://[::1]/x.png", "http://10.0.0.1/x.png", "http://localhost/x.png"])
def test_internal_urls_are_refused_and_never_redirected_to(client, url):
    assert_error(client.put("/items/x-url", json={"kind": "product", "title": "t", "image": url}), 400, "image")
    got = client.get("/items/x-url/image")
    assert got.status_code == 404 and "Location" not in got.headers


# --- numbers: bounds, NaN, far-future times ----------------------------------------------------


@pytest.mark.parametrize("event, field", [
    ({"type": "rating", "value": 1e308}, "value"),
    ({"type": "rating", "value": -1e7}, "value"),
    ({"type": "rating", "value": "NaN"}, "value"),
    ({"type": "rating", "value": 10 ** 400}, "value"),
    ({"type": "view", "timestamp": "9999-12-31T23:59:59Z"}, "timestamp"),
    ({"type": "view", "timestamp": "0001-01-01T00:00:00+05:00"}, "timestamp"),
    ({"type": "view", "timestamp": 1e300}, "timestamp"),
    ({"type": "view", "timestamp": "x" * 10_000}, "timestamp"),
])
def test_out_of_range_event_values_and_times_are_rejected(client, event, field):
    body = strict_json(client.post("/events", json={"user_id": "u-bounds", "item_id": "shoe", **event}))
    assert body["accepted"] == 0 and body["rejected"] == 1
    assert body["results"][0]["reason"].startswith(field)


def test_nan_constants_in_a_body_are_400(client):
    resp = client.post("/events", data='{"user_id": "u", "item_id": "shoe", "type": "rating", "value": NaN}',
                       content_type="application/json")
    assert_error(resp, 400, "body")


def test_a_small_future_skew_is_accepted(client):
    soon = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=60)).isoformat()
    body = strict_json(client.post("/events", json={"user_id": "u-skew", "item_id": "shoe", "type": "view",
                                                    "timestamp": soon}))
    assert body["accepted"] == 1


def _every_get(client) -> list[str]:
    """Every GET route of the app, with sample values in place of its variables."""
    urls = []
    for rule in client.application.url_map.iter_rules():
        if "GET" not in rule.methods or rule.rule.startswith(("/static", "/docs/assets")):
            continue
        url = rule.rule.replace("<string:item_id>", "shoe").replace("<string:user_id>", "u-poison")
        url = url.replace("<path:name>", "x").replace("<item_id>", "shoe").replace("<user_id>", "u-poison")
        urls.append(url)
    return urls


def test_poisoned_rows_never_make_any_endpoint_emit_nan(client, deployment):
    """Rows stored before the bounds existed (inf rating, year-9999 time) reach no answer as NaN."""
    with deployment["factory"]() as session:
        items = dict(session.execute(select(Item.external_id, Item.id)).all())
        for n, external in enumerate(("u-poison", "u-victim")):
            session.add(User(external_id=external))
        session.flush()
        users = dict(session.execute(select(User.external_id, User.id)).all())
        rows = [("poison-1", "u-poison", "shoe", "rating", 1e308, dt.datetime(9999, 12, 31)),
                ("poison-2", "u-poison", "jacket", "rating", float("inf"), dt.datetime.utcnow()),
                ("victim-1", "u-victim", "knife", "view", None, dt.datetime.utcnow())]
        for cid, user, item, type_, value, when in rows:
            try:
                with session.begin_nested():
                    session.add(Event(client_event_id=cid, user_id=users[user], item_id=items[item], type=type_,
                                      value=value, occurred_at=when))
            except Exception:  # PostgreSQL stores inf; a backend that refuses it is fine too
                pass
        session.commit()
    client.application.extensions["recsys"].behaviour.refresh(deployment["factory"]())
    checked = 0
    for url in _every_get(client):
        for query in ("", "?explain=true&k=5&window=9999d"):
            resp = client.get(url + query)
            assert resp.status_code < 500, (url, resp.status_code, resp.get_data(as_text=True)[:300])
            if resp.mimetype == "application/json":
                body = strict_json(resp)
                checked += 1
                for hit in body.get("hits", []) if isinstance(body, dict) else []:
                    assert np.isfinite(hit["score"]), (url, hit)
    for body in ({"positive": ["shoe"]}, {"session": ["shoe", "jacket"]}, {"user_id": "u-poison"}):
        strict_json(client.post("/recommend", json=body))
    assert checked >= 10


def test_the_json_provider_can_never_write_nan(client):
    app = client.application
    with app.app_context():
        text_out = app.json.dumps({"a": float("nan"), "b": [float("inf"), np.float32("-inf"), 1.5], "c": np.float64(2)})
    assert json.loads(text_out) == {"a": None, "b": [None, None, 1.5], "c": 2.0}


# --- strings: NUL bytes and lone surrogates, everywhere ----------------------------------------


@pytest.mark.parametrize("url", [
    "/items/a%00b", "/items/a%00b/image", "/items/a%00b/similar", "/items/a%00b/also",
    "/users/a%00b/recommendations", "/search?q=a%00b", "/search?q=shoe&category=a%00b",
    "/search?q=shoe&tags=a%00b", "/suggest?q=a%00b", "/trending?category=a%00b", "/search?q%00=x",
])
def test_nul_in_path_and_query_is_400(client, url):
    assert_error(client.get(url), 400)


@pytest.mark.parametrize("method, url, body, field", [
    ("put", "/items/nul-title", {"kind": "product", "title": "a\x00b"}, "title"),
    ("put", "/items/nul-text", {"kind": "product", "title": "t", "text": "a\x00b"}, "text"),
    ("put", "/items/nul-cat", {"kind": "product", "title": "t", "category": "a\x00b"}, "category"),
    ("put", "/items/nul-attr", {"kind": "product", "title": "t", "attributes": {"k\x00": "v"}}, "attributes"),
    ("put", "/items/sur-title", {"kind": "product", "title": "a\ud800b"}, "title"),
    ("put", "/items/sur-tag", {"kind": "product", "title": "t", "tags": ["\udfff"]}, "tags"),
    ("post", "/events", {"user_id": "u\x00", "item_id": "shoe", "type": "view"}, "user_id"),
    ("post", "/events", {"user_id": "u", "item_id": "shoe", "type": "view", "event_id": "\ud83d"}, "event_id"),
    ("post", "/recommend", {"positive": ["sh\x00oe"]}, "positive"),
    ("post", "/recommend", {"session": ["\udc80"]}, "session"),
    ("post", "/search", {"item_id": "a\x00"}, "item_id"),
])
def test_nul_and_surrogates_in_bodies_are_400_naming_the_field(client, deployment, method, url, body, field):
    # json.dumps escapes both as \\u0000 / \\ud800: exactly what a hostile client sends.
    raw = json.dumps(body)
    resp = getattr(client, method)(url, data=raw, content_type="application/json")
    assert_error(resp, 400, field)
    with deployment["factory"]() as session:  # nothing was stored
        assert session.scalar(select(Item).where(Item.external_id.like("nul-%") | Item.external_id.like("sur-%"))) is None


def test_nul_in_form_fields_is_400(client):
    resp = client.post("/search", data={"k": "2", "category": "a\x00b", "image": (io.BytesIO(b"x"), "x.png")},
                       content_type="multipart/form-data")
    assert_error(resp, 400, "category")


# --- structure: depth, size, bombs, cursors -----------------------------------------------------


@pytest.mark.parametrize("url", ["/events", "/recommend", "/search", "/items/deep"])
def test_json_nested_10000_deep_is_400(client, url):
    deep = "[" * 10_000 + "]" * 10_000
    method = client.put if url.startswith("/items") else client.post
    assert_error(method(url, data=deep, content_type="application/json"), 400, "nested")
    wide_deep = '{"events": ' + "[" * 40 + "]" * 40 + "}"
    assert_error(method(url, data=wide_deep, content_type="application/json"), 400)


def test_invalid_utf8_body_is_400(client):
    assert_error(client.post("/events", data=b'{"user_id": "\xff"}', content_type="application/json"), 400, "body")


def _bomb(pixels_side: int = 30_000) -> bytes:
    """A PNG whose header claims 30,000 x 30,000 pixels (900 MP) in a few kilobytes."""
    buf = io.BytesIO()
    Image.new("1", (pixels_side, pixels_side)).save(buf, format="PNG")
    return buf.getvalue()


def test_decompression_bomb_upload_is_4xx(client):
    bomb = _bomb()
    assert len(bomb) < 1_000_000
    resp = client.post("/search", data={"image": (io.BytesIO(bomb), "bomb.png")}, content_type="multipart/form-data")
    assert resp.status_code in (400, 413, 415), resp.get_data(as_text=True)[:300]
    assert_error(resp, resp.status_code)
    put = client.put("/items/bomb", json={"kind": "image", "title": "bomb", "image_base64": base64.b64encode(bomb).decode()})
    assert 400 <= put.status_code < 500, put.get_data(as_text=True)[:300]


@pytest.mark.parametrize("cursor", [base64.urlsafe_b64encode(b"o:-5").decode(), "bzotNQ", "o:-5", "%%%", "AAAA",
                                    base64.urlsafe_b64encode(b"o:" + b"9" * 5000).decode(), "\u00e9"])
def test_forged_cursors_are_400(client, cursor):
    assert_error(client.get("/search", query_string={"q": "shoe", "cursor": cursor}), 400, "cursor")


@pytest.mark.parametrize("query", ["k=-1", "k=1e9", "k=NaN", "offset=-3", "diversity=NaN", "diversity=inf",
                                   "range=price:nan:", "range=price:-inf:inf"])
def test_bad_numbers_in_parameters_are_400(client, query):
    url = "/users/u1/recommendations?" + query if query.startswith("diversity") else "/search?q=shoe&" + query
    resp = client.get(url)
    assert resp.status_code == 400 or (resp.status_code == 200 and "range" in query), resp.get_data(as_text=True)[:300]
    strict_json(resp)


# --- outages: the database goes away under load --------------------------------------------------

PG_BIN = Path("/usr/lib/postgresql") / (sorted(os.listdir("/usr/lib/postgresql"))[-1] if Path("/usr/lib/postgresql").is_dir() else "none") / "bin"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OwnPostgres:
    """A throw-away PostgreSQL cluster on its own port, owned by this test (started and stopped here)."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="recsys-pg-", dir="/tmp"))
        self.user = [] if os.geteuid() != 0 else ["runuser", "-u", "postgres", "--"]
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run("initdb", "-D", str(self.dir / "db"), "-A", "trust", "-U", "postgres", "--no-sync")

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run([*self.user, str(PG_BIN / tool), *args], check=True, capture_output=True, timeout=120)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.dir / "db"), "-w", "-t", "60", "-l", str(self.dir / "log"),
                  "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1", "start")

    def wait_accepting(self, timeout_s: float = 60.0) -> float:
        """Block until the server accepts connections (crash recovery can take a while); return when."""
        import psycopg

        deadline = time.monotonic() + timeout_s
        while True:
            try:
                psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", connect_timeout=2).close()
                return time.monotonic()
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self, mode: str = "immediate") -> None:
        self._run("pg_ctl", "-D", str(self.dir / "db"), "-w", "-m", mode, "stop")

    def destroy(self) -> None:
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def own_postgres():
    if not (PG_BIN / "initdb").exists():
        if IN_CI:
            pytest.fail(f"no initdb under {PG_BIN} (CI=true: the outage test must run)")
        pytest.skip("PostgreSQL server binaries not installed")
    pg = OwnPostgres()
    pg.start()
    yield pg
    pg.destroy()


@pytest.mark.postgres
def test_database_outage_under_load_is_503_and_loses_no_acknowledged_write(own_postgres, tmp_path):
    from werkzeug.serving import make_server

    overrides = {"data_dir": str(tmp_path / "data"), "database_url": own_postgres.url, "clip_enabled": False,
                 "behaviour_refresh_seconds": 0.5}
    settings = load_settings(overrides, environ={})
    engine = make_engine(settings)
    upgrade(engine)
    (tmp_path / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in CATALOG))
    import_items(tmp_path / "items.jsonl", session_factory=make_session_factory(engine), progress=False)
    engine.dispose()
    app = create_app(overrides)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    base = f"http://127.0.0.1:{server.server_port}"
    threading.Thread(target=server.serve_forever, daemon=True).start()

    acknowledged: list[str] = []
    outcomes: list[tuple[float, int, str | None]] = []
    lock, stop = threading.Lock(), threading.Event()

    def writer(n: int) -> None:
        with requests.Session() as http:
            for i in range(2000):  # bounded
                if stop.is_set():
                    return
                event_id = f"w{n}-{i}-{uuid.uuid4().hex[:6]}"
                try:
                    r = http.post(f"{base}/events", json={"event_id": event_id, "user_id": f"u{n}", "item_id": "shoe",
                                                          "type": "view"}, timeout=15)
                    status, retry = r.status_code, r.headers.get("Retry-After")
                    if status == 200 and r.json()["accepted"] == 1:
                        with lock:
                            acknowledged.append(event_id)
                    elif status == 503:
                        assert r.json()["error"]["details"]["dependency"] == "database", r.text
                        retry = f"{retry}|{r.json()['error']['message']}"
                except requests.RequestException:
                    status, retry = -1, None
                with lock:
                    outcomes.append((time.monotonic(), status, retry))
                time.sleep(0.01)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
    try:
        for t in threads:
            t.start()
        time.sleep(1.5)
        stopped_at = time.monotonic()
        own_postgres.stop("immediate")
        time.sleep(2.0)
        restarted_at = time.monotonic()
        own_postgres.start()
        ready_at = own_postgres.wait_accepting()
        time.sleep(2.0)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
        server.shutdown()
    during = [o for o in outcomes if stopped_at + 0.3 < o[0] < restarted_at]
    assert during and all(status == 503 for _, status, _ in during), {s for _, s, _ in during}
    assert all(retry is not None and int(retry.split("|")[0]) > 0 for _, status, retry in during if status == 503)
    assert not [o for o in outcomes if o[1] >= 500 and o[1] != 503], "a 5xx other than 503"
    after = [o for o in outcomes if o[0] > ready_at + 0.2]
    assert after and all(status == 200 for _, status, _ in after)  # recovery is immediate
    check = make_engine(own_postgres.url)
    with check.connect() as conn:
        stored = set(conn.execute(text("SELECT client_event_id FROM events")).scalars())
    check.dispose()
    assert acknowledged and set(acknowledged) <= stored, f"{len(set(acknowledged) - stored)} acknowledged events lost"


def test_full_disk_is_503_with_retry_after(client, monkeypatch):
    import errno

    import service.web.items as items_api

    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(items_api, "touch_signal", full)
    resp = client.put("/items/disk-full", json={"kind": "product", "title": "Disk full test"})
    error = assert_error(resp, 503)
    assert error["details"]["dependency"] == "disk" and int(resp.headers["Retry-After"]) > 0


# --- a garbage index pointer --------------------------------------------------------------------


@pytest.mark.parametrize("pointer", [b"\xff\xfe\x00garbage", b"../../etc", b"", None])
def test_garbage_index_pointer_still_serves_a_good_version(deployment, monkeypatch, tmp_path, pointer):
    for key in [k for k in os.environ if k.startswith("RECSYS_")]:
        monkeypatch.delenv(key)
    src = Path(deployment["settings"].index_path)
    index_dir = tmp_path / "indexes"
    shutil.copytree(src, index_dir, ignore=shutil.ignore_patterns("cache", "*.lock"))
    current = index_dir / artifacts.CURRENT
    current.unlink()
    if pointer is None:
        current.mkdir()  # a directory where the pointer file should be
    else:
        current.write_bytes(pointer)
    app = create_app({**deployment["overrides"], "index_dir": str(index_dir)})
    client = app.test_client()
    resp = client.get("/search?q=rain jacket&mode=semantic&k=1")
    assert resp.status_code == 200, resp.get_data(as_text=True)[:300]
    assert strict_json(resp)["hits"][0]["id"] == "jacket"
    status = strict_json(client.get("/status"))
    assert status["index_version"] and status.get("index_fallback")


# --- keys: a new random key per request ---------------------------------------------------------


def test_rotating_random_keys_do_not_bypass_the_rate_limit(deployment, monkeypatch):
    for key in [k for k in os.environ if k.startswith("RECSYS_")]:
        monkeypatch.delenv(key)
    app = create_app({**deployment["overrides"], "rate_limit_per_minute": 5, "api_keys": ["the-write-key"],
                      "rate_limit_storage_uri": "memory://"})
    client = app.test_client()
    statuses = [client.get("/search?q=shoe&mode=keyword", headers={"X-API-Key": uuid.uuid4().hex}).status_code
                for _ in range(30)]
    assert statuses.count(200) <= 5 and statuses[-1] == 429, statuses
    limited = client.get("/search?q=shoe&mode=keyword", headers={"X-API-Key": uuid.uuid4().hex})
    assert_error(limited, 429)
    assert int(limited.headers["Retry-After"]) >= 1
    # A valid key is its own client: the attacker's address bucket does not starve it.
    assert client.get("/search?q=shoe&mode=keyword", headers={"X-API-Key": "the-write-key"}).status_code == 200


# --- the search query an event carries ----------------------------------------------------------


def test_an_event_keeps_the_search_query_that_led_to_it(client, deployment):
    from sqlalchemy import select

    from service.store.models import Event

    body = strict_json(client.post("/events", json={"user_id": "u-query", "item_id": "shoe", "type": "click",
                                                    "query": "trail running shoes"}))
    assert body["accepted"] == 1
    with deployment["factory"]() as session:
        stored = session.scalars(select(Event.query).where(Event.client_event_id == body["results"][0]["event_id"]))
        assert list(stored) == ["trail running shoes"]


@pytest.mark.parametrize("query", ["x" * 513, "bad\x00query", "lone \ud800 surrogate", ["a list"], {"a": 1}])
def test_a_hostile_event_query_is_refused_and_nothing_is_stored(client, query):
    resp = client.post("/events", json={"user_id": "u-query-bad", "item_id": "shoe", "type": "click", "query": query})
    if resp.status_code == 400:  # caught at the boundary (NUL, surrogates) or by the schema (type)
        assert_error(resp, 400, "query")
    else:
        body = strict_json(resp)
        assert body["accepted"] == 0 and body["results"][0]["reason"].startswith("query")
