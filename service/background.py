"""Background threads of a worker give the CPU to requests first.

Linux schedules each thread on its own: ``setpriority(PRIO_PROCESS, <thread id>)`` changes the
nice value of that thread only (``man 2 setpriority``, BUGS), so a worker's snapshot rebuilds can
run below its request threads without a separate process. Elsewhere this does nothing.
"""

from __future__ import annotations

import logging
import os
import sys
import threading

log = logging.getLogger("recsys.background")

MAX_NICE = 19


def lower_this_thread(niceness: int) -> bool:
    """Add ``niceness`` (capped at nice 19) to the calling thread's nice value; True when done."""
    if niceness <= 0 or not sys.platform.startswith("linux") or not hasattr(os, "setpriority"):
        return False
    tid = threading.get_native_id()
    try:
        now = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(MAX_NICE, now + niceness))
    except OSError as exc:  # a sandbox may refuse it; the thread then runs at the worker's priority
        log.debug("could not lower the priority of thread %s: %s", threading.current_thread().name, exc)
        return False
    return True
