"""``/openapi.json`` says what the server does: error envelope, 400 (not 422), limits, formats."""

from __future__ import annotations

import datetime as dt
import os

import pytest

from service.web.app import create_app
from service.store.db import make_engine, upgrade
from service.settings import load_settings

# Loads the real text model, builds indexes or runs servers: `make test-fast` leaves it out.
pytestmark = pytest.mark.slow

ERROR_REF = "#/components/schemas/Error"


@pytest.fixture
def make_app(tmp_path, monkeypatch):
    """An app over a fresh SQLite database and no index (the document does not need one)."""
    for key in [k for k in os.environ if k.startswith("RECSYS_")]:
        monkeypatch.delenv(key)
    overrides = {"data_dir": str(tmp_path / "data")}
    upgrade(make_engine(load_settings(overrides, environ={})))

    def make(**extra):
        return create_app({**overrides, **extra})

    return make


@pytest.fixture
def spec(make_app):
    return make_app().test_client().get("/openapi.json").get_json()


def operations(spec):
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method in ("get", "put", "post", "delete", "patch"):
                yield f"{method.upper()} {path}", op


def resolve(spec, node):
    ref = node.get("$ref")
    if ref is None:
        return node
    section, name = ref.split("/")[-2:]
    return spec["components"][section][name]


def limited(spec, setting):
    """Every schema (parameter or property) whose limit is the given setting."""
    found = []

    def walk(node):
        if isinstance(node, dict):
            if node.get("x-setting") == setting:
                found.append(node)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(spec)
    return found


def test_every_error_response_has_the_real_envelope(spec):
    error = spec["components"]["schemas"]["Error"]
    assert error["required"] == ["error"]
    detail = resolve(spec, error["properties"]["error"])
    assert set(detail["required"]) == {"code", "message", "details"}
    assert detail["properties"]["details"]["type"] == "object"
    seen = set()
    for name, op in operations(spec):
        for status, response in op["responses"].items():
            if status == "default" or status[0] in "45":
                schema = resolve(spec, response)["content"]["application/json"]["schema"]
                assert schema == {"$ref": ERROR_REF}, (name, status)
                seen.add(status)
    assert {"400", "401", "403", "404", "413", "415", "429", "503", "default"} <= seen
    assert "Error" in spec["components"]["schemas"] and "code" not in error["properties"]  # not flask-smorest's


def test_errors_where_they_can_occur(spec):
    ops = dict(operations(spec))
    for name, op in ops.items():
        statuses = set(op["responses"])
        assert "400" in statuses, name
        if not name.startswith("GET /health/"):
            assert {"401", "403", "429", "503"} <= statuses, name
        if "{item_id}" in name:
            assert "404" in statuses, name
        if "requestBody" in op:
            assert "413" in statuses, name
    assert {"413", "415"} <= set(ops["PUT /items/{item_id}"]["responses"])
    assert {"404", "413", "415"} <= set(ops["POST /search"]["responses"])
    assert "503" in ops["GET /health/ready"]["responses"]


def test_no_422_anywhere(spec, make_app):
    for name, op in operations(spec):
        assert "422" not in op["responses"], name
    assert "UNPROCESSABLE_ENTITY" not in spec["components"].get("responses", {})
    # What the document says instead is what the server sends.
    client = make_app().test_client()
    resp = client.get("/suggest?q=x&k=0")
    assert resp.status_code == 400 and resp.get_json()["error"]["code"] == "validation_error"


def test_event_in_is_published_and_used(spec):
    event = spec["components"]["schemas"]["EventIn"]
    assert {"user_id", "item_id", "type"} <= set(event["required"])
    body = dict(operations(spec))["POST /events"]["requestBody"]["content"]["application/json"]["schema"]
    refs = [choice.get("$ref") or choice.get("items", {}).get("$ref") or choice["properties"]["events"]["items"]["$ref"]
            for choice in body["oneOf"]]
    assert refs == ["#/components/schemas/EventIn"] * 3


def test_limits_are_the_apps_settings(make_app):
    default = load_settings({}, environ={})
    for overrides, (k, offset, chars) in [({}, (default.max_k, default.max_offset, default.max_query_chars)),
                                           ({"max_k": 37, "max_offset": 250, "max_query_chars": 64}, (37, 250, 64))]:
        spec = make_app(**overrides).test_client().get("/openapi.json").get_json()
        ks = limited(spec, "max_k")
        # Every k that the views check against max_k: the query parameters and the JSON bodies.
        assert len(ks) >= 7 and all(node["maximum"] == k for node in ks), ks
        search_k = next(p for p in dict(operations(spec))["GET /search"]["parameters"] if p["name"] == "k")
        assert search_k["schema"]["maximum"] == k
        assert spec["components"]["schemas"]["RecommendBody"]["properties"]["k"]["maximum"] == k
        offsets = limited(spec, "max_offset")
        assert offsets and all(node["maximum"] == offset for node in offsets)
        queries = limited(spec, "max_query_chars")
        assert len(queries) == 2 and all(node["maxLength"] == chars for node in queries)


def test_the_documented_limit_is_the_enforced_one(make_app):
    client = make_app(max_k=37).test_client()
    spec = client.get("/openapi.json").get_json()
    k = next(p for p in dict(operations(spec))["GET /trending"]["parameters"] if p["name"] == "k")["schema"]["maximum"]
    assert k == 37
    assert client.get(f"/trending?k={k}").status_code == 200
    assert client.get(f"/trending?k={k + 1}").status_code == 400


def test_last_event_at_is_a_date_time_with_an_offset(make_app):
    client = make_app().test_client()
    spec = client.get("/openapi.json").get_json()
    prop = spec["components"]["schemas"]["UserOut"]["properties"]["last_event_at"]
    assert prop["format"] == "date-time"
    assert client.put("/items/a", json={"kind": "article", "title": "A"}).status_code == 201
    resp = client.post("/events", json={"user_id": "u1", "item_id": "a", "type": "view", "timestamp": "2026-01-02T03:04:05Z"})
    assert resp.get_json()["accepted"] == 1
    user = client.get("/users").get_json()["users"][0]
    when = dt.datetime.fromisoformat(user["last_event_at"].replace("Z", "+00:00"))
    assert when.utcoffset() == dt.timedelta(0) and when == dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
