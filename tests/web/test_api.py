"""Every endpoint through the Flask test client, over a real index built from a small catalog."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from indexer.pipeline import Pipeline
from service.vectors import artifacts
from service.web.app import create_app
from service.store.db import make_engine, make_session_factory, upgrade
from service.store.importing import import_items
from service.settings import load_settings
from tests.fixtures_clip import write_tiny_clip_checkpoint, write_tiny_clip_config

# Loads the real text model, builds indexes or runs servers: `make test-fast` leaves it out.
pytestmark = pytest.mark.slow

PALETTE = {"red": (210, 40, 40), "blue": (40, 70, 210), "green": (40, 170, 70), "yellow": (230, 210, 40)}

CATALOG = [
    {"id": "shoe-red", "kind": "product", "title": "Red trail running shoe", "category": "shoes", "tags": ["running", "trail"],
     "text": "Grippy lugged sole for muddy trails, breathable red mesh upper.", "attributes": {"price": 120.0}, "color": "red"},
    {"id": "shoe-blue", "kind": "product", "title": "Blue road running shoe", "category": "shoes", "tags": ["running", "road"],
     "text": "Cushioned and light for long runs on asphalt.", "attributes": {"price": 95.0}, "color": "blue"},
    {"id": "jacket", "kind": "product", "title": "Green waterproof rain jacket", "category": "jackets", "tags": ["rain"],
     "text": "Taped seams and a hood keep you dry in storms.", "attributes": {"price": 180.0}, "color": "green"},
    {"id": "knife", "kind": "product", "title": "Carbon steel chef knife", "category": "kitchen", "tags": ["cooking"],
     "text": "A sharp 21 cm blade for slicing vegetables and meat.", "attributes": {"price": 75.0}},
    {"id": "kettle", "kind": "product", "title": "Yellow stovetop kettle", "category": "kitchen", "tags": ["cooking", "tea"],
     "text": "Whistles when the water boils.", "attributes": {"price": 40.0}, "color": "yellow"},
    {"id": "art-suede", "kind": "article", "title": "How to clean suede shoes", "category": "care-tips", "tags": ["shoes"],
     "text": "Brush gently with a suede brush, then apply a protective spray.", "attributes": {"reading_minutes": 4}},
    {"id": "art-knife", "kind": "article", "title": "Sharpening a kitchen knife on a whetstone", "category": "care-tips",
     "tags": ["cooking"], "text": "Hold the blade at fifteen degrees and use even strokes.", "attributes": {"reading_minutes": 6}},
    {"id": "art-rain", "kind": "article", "title": "Staying dry on rainy hikes", "category": "outdoor", "tags": ["rain"],
     "text": "Layer a breathable waterproof shell over a warm fleece.", "attributes": {"reading_minutes": 5}},
]


def _image(color: str, size: int = 48) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), PALETTE[color]).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A data dir with a migrated SQLite database, the catalog imported and an index published."""
    root = tmp_path_factory.mktemp("api")
    (root / "img").mkdir()
    rows = []
    for row in CATALOG:
        row = dict(row)
        color = row.pop("color", None)
        if color:
            (root / "img" / f"{row['id']}.png").write_bytes(_image(color))
            row["image"] = f"img/{row['id']}.png"
        rows.append(row)
    (root / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = write_tiny_clip_config(root)
    ckpt = write_tiny_clip_checkpoint(root, cfg)
    overrides = {"data_dir": str(root / "data"), "clip_model": str(cfg), "clip_pretrained": str(ckpt)}
    settings = load_settings(overrides, environ={})
    engine = make_engine(settings)
    upgrade(engine)
    factory = make_session_factory(engine)
    import_items(root / "items.jsonl", session_factory=factory, settings=settings, progress=False)
    Pipeline(settings, factory).run()
    return {"root": root, "overrides": overrides, "settings": settings, "factory": factory}


@pytest.fixture
def make_client(built, monkeypatch):
    for key in [k for k in __import__("os").environ if k.startswith("RECSYS_")]:
        monkeypatch.delenv(key)

    def make(**extra):
        app = create_app({**built["overrides"], **extra})
        app.testing = True
        return app.test_client()

    return make


@pytest.fixture
def client(make_client):
    return make_client()


def ids(resp):
    return [h["id"] for h in resp.get_json()["hits"]]


def assert_error(resp, status, field=None):
    assert resp.status_code == status, resp.get_data(as_text=True)
    body = resp.get_json()
    assert set(body) == {"error"} and {"code", "message", "details"} <= set(body["error"])
    assert "Traceback" not in resp.get_data(as_text=True)
    if field:
        assert field in body["error"]["message"]
    return body["error"]


# --- search -----------------------------------------------------------------------------------


def test_semantic_search_finds_the_relevant_item_first(client):
    resp = client.get("/search?q=cleaning suede footwear&mode=semantic&k=3")
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["hits"][0]["id"] == "art-suede"
    hit = body["hits"][0]
    assert {"id", "kind", "title", "text", "category", "tags", "attributes", "image_url", "score", "signals"} <= set(hit)
    assert hit["signals"] == ["semantic"] and body["index_version"] and body["took_ms"] >= 0
    scores = [h["score"] for h in body["hits"]]
    assert scores == sorted(scores, reverse=True)


def test_repeated_queries_reuse_the_cached_vector(make_client, monkeypatch):
    from service.vectors.onnx_query import OnnxQueryEncoder

    calls = []
    real = OnnxQueryEncoder.encode_query  # the default query_backend: the version's ONNX export

    def counting(self, text):
        calls.append(text)
        return real(self, text)

    monkeypatch.setattr(OnnxQueryEncoder, "encode_query", counting)
    client = make_client()
    rt = client.application.extensions["recsys"]
    calls.clear()  # the start-up warm-up
    first = client.get("/search?q=rain gear&mode=semantic&k=3").get_json()
    second = client.get("/search?q=rain gear&mode=hybrid&k=3").get_json()
    assert calls == ["rain gear"] and rt.query_cache.hits == 1
    assert first["hits"][0]["id"] == second["hits"][0]["id"]
    client.get("/search?q=rain gear&space=clip&mode=semantic&k=3")  # its own entry, CLIP's text tower
    assert calls == ["rain gear"] and {key[0] for key in rt.query_cache._entries} == {"text", "clip"}

    uncached = make_client(query_cache_size=0)
    calls.clear()
    for _ in range(2):
        uncached.get("/search?q=rain gear&mode=semantic&k=3")
    assert calls == ["rain gear", "rain gear"]


def test_queries_are_encoded_by_the_versions_onnx_export(built, make_client, monkeypatch):
    from service.vectors.text_encoder import TextEncoder

    torch_calls = []
    real = TextEncoder.encode_query
    monkeypatch.setattr(TextEncoder, "encode_query", lambda self, text: torch_calls.append(text) or real(self, text))
    onnx_client, torch_client = make_client(), make_client(query_backend="torch")
    torch_calls.clear()  # the torch client's start-up warm-up
    status = onnx_client.get("/status").get_json()["query_encoder"]
    assert status["configured"] == status["serving"] == status["exported"] == "onnx"
    assert status["agreement"]["min_cosine"] >= 0.9999 and "reason" not in status
    rt = onnx_client.application.extensions["recsys"]
    version = rt.store.current
    assert rt.onnx_query_encoder().source_revision == version.spaces["text"].encoder["revision"]
    for q in ("cleaning suede footwear", "rain gear", "kitchen knife sharpening"):
        a = onnx_client.get(f"/search?q={q}&mode=semantic&k=5").get_json()["hits"]
        b = torch_client.get(f"/search?q={q}&mode=semantic&k=5").get_json()["hits"]
        assert [h["id"] for h in a] == [h["id"] for h in b]
        np.testing.assert_allclose([h["score"] for h in a], [h["score"] for h in b], atol=1e-4)
    assert len(torch_calls) == 3  # only the torch client encoded with torch
    assert torch_client.get("/status").get_json()["query_encoder"] == {
        "configured": "torch", "serving": "torch", "exported": "onnx", "agreement": status["agreement"]}
    # A malformed section (another host's manifest through the object store) is no export, never an error.
    for bad in (["onnx"], {"backend": "onnx", "source": "x"}, {"backend": "onnx", "source": None}):
        assert rt._onnx_of({**version.manifest, "query_encoder": bad}) is None
    # Asking for int8 from a version that exported fp32: torch serves, and status says why.
    int8 = make_client(query_backend="onnx-int8").get("/status").get_json()["query_encoder"]
    assert int8["serving"] == "torch" and "rebuild" in int8["reason"]


def test_a_worker_loads_torch_in_the_background_only_after_its_behaviour_window(make_client, monkeypatch):
    """With the export serving queries, torch (item writes only) loads after start-up's behaviour
    read: its import is seconds of GIL-bound work that would otherwise slow that read down."""
    import threading

    from service.recommend.behaviour import BehaviourModel
    from service.web import app as app_module

    running_during_refresh, started = [], threading.Event()
    real = BehaviourModel.refresh

    def refresh(self, session, **kw):
        running_during_refresh.append(started.is_set())
        return real(self, session, **kw)

    monkeypatch.setattr(BehaviourModel, "refresh", refresh)
    monkeypatch.setattr(app_module, "_load_quietly", lambda load, *_: started.set())
    client = make_client()
    assert running_during_refresh[:1] == [False] and started.wait(10)
    assert client.get("/status").get_json()["query_encoder"]["serving"] == "onnx"
    started.clear()
    make_client(query_backend="torch")  # torch serves queries: loaded on the start path, no thread
    assert not started.wait(0.5)


def test_a_version_served_by_its_export_needs_no_matching_torch_model(built, make_client, tmp_path, monkeypatch):
    """Queries use the version's ONNX export, so a service configured with other weights still
    answers them right; an item write, which needs the torch encoder, says why it is not searchable."""
    import torch

    from service.vectors.text_encoder import load_text_encoder

    other = load_text_encoder(built["settings"]).model  # a fresh copy: changing it touches nothing shared
    with torch.no_grad():  # other weights: another revision
        other[0].auto_model.embeddings.word_embeddings.weight.add_(0.01)
    other.save(str(tmp_path / "perturbed"))
    client, reference = make_client(text_model=str(tmp_path / "perturbed")), make_client()
    q = "/search?q=cleaning suede footwear&mode=semantic&k=4"
    assert client.get(q).get_json()["hits"] == reference.get(q).get_json()["hits"]
    resp = client.put("/items/perturbed", json={"kind": "article", "title": "Lantern care", "text": "Wipe it."})
    assert resp.status_code == 201
    body = resp.get_json()
    assert body["searchable"]["text"] is False and "next rebuild" in body["errors"]["text"]
    assert client.get("/status").get_json()["query_encoder"]["serving"] == "onnx"
    torch_only = make_client(text_model=str(tmp_path / "perturbed"), query_backend="torch")
    assert torch_only.get(q).status_code == 503  # torch queries from other weights: refused, as before
    client.delete("/items/perturbed")
    # Should the export stop loading while served, torch with other weights must not stand in.
    from service.web.runtime import Runtime

    monkeypatch.setattr(Runtime, "onnx_query_encoder", lambda self, version=None: None)
    assert_error(client.get(q), 503, "query encoder")


def test_search_texts_are_logged_for_the_rebuilds_recall_check(make_client, built):
    from service.store.query_log import recent_queries

    client = make_client()
    rt = client.application.extensions["recsys"]
    for q in ("waterproof jacket", "waterproof jacket", "kettle", "mail me at a@b.co please"):
        assert client.get(f"/search?q={q}&mode=hybrid&k=3").status_code == 200
    client.get("/search?q=red shoe&space=clip&mode=semantic&k=3")  # image search: not text-space traffic
    client.get("/search?q=outdoor gear&mode=semantic&k=2&offset=2")  # a later page: counted once already
    assert client.get("/search?q=" + "x" * 600).status_code == 400  # refused queries are not logged
    assert rt.query_log.flush() == 2
    with built["factory"]() as session:
        logged = recent_queries(session, 1000)  # other tests' apps may have logged theirs too
    assert {"waterproof jacket", "kettle"} <= set(logged)
    assert not {"red shoe", "outdoor gear", "x" * 600} & set(logged) and not any("@" in t for t in logged)
    quiet = make_client(query_log_size=0)
    quiet.get("/search?q=tent&mode=semantic")
    assert quiet.application.extensions["recsys"].query_log.flush() == 0


def test_keyword_and_hybrid_modes_report_their_signals(client):
    kw = client.get("/search?q=whetstone&mode=keyword").get_json()
    assert [h["id"] for h in kw["hits"]] == ["art-knife"] and kw["hits"][0]["signals"] == ["keyword"]
    hy = client.get("/search?q=whetstone knife sharpening&mode=hybrid&k=3").get_json()
    assert hy["hits"][0]["id"] == "art-knife"
    assert set(hy["hits"][0]["signals"]) >= {"semantic", "keyword"}


def test_filters_apply_and_pages_are_never_short(client):
    arts = client.get("/search?q=shoes&mode=semantic&kind=article&k=5").get_json()["hits"]
    assert {h["kind"] for h in arts} == {"article"} and len(arts) == 3  # every article, though shoes rank first overall
    kitchen = ids(client.get("/search?q=cooking&mode=semantic&category=kitchen&k=10"))
    assert sorted(kitchen) == ["kettle", "knife"]
    tagged = ids(client.get("/search?q=shoe&mode=semantic&tags=running,trail"))
    assert tagged == ["shoe-red"]
    cheap = ids(client.get("/search?q=shoe&mode=semantic&kind=product&range=price::100"))
    assert set(cheap) == {"shoe-blue", "knife", "kettle"}
    assert client.get("/search?q=shoe&category=nothing-here").get_json()["hits"] == []


def test_offset_and_cursor_pagination(client):
    first = client.get("/search?q=outdoor gear&mode=semantic&k=3").get_json()
    second = client.get(f"/search?q=outdoor gear&mode=semantic&k=3&cursor={first['next_cursor']}").get_json()
    by_offset = client.get("/search?q=outdoor gear&mode=semantic&k=3&offset=3").get_json()
    assert ids_of(second) == ids_of(by_offset) and not set(ids_of(first)) & set(ids_of(second))
    last = client.get("/search?q=outdoor gear&mode=semantic&k=3&offset=6").get_json()
    assert len(last["hits"]) == 2 and last["next_cursor"] is None


def ids_of(body):
    return [h["id"] for h in body["hits"]]


def test_text_to_image_searches_only_items_with_images(client):
    body = client.get("/search?q=a red shoe&space=clip&mode=semantic&k=10").get_json()
    assert body["space"] == "clip"
    assert set(ids_of(body)) == {"shoe-red", "shoe-blue", "jacket", "kettle"}


def test_search_by_uploaded_image_finds_the_same_picture(client):
    resp = client.post("/search", data={"image": (io.BytesIO(_image("green")), "q.png"), "k": "2"},
                       content_type="multipart/form-data")
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    assert body["mode"] == "image" and body["hits"][0]["id"] == "jacket"
    assert body["hits"][0]["score"] > 0.999


def test_image_upload_errors(make_client):
    client = make_client(max_upload_mb=0.05, max_image_pixels=100_000)
    assert_error(client.post("/search", data={"k": "2"}, content_type="multipart/form-data"), 400, "image")
    assert_error(client.post("/search", data={"image": (io.BytesIO(b"hello, not a picture"), "x.png")},
                             content_type="multipart/form-data"), 415)
    big = io.BytesIO()
    Image.new("RGB", (400, 400)).save(big, format="PNG")
    assert_error(client.post("/search", data={"image": (io.BytesIO(big.getvalue()), "big.png")},
                             content_type="multipart/form-data"), 400, "pixels")
    noise = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (160, 160, 3), dtype=np.uint8)).save(noise, format="PNG")
    assert_error(client.post("/search", data={"image": (io.BytesIO(noise.getvalue()), "n.png")},
                             content_type="multipart/form-data"), 413)
    assert_error(client.post("/search", data="x", content_type="text/plain"), 415)


def test_more_like_this(client):
    body = client.post("/search", json={"item_id": "shoe-red", "k": 3}).get_json()
    assert "shoe-red" not in ids_of(body) and ids_of(body)[0] == "shoe-blue"
    assert_error(client.post("/search", json={"item_id": "nope"}), 404)
    assert_error(client.post("/search", json={"item_id": "knife", "space": "clip"}), 404)  # no image
    assert_error(client.post("/search", json={"item_id": "shoe-red", "colour": "x"}), 400, "colour")


@pytest.mark.parametrize(
    "query, field",
    [("k=0&q=x", "k"), ("k=101&q=x", "k"), ("q=x&mode=fuzzy", "mode"), ("q=", "q"), ("q=%20%20", "q"),
     ("", "q"), ("q=x&offset=-1", "offset"), ("q=x&offset=5000", "offset"), ("q=x&cursor=!!", "cursor"),
     ("q=x&range=price:abc:", "range"), ("q=x&range=price:9:1", "range"), ("q=x&kind=video", "kind"),
     ("q=" + "x" * 600, "q")],
)
def test_bad_parameters_are_400_naming_the_field(client, query, field):
    assert_error(client.get(f"/search?{query}"), 400, field)


def test_http_errors_use_the_same_shape(client):
    assert_error(client.get("/nowhere"), 404)
    assert_error(client.delete("/search"), 405)


def test_unexpected_errors_hide_the_trace(client, monkeypatch):
    from service.web.runtime import Runtime

    def boom(*_a, **_k):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(Runtime, "query_encoder", boom)
    err = assert_error(client.get("/search?q=shoe&mode=semantic"), 500)
    assert "secret" not in json.dumps(err)


def test_typeahead(client):
    body = client.get("/suggest?q=run").get_json()
    assert {s["id"] for s in body["suggestions"]} >= {"shoe-red", "shoe-blue"}
    assert client.get("/suggest?q=kettle&kind=article").get_json()["suggestions"] == []
    assert_error(client.get("/suggest?q=x&k=0"), 400, "k")


# --- writes: fresh items, deletes, events --------------------------------------------------------


def test_new_item_is_searchable_at_once_and_deleted_never_returns(client):
    resp = client.put("/items/lantern", json={"kind": "product", "title": "Solar camping lantern",
                                              "text": "Charges in sunlight, lights the tent all night.", "category": "outdoor"})
    assert resp.status_code == 201 and resp.get_json()["searchable"] == {"text": True, "clip": False}
    hit = client.get("/search?q=solar lantern for camping&mode=semantic&k=1").get_json()["hits"][0]
    assert hit["id"] == "lantern" and "fresh" in hit["signals"]
    assert client.put("/items/lantern", json={"kind": "product", "title": "Solar camping lantern",
                                              "text": "Charges in sunlight, lights the tent all night.",
                                              "category": "outdoor"}).get_json()["status"] == "unchanged"
    assert client.delete("/items/lantern").status_code == 200
    for mode in ("semantic", "keyword", "hybrid"):
        assert "lantern" not in ids(client.get(f"/search?q=solar lantern&mode={mode}"))
    assert_error(client.get("/items/lantern"), 404)
    assert_error(client.delete("/items/lantern"), 404)


def test_deleting_an_indexed_item_removes_it_from_results(client, built):
    client.put("/items/tmp-item", json={"kind": "article", "title": "Temporary umbrella note", "text": "Umbrellas."})
    assert "tmp-item" in ids(client.get("/search?q=umbrella&mode=semantic&k=3"))
    client.delete("/items/art-rain")
    try:
        for mode in ("semantic", "keyword", "hybrid"):
            assert "art-rain" not in ids(client.get(f"/search?q=staying dry on rainy hikes&mode={mode}&k=10"))
    finally:  # put it back for the other tests
        row = next(r for r in CATALOG if r["id"] == "art-rain")
        client.put("/items/art-rain", json={k: v for k, v in row.items() if k not in ("id",)})
        client.delete("/items/tmp-item")


def test_updated_item_uses_its_new_vector(client):
    client.put("/items/gadget", json={"kind": "product", "title": "Pocket radio", "text": "AM/FM radio."})
    client.put("/items/gadget", json={"kind": "product", "title": "Espresso tamper", "text": "Tamps coffee grounds evenly."})
    assert ids(client.get("/search?q=tamp espresso coffee&mode=semantic&k=1")) == ["gadget"]
    client.delete("/items/gadget")


def test_item_write_validation(client):
    assert_error(client.put("/items/x", json={"kind": "video", "title": "x"}), 400, "kind")
    assert_error(client.put("/items/x", json={"kind": "product"}), 400, "title")
    assert_error(client.put("/items/x", json={"kind": "product", "title": "x", "image": "relative.png"}), 400, "image")
    # A server path is never read over HTTP (tests/store/test_images.py covers the rest).
    assert "import CLI" in assert_error(client.put("/items/x", json={"kind": "product", "title": "x", "image": "/etc/passwd"}),
                                        400, "image")["message"]
    assert_error(client.put("/items/x", data="not json", content_type="application/json"), 400)


def test_item_get_and_image(client):
    body = client.get("/items/jacket").get_json()
    assert body["title"].startswith("Green") and body["image_url"] == "/items/jacket/image"
    img = client.get("/items/jacket/image")
    assert img.status_code == 200 and img.data == _image("green") and img.mimetype == "image/png"
    assert img.headers["X-Content-Type-Options"] == "nosniff"
    assert_error(client.get("/items/knife/image"), 404)


def test_events_batch_with_per_event_results(client):
    batch = [
        {"event_id": "ev-1", "user_id": "u1", "item_id": "knife", "type": "view"},
        {"event_id": "ev-2", "user_id": "u1", "item_id": "no-such-item", "type": "click"},
        {"event_id": "ev-3", "user_id": "u1", "item_id": "knife", "type": "teleport"},
        {"event_id": "ev-1", "user_id": "u1", "item_id": "knife", "type": "view"},
    ]
    body = client.post("/events", json={"events": batch}).get_json()
    assert (body["accepted"], body["duplicates"], body["rejected"]) == (1, 1, 2)
    assert [r["status"] for r in body["results"]] == ["accepted", "rejected", "rejected", "duplicate"]
    assert "no-such-item" in body["results"][1]["reason"] and "type" in body["results"][2]["reason"]
    again = client.post("/events", json=batch[0]).get_json()
    assert again["duplicates"] == 1


@pytest.mark.parametrize("payload", ["[]", "42", '["a"]', '{"events": "x"}', "not json"])
def test_malformed_event_batches_are_400(client, payload):
    assert_error(client.post("/events", data=payload, content_type="application/json"), 400)


# --- keys, limits, health, metrics, docs, versions ------------------------------------------------


def test_api_keys_guard_writes_and_optionally_reads(make_client):
    client = make_client(api_keys='["w-key"]', admin_keys='["a-key"]')
    body = {"kind": "article", "title": "Keyed"}
    assert_error(client.put("/items/keyed", json=body), 401)
    assert_error(client.put("/items/keyed", json=body, headers={"X-API-Key": "wrong"}), 401)  # no identity
    assert client.put("/items/keyed", json=body, headers={"X-API-Key": "w-key"}).status_code == 201
    assert client.delete("/items/keyed", headers={"Authorization": "Bearer a-key"}).status_code == 200
    assert client.get("/search?q=x").status_code == 200  # reads are public by default
    assert_error(client.post("/admin/reload", headers={"X-API-Key": "w-key"}), 403)
    assert client.post("/admin/reload", headers={"X-API-Key": "a-key"}).status_code == 200
    private = make_client(api_keys='["w-key"]', read_requires_key=True)
    assert_error(private.get("/search?q=x"), 401)
    assert private.get("/search?q=x", headers={"X-API-Key": "w-key"}).status_code == 200
    assert private.get("/health/live").status_code == 200


def test_rate_limit(make_client):
    client = make_client(rate_limit_per_minute=3)
    codes = [client.get("/suggest?q=sh").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    resp = client.get("/suggest?q=sh")
    assert_error(resp, 429) and int(resp.headers["Retry-After"]) >= 1
    assert client.get("/health/live").status_code == 200


def test_health_metrics_status(client):
    assert client.get("/health/live").get_json() == {"status": "ok"}
    ready = client.get("/health/ready").get_json()
    assert ready["status"] == "ok" and ready["checks"]["database"] == "ok"
    client.get("/search?q=shoe")
    text = client.get("/metrics").get_data(as_text=True)
    assert 'recsys_request_seconds_bucket{endpoint="/search"' in text
    assert "recsys_index_info{" in text and 'recsys_stage_seconds_count{stage="encode"}' in text
    status = client.get("/status").get_json()
    assert status["spaces"]["text"]["count"] == len(CATALOG) and status["spaces"]["text"]["recall_at_10"] == 1.0


def test_openapi_and_docs(client):
    spec = client.get("/openapi.json").get_json()
    assert {"/search", "/suggest", "/items/{item_id}", "/events", "/health/ready"} <= set(spec["paths"])
    params = {p["name"] for p in spec["paths"]["/search"]["get"]["parameters"]}
    assert {"q", "k", "mode", "kind", "range"} <= params
    assert client.get("/docs").status_code == 200
    assert client.get("/docs/assets/swagger-ui-bundle.js").status_code == 200


def test_no_index_yet_is_503_but_writes_work(tmp_path, built):
    overrides = {**built["overrides"], "data_dir": str(tmp_path / "empty")}
    settings = load_settings(overrides, environ={})
    upgrade(make_engine(settings))
    app = create_app(overrides)
    client = app.test_client()
    err = assert_error(client.get("/search?q=shoe"), 503)
    assert "recsys-indexer build" in err["message"]
    assert_error(client.get("/health/ready"), 503)
    assert client.put("/items/a", json={"kind": "article", "title": "A"}).status_code == 201
    assert client.post("/events", json={"user_id": "u", "item_id": "a", "type": "view"}).get_json()["accepted"] == 1


def test_new_version_swaps_in_and_corrupt_version_is_refused(client, built):
    before = client.get("/status").get_json()["index_version"]
    report = Pipeline(built["settings"], built["factory"]).run(force=True)
    swapped = client.post("/admin/reload").get_json()
    assert swapped["swapped"] and swapped["index_version"] == report.version != before
    assert client.get("/search?q=shoe").get_json()["index_version"] == report.version
    # Publish a corrupted copy: the service keeps serving what it has.
    bad = Pipeline(built["settings"], built["factory"]).run(force=True, publish=False).version
    folder = artifacts.version_dir(built["settings"].index_path, bad)
    (folder / "text" / "ids.npy").write_bytes(b"corrupt")
    artifacts.write_json_atomic(folder / "manifest.json", json.loads((folder / "manifest.json").read_text()))
    Path(built["settings"].index_path / artifacts.CURRENT).write_text(bad + "\n")
    resp = client.post("/admin/reload").get_json()
    assert resp["swapped"] is False and resp["index_version"] == report.version and bad in resp["refused"]
    assert client.get("/search?q=shoe").status_code == 200
    artifacts.set_current(built["settings"].index_path, report.version)


def test_fresh_items_leave_the_delta_once_a_rebuild_includes_them(client, built):
    client.put("/items/compass", json={"kind": "product", "title": "Baseplate hiking compass",
                                       "text": "Declination adjustment and a magnifier for map reading."})
    hit = client.get("/search?q=hiking compass for map reading&mode=semantic&k=1").get_json()["hits"][0]
    assert hit["id"] == "compass" and "fresh" in hit["signals"]
    Pipeline(built["settings"], built["factory"]).run()
    assert client.post("/admin/reload").get_json()["swapped"]
    hit = client.get("/search?q=hiking compass for map reading&mode=semantic&k=1").get_json()["hits"][0]
    assert hit["id"] == "compass" and hit["signals"] == ["semantic"]  # now served by the main index
    assert client.get("/status").get_json()["spaces"]["text"]["fresh"] == 0
    client.delete("/items/compass")


def test_hybrid_text_to_image_only_returns_items_with_images(client):
    body = client.get("/search?q=kitchen knife&space=clip&mode=hybrid&k=10").get_json()
    assert body["hits"] and all(h["image_url"] for h in body["hits"])
    assert "knife" not in ids_of(body)  # a keyword match, but it has no picture
