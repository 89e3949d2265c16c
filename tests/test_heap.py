"""A worker's start-up objects are frozen out of full garbage collections (service.heap)."""

from __future__ import annotations

import gc

import pytest

from service.heap import freeze_startup_objects
from service.settings import load_settings
from service.store.db import make_engine, upgrade
from service.web.app import create_app


@pytest.fixture
def unfrozen():
    """Every test here starts and ends with nothing frozen (the rest of the suite freezes nothing)."""
    gc.unfreeze()
    yield
    gc.unfreeze()


def _tracked(obj) -> bool:
    return any(o is obj for o in gc.get_objects())


def test_objects_alive_at_the_freeze_leave_the_collector_and_later_ones_do_not(unfrozen):
    before = [[1], {"a": []}]
    assert _tracked(before)
    # (the count can only be compared loosely: a frozen object that dies leaves the generation)
    assert freeze_startup_objects("test") > 0 and gc.get_freeze_count() > 0
    assert not _tracked(before)  # a full collection no longer walks it
    after = [[2]]
    assert _tracked(after)
    gc.collect()  # frozen objects are never collected, and stay usable
    assert before[1]["a"] == [] and _tracked(after)


@pytest.mark.parametrize("freeze", [True, False])
def test_create_app_freezes_its_start_up_objects_only_when_the_setting_says_so(tmp_path, unfrozen, freeze):
    overrides = {"data_dir": str(tmp_path / "data"), "clip_enabled": False, "freeze_startup_heap": freeze}
    upgrade(make_engine(load_settings(overrides, environ={})))
    app = create_app(overrides)
    assert gc.isenabled()  # paused while the app was built, on again after
    assert (gc.get_freeze_count() > 0) is freeze
    assert not _tracked(app) if freeze else _tracked(app)
    assert app.test_client().get("/health/live").status_code == 200


def test_the_setting_is_on_by_default_and_read_from_the_environment(tmp_path):
    assert load_settings({"data_dir": tmp_path}, environ={}).freeze_startup_heap is True
    off = load_settings({"data_dir": tmp_path}, environ={"RECSYS_FREEZE_STARTUP_HEAP": "false"})
    assert off.freeze_startup_heap is False


def test_a_slow_full_collection_is_logged_once_per_process(monkeypatch, caplog):
    from service import heap

    heap.watch_full_collections()
    heap.watch_full_collections()
    assert gc.callbacks.count(heap._time_full_collections) == 1
    monkeypatch.setattr(heap, "SLOW_COLLECTION_SECONDS", 0.0)
    with caplog.at_level("WARNING", logger="recsys.heap"):
        gc.collect(1)  # a younger generation is not a full collection
        assert not caplog.records
        gc.collect()
    assert any("full garbage collection paused this worker" in r.getMessage() for r in caplog.records)


def test_collection_is_paused_inside_and_restored_after():
    from service.heap import collection_paused

    assert gc.isenabled()
    with collection_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with collection_paused():
            pass
        assert not gc.isenabled()  # a caller that had it off keeps it off
    finally:
        gc.enable()
    with pytest.raises(RuntimeError):
        with collection_paused():
            raise RuntimeError("start-up failed")
    assert gc.isenabled()


def test_overlapping_pauses_from_two_threads_end_when_the_last_one_leaves():
    import threading

    from service.heap import collection_paused

    inside, leave = threading.Event(), threading.Event()

    def loader():  # the encoder-load thread: starts inside the factory's pause, ends after it
        with collection_paused():
            inside.set()
            leave.wait(5)

    with collection_paused():
        t = threading.Thread(target=loader)
        t.start()
        inside.wait(5)
    assert not gc.isenabled()  # the factory left, the loader is still inside
    leave.set()
    t.join(5)
    assert gc.isenabled()
