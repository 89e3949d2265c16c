"""The image store, the URL fetch guard, and every way an image enters or leaves the service.

No internet: "remote" servers are local HTTP(S) servers on 127.0.0.1, and name resolution is
monkeypatched where a test needs a host name to point somewhere.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import io
import ipaddress
import json
import os
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from sqlalchemy import select

from indexer.pipeline import LEGACY_IMAGE, ItemRow, embed_space
from service.cli import cli
from service.store.db import make_engine, make_session_factory, upgrade
from service.store.fetch import FetchFailed, FetchPolicy, FetchRefused, FetchTooLarge, check_address, denied_reason, fetch
from service.store.images import ImageRejected, ImageStore, ImageTooLarge, InvalidKey, inspect_image, is_key, key_of
from service.store.importing import ImportRejected, import_items
from service.store.models import Item
from service.settings import load_settings

MB = 1024 * 1024


def png(color=(200, 30, 30), size=(24, 24)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def png_header_only(width: int, height: int, mode: int = 2) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels, with no pixel data at all."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, mode, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


# --- the store --------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path):
    return ImageStore(tmp_path / "images", max_pixels=1_000_000, max_bytes=MB)


def test_put_is_content_addressed_sharded_atomic_and_idempotent(store):
    data = png()
    key = store.put(data)
    digest = hashlib.sha256(data).hexdigest()
    assert key == f"sha256:{digest}" == key_of(data) and is_key(key)
    assert store.path_of(key) == store.root / digest[:2] / digest
    assert store.read(key) == data and store.exists(key) and store.mimetype(key) == "image/png"
    assert store.put(data) == key
    assert [p.name for p in store.root.rglob("*") if p.is_file()] == [digest]  # no temp files left


@pytest.mark.parametrize("fmt, mimetype", [("JPEG", "image/jpeg"), ("PNG", "image/png"), ("WEBP", "image/webp"),
                                           ("GIF", "image/gif"), ("BMP", "image/bmp"), ("MPO", "image/jpeg")])
def test_every_accepted_format_is_stored_with_its_mimetype(store, fmt, mimetype):
    buf = io.BytesIO()
    Image.new("RGB", (12, 10), (9, 99, 199)).save(buf, format=fmt)
    key = store.put(buf.getvalue())
    assert store.mimetype(key) == mimetype
    assert (inspect_image(buf.getvalue(), max_pixels=120, max_bytes=MB).width, store.read(key)) == (12, buf.getvalue())


@pytest.mark.parametrize("key", [
    "sha256:../../etc/passwd", "/etc/passwd", "sha256:" + "A" * 64, "sha256:" + "a" * 63, "sha256:" + "a" * 65,
    "sha256:" + "a" * 64 + "/x", "sha256:" + "a" * 64 + "\n", "md5:" + "a" * 32, "", None,
])
def test_keys_are_validated_strictly(store, key):
    with pytest.raises(InvalidKey):
        store.path_of(key)
    assert not store.exists(key) and not is_key(key)


def test_other_formats_and_garbage_are_rejected(store):
    tiff = io.BytesIO()
    Image.new("RGB", (8, 8)).save(tiff, format="TIFF")
    for data, reason in ((b"", "empty"), (b"hello, not a picture", "not a supported"), (tiff.getvalue(), "not a supported"),
                         (png()[:60], "cannot be decoded")):
        with pytest.raises(ImageRejected, match=reason):
            store.put(data)
    with pytest.raises(ImageTooLarge):
        store.put(png() + b"\0" * MB)
    assert not store.root.exists() or not any(p.is_file() for p in store.root.rglob("*"))


def test_pixel_limit_is_checked_on_the_header_before_decoding(store):
    # No pixel data at all: a decoder would fail, so a "pixels" reason proves the header check ran first.
    with pytest.raises(ImageRejected, match="pixels"):
        store.put(png_header_only(2000, 2000))


def test_decompression_bombs_are_a_clean_rejection(tmp_path):
    roomy = ImageStore(tmp_path, max_pixels=10**12, max_bytes=MB)
    with pytest.raises(ImageRejected, match="too many pixels"):  # Pillow's DecompressionBombError
        roomy.put(png_header_only(100_000, 100_000))
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with pytest.raises(ImageRejected, match="too many pixels"):  # the warning, raised as an error
            roomy.put(png_header_only(10_000, 10_000))


# --- the fetch guard --------------------------------------------------------------------------


class Handler(http.server.BaseHTTPRequestHandler):
    """Routes of the "remote" image server; every request is recorded on the server."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.seen.append((self.path, self.headers.get("Host")))
        route = self.path.split("?")[0]
        if route == "/img.png":
            self._send(200, self.server.image, "image/png")
        elif route == "/text":
            self._send(200, b"root:x:0:0:root:/root:/bin/bash\n", "text/plain")
        elif route == "/redirect":
            self.send_response(302)
            self.send_header("Location", self.path.split("to=", 1)[1])
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif route == "/loop":
            self.send_response(301)
            self.send_header("Location", "/loop")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif route == "/big":
            self.send_response(200)
            self.send_header("Content-Length", str(50 * MB))
            self.end_headers()
        elif route == "/stream":  # no Content-Length: the cap must hold while streaming
            self.send_response(200)
            self.end_headers()
            try:
                for _ in range(64):
                    self.wfile.write(b"\0" * 65536)
            except OSError:
                pass
        elif route == "/slow":  # one byte at a time: never idle long, never done
            self.send_response(200)
            self.end_headers()
            try:
                for _ in range(200):
                    self.wfile.write(b"\0")
                    self.wfile.flush()
                    time.sleep(0.05)
            except OSError:
                pass
        else:
            self._send(404, b"no", "text/plain")

    def _send(self, status, body, ctype):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _serve(host="127.0.0.1", context: ssl.SSLContext | None = None):
    server = http.server.ThreadingHTTPServer((host, 0), Handler)
    server.daemon_threads = True
    server.seen, server.image = [], png((30, 160, 60))
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server


@pytest.fixture
def remote():
    server = _serve()
    server.base = f"http://127.0.0.1:{server.server_address[1]}"
    yield server
    server.shutdown()
    server.server_close()


def policy(**kw) -> FetchPolicy:
    allow = kw.pop("allow", ())
    networks = tuple(ipaddress.ip_network(a) for a in allow if a[0].isdigit() or ":" in a)
    hosts = frozenset(a for a in allow if not (a[0].isdigit() or ":" in a))
    return FetchPolicy(allow_networks=networks, allow_hosts=hosts, **{"timeout_s": 5.0, "max_bytes": MB, **kw})


LOCAL = ("127.0.0.1/32",)


def fake_dns(monkeypatch, table: dict[str, list[str]], calls: list | None = None):
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if calls is not None:
            calls.append(host)
        if host in table:
            return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
                    for a in table[host]]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.1.2.3", "10.0.0.1", "172.16.5.4", "192.168.1.1", "100.64.0.1", "169.254.169.254",
    "169.254.1.1", "0.0.0.0", "224.0.0.1", "239.255.255.250", "255.255.255.255", "240.0.0.1", "192.0.0.192",
    "100.100.100.200", "168.63.129.16", "198.18.0.1", "::1", "::", "fe80::1", "fc00::1", "fd00:ec2::254", "ff02::1",
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "2002:7f00:1::1", "64:ff9b::a00:1", "2001:db8::1",
])
def test_internal_addresses_are_refused(address):
    ip = ipaddress.ip_address(address)
    assert denied_reason(ip)
    with pytest.raises(FetchRefused):
        check_address(ip, "images.example", policy())


@pytest.mark.parametrize("address", ["8.8.8.8", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_pass(address):
    assert denied_reason(ipaddress.ip_address(address)) is None


def test_metadata_addresses_need_an_exact_allow_entry():
    meta = ipaddress.ip_address("169.254.169.254")
    with pytest.raises(FetchRefused, match="metadata"):
        check_address(meta, "h", policy(allow=("169.254.0.0/16", "h")))
    check_address(meta, "h", policy(allow=("169.254.169.254/32",)))
    check_address(ipaddress.ip_address("169.254.1.1"), "h", policy(allow=("169.254.0.0/16",)))
    check_address(ipaddress.ip_address("::ffff:10.1.2.3"), "h", policy(allow=("10.0.0.0/8",)))


@pytest.mark.parametrize("url", [
    "file:///etc/passwd", "ftp://example.com/a.png", "gopher://127.0.0.1/", "//example.com/a.png", "/etc/passwd",
    "http://user:pw@example.com/a.png", "http://user@example.com/a.png", "http:///a.png", "http://exa mple.com/",
    "http://example.com:99999/", "data:image/png;base64,AAAA",
])
def test_bad_urls_are_refused_before_any_lookup(url, monkeypatch):
    calls = []
    fake_dns(monkeypatch, {}, calls)
    with pytest.raises(FetchRefused):
        fetch(url, policy())
    assert calls == []


def test_loopback_is_refused_by_default_and_nothing_is_sent(remote):
    for url in (f"{remote.base}/img.png", f"http://localhost:{remote.server_address[1]}/img.png",
                f"http://[::ffff:127.0.0.1]:{remote.server_address[1]}/img.png", f"http://2130706433:{remote.server_address[1]}/"):
        with pytest.raises(FetchRefused):
            fetch(url, policy())
    assert remote.seen == []


def test_allowed_cidr_fetches(remote):
    assert fetch(f"{remote.base}/img.png", policy(allow=LOCAL)) == remote.image


def test_host_names_resolve_once_and_the_checked_address_is_used(remote, monkeypatch):
    """Pinned: the name is resolved once per hop; the request carries the name in its Host header."""
    calls = []
    port = remote.server_address[1]
    fake_dns(monkeypatch, {"images.internal": ["127.0.0.1"]}, calls)
    assert fetch(f"http://images.internal:{port}/img.png", policy(allow=("images.internal",))) == remote.image
    # (urllib3 passes the pinned IP literal through getaddrinfo too: numeric, no lookup.)
    assert [c for c in calls if c != "127.0.0.1"] == ["images.internal"]
    assert remote.seen == [("/img.png", f"images.internal:{port}")]


@pytest.mark.parametrize("answer", [["10.1.2.3"], ["169.254.169.254"], ["::ffff:127.0.0.1"], ["fd00:ec2::254"],
                                    ["100.100.100.200"], ["8.8.8.8", "192.168.1.1"]])
def test_names_resolving_to_internal_addresses_are_refused(monkeypatch, answer):
    fake_dns(monkeypatch, {"images.example": answer})
    with pytest.raises(FetchRefused, match="images.example resolves to"):
        fetch("http://images.example/a.png", policy())


def test_a_redirect_to_a_refused_address_is_refused(remote, monkeypatch):
    fake_dns(monkeypatch, {"metadata.example": ["169.254.169.254"]})
    port = remote.server_address[1]
    for target in (f"http://127.0.0.2:{port}/img.png", "http://metadata.example/latest/meta-data/",
                   "http://[::1]/", "file:///etc/passwd"):
        with pytest.raises(FetchRefused):
            fetch(f"{remote.base}/redirect?to={target}", policy(allow=LOCAL))
    # An allowed hop is followed; a relative Location too.
    assert fetch(f"{remote.base}/redirect?to={remote.base}/img.png", policy(allow=LOCAL)) == remote.image
    assert fetch(f"{remote.base}/redirect?to=/img.png", policy(allow=LOCAL)) == remote.image


def test_redirect_limit_status_and_size_limits(remote):
    allowed = policy(allow=LOCAL)
    with pytest.raises(FetchFailed, match="redirects"):
        fetch(f"{remote.base}/loop", allowed)
    assert len(remote.seen) == 4  # the first request and three redirects
    with pytest.raises(FetchFailed, match="HTTP 404"):
        fetch(f"{remote.base}/missing.png", allowed)
    with pytest.raises(FetchTooLarge):
        fetch(f"{remote.base}/big", allowed)
    with pytest.raises(FetchTooLarge):
        fetch(f"{remote.base}/stream", allowed)


def test_a_trickling_server_hits_the_total_time_limit(remote):
    started = time.monotonic()
    with pytest.raises(FetchFailed, match="timed out"):
        fetch(f"{remote.base}/slow", policy(allow=LOCAL, timeout_s=0.6))
    assert time.monotonic() - started < 2.0


def test_a_silent_server_hits_the_time_limit():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)  # accepts the connection, never answers
        started = time.monotonic()
        with pytest.raises(FetchFailed, match="timed out"):
            fetch(f"http://127.0.0.1:{listener.getsockname()[1]}/a.png", policy(allow=LOCAL, timeout_s=0.5))
        assert time.monotonic() - started < 2.0


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    folder = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=img.test",
                    "-addext", "subjectAltName=DNS:img.test", "-keyout", str(folder / "key.pem"),
                    "-out", str(folder / "cert.pem")], check=True, capture_output=True)
    return folder / "cert.pem", folder / "key.pem"


def test_https_keeps_sni_and_certificate_checks_on_the_name(tls_files, monkeypatch):
    cert, key = tls_files
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    names = []
    context.sni_callback = lambda sock, name, ctx: names.append(name)
    server = _serve(context=context)
    port = server.server_address[1]
    try:
        fake_dns(monkeypatch, {"img.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]})
        trusted = policy(allow=LOCAL, ca_certs=str(cert))
        assert fetch(f"https://img.test:{port}/img.png", trusted) == server.image
        assert names[-1] == "img.test"
        with pytest.raises(FetchFailed, match="TLS"):  # the certificate is not for this name
            fetch(f"https://other.test:{port}/img.png", trusted)
        with pytest.raises(FetchFailed, match="TLS"):  # not signed by a trusted CA
            fetch(f"https://img.test:{port}/img.png", policy(allow=LOCAL))
    finally:
        server.shutdown()
        server.server_close()


# --- the HTTP API -----------------------------------------------------------------------------


@pytest.fixture
def api(tmp_path, monkeypatch):
    """An app over a fresh data dir (no index: writes work, images are stored and served)."""
    for key in [k for k in os.environ if k.startswith("RECSYS_")]:
        monkeypatch.delenv(key)
    data = tmp_path / "data"
    data.mkdir()
    (data / "settings.json").write_text("{}\n")

    def make(**extra):
        overrides = {"data_dir": str(data), "clip_enabled": False, **extra}
        settings = load_settings(overrides, environ={})
        upgrade(make_engine(settings))
        from service.web.app import create_app

        app = create_app(overrides)
        app.testing = True
        client = app.test_client()
        client.settings = settings
        return client

    return make


def error_of(resp, status, field="image"):
    assert resp.status_code == status, resp.get_data(as_text=True)
    body = resp.get_json()
    assert set(body) == {"error"} and field in body["error"]["message"], body
    return body["error"]["message"]


def test_upload_by_multipart_and_base64_then_served_from_the_store(api):
    client = api()
    data = png()
    resp = client.put("/items/a", data={"item": json.dumps({"kind": "image", "title": "Red square"}),
                                        "image": (io.BytesIO(data), "a.png")}, content_type="multipart/form-data")
    assert resp.status_code == 201, resp.get_data(as_text=True)
    assert client.get("/items/a").get_json()["image_url"] == "/items/a/image"
    img = client.get("/items/a/image")
    assert img.status_code == 200 and img.data == data and img.mimetype == "image/png"
    assert img.headers["X-Content-Type-Options"] == "nosniff" and "max-age" in img.headers["Cache-Control"]
    assert img.headers["ETag"].strip('"') == hashlib.sha256(data).hexdigest()
    assert client.get("/items/a/image", headers={"If-None-Match": img.headers["ETag"]}).status_code == 304
    assert ImageStore.from_settings(client.settings).read(key_of(data)) == data

    other = png((0, 0, 255))
    b64 = base64.b64encode(other).decode()
    for body in ({"image_base64": b64}, {"image_base64": f"data:image/png;base64,{b64}"}):
        resp = client.put("/items/b", json={"kind": "product", "title": "Blue", **body})
        assert resp.status_code in (200, 201), resp.get_data(as_text=True)
        assert client.get("/items/b/image").data == other
    # A blob already in the store can be named by its key.
    assert client.put("/items/c", json={"kind": "product", "title": "Red too", "image": key_of(data)}).status_code == 201
    assert client.get("/items/c/image").data == data
    error_of(client.put("/items/d", json={"kind": "product", "title": "x", "image": "sha256:" + "0" * 64}), 400)
    error_of(client.put("/items/d", json={"kind": "product", "title": "x", "image": key_of(data),
                                          "image_base64": b64}), 400)
    error_of(client.put("/items/d", json={"kind": "product", "title": "x", "image_base64": "%%%"}), 400, "image_base64")


def test_server_files_are_never_read_or_served(api, monkeypatch):
    client = api()
    import service.store.records

    def never(*_a, **_k):
        raise AssertionError("the HTTP API resolved a file path")

    monkeypatch.setattr(service.store.records, "resolve_image_location", never)
    db_file = Path(client.settings.data_dir) / "recsys.db"
    settings_file = Path(client.settings.data_dir) / "settings.json"
    assert db_file.is_file() and settings_file.is_file()
    for path in ("/etc/passwd", str(db_file), str(settings_file), "../../../../etc/passwd", "recsys.db",
                 "~/.ssh/id_rsa", "/proc/self/environ", "file:///etc/passwd", "\\\\server\\share\\a.png"):
        message = error_of(client.put("/items/x", json={"kind": "product", "title": "t", "image": path}), 400)
        assert "passwd" not in message.replace(path, "") and "root:" not in message
        error_of(client.put("/items/x", data={"item": json.dumps({"kind": "product", "title": "t", "image": path})},
                            content_type="multipart/form-data"), 400)
        assert client.get("/items/x").status_code == 404
        assert client.get("/items/x/image").status_code == 404
    assert "file paths are accepted only by the import CLI" in error_of(
        client.put("/items/x", json={"kind": "product", "title": "t", "image": "/etc/passwd"}), 400)


def test_legacy_locations_are_never_served(api):
    client = api()
    session = make_session_factory(make_engine(client.settings))()
    for ext, location in (("old-path", "/etc/passwd"), ("old-url", "http://169.254.169.254/latest/meta-data/")):
        session.add(Item(external_id=ext, kind="product", title="legacy", text="", image_location=location,
                         content_hash="x", tags=[], attributes={}))
    session.commit()
    session.close()
    for ext in ("old-path", "old-url"):
        assert client.get(f"/items/{ext}").get_json()["image_url"] is None
        resp = client.get(f"/items/{ext}/image")
        assert resp.status_code == 404 and "Location" not in resp.headers
        assert "passwd" not in resp.get_data(as_text=True) and "169.254" not in resp.get_data(as_text=True)


def test_urls_are_fetched_through_the_guard(api, remote):
    refused = api()
    message = error_of(refused.put("/items/u", json={"kind": "product", "title": "t", "image": f"{remote.base}/img.png"}), 400)
    assert "refused" in message and remote.seen == []
    client = api(image_fetch_allow=["127.0.0.1/32"])
    resp = client.put("/items/u", json={"kind": "product", "title": "t", "image": f"{remote.base}/img.png"})
    assert resp.status_code == 201, resp.get_data(as_text=True)
    img = client.get("/items/u/image")
    assert img.status_code == 200 and img.data == remote.image and "Location" not in img.headers
    # A text file behind an allowed URL is still not an image.
    error_of(client.put("/items/v", json={"kind": "product", "title": "t", "image": f"{remote.base}/text"}), 400)
    error_of(client.put("/items/v", json={"kind": "product", "title": "t", "image": f"{remote.base}/big"}), 413)


def test_bad_uploads_are_4xx_never_500(api):
    client = api(max_image_pixels=1_000_000)

    def put_b64(data):
        return client.put("/items/z", json={"kind": "product", "title": "t", "image_base64": base64.b64encode(data).decode()})

    error_of(put_b64(b"hello, not a picture"), 400, "image_base64")
    error_of(put_b64(png_header_only(100_000, 100_000)), 400, "image_base64")  # decompression bomb
    error_of(put_b64(png_header_only(2000, 2000)), 400, "image_base64")  # over max_image_pixels
    error_of(client.put("/items/z", data={"item": json.dumps({"kind": "product", "title": "t"}),
                                          "image": (io.BytesIO(png_header_only(100_000, 100_000)), "bomb.png")},
                        content_type="multipart/form-data"), 400)
    error_of(client.put("/items/z", data={"item": "{not json"}, content_type="multipart/form-data"), 400, "body")
    error_of(client.put("/items/z", data={"image": (io.BytesIO(png()), "a.png")}, content_type="multipart/form-data"),
             400, "item")
    small = api(max_upload_mb=0.5, image_fetch_max_mb=0.5)
    noise = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (600, 600, 3), dtype=np.uint8)).save(noise, format="PNG")
    resp = small.put("/items/z", data={"item": json.dumps({"kind": "product", "title": "t"}),
                                       "image": (io.BytesIO(noise.getvalue()), "big.png")}, content_type="multipart/form-data")
    assert resp.status_code == 413
    assert client.get("/items/z").status_code == 404


def test_openapi_documents_the_uploads(api):
    spec = api().get("/openapi.json").get_json()
    put = spec["paths"]["/items/{item_id}"]["put"]
    assert {"application/json", "multipart/form-data"} <= set(put["requestBody"]["content"])
    assert {"400", "413"} <= set(put["responses"])
    assert any("image_base64" in s.get("properties", {}) for s in spec["components"]["schemas"].values())
    image = spec["paths"]["/items/{item_id}/image"]["get"]["responses"]
    assert "404" in image and not any(code.startswith("3") for code in image)


# --- the import CLI ---------------------------------------------------------------------------


@pytest.fixture
def catalog(tmp_path):
    root = tmp_path / "catalog"
    (root / "img").mkdir(parents=True)
    (root / "img" / "a.png").write_bytes(png())
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(png((1, 2, 3)))
    return root, outside


def write_items(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def row(ext, image):
    return {"id": ext, "kind": "product", "title": ext, "image": image}


def settings_for(tmp_path, engine, **extra):
    return load_settings({"data_dir": tmp_path / "data", "database_url": engine.url.render_as_string(hide_password=False),
                          **extra}, environ={})


def test_import_stores_images_and_refuses_escapes(tmp_path, engine, session_factory, catalog):
    root, outside = catalog
    settings = settings_for(tmp_path, engine)
    (root / "img" / "link.png").symlink_to(outside / "secret.png")
    (root / "img" / "passwd.png").symlink_to("/etc/passwd")
    (root / "img" / "dir-link").symlink_to(outside, target_is_directory=True)
    bomb = root / "img" / "bomb.png"
    bomb.write_bytes(png_header_only(100_000, 100_000))
    bad_rows = [row("sym", "img/link.png"), row("passwd", "img/passwd.png"), row("dotdot", "img/../../outside/secret.png"),
                row("abs", str(outside / "secret.png")), row("etc", "/etc/passwd"), row("dirlink", "img/dir-link/secret.png"),
                row("bomb", "img/bomb.png"), row("missing", "img/nope.png"), row("url", "http://127.0.0.1:1/a.png")]
    items = write_items(root / "items.jsonl", [row("good", "img/a.png"), *bad_rows])
    with pytest.raises(ImportRejected) as info:
        import_items(items, session_factory=session_factory, settings=settings, progress=False)
    errors = info.value.summary.errors
    assert [e.line for e in errors] == list(range(2, 2 + len(bad_rows))) and {e.field for e in errors} == {"image"}
    assert all(str(e).startswith(f"{items}:{e.line}: image: ") for e in errors)
    assert "'..'" in errors[2].reason and "outside" in errors[0].reason and "refused" in errors[-1].reason
    with session_factory() as s:
        assert s.scalar(select(Item).limit(1)) is None  # all or nothing
    store = ImageStore.from_settings(settings)
    assert not store.exists(key_of((outside / "secret.png").read_bytes()))

    summary = import_items(write_items(root / "good.jsonl", [row("good", "img/a.png"), row("same", "img/a.png")]),
                           session_factory=session_factory, settings=settings, progress=False)
    assert summary.inserted == 2
    with session_factory() as s:
        locations = set(s.scalars(select(Item.image_location)))
    assert locations == {key_of(png())} and store.exists(key_of(png()))


def test_import_root_setting_confines_absolute_paths(tmp_path, engine, session_factory, catalog):
    root, outside = catalog
    items = write_items(tmp_path / "elsewhere.jsonl", [row("abs", str(root / "img" / "a.png"))])
    with pytest.raises(ImportRejected):  # default root: the imported file's folder, which does not hold it
        import_items(write_items(outside / "x.jsonl", [row("abs", str(root / "img" / "a.png"))]),
                     session_factory=session_factory, settings=settings_for(tmp_path, engine), progress=False)
    confined = settings_for(tmp_path, engine, import_root=str(root))
    assert import_items(items, session_factory=session_factory, settings=confined, progress=False).inserted == 1
    with pytest.raises(ImportRejected):
        import_items(write_items(tmp_path / "b.jsonl", [row("b", str(outside / "secret.png"))]),
                     session_factory=session_factory, settings=confined, progress=False)


def test_import_fetches_urls_through_the_guard(tmp_path, engine, session_factory, remote):
    items = write_items(tmp_path / "items.jsonl", [row("u", f"{remote.base}/img.png")])
    with pytest.raises(ImportRejected, match="refused"):
        import_items(items, session_factory=session_factory, settings=settings_for(tmp_path, engine), progress=False)
    assert remote.seen == []
    allowed = settings_for(tmp_path, engine, image_fetch_allow=["127.0.0.1/32"])
    assert import_items(items, session_factory=session_factory, settings=allowed, progress=False).inserted == 1
    assert ImageStore.from_settings(allowed).exists(key_of(remote.image))


def test_images_need_settings(tmp_path, session_factory, catalog):
    root, _ = catalog
    with pytest.raises(ValueError, match="settings"):
        import_items(write_items(root / "i.jsonl", [row("a", "img/a.png")]), session_factory=session_factory, progress=False)


# --- legacy rows: the indexer and `recsys images migrate` ------------------------------------


class RecordingEncoder:
    name, revision, dim = "fake", "r1", 4

    def __init__(self):
        self.sources = []

    def encode_images(self, sources, progress=False):
        self.sources.extend(sources)
        return np.ones((len(sources), self.dim), dtype=np.float32) / 2, list(range(len(sources))), {}


def test_indexer_reads_only_the_store(tmp_path, store):
    key = store.put(png())
    rows = [ItemRow(1, "h1", "/etc/passwd"), ItemRow(2, "h2", key), ItemRow(3, "h3", "https://example.com/a.png"),
            ItemRow(4, "h4", "sha256:" + "0" * 64)]
    encoder = RecordingEncoder()
    sv = embed_space("clip", rows, encoder, session=None, cache_root=tmp_path / "cache", full=False, progress=False,
                     image_store=store)
    assert encoder.sources == [store.path_of(key)]
    assert list(sv.ids) == [2] and sv.errors[1] == sv.errors[3] == LEGACY_IMAGE and "missing" in sv.errors[4]
    with pytest.raises(ValueError):
        embed_space("clip", rows, encoder, session=None, cache_root=tmp_path / "cache", full=False, progress=False)


def test_images_migrate_converts_or_clears_legacy_rows(tmp_path, engine, session_factory, catalog, remote):
    root, outside = catalog
    good = png()
    key = key_of(good)
    legacy = {"in-root": str(root / "img" / "a.png"), "outside": str(outside / "secret.png"), "etc": "/etc/passwd",
              "url": f"{remote.base}/img.png", "refused-url": "http://169.254.169.254/latest/", "ftp": "ftp://h/a.png",
              "stored": key}
    settings = settings_for(tmp_path, engine)
    ImageStore.from_settings(settings).put(good)
    with session_factory() as s:
        for ext, location in legacy.items():
            s.add(Item(external_id=ext, kind="product", title=ext, text="", image_location=location, content_hash="old",
                       tags=[], attributes={}))
        s.commit()
    env = {"RECSYS_DATABASE_URL": settings.database_url, "RECSYS_IMAGE_FETCH_ALLOW": '["127.0.0.1/32"]'}
    runner = CliRunner()
    missing_root = runner.invoke(cli, ["--data-dir", str(settings.data_dir), "images", "migrate"], env=env)
    assert missing_root.exit_code == 2 and "import-root" in missing_root.output
    result = runner.invoke(cli, ["--data-dir", str(settings.data_dir), "images", "migrate", "--import-root", str(root)],
                           env=env)
    assert result.exit_code == 0, result.output
    assert "legacy image locations: 6: stored 2, cleared 4" in result.output
    with session_factory() as s:
        after = {i.external_id: i for i in s.scalars(select(Item))}
    assert after["in-root"].image_location == key and after["url"].image_location == key_of(remote.image)
    assert after["stored"].image_location == key and after["stored"].content_hash == "old"
    for ext in ("outside", "etc", "refused-url", "ftp"):
        assert after[ext].image_location is None and after[ext].content_hash != "old"
    assert "etc: cleared" in result.output
