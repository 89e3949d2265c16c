"""A worker's background threads run below its request threads (Linux per-thread nice)."""

from __future__ import annotations

import os
import sys
import threading
import time

import pytest

from service.background import MAX_NICE, lower_this_thread
from service.recommend.behaviour import BehaviourModel
from service.settings import load_settings

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux's")


def _nice_of(tid: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, tid)


def _in_thread(fn):
    box = {}

    def run():
        box["result"] = fn()
        box["nice"] = _nice_of(threading.get_native_id())

    t = threading.Thread(target=run)
    t.start()
    t.join()
    return box


@linux_only
def test_only_the_calling_thread_is_lowered_and_never_past_19():
    main = _nice_of(threading.get_native_id())
    box = _in_thread(lambda: lower_this_thread(5))
    assert box == {"result": True, "nice": min(MAX_NICE, main + 5)}
    assert _nice_of(threading.get_native_id()) == main  # the caller's own threads keep theirs
    assert _in_thread(lambda: lower_this_thread(50))["nice"] == MAX_NICE


def test_zero_or_negative_niceness_changes_nothing():
    main = _nice_of(threading.get_native_id())
    assert _in_thread(lambda: lower_this_thread(0)) == {"result": False, "nice": main}
    assert _in_thread(lambda: lower_this_thread(-5)) == {"result": False, "nice": main}


@linux_only
def test_the_behaviour_refresh_thread_runs_at_the_configured_niceness(session_factory):
    main = _nice_of(threading.get_native_id())
    model = BehaviourModel(event_weights={"view": 1.0}, rating_neutral=3.0, refresh_seconds=0.05, niceness=7)
    model.ensure_refreshing(session_factory)
    try:
        deadline = time.monotonic() + 5
        while _nice_of(model._thread.native_id) != min(MAX_NICE, main + 7) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _nice_of(model._thread.native_id) == min(MAX_NICE, main + 7)
        assert _nice_of(threading.get_native_id()) == main
    finally:
        model.stop()


def test_the_setting_defaults_to_10_and_reaches_the_model(tmp_path):
    settings = load_settings({"data_dir": tmp_path}, environ={})
    assert settings.background_niceness == 10
    assert BehaviourModel.from_settings(settings).niceness == 10
    assert BehaviourModel.from_settings(load_settings({"data_dir": tmp_path}, environ={"RECSYS_BACKGROUND_NICENESS": "0"})).niceness == 0

