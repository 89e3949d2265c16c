"""A worker whose ``CURRENT`` is unusable at start serves the newest good version instead.

Two real versions (v1, then v2 published) are built once; each test breaks a copy of the data
dir (corrupt checksum, missing folder, non-UTF-8 pointer, pointer that is a directory, garbage
name, empty pointer) and checks the store and the Flask app fall back (to v1 when v2 is broken,
to v2 when only the pointer is), say so in ``/status``, never answer 500, and recover when the
pointer is fixed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import pytest

from indexer.pipeline import Pipeline
from service.vectors import artifacts
from service.web.app import create_app
from service.store.db import make_engine, make_session_factory, upgrade
from service.store.importing import import_items
from service.vectors.index_store import IndexStore
from service.settings import load_settings

# Loads the real text model, builds indexes or runs servers: `make test-fast` leaves it out.
pytestmark = pytest.mark.slow

CATALOG = [
    {"id": "shoe", "kind": "product", "title": "Red trail running shoe", "text": "Grippy sole for muddy trails."},
    {"id": "jacket", "kind": "product", "title": "Green waterproof rain jacket", "text": "Taped seams keep you dry."},
    {"id": "knife", "kind": "product", "title": "Carbon steel chef knife", "text": "A sharp blade for vegetables."},
    {"id": "kettle", "kind": "product", "title": "Stovetop kettle", "text": "Whistles when the water boils."},
    {"id": "suede", "kind": "article", "title": "How to clean suede shoes", "text": "Brush gently, then spray."},
    {"id": "hike", "kind": "article", "title": "Staying dry on rainy hikes", "text": "Layer a waterproof shell."},
]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A data dir (SQLite + index) with two good versions: v1, then v2 (published)."""
    root = tmp_path_factory.mktemp("fallback")
    (root / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in CATALOG))
    settings = load_settings({"data_dir": str(root / "data"), "clip_enabled": False}, environ={})
    engine = make_engine(settings)
    upgrade(engine)
    factory = make_session_factory(engine)
    import_items(root / "items.jsonl", session_factory=factory, progress=False)
    v1 = Pipeline(settings, factory).run().version
    v2 = Pipeline(settings, factory).run(force=True).version
    engine.dispose()
    assert artifacts.current_version(settings.index_path) == v2 != v1
    return {"data": root / "data", "v1": v1, "v2": v2}


@pytest.fixture
def data(built, tmp_path, monkeypatch):
    """A private copy of the built data dir (tests break it) and the RECSYS_* env cleared."""
    for key in [k for k in os.environ if k.startswith("RECSYS_")]:
        monkeypatch.delenv(key)
    copy = tmp_path / "data"
    shutil.copytree(built["data"], copy)
    settings = load_settings({"data_dir": str(copy), "clip_enabled": False}, environ={})
    return settings.index_path, built["v1"], built["v2"]


def _corrupt(index_dir: Path, v2: str) -> None:
    path = artifacts.version_dir(index_dir, v2) / "text" / artifacts.IDS_FILE
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF  # same size: only the checksum can tell
    path.write_bytes(bytes(raw))


def _missing(index_dir: Path, v2: str) -> None:
    shutil.move(artifacts.version_dir(index_dir, v2), index_dir / "moved-away")


def _pointer(raw: bytes):
    def write(index_dir: Path, _v2: str) -> None:
        (index_dir / artifacts.CURRENT).write_bytes(raw)
    return write


def _pointer_is_a_directory(index_dir: Path, _v2: str) -> None:
    (index_dir / artifacts.CURRENT).unlink()
    (index_dir / artifacts.CURRENT).mkdir()


# name -> (break it, does the fallback know which version CURRENT wanted, words in the reason)
BREAKAGES = {
    "corrupt-checksum": (_corrupt, True, "checksum"),
    "missing-folder": (_missing, True, "missing"),
    "non-utf8-pointer": (_pointer(b"\xff\xfe\x00\x9c garbage\n"), False, "UTF-8"),
    "pointer-is-a-directory": (_pointer_is_a_directory, False, "not a file"),
    "garbage-name": (_pointer(b"../../etc/passwd\n"), False, "no valid version"),
    "empty-pointer": (_pointer(b""), False, "empty"),
}


def _fix_pointer(index_dir: Path, version: str) -> None:
    pointer = index_dir / artifacts.CURRENT
    if pointer.is_dir():
        pointer.rmdir()
    artifacts.set_current(index_dir, version)


@pytest.mark.parametrize("name", list(BREAKAGES))
def test_read_pointer_never_raises(data, name):
    index_dir, _v1, v2 = data
    breakage, knows_wanted, words = BREAKAGES[name]
    assert artifacts.read_pointer(index_dir) == artifacts.Pointer(v2)
    breakage(index_dir, v2)
    pointer = artifacts.read_pointer(index_dir)
    if knows_wanted:  # the pointer itself is fine: the version it names is not
        assert pointer == artifacts.Pointer(v2)
    else:
        assert pointer.version is None and words in pointer.error
        assert artifacts.current_version(index_dir) is None
    pointer = index_dir / artifacts.CURRENT
    pointer.rmdir() if pointer.is_dir() else pointer.unlink()
    assert artifacts.read_pointer(index_dir) == artifacts.Pointer(None)  # no file: nothing published, no error


@pytest.mark.parametrize("name", list(BREAKAGES))
def test_store_falls_back_to_the_newest_good_version_and_recovers(data, name, caplog):
    index_dir, v1, v2 = data
    breakage, knows_wanted, words = BREAKAGES[name]
    breakage(index_dir, v2)
    good = v1 if knows_wanted else v2  # v2 itself is fine when only the pointer is broken
    store = IndexStore(index_dir)
    with caplog.at_level(logging.ERROR, logger="recsys.index"):
        assert store.refresh() is True
        assert store.refresh() is False and store.refresh() is False  # polling again changes nothing
    assert store.current.name == good
    fallback = store.fallback
    assert fallback["serving"] == good and fallback["wanted"] == (v2 if knows_wanted else None)
    assert words in fallback["reason"]
    told = [r.getMessage() for r in caplog.records if "falling back" in r.getMessage()]
    assert len(told) == 1 and good in told[0] and (v2 if knows_wanted else artifacts.CURRENT) in told[0]
    assert (v2 in store.refused()) is knows_wanted

    if name == "missing-folder":
        # The folder arrives after the pointer (a copy in progress): it is tried again and served.
        shutil.move(index_dir / "moved-away", artifacts.version_dir(index_dir, v2))
        assert store.refresh() is True and store.current.name == v2 and store.fallback is None
    elif knows_wanted:
        _fix_pointer(index_dir, v1)  # roll back to the good one: no swap, no longer a fallback
        assert store.refresh() is False and store.current.name == v1 and store.fallback is None
    else:
        _fix_pointer(index_dir, v1)  # a usable pointer again: served as soon as it is seen
        assert store.refresh() is True and store.current.name == v1 and store.fallback is None


def test_a_serving_worker_keeps_its_version_when_the_pointer_goes_bad(data):
    index_dir, _v1, v2 = data
    store = IndexStore(index_dir)
    assert store.refresh() and store.current.name == v2 and store.fallback is None
    (index_dir / artifacts.CURRENT).write_bytes(b"\xff\xff")
    assert store.refresh() is False and store.current.name == v2
    assert store.fallback == {"wanted": None, "reason": f"{artifacts.CURRENT} is not UTF-8 text", "serving": v2}
    _fix_pointer(index_dir, v2)
    assert store.refresh() is False and store.fallback is None


def test_newer_unpublished_versions_are_not_preferred_over_older_ones(data):
    index_dir, v1, v2 = data
    newer = "29990101T000000000Z-abcdef"  # e.g. a --no-publish build: never meant to be served
    shutil.copytree(artifacts.version_dir(index_dir, v2), artifacts.version_dir(index_dir, newer))
    _corrupt(index_dir, v2)
    store = IndexStore(index_dir)
    assert store.refresh() and store.current.name == v1


def test_incompatible_version_falls_back_too(data):
    index_dir, v1, v2 = data
    store = IndexStore(index_dir, check_compatible=lambda m: "built by another encoder" if m["version"] == v2 else None)
    assert store.refresh() and store.current.name == v1
    assert "incompatible" in store.fallback["reason"] and store.fallback["wanted"] == v2


def test_nothing_good_on_disk_serves_nothing_without_raising(data, caplog):
    index_dir, v1, v2 = data
    _corrupt(index_dir, v1)
    _corrupt(index_dir, v2)
    store = IndexStore(index_dir)
    with caplog.at_level(logging.ERROR, logger="recsys.index"):
        assert store.refresh() is False and store.refresh() is False
    assert store.current is None and store.fallback is None and set(store.refused()) == {v1, v2}
    assert len([r for r in caplog.records if "no other version verifies" in r.getMessage()]) == 1
    (index_dir / artifacts.CURRENT).write_bytes(b"\x00\xff")  # garbage too: still no exception
    assert store.refresh() is False and store.current is None


# --- through the Flask app -------------------------------------------------------------------

APP = {"clip_enabled": False, "index_poll_seconds": 3600}  # no background poll racing the test


@pytest.mark.parametrize("name", list(BREAKAGES))
def test_app_serves_the_fallback_and_says_so_in_status(data, name):
    index_dir, v1, v2 = data
    breakage, knows_wanted, words = BREAKAGES[name]
    breakage(index_dir, v2)
    good = v1 if knows_wanted else v2
    app = create_app({**APP, "data_dir": str(index_dir.parent)})
    client = app.test_client()
    status = client.get("/status")
    assert status.status_code == 200, status.get_data(as_text=True)
    body = status.get_json()
    assert body["index_version"] == good and body["index_fallback"]["serving"] == good
    assert words in body["index_fallback"]["reason"] and isinstance(body["refused"], dict)
    assert (v2 in body["refused"]) is knows_wanted
    assert client.get("/health/ready").status_code == 200
    search = client.get("/search?q=waterproof rain jacket&mode=semantic")
    assert search.status_code == 200 and search.get_json()["index_version"] == good
    assert search.get_json()["hits"][0]["id"] == "jacket"

    # Fix the pointer: the next poll serves what it names and clears the fallback.
    _fix_pointer(index_dir, v1)
    app.extensions["recsys"].store.refresh()
    body = client.get("/status").get_json()
    assert body["index_version"] == v1 and body["index_fallback"] is None
    assert client.get("/search?q=kettle").get_json()["index_version"] == v1


def test_app_with_a_garbage_pointer_and_no_good_version_never_answers_500(data):
    index_dir, v1, v2 = data
    _corrupt(index_dir, v1)
    _corrupt(index_dir, v2)
    _pointer_is_a_directory(index_dir, v2)
    client = create_app({**APP, "data_dir": str(index_dir.parent)}).test_client()
    status = client.get("/status")
    assert status.status_code == 200 and status.get_json()["index_version"] is None
    assert status.get_json()["index_fallback"] is None and set(status.get_json()["refused"]) == {v1, v2}
    assert client.get("/health/ready").status_code == 503
    assert client.get("/search?q=shoe").status_code == 503
