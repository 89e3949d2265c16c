"""Machinery the benchmarks share: paths, statistics, machine and load records, the CPU meter,
load-for-a-duration threads, benchmark data folders, cProfile attribution, the recorded command
line and result files.

Nothing here is a benchmark: the benchmarks (``python -m benchmarks.<name>`` from the repository
root) import it, and never each other. Importing it installs the service's torchvision hook
(``import service``) before anything imports transformers.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import platform
import pstats
import shlex
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Callable, Sequence

import service  # noqa: F401  (installs the torchvision hook before anything imports transformers)
import numpy as np

REPO = Path(__file__).resolve().parent.parent
DATA_ROOT = REPO / "benchmarks" / "_data"  # cached data folders (git-ignored)
PREPARED = "prepared.json"  # in a data folder: what it holds, checked before reuse
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


# =============================================================================================
# Statistics and machine information
# =============================================================================================


def stats_ms(seconds: list[float], elapsed: float | None = None) -> dict[str, Any]:
    if not seconds:
        return {"n": 0}
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    out = {
        "n": int(ms.size),
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p90_ms": round(float(np.percentile(ms, 90)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "max_ms": round(float(ms.max()), 3),
        "mean_ms": round(float(ms.mean()), 3),
    }
    if elapsed:
        out["qps"] = round(ms.size / elapsed, 2)
        out["elapsed_s"] = round(elapsed, 3)
    return out


def machine_info() -> dict[str, Any]:
    import faiss
    import torch
    import sentence_transformers

    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem = round(int(Path("/proc/meminfo").read_text().split()[1]) / 1024 / 1024, 1)
    versions = {}
    for mod in ("flask", "gunicorn", "sqlalchemy", "marshmallow", "flask_smorest", "transformers"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            versions[mod] = version(mod.replace("_", "-"))
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "mem_gib": mem,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_default_threads": torch.get_num_threads(),
        "faiss": faiss.__version__,
        "sentence_transformers": sentence_transformers.__version__,
        **versions,
    }


def load_snapshot() -> dict[str, Any]:
    """Load average and the busiest processes that are not this benchmark or its servers."""
    out: dict[str, Any] = {"loadavg": [round(x, 2) for x in os.getloadavg()]}
    with contextlib.suppress(Exception):
        ps = subprocess.run(["ps", "-eo", "pid,ppid,pcpu,args", "--sort=-pcpu"], capture_output=True, text=True,
                            timeout=5).stdout.splitlines()[1:8]
        mine = {os.getpid()}
        out["top"] = [" ".join(line.split(None, 3)[:3] + [line.split(None, 3)[3][:90]]) for line in ps
                      if len(line.split(None, 3)) == 4 and int(line.split()[0]) not in mine][:5]
    return out


class CpuMeter:
    """CPU used during a phase: the whole machine, this benchmark's process tree, everyone else.

    Other engineers' jobs share this machine; a phase's figures only mean something next to how
    much CPU the others took meanwhile (``others_cores``: average cores busy outside our tree).
    """

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.stat0 = self._machine()
        self.procs0 = self._procs()
        self.result: dict[str, Any] = {}

    @staticmethod
    def _machine() -> tuple[int, int]:
        with contextlib.suppress(OSError, ValueError):
            vals = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
            idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
            return sum(vals) - idle, sum(vals)
        return 0, 1

    @staticmethod
    def _procs() -> dict[int, tuple[int, int, str]]:
        """pid -> (ppid, utime+stime jiffies, short command)."""
        out = {}
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            with contextlib.suppress(OSError, ValueError, IndexError):
                raw = Path(f"/proc/{d}/stat").read_text()
                rest = raw[raw.rindex(")") + 2:].split()
                out[int(d)] = (int(rest[1]), int(rest[11]) + int(rest[12]), raw[raw.index("(") + 1: raw.rindex(")")])
        return out

    def stop(self) -> dict[str, Any]:
        dt = max(1e-6, time.monotonic() - self.t0)
        busy1, total1 = self._machine()
        procs1 = self._procs()
        hz = os.sysconf("SC_CLK_TCK")
        ncpu = os.cpu_count() or 1
        children: dict[int, list[int]] = defaultdict(list)
        for pid, (ppid, _t, _c) in procs1.items():
            children[ppid].append(pid)
        mine, stack = set(), [os.getpid()]
        while stack:
            pid = stack.pop()
            if pid not in mine:
                mine.add(pid)
                stack.extend(children.get(pid, []))
        used = {pid: (t - self.procs0.get(pid, (0, 0, ""))[1]) / hz / dt for pid, (_pp, t, _c) in procs1.items()}
        ours = sum(v for pid, v in used.items() if pid in mine)
        others = {pid: v for pid, v in used.items() if pid not in mine and v > 0.02}
        busy = (busy1 - self.stat0[0]) / max(1, total1 - self.stat0[1])
        self.result = {
            "seconds": round(dt, 2),
            "machine_busy_pct": round(100 * busy, 1),
            "ours_cores": round(ours, 2),
            "others_cores": round(max(0.0, busy * ncpu - ours), 2),
            "top_others": [f"{pid} {procs1[pid][2]} {v:.2f} cores" for pid, v in
                           sorted(others.items(), key=lambda kv: -kv[1])[:4]],
        }
        return self.result



def self_rss_mib() -> float | None:
    """This process's resident memory, MiB."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    return None


# =============================================================================================
# Load for a duration
# =============================================================================================


def run_for(worker, clients: int, duration: float, stop: threading.Event, *, poll: float, join_timeout: float) -> None:
    """Run ``clients`` threads of ``worker`` until they finish or ``duration`` s pass (then ``stop``)."""
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline and any(t.is_alive() for t in threads):
        time.sleep(poll)
    stop.set()
    for t in threads:
        t.join(timeout=join_timeout)


# =============================================================================================
# Data folders and throwaway databases
# =============================================================================================


def bench_settings(data_dir: Path, **extra):
    """The service's settings for a benchmark data folder: CLIP off, the environment ignored."""
    from service.settings import load_settings

    return load_settings({"data_dir": str(data_dir), "clip_enabled": False, **extra}, environ={})


def published_problem(data_dir: Path) -> str | None:
    """Why the published version cannot be served by this checkout's code, or None if it can."""
    from service.vectors import artifacts
    from service.vectors.index_store import load_version

    index_dir = bench_settings(data_dir).index_path
    version = artifacts.current_version(index_dir)
    if version is None:
        return "nothing published"
    try:
        load_version(index_dir, version, checksums=False)
    except Exception as exc:  # any failure means the service would refuse it too
        return f"{type(exc).__name__}: {exc}"
    return None


def fresh_database(backend: str, folder: Path) -> tuple[str, Callable[[], None]]:
    """(URL, drop) of an empty database: a new SQLite file in ``folder``, or a new PostgreSQL database."""
    from sqlalchemy import create_engine, text

    if backend == "sqlite":
        path = folder / f"bench-{uuid.uuid4().hex[:8]}.db"
        return f"sqlite:///{path}", lambda: None
    name = f"recsys_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))

    def drop():
        with admin.connect() as c:
            c.execute(text(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"))
            c.execute(text(f'DROP DATABASE "{name}"'))
        admin.dispose()

    return admin.url.set(database=name).render_as_string(hide_password=False), drop


# =============================================================================================
# cProfile attribution
# =============================================================================================


def group_profile(stats: pstats.Stats, groups: Sequence[tuple[str, Sequence[str]]],
                  c_call_label: Callable[[str], str], ndigits: int = 1) -> dict[str, float]:
    """Own time (tottime) per group, in ms, largest first.

    A function belongs to the first group one of whose keys names its file's package folder or
    module (``/key/`` in the path, the path ends with ``/key.py`` or ``key``); builtins and C calls
    (file ``~``) are labelled by ``c_call_label(function name)`` unless a group claims them; the
    rest is "other python".
    """
    out: Counter = Counter()
    for (filename, _line, func), (_cc, _nc, tt, _ct, _callers) in stats.stats.items():
        name = filename.replace("\\", "/")
        label = "other python"
        if filename == "~":
            label = c_call_label(func)
        for group, keys in groups:
            if any(f"/{k}/" in name or name.endswith(f"/{k}.py") or name.endswith(k) for k in keys):
                label = group
                break
        out[label] += tt * 1000
    return {k: round(v, ndigits) for k, v in out.most_common()}


def profile_top(prof, sort: str, n: int) -> list[str]:
    """The ``n`` top rows of a profile by ``sort`` ("tottime", "cumulative"), with their header."""
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats(sort).print_stats(n)
    return [line for line in buf.getvalue().splitlines() if line.strip()][-(n + 2):]


# =============================================================================================
# Recorded command, result files
# =============================================================================================


def command_line() -> str:
    """This run's command as typed in the repository root: ``<python> -m benchmarks.<name> <args>``."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    entry = ["-m", spec.name] if spec is not None and spec.name else [sys.argv[0]]
    return " ".join(shlex.quote(a) for a in [os.path.relpath(sys.executable, os.getcwd()), *entry, *sys.argv[1:]])


def write_result(path: Path, result: dict[str, Any]) -> None:
    """``result`` as indented JSON (anything not JSON-native as ``str``); folders created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str))
