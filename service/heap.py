"""A long-running worker's start-up objects, kept out of the garbage collector's full passes.

A worker starts by importing torch, FAISS, SQLAlchemy and Flask and loading the published
version: about 600k objects the cyclic collector tracks and never frees. A full (oldest
generation) collection walks all of them: 0.5-0.6 s on a 2-core VM, during which the worker
answers nothing. Under a stream of posted events CPython runs one every minute or so per worker,
so one request a minute waits half a second (docs/benchmarks.md, "Garbage-collection pauses
in the workers").

``gc.freeze`` moves every object alive now into a permanent generation that no collection
visits, so a full collection walks only what came after start-up; and while a worker starts
(the app factory, then torch's import in the encoder-load thread), no collection runs at all
(:func:`collection_paused`): each one would walk the growing heap of objects that all stay alive.

The cost: cyclic garbage that exists at the moment of freezing is never freed (start-up garbage,
bounded, once). Objects frozen here are never collected, which is what start-up objects are for.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
import time
from typing import Iterator

log = logging.getLogger("recsys.heap")


_pause_lock = threading.Lock()
_pauses = 0  # callers inside collection_paused now, in any thread
_was_enabled = True


@contextlib.contextmanager
def collection_paused() -> Iterator[None]:
    """No cyclic collection inside (start-up: what it loads stays alive, so collecting while the
    heap grows would walk it again and again for nothing); as before once the last of
    overlapping callers (the app factory, the encoder-load thread) has left."""
    global _pauses, _was_enabled
    with _pause_lock:
        if _pauses == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _pause_lock:
            _pauses -= 1
            if _pauses == 0 and _was_enabled:
                gc.enable()


def freeze_startup_objects(reason: str) -> int:
    """Move every object tracked now into the permanent generation; the count frozen so far."""
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.info("froze %d start-up objects (%s): full garbage collections skip them", frozen, reason)
    return frozen


# A full collection slower than this is logged: a pause every request in the worker waited for.
SLOW_COLLECTION_SECONDS = 0.1
_started: list[float] = []


def _time_full_collections(phase: str, info: dict) -> None:
    if info.get("generation") != 2:
        return
    if phase == "start":
        _started[:] = [time.perf_counter()]
    elif _started:
        took = time.perf_counter() - _started.pop()
        if took >= SLOW_COLLECTION_SECONDS:
            log.warning("a full garbage collection paused this worker for %.0f ms (%d objects collected)",
                        took * 1000, info.get("collected", 0))


def watch_full_collections() -> None:
    """Log each full collection that pauses the process for over ``SLOW_COLLECTION_SECONDS``
    (once per process, however many apps it builds)."""
    if _time_full_collections not in gc.callbacks:
        gc.callbacks.append(_time_full_collections)
