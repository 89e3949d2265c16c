"""End-to-end latency and throughput of the search service under gunicorn, against a bare loop.

One run:

1. prepares (or reuses) ``benchmarks/_data/service-<N>/``: a SQLite database with N realistic
   catalog items (composed from the demo vocabularies in ``service/demo/_vocab.py``: invented
   brands and models, product copy, buying/care/how-to articles), imported with
   ``service.store.importing.import_items``, and a published index built by ``indexer.pipeline.Pipeline``
   with the packaged MiniLM (CLIP off). Embedding 100k items (~80-200 tokens each) on 2 shared
   cores takes 45-90 minutes; later runs reuse the folder (``--rebuild-data`` starts over; an
   index this checkout can no longer read is rebuilt from the vector cache, without re-embedding);
2. starts the service under gunicorn on 127.0.0.1 (a free port) for each ``--configs`` entry
   (``WxT:torch`` = workers x threads, RECSYS_TORCH_THREADS; torch 0 = torch's default) and runs:

   A  one client, sequential: ``/search?mode=semantic`` and ``mode=hybrid`` (k=10), end to end,
      with the server-side ``X-Response-Time-ms`` header, the view's own ``took_ms`` and the
      per-stage Prometheus histograms (encode, search, page; PROMETHEUS_MULTIPROC_DIR is set so
      they cover every worker) for an overhead breakdown;
   A/B paired (with B selected): the same queries in blocks of 50, alternately through the
      service and through the bare loop in this process while the service idles, so the load of
      other processes on this shared machine hits both sides alike;
   C  4 and 16 concurrent clients (one keep-alive connection each) for ``--duration`` seconds;
   D  typeahead ``/suggest`` for prefixes of 1-8 characters typed from real titles;
   E  on ``--swap-config`` (default 2 workers): hot swap under 4 clients for ``--swap-duration``
      s; a new version (built before the load with ``run(force=True, publish=False)``, or during
      it with ``--swap-mode build``) is published with ``publish_version`` at ``--swap-at`` s;
      counts failed requests and records when each worker process (found through /proc) first
      answered with the new version and last with the old one;

3. with every server stopped, in this process:

   B  the bare loop: ``TextEncoder.encode([q])`` + FAISS search of the same published index with
      the manifest's search params (k=11, as the service asks for k+1), per torch thread count;
   P  where the time goes: the same queries through Flask's test client (no HTTP), each stage of
      the search view timed by hand (encode, FAISS, SQL hydration, item_json, marshmallow dump +
      JSON), encode alternatives (direct forward, int8), and a cProfile grouped by library.

Every phase records the CPU that other processes took meanwhile (``others_cores``): the machine
is shared, and latency on 2 cores moves with it. Queries are "not seen before": distinct
search-bar phrases (2-6 words) composed from the product/article vocabulary, never equal to a
title; each is used once per phase (E cycles through them). All traffic goes to 127.0.0.1;
every loop is bounded in count and time.

    .venv/bin/python -m benchmarks.bench_service --items 5000 --queries 300 --duration 5 \
        --swap-duration 12 --swap-at 4 --configs 1x4:1                                    # quick
    .venv/bin/python -m benchmarks.bench_service --out benchmarks/out/bench_service.json   # full
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import os
import pstats
import re
import shlex
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Callable

import numpy as np

from benchmarks.catalog import make_catalog, make_prefixes, make_queries
from benchmarks.common import (
    DATA_ROOT, PREPARED, CpuMeter, bench_settings, command_line, group_profile, load_snapshot, machine_info,
    profile_top, published_problem, stats_ms, write_result,
)
from benchmarks.server import Client, Server, http_floor, search_path

DATA_FORMAT = 1  # bump when the generated catalog changes, so stale folders are rebuilt


# =============================================================================================
# Data folder: SQLite + published index, cached
# =============================================================================================



def prepare_data(n_items: int, root: Path, rebuild: bool) -> tuple[Path, dict]:
    """The data folder for ``n_items``: reused when its ``prepared.json`` matches, else built."""
    from indexer.pipeline import Pipeline
    from service.store.db import make_engine, make_session_factory, upgrade
    from service.store.importing import import_items

    data_dir = root / f"service-{n_items}"
    marker = data_dir / PREPARED
    if marker.is_file() and not rebuild:
        info = json.loads(marker.read_text())
        if info.get("format") == DATA_FORMAT and info.get("items") == n_items:
            problem = published_problem(data_dir)
            if problem is None:
                print(f"[data] reusing {data_dir} (prepared {info['prepared_at']}, version {info['version']})",
                      flush=True)
                info["reused"] = True
                return data_dir, info
            # The catalog is fine but this code cannot serve the published version (its format
            # changed since): rebuild the index only; the vector cache spares the re-embedding.
            print(f"[data] {data_dir}: published index unusable ({problem}); rebuilding it from the vector cache",
                  flush=True)
            settings = bench_settings(data_dir)
            engine = make_engine(settings)
            t0 = time.perf_counter()
            report = Pipeline(settings, make_session_factory(engine), progress=True).run(force=True)
            engine.dispose()
            info.update(reindexed_at=time.strftime("%Y-%m-%dT%H:%M:%S"), reindex_s=round(time.perf_counter() - t0, 2),
                        reindex_timings=report.timings, version=report.version, reused=True)
            text = report.manifest["spaces"]["text"]
            info["index"] = {k: text.get(k) for k in ("index_key", "search_params", "recall_at_10", "count")}
            marker.write_text(json.dumps(info, indent=2))
            print(f"[data] index {report.version} rebuilt in {info['reindex_s']} s", flush=True)
            return data_dir, info
    if data_dir.exists():
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True)
    info: dict[str, Any] = {"format": DATA_FORMAT, "items": n_items, "reused": False}
    t0 = time.perf_counter()
    items = make_catalog(n_items)
    info["generate_s"] = round(time.perf_counter() - t0, 2)
    info["kinds"] = dict(Counter(it["kind"] for it in items))
    src = data_dir / "items.jsonl"
    with src.open("w", encoding="utf-8") as fh:
        for it in items:
            fh.write(json.dumps(it, ensure_ascii=False) + "\n")
    print(f"[data] generated {n_items} items in {info['generate_s']} s: {info['kinds']}", flush=True)
    settings = bench_settings(data_dir)
    engine = make_engine(settings)
    upgrade(engine)
    factory = make_session_factory(engine)
    t0 = time.perf_counter()
    summary = import_items(src, session_factory=factory, progress=True)
    info["import_s"] = round(time.perf_counter() - t0, 2)
    info["imported"] = summary.inserted
    print(f"[data] imported {summary.inserted} items in {info['import_s']} s", flush=True)
    src.unlink()
    print("[data] building the index (embedding every item with MiniLM: minutes on 2 cores) ...", flush=True)
    t0 = time.perf_counter()
    report = Pipeline(settings, factory, progress=True).run()
    info["build_s"] = round(time.perf_counter() - t0, 2)
    info["build_timings"] = report.timings
    info["version"] = report.version
    text = report.manifest["spaces"]["text"]
    info["index"] = {k: text.get(k) for k in ("index_key", "search_params", "recall_at_10", "count")}
    info["prepared_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    engine.dispose()
    marker.write_text(json.dumps(info, indent=2))
    print(f"[data] index {report.version} built in {info['build_s']} s: {info['index']}", flush=True)
    return data_dir, info


def catalog_titles(data_dir: Path) -> list[str]:
    import sqlite3

    with contextlib.closing(sqlite3.connect(f"file:{data_dir / 'recsys.db'}?mode=ro", uri=True)) as con:
        return [r[0] for r in con.execute("SELECT title FROM items WHERE deleted_at IS NULL ORDER BY id")]


# =============================================================================================
# Phases A, C, D, E (through HTTP)
# =============================================================================================


def stage_breakdown(before: dict, after: dict) -> dict[str, Any]:
    """Mean ms per stage between two /metrics scrapes."""
    out = {}
    for key, (s1, c1) in after.items():
        s0, c0 = before.get(key, (0.0, 0.0))
        if c1 - c0 > 0 and (key.startswith("recsys_stage_seconds") or "/search" in key or "/suggest" in key):
            out[key.split(":", 1)[1] if key.startswith("recsys_stage") else key] = {
                "mean_ms": round((s1 - s0) / (c1 - c0) * 1000, 3), "count": int(c1 - c0)}
    return out


def warm_up(server: Server, queries: list[str], per_worker: int) -> dict[str, Any]:
    """Send ``per_worker`` semantic+hybrid searches and a /suggest to every worker (first calls are slow)."""
    conns = server.clients_per_worker()
    it = iter(queries)
    first: dict[str, float] = {}
    for pid, c in conns.items():
        for i in range(per_worker):
            q = next(it, None) or f"warm up query {i}"
            for mode in ("semantic", "hybrid"):
                status, _h, _b, dt = c.get(search_path(q, mode))
                first.setdefault(f"{pid}:{mode}", round(dt * 1000, 1))
        status, _h, _b, dt = c.get("/suggest?q=tr")
        first[f"{pid}:suggest"] = round(dt * 1000, 1)
        c.close()
    return {"workers_warmed": len(conns), "first_request_ms": first}


def run_sequential(server: Server, queries: list[str], mode: str, time_limit: float) -> dict[str, Any]:
    """Phase A: one keep-alive client, each query once; client latency, server header, took_ms."""
    client = Client(server.port)
    lat, header, took, statuses, versions = [], [], [], Counter(), Counter()
    before = server.metrics()
    deadline = time.monotonic() + time_limit
    t0 = time.perf_counter()
    for q in queries:
        if time.monotonic() > deadline:
            break
        status, headers, body, dt = client.get(search_path(q, mode))
        statuses[status] += 1
        if status != 200:
            continue
        lat.append(dt)
        with contextlib.suppress(KeyError, ValueError):
            header.append(float(headers["x-response-time-ms"]) / 1000)
        with contextlib.suppress(ValueError, KeyError):
            doc = json.loads(body)
            took.append(doc["took_ms"] / 1000)
            versions[doc["index_version"]] += 1
    elapsed = time.perf_counter() - t0
    worker = server.worker_of(client)
    client.close()
    after = server.metrics()
    out = {"mode": mode, "client": stats_ms(lat, elapsed), "server_header": stats_ms(header),
           "view_took": stats_ms(took), "statuses": {str(k): v for k, v in statuses.items()},
           "errors": sum(v for k, v in statuses.items() if k != 200), "worker_pid": worker,
           "index_versions": dict(versions), "stages": stage_breakdown(before, after)}
    st = out["stages"]
    enc, srch = st.get("stage=encode", {}).get("mean_ms"), st.get("stage=search", {}).get("mean_ms")
    page, kw = st.get("stage=page", {}).get("mean_ms"), st.get("stage=keyword", {}).get("mean_ms", 0.0)
    if lat and header and took and None not in (enc, srch, page):
        cl_m, hd_m, tk_m = (float(np.mean(x)) * 1000 for x in (lat, header, took))
        out["breakdown_mean_ms"] = {
            "encode (SentenceTransformer)": enc,
            "FAISS search (vector_candidates)": srch,
            "keyword FTS5": kw or None,
            "SQL hydration + filters (page - search - keyword)": round(page - srch - (kw or 0.0), 3),
            "rest of view (args, delta sync, item_json, respond)": round(tk_m - enc - page, 3),
            "Flask/smorest serialization + hooks (header - took_ms)": round(hd_m - tk_m, 3),
            "gunicorn + HTTP + client + scheduling (client - header)": round(cl_m - hd_m, 3),
            "total (client)": round(cl_m, 3),
        }
    if lat and header:
        cl, hd = np.asarray(lat) * 1000, np.asarray(header[: len(lat)]) * 1000
        tk = np.asarray(took[: len(lat)]) * 1000 if len(took) == len(lat) else None
        out["overhead_ms"] = {
            "http_gunicorn_client_p50": round(float(np.percentile(cl - hd, 50)), 3),
            "http_gunicorn_client_p99": round(float(np.percentile(cl - hd, 99)), 3),
            "http_gunicorn_client_mean": round(float((cl - hd).mean()), 3),
        }
        if tk is not None:
            out["overhead_ms"]["flask_hooks_serialization_p50"] = round(float(np.percentile(hd - tk, 50)), 3)
            out["overhead_ms"]["flask_hooks_serialization_p99"] = round(float(np.percentile(hd - tk, 99)), 3)
            out["overhead_ms"]["flask_hooks_serialization_mean"] = round(float((hd - tk).mean()), 3)
            # What the slowest 2% of requests spent their time on (view vs framework vs transport).
            slow = cl >= np.percentile(cl, 98)
            out["slowest_2pct_mean_ms"] = {"client": round(float(cl[slow].mean()), 3),
                                           "view_took": round(float(tk[slow].mean()), 3),
                                           "flask_serialization": round(float((hd - tk)[slow].mean()), 3),
                                           "http_gunicorn_client": round(float((cl - hd)[slow].mean()), 3)}
    return out


def run_concurrent(server: Server, queries: list[str], clients: int, duration: float, mode: str = "semantic",
                   on_response: Callable[[float, int | None, int, bytes], None] | None = None,
                   track_workers: bool = False, stop_when: Callable[[], bool] | None = None,
                   t_start: float | None = None, cycle: bool = False) -> dict[str, Any]:
    """Phase C (and E's load): ``clients`` threads, one connection each, shared query list, fixed time."""
    import itertools

    lock = threading.Lock()
    it = itertools.cycle(queries) if cycle else iter(queries)
    stop = threading.Event()
    lat: list[float] = []
    statuses: Counter = Counter()
    errors: list[str] = []
    per_worker: Counter = Counter()
    exhausted = threading.Event()
    t_start = time.perf_counter() if t_start is None else t_start
    t_begin = time.perf_counter()

    def worker() -> None:
        c = Client(server.port)
        pid: int | None = None
        local_port = None
        while not stop.is_set():
            with lock:
                q = next(it, None)
            if q is None:
                exhausted.set()
                break
            status, _h, body, dt = c.get(search_path(q, mode))
            now = time.perf_counter() - t_start
            if track_workers and c.local_port != local_port:
                local_port, pid = c.local_port, server.worker_of(c)
            with lock:
                statuses[status] += 1
                if status == 200:
                    lat.append(dt)
                    per_worker[pid] += 1
                elif len(errors) < 20:
                    errors.append(f"{status}: {body[:200]!r}")
            if on_response is not None:
                on_response(now, pid, status, body)
        c.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline and not exhausted.is_set():
        if stop_when is not None and stop_when():
            break
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    elapsed = time.perf_counter() - t_begin
    out = {"clients": clients, "mode": mode, **stats_ms(lat, elapsed),
           "statuses": {str(k): v for k, v in statuses.items()},
           "errors": sum(v for k, v in statuses.items() if k != 200), "error_samples": errors,
           "stopped_by": "queries exhausted" if exhausted.is_set() else "duration"}
    if track_workers:
        out["responses_per_worker"] = {str(k): v for k, v in per_worker.items()}
    return out


def run_suggest(server: Server, prefixes: list[str], time_limit: float) -> dict[str, Any]:
    """Phase D: one client typing; /suggest latency."""
    c = Client(server.port)
    lat, header, statuses, empty = [], [], Counter(), 0
    deadline = time.monotonic() + time_limit
    t0 = time.perf_counter()
    for p in prefixes:
        if time.monotonic() > deadline:
            break
        status, headers, body, dt = c.get("/suggest?" + urllib.parse.urlencode({"q": p}))
        statuses[status] += 1
        if status == 200:
            lat.append(dt)
            with contextlib.suppress(KeyError, ValueError):
                header.append(float(headers["x-response-time-ms"]) / 1000)
            with contextlib.suppress(ValueError, KeyError):
                empty += not json.loads(body)["suggestions"]
    elapsed = time.perf_counter() - t0
    c.close()
    by_len: dict[int, list[float]] = defaultdict(list)
    for p, dt in zip(prefixes, lat):
        by_len[len(p)].append(dt)
    return {"client": stats_ms(lat, elapsed), "server_header": stats_ms(header),
            "statuses": {str(k): v for k, v in statuses.items()},
            "errors": sum(v for k, v in statuses.items() if k != 200), "empty_results": empty,
            "p99_by_prefix_len_ms": {str(k): stats_ms(v)["p99_ms"] for k, v in sorted(by_len.items())}}


def _build_version_child(data_dir: str, publish: bool, conn) -> None:
    """Child process (spawn): build a new version with the vector cache (no re-embedding)."""
    from indexer.pipeline import Pipeline
    from service.store.db import make_engine, make_session_factory

    try:
        settings = bench_settings(Path(data_dir))
        engine = make_engine(settings)
        t0 = time.perf_counter()
        report = Pipeline(settings, make_session_factory(engine)).run(force=True, publish=publish)
        conn.send({"version": report.version, "timings": report.timings, "seconds": time.perf_counter() - t0})
    except BaseException as exc:  # report, never hang the parent
        conn.send({"error": f"{type(exc).__name__}: {exc}"})
    finally:
        conn.close()


def build_version(data_dir: Path, publish: bool, timeout: float = 1800.0) -> dict[str, Any]:
    """Run a forced build in a spawned child process (keeps this process's GIL for the load clients)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_build_version_child, args=(str(data_dir), publish, child), daemon=True)
    proc.start()
    child.close()
    got = parent.recv() if parent.poll(timeout) else {"error": f"build did not finish in {timeout} s"}
    proc.join(timeout=30)
    if proc.is_alive():
        proc.terminate()
        proc.join(timeout=10)
    if "error" in got:
        raise RuntimeError(f"index build failed: {got['error']}")
    return got


def run_swap(server: Server, data_dir: Path, queries: list[str], clients: int, duration: float, swap_at: float,
             mode: str, prebuilt: str | None) -> dict[str, Any]:
    """Phase E: load for ``duration`` s; publish a new version at ``swap_at`` s; who switched when."""
    from indexer.pipeline import publish_version
    from service.store.db import make_engine, make_session_factory

    old_version = None
    c = Client(server.port)
    status, _h, body, _dt = c.get("/status")
    c.close()
    if status == 200:
        old_version = json.loads(body)["index_version"]
    lock = threading.Lock()
    timeline: list[tuple[float, int | None, str | None]] = []
    failures: list[tuple[float, int, str]] = []

    def on_response(t: float, pid: int | None, status: int, body: bytes) -> None:
        version = None
        if status == 200:
            with contextlib.suppress(ValueError, KeyError):
                version = json.loads(body)["index_version"]
        with lock:
            if status == 200:
                timeline.append((t, pid, version))
            else:
                failures.append((t, status, body[:200].decode(errors="replace")))

    # A prober opens a fresh connection per request, so workers the load clients' connections
    # never reached are observed too.
    stop_probe = threading.Event()
    probe_t0: list[float] = []

    def prober() -> None:
        i = 0
        while not stop_probe.is_set():
            cl = Client(server.port)
            cl._connect()
            pid = server.worker_of(cl)
            q = queries[-(i % 200) - 1]
            status, _h, body, _dt = cl.get(search_path(q, mode))
            cl.close()
            on_response(time.perf_counter() - probe_t0[0], pid, status, body)
            i += 1
            stop_probe.wait(0.2)

    swap_info: dict[str, Any] = {"mode": "prebuilt" if prebuilt else "build"}
    swap_done = threading.Event()

    def swapper() -> None:
        try:
            time.sleep(swap_at)
            t = time.perf_counter() - probe_t0[0]
            version = prebuilt
            if not prebuilt:
                # Build under load (child process), then publish from here so the instant is known.
                got = build_version(data_dir, publish=False)
                version = got["version"]
                swap_info.update(build_started_s=round(t, 3), build_s=round(got["seconds"], 2),
                                 build_timings=got["timings"])
                t = time.perf_counter() - probe_t0[0]
            settings = bench_settings(data_dir)
            engine = make_engine(settings)
            publish_version(settings, make_session_factory(engine), version)
            engine.dispose()
            swap_info.update(version=version)
            swap_info["publish_started_s"] = round(t, 3)
            swap_info["published_s"] = round(time.perf_counter() - probe_t0[0], 3)
        except Exception as exc:  # recorded in the result
            swap_info["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            swap_done.set()

    probe_t0.append(time.perf_counter())
    threads = [threading.Thread(target=prober, daemon=True), threading.Thread(target=swapper, daemon=True)]
    for t in threads:
        t.start()

    def built_and_settled() -> bool:
        # Build mode: keep the load on until the new version is published and served for 15 s.
        if not swap_done.is_set():
            return False
        now = time.perf_counter() - probe_t0[0]
        return now >= duration and now >= swap_info.get("published_s", 0.0) + 15

    # Prebuilt: exactly ``duration`` s. Build mode: until published + 15 s, at most 15 minutes.
    load = run_concurrent(server, queries, clients, duration if prebuilt else 900.0, mode,
                          on_response=on_response, track_workers=True,
                          stop_when=None if prebuilt else built_and_settled, t_start=probe_t0[0], cycle=True)
    swap_done.wait(timeout=900)
    stop_probe.set()
    for t in threads:
        t.join(timeout=60)
    result_box = {"load": load}
    new_version = swap_info.get("version")
    per_worker: dict[str, dict[str, Any]] = {}
    for pid in sorted({p for _t, p, _v in timeline if p is not None}):
        rows = [(t, v) for t, p, v in timeline if p == pid]
        first_new = next((t for t, v in rows if v == new_version), None)
        last_old = max((t for t, v in rows if v != new_version), default=None)
        per_worker[str(pid)] = {
            "responses": len(rows),
            "first_new_s": None if first_new is None else round(first_new, 3),
            "last_old_s": None if last_old is None else round(last_old, 3),
            "old_after_new": sum(1 for t, v in rows if first_new is not None and t > first_new and v != new_version),
        }
    all_workers = [str(p) for p in server.worker_pids()]
    switched = [w for w in all_workers if per_worker.get(w, {}).get("first_new_s") is not None]
    first_new_any = min((t for t, _p, v in timeline if v == new_version), default=None)
    last_old_any = max((t for t, _p, v in timeline if v != new_version), default=None)
    load_res = result_box.get("load", {})
    total = len(timeline) + len(failures)
    published = swap_info.get("published_s")
    return {
        "clients": clients, "duration_s": duration, "swap_at_s": swap_at, "old_version": old_version,
        "new_version": new_version, "swap": swap_info,
        "total_requests": total, "failed_requests": len(failures), "failure_samples": failures[:10],
        "load_latency": {k: load_res.get(k) for k in ("n", "p50_ms", "p90_ms", "p99_ms", "max_ms", "mean_ms", "qps")},
        "first_new_version_s": None if first_new_any is None else round(first_new_any, 3),
        "last_old_version_s": None if last_old_any is None else round(last_old_any, 3),
        "switch_after_publish_s": (None if last_old_any is None or published is None
                                   else round(max(0.0, last_old_any - published), 3)),
        "workers": all_workers, "workers_switched": switched,
        "all_workers_switched": bool(all_workers) and set(all_workers) <= set(switched),
        "per_worker": per_worker,
        "latency_by_window": _latency_windows(timeline, load_res, published),
    }


def _latency_windows(timeline, load_res, published) -> dict[str, Any]:
    """Responses per second before / around / after the publish (from the timeline's timestamps)."""
    if published is None or not timeline:
        return {}
    ts = np.asarray([t for t, _p, _v in timeline])
    win = {"before (0..publish)": (0, published), "publish..publish+5s": (published, published + 5),
           "after (publish+5s..end)": (published + 5, ts.max())}
    return {k: {"responses": int(((ts >= a) & (ts < b)).sum()),
                "rps": round(float(((ts >= a) & (ts < b)).sum() / max(1e-9, b - a)), 1)} for k, (a, b) in win.items()}


# =============================================================================================
# Phases B and P (in this process)
# =============================================================================================


def load_published(data_dir: Path, version: str | None):
    """(index, ids, search_params, version) of ``version`` (default: the published one)."""
    from service.vectors import artifacts
    from service.vectors.index_store import load_version

    settings = bench_settings(data_dir)
    version = version or artifacts.current_version(settings.index_path)
    loaded = load_version(settings.index_path, version)
    return loaded.spaces["text"], version


_BARE: dict[str, Any] = {}


def bare_state(data_dir: Path, version: str | None):
    """(encoder, space) loaded once in this process, for the bare loop."""
    key = f"{data_dir}:{version}"
    if _BARE.get("key") != key:
        from service.vectors.text_encoder import load_text_encoder

        space, version = load_published(data_dir, version)
        encoder = _BARE.get("encoder") or load_text_encoder(bench_settings(data_dir))
        _BARE.update(key=key, encoder=encoder, space=space, version=version)
    return _BARE["encoder"], _BARE["space"], _BARE["version"]


def run_paired(server: Server, data_dir: Path, queries: list[str], version: str | None, torch_threads: int,
               block: int, time_limit: float) -> dict[str, Any]:
    """Service vs bare loop on the same queries, alternating blocks (load drift hits both alike).

    Blocks of ``block`` queries go first through the service (one keep-alive client, semantic,
    k=10) and then through the bare loop in this process (encode + FAISS, k=11) while the
    service idles; the two orders alternate from block to block.
    """
    import torch

    from service.vectors.vector_index import search

    encoder, space, version = bare_state(data_dir, version)
    saved = torch.get_num_threads()
    torch.set_num_threads(torch_threads or saved)
    client = Client(server.port)
    svc, bare, block_ratios = [], [], []
    deadline = time.monotonic() + time_limit
    try:
        for q in queries[:20]:  # warm this process's encoder at this thread count
            search(space.index, encoder.encode([q]), 11, space.params)
        for b, start in enumerate(range(0, len(queries), block)):
            if time.monotonic() > deadline:
                break
            chunk = queries[start:start + block]
            s_lat, b_lat = [], []

            def do_service():
                for q in chunk:
                    status, _h, _body, dt = client.get(search_path(q, "semantic"))
                    if status == 200:
                        s_lat.append(dt)

            def do_bare():
                for q in chunk:
                    t0 = time.perf_counter()
                    _s, rows = search(space.index, encoder.encode([q]), 11, space.params)
                    _ids = space.ids[rows[0][rows[0] >= 0]]
                    b_lat.append(time.perf_counter() - t0)

            for fn in ((do_service, do_bare) if b % 2 == 0 else (do_bare, do_service)):
                fn()
            svc += s_lat
            bare += b_lat
            if s_lat and b_lat:
                block_ratios.append(float(np.median(s_lat) / np.median(b_lat)))
    finally:
        client.close()
        torch.set_num_threads(saved)
    s_st, b_st = stats_ms(svc), stats_ms(bare)
    return {"torch_threads": torch_threads or saved, "block": block, "version": version,
            "service": s_st, "bare": b_st,
            "p50_ratio": round(s_st["p50_ms"] / b_st["p50_ms"], 3) if svc and bare else None,
            "p99_ratio": round(s_st["p99_ms"] / b_st["p99_ms"], 3) if svc and bare else None,
            "median_block_p50_ratio": round(float(np.median(block_ratios)), 3) if block_ratios else None,
            "p50_overhead_ms": round(s_st["p50_ms"] - b_st["p50_ms"], 3) if svc and bare else None}


def run_bare(data_dir: Path, queries: list[str], version: str | None, torch_threads: list[int],
             warmup: list[str], time_limit: float) -> dict[str, Any]:
    """Phase B: encode([q]) + FAISS search (k=11, the manifest's params) per query, no service."""
    import torch

    from service.vectors.vector_index import search

    encoder, space, version = bare_state(data_dir, version)
    default_threads = torch.get_num_threads()
    out: dict[str, Any] = {"version": version, "search_params": space.params, "k": 11, "by_torch_threads": {}}
    for th in torch_threads:
        torch.set_num_threads(th or default_threads)
        for q in warmup:
            search(space.index, encoder.encode([q]), 11, space.params)
        total, enc_t, faiss_t = [], [], []
        deadline = time.monotonic() + time_limit
        for q in queries:
            if time.monotonic() > deadline:
                break
            t0 = time.perf_counter()
            qv = encoder.encode([q])
            t1 = time.perf_counter()
            _scores, rows = search(space.index, qv, 11, space.params)
            _ids = space.ids[rows[0][rows[0] >= 0]]
            t2 = time.perf_counter()
            total.append(t2 - t0)
            enc_t.append(t1 - t0)
            faiss_t.append(t2 - t1)
        out["by_torch_threads"][str(th or default_threads)] = {
            "total": stats_ms(total, sum(total)), "encode": stats_ms(enc_t), "faiss": stats_ms(faiss_t)}
    torch.set_num_threads(default_threads)
    return out


_LIB_GROUPS = [
    ("encode (torch/transformers/tokenizers)", ("torch", "transformers", "sentence_transformers", "tokenizers",
                                                "service/vectors/")),
    ("faiss", ("faiss",)),
    ("SQL (sqlalchemy/sqlite3)", ("sqlalchemy", "sqlite3", "service/search/hybrid.py", "service/search/keyword.py",
                                  "service/delta.py")),
    ("marshmallow/flask_smorest/webargs", ("marshmallow", "flask_smorest", "webargs", "apispec")),
    ("flask/werkzeug/json", ("flask", "werkzeug", "json")),
    ("prometheus_client", ("prometheus_client",)),
]


def _c_call_label(func: str) -> str:
    return "builtins/C calls: " + ("torch" if "torch" in func else "sqlite3" if "sqlite3" in func
                                   else "faiss" if "faiss" in func or "swig" in func else "other")


def _group_profile(stats: pstats.Stats) -> dict[str, float]:
    """Own time (tottime) per library group, in ms."""
    return group_profile(stats, _LIB_GROUPS, _c_call_label, ndigits=1)


def encode_alternatives(encoder, space, queries: list[str]) -> dict[str, Any]:
    """Time encode paths that skip wrapper overhead or use int8, against ``encoder.encode``.

    The paths run interleaved (each query through every path, in rotating order), so load from
    other processes hits them alike.
    """
    import copy
    import warnings

    import torch
    import torch.nn.functional as F

    from service.vectors.vector_index import search

    st = encoder.model
    tok, auto = st.tokenizer, st[0].auto_model
    max_len = st.max_seq_length

    def direct(model):
        def enc(q: str) -> np.ndarray:
            with torch.inference_mode():
                feats = tok([q], padding=True, truncation=True, max_length=max_len, return_tensors="pt")
                hidden = model(**feats).last_hidden_state
                mask = feats["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                return F.normalize(pooled, p=2, dim=-1).float().numpy()
        return enc

    def tokenize_only(q: str):
        return tok([q], padding=True, truncation=True, max_length=max_len, return_tensors="pt")

    paths: dict[str, Callable[[str], Any]] = {
        "SentenceTransformer.encode (service)": lambda q: encoder.encode([q]),
        "direct forward fp32": direct(auto),
        "tokenizer only": tokenize_only,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            quant = torch.ao.quantization.quantize_dynamic(copy.deepcopy(auto), {torch.nn.Linear}, dtype=torch.qint8)
            paths["direct forward int8 (dynamic quant)"] = direct(quant)
        except Exception:  # quantisation support varies across torch builds
            pass
    names = list(paths)
    for q in queries[:20]:
        for fn in paths.values():
            fn(q)
    lat: dict[str, list[float]] = {n: [] for n in names}
    cos: dict[str, list[float]] = defaultdict(list)
    agree: dict[str, list[float]] = defaultdict(list)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i, q in enumerate(queries):
            vecs = {}
            for name in names[i % len(names):] + names[: i % len(names)]:
                t0 = time.perf_counter()
                v = paths[name](q)
                lat[name].append(time.perf_counter() - t0)
                if name != "tokenizer only":
                    vecs[name] = np.asarray(v, dtype=np.float32).reshape(1, -1)
            ref = vecs[names[0]]
            _s, ref_rows = search(space.index, ref, 10, space.params)
            for name, v in vecs.items():
                if name == names[0]:
                    continue
                _s, rows = search(space.index, v, 10, space.params)
                cos[name].append(float(ref[0] @ v[0]))
                agree[name].append(len(set(rows[0].tolist()) & set(ref_rows[0].tolist())) / 10)
    out: dict[str, Any] = {}
    for name in names:
        out[name] = stats_ms(lat[name])
        if cos.get(name):
            out[name]["cosine_to_service_min"] = round(min(cos[name]), 5)
            out[name]["top10_overlap_mean"] = round(float(np.mean(agree[name])), 4)
    return out


def run_profile(data_dir: Path, queries: list[str], torch_threads: int, n: int, warmup: list[str]) -> dict[str, Any]:
    """Phase P: the service in-process (Flask test client) with stage timings and a cProfile."""
    import torch
    from flask import json as flask_json

    from service.web.schemas import SearchOut
    from service.web.app import create_app
    from service.web.schemas import item_json
    from service.store.items import load_items
    from service.vectors.nearest import vector_candidates

    overrides = {"data_dir": str(data_dir), "clip_enabled": False}
    if torch_threads:
        overrides["torch_threads"] = torch_threads
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("RECSYS_")}
    try:
        app = create_app(overrides)
    finally:
        os.environ.update(saved)
    if torch_threads:
        torch.set_num_threads(torch_threads)
    client = app.test_client()
    rt = app.extensions["recsys"]
    for q in warmup:
        client.get(search_path(q, "semantic"))
    qs = queries[:n]
    out: dict[str, Any] = {"torch_threads": torch.get_num_threads(), "n": len(qs)}

    # 1) Flask test client, no HTTP: what the WSGI app costs per request.
    lat = []
    for q in qs:
        t0 = time.perf_counter()
        r = client.get(search_path(q, "semantic"))
        lat.append(time.perf_counter() - t0)
        assert r.status_code == 200, r.data[:200]
    out["test_client_semantic"] = stats_ms(lat)

    # 2) The search view's steps, timed one by one with the service's own functions.
    steps: dict[str, list[float]] = defaultdict(list)
    schema = SearchOut()
    with app.app_context():
        version = rt.version()
        space = version.spaces["text"]
        encoder = rt.text_encoder()
        session = rt.session_factory()
        try:
            for q in qs:
                t0 = time.perf_counter()
                qv = encoder.encode([q])
                t1 = time.perf_counter()
                cands, _done = vector_candidates(space, rt.deltas.get("text"), qv[0], 11)
                t2 = time.perf_counter()
                items = load_items(session=session, ids=[c[0] for c in cands])
                t3 = time.perf_counter()
                hits = [(items[i], s, sig) for i, s, sig in cands if i in items][:10]
                body = {"query": q, "mode": "semantic", "space": "text", "k": 10, "offset": 0,
                        "index_version": version.name, "took_ms": 0.0, "next_cursor": None,
                        "hits": [item_json(it, score=s, signals=sig) for it, s, sig in hits]}
                t4 = time.perf_counter()
                text = flask_json.dumps(schema.dump(body))
                t5 = time.perf_counter()
                for name, a, b in (("encode", t0, t1), ("faiss (vector_candidates)", t1, t2),
                                   ("SQL hydration (load_items)", t2, t3), ("item_json", t3, t4),
                                   ("marshmallow dump + JSON", t4, t5), ("sum of steps", t0, t5)):
                    steps[name].append(b - a)
                session.rollback()  # end the read transaction, as the request's teardown would
                # Keyword half of hybrid, for reference.
                t6 = time.perf_counter()
                from service.search.keyword import keyword_search
                keyword_search(session=session, query=q, limit=11)
                steps["keyword_search (FTS5, hybrid only)"].append(time.perf_counter() - t6)
                session.rollback()
        finally:
            session.close()
    out["view_steps"] = {k: stats_ms(v) for k, v in steps.items()}
    out["response_bytes_mean"] = None
    with contextlib.suppress(Exception):
        out["response_bytes_mean"] = round(statistics.fmean(len(client.get(search_path(q, "semantic")).data)
                                                            for q in qs[:50]))

    # 2b) Candidate fixes for the encode step, measured (not applied to the service):
    #     - "direct": tokenizer + transformer forward + mean pooling + normalise under
    #       torch.inference_mode(), skipping SentenceTransformer.encode's per-call bookkeeping;
    #     - "int8": the same with torch dynamic int8 quantisation of the Linear layers (vectors
    #       differ slightly from the fp32 index vectors: top-10 agreement reported).
    with contextlib.suppress(Exception):
        out["encode_alternatives"] = encode_alternatives(encoder, space, qs[: min(len(qs), 300)])

    # 3) cProfile of the test-client loop, grouped by library.
    prof = cProfile.Profile()
    m = min(len(qs), 300)
    prof.enable()
    for q in qs[:m]:
        client.get(search_path(q, "semantic"))
    prof.disable()
    st = pstats.Stats(prof)
    total_ms = sum(v[2] for v in st.stats.values()) * 1000
    out["cprofile"] = {"requests": m, "total_own_ms_per_request": round(total_ms / m, 2),
                       "own_ms_per_request_by_group": {k: round(v / m, 3) for k, v in _group_profile(st).items()}}
    out["cprofile"]["top_tottime"] = profile_top(prof, "tottime", 25)
    rt.store.stop()
    rt.engine.dispose()
    return out


# =============================================================================================
# Driver
# =============================================================================================


def parse_configs(text: str) -> list[tuple[int, int, int]]:
    """'1x4:1,2x2:1' -> [(1, 4, 1), (2, 2, 1)] (workers x threads : torch threads, 0 = default)."""
    out = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)x(\d+)(?::(\d+))?\s*", part)
        if not m:
            raise argparse.ArgumentTypeError(f"bad config {part!r}: use WxT or WxT:TORCH (e.g. 2x2:1)")
        out.append((int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)))
    return out


def fmt(v: Any, nd: int = 2) -> str:
    return "-" if v is None else (f"{v:.{nd}f}" if isinstance(v, float) else str(v))


def print_tables(result: dict[str, Any]) -> None:
    idx = result["data"].get("index", {})
    print("\n" + "=" * 112)
    print(f"bench_service: {result['items']} items, {idx.get('index_key')} {idx.get('search_params')}, "
          f"{result['machine']['cpu_count']} x {result['machine']['cpu_model']}")
    print("'others' = average CPU cores busy in processes outside this benchmark during the phase (shared machine)")
    print("=" * 112)
    fmt_row = "{:<38} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6} {:>7}"

    def line(label: str, st: dict, qps: Any = "", errors: Any = "", cpu: dict | None = None) -> None:
        print(fmt_row.format(label[:38], st.get("n", ""), fmt(st.get("p50_ms")), fmt(st.get("p90_ms")),
                             fmt(st.get("p99_ms")), fmt(st.get("mean_ms")), fmt(qps, 1) if qps != "" else "",
                             errors, fmt((cpu or {}).get("others_cores")) if cpu else ""))

    print(fmt_row.format("phase / config", "n", "p50 ms", "p90 ms", "p99 ms", "mean ms", "QPS", "errors", "others"))
    for cfg in result["configs"]:
        print(f"-- {cfg['label']} (ready in {cfg.get('ready_s')} s; /health/live p50 "
              f"{cfg.get('http_floor', {}).get('p50_ms')} ms){' ERROR ' + cfg['error'] if cfg.get('error') else ''}")
        for key in ("A_semantic", "A_hybrid"):
            if key in cfg:
                a = cfg[key]
                line(f"A {a['mode']} (1 client)", a["client"], a["client"].get("qps"), a["errors"], a.get("cpu"))
                line("   server X-Response-Time-ms", a["server_header"])
                line("   view took_ms", a["view_took"])
                if a.get("breakdown_mean_ms"):
                    print("   mean ms: " + "; ".join(f"{k.split(' (')[0]} {v}" for k, v in
                                                    a["breakdown_mean_ms"].items() if v is not None))
        if "AB_paired" in cfg:
            pr = cfg["AB_paired"]
            line("A/B paired: service", pr["service"], cpu=pr.get("cpu"))
            line(f"A/B paired: bare (torch {pr['torch_threads']})", pr["bare"])
            print(f"   paired service/bare: p50 {pr['p50_ratio']}x, p99 {pr['p99_ratio']}x, median per-block p50 "
                  f"ratio {pr['median_block_p50_ratio']}x, p50 overhead {pr['p50_overhead_ms']} ms")
        for c in cfg.get("C", []):
            line(f"C {c['clients']} clients ({c['stopped_by']})", c, c.get("qps"), c["errors"], c.get("cpu"))
        if "D" in cfg:
            d = cfg["D"]
            line("D /suggest (1 client)", d["client"], d["client"].get("qps"), d["errors"], d.get("cpu"))
        if "E" in cfg:
            e = cfg["E"]
            ll = {**e["load_latency"], "n": e["total_requests"]}
            line(f"E swap, {e['clients']} clients {e['duration_s']:.0f} s", ll, ll.get("qps"), e["failed_requests"],
                 e.get("cpu"))
            print(f"   published {e['new_version']} at {e['swap'].get('published_s')} s; first new-version answer "
                  f"{e['first_new_version_s']} s, last old-version answer {e['last_old_version_s']} s "
                  f"({e['switch_after_publish_s']} s after publish); every worker switched: "
                  f"{e['all_workers_switched']} ({len(e['workers_switched'])}/{len(e['workers'])})")
    if "B" in result:
        for th, b in result["B"]["by_torch_threads"].items():
            line(f"B bare encode+FAISS (torch {th})", b["total"], b["total"].get("qps"), "",
                 result["B"].get("cpu"))
            print(f"   encode p50 {b['encode'].get('p50_ms')} ms, FAISS p50 {b['faiss'].get('p50_ms')} ms")
    if result.get("ratios"):
        print("-- service (phase A) / bare (phase B), semantic, 1 client")
        for r in result["ratios"]:
            print(f"   {r['config']}: p50 {r['service_p50_ms']} / {r['bare_p50_ms']} = {r['p50_ratio']}x, "
                  f"p99 {r['service_p99_ms']} / {r['bare_p99_ms']} = {r['p99_ratio']}x (bare at torch {r['bare_torch_threads']})")
    if "P" in result:
        p = result["P"]
        print(f"-- P in-process (Flask test client, torch {p['torch_threads']}, {p['n']} queries; others "
              f"{p.get('cpu', {}).get('others_cores')} cores): test client p50 {p['test_client_semantic'].get('p50_ms')} ms")
        for k, v in p["view_steps"].items():
            print(f"   {k:<40} p50 {v.get('p50_ms')} ms  p99 {v.get('p99_ms')} ms  mean {v.get('mean_ms')} ms")
        print(f"   cProfile own ms per request by group: {p['cprofile']['own_ms_per_request_by_group']}")
        for k, v in p.get("encode_alternatives", {}).items():
            extra = (f", cosine to service >= {v['cosine_to_service_min']}, top-10 overlap {v['top10_overlap_mean']}"
                     if "top10_overlap_mean" in v else "")
            print(f"   encode path: {k:<38} p50 {v.get('p50_ms')} ms  p99 {v.get('p99_ms')} ms{extra}")
    if result.get("targets"):
        print("-- targets")
        for t in result["targets"]:
            print(f"   {t['what']:<70} {t['value']} vs {t['target']}: {'OK' if t['met'] else 'MISSED'}")
    print()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--items", type=int, default=100_000, help="catalog size (default 100000)")
    ap.add_argument("--queries", type=int, default=2000, help="distinct queries for phases A and B (default 2000)")
    ap.add_argument("--pool", type=int, default=9000,
                    help="distinct queries in all (phases C and E take each at most once; default 9000)")
    ap.add_argument("--prefixes", type=int, default=5000, help="typeahead prefixes for phase D (default 5000)")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds per phase C client count (default 20)")
    ap.add_argument("--clients", default="4,16", help="phase C client counts (default 4,16)")
    ap.add_argument("--phases", default="A,B,C,D,E,P", help="any of A,B,C,D,E,P (default all)")
    ap.add_argument("--configs", type=parse_configs, default=parse_configs("2x2:1,1x4:1,2x2:0,1x4:0"),
                    help="gunicorn configs WxT[:torch_threads], best first (default 2x2:1,1x4:1,2x2:0,1x4:0; "
                         "the first one's torch threads are used by phase P)")
    ap.add_argument("--swap-config", type=parse_configs, default=parse_configs("2x2:1"),
                    help="E runs on this gunicorn config (default 2x2:1: two workers must both switch)")
    ap.add_argument("--paired-queries", type=int, default=1000,
                    help="queries for the paired service-vs-bare comparison per config (0: skip; default 1000)")
    ap.add_argument("--paired-block", type=int, default=50, help="block size of the paired comparison")
    ap.add_argument("--swap-mode", choices=("prebuilt", "build"), default="prebuilt",
                    help="E: publish a version built before the load (default) or build it during the load")
    ap.add_argument("--swap-duration", type=float, default=30.0, help="E: seconds of load (default 30)")
    ap.add_argument("--swap-at", type=float, default=10.0, help="E: publish after this many seconds (default 10)")
    ap.add_argument("--swap-clients", type=int, default=4)
    ap.add_argument("--poll-seconds", type=float, default=None, help="RECSYS_INDEX_POLL_SECONDS (default: service's 2)")
    ap.add_argument("--warmup", type=int, default=20, help="warm-up searches per worker (not measured)")
    ap.add_argument("--profile-queries", type=int, default=500, help="phase P queries (default 500)")
    ap.add_argument("--phase-time-limit", type=float, default=300.0, help="cap on any sequential phase (s)")
    ap.add_argument("--no-multiproc-metrics", action="store_true",
                    help="do not set PROMETHEUS_MULTIPROC_DIR (stage breakdown then covers one worker)")
    ap.add_argument("--data-root", type=Path, default=DATA_ROOT)
    ap.add_argument("--rebuild-data", action="store_true", help="ignore a cached data folder")
    ap.add_argument("--prepare-only", action="store_true", help="prepare (or check) the data folder, then stop")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = ap.parse_args()
    phases = {p.strip().upper() for p in args.phases.split(",") if p.strip()}
    unknown = phases - set("ABCDEP")
    if unknown:
        ap.error(f"unknown phases {sorted(unknown)}")
    client_counts = [int(x) for x in args.clients.split(",") if x.strip()]
    t_run = time.perf_counter()

    result: dict[str, Any] = {
        "command": command_line(),
        "cwd": os.getcwd(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "items": args.items, "phases": sorted(phases), "machine": machine_info(),
        "load_at_start": load_snapshot(),
    }
    print(f"[run] {result['command']}", flush=True)
    print(f"[run] machine: {result['machine']['cpu_count']} x {result['machine']['cpu_model']}, "
          f"torch {result['machine']['torch']}, faiss {result['machine']['faiss']}; load {result['load_at_start']}",
          flush=True)

    data_dir, data_info = prepare_data(args.items, args.data_root, args.rebuild_data)
    result["data"] = {**data_info, "dir": str(data_dir)}
    if args.prepare_only:
        print(json.dumps(data_info, indent=2))
        return 0
    titles = catalog_titles(data_dir)
    t0 = time.perf_counter()
    pool = make_queries(max(args.pool, args.queries + 400), set(titles))
    warm_queries = pool[-300:]  # never measured
    pool = pool[:-300]
    queries = pool[: args.queries]
    prefixes = make_prefixes(titles, args.prefixes)
    result["workload"] = {
        "queries": len(queries), "pool": len(pool), "prefixes": len(prefixes),
        "query_words_mean": round(statistics.fmean(len(q.split()) for q in queries), 2),
        "query_examples": queries[:15], "prefix_examples": prefixes[:16],
        "generate_s": round(time.perf_counter() - t0, 2),
    }
    print(f"[run] {len(queries)} queries (pool {len(pool)}), {len(prefixes)} prefixes; e.g. {queries[:6]}", flush=True)

    # Versions: drop old unpublished ones, build the one E publishes before any timing starts.
    from indexer.pipeline import garbage_collect
    from service.vectors import artifacts
    from service.store.db import make_engine, make_session_factory

    settings = bench_settings(data_dir)
    engine = make_engine(settings)
    with contextlib.suppress(Exception):
        removed = garbage_collect(settings, make_session_factory(engine), keep=1)
        if removed:
            print(f"[run] removed old index versions {removed}", flush=True)
    engine.dispose()
    served_version = artifacts.current_version(settings.index_path)
    result["served_version"] = served_version
    prebuilt = None
    if "E" in phases and args.swap_mode == "prebuilt":
        print("[E] building the version to publish mid-load (vector cache: no re-embedding) ...", flush=True)
        got = build_version(data_dir, publish=False)
        prebuilt = got["version"]
        result["E_prebuild"] = {"version": prebuilt, "seconds": round(got["seconds"], 2), "timings": got["timings"]}
        print(f"[E] built {prebuilt} in {got['seconds']:.1f} s (not published yet)", flush=True)

    log_dir = Path(tempfile.mkdtemp(prefix="bench-service-logs-"))
    result["configs"] = []
    http_phases = phases & set("ACDE")
    configs = list(args.configs) if http_phases - {"E"} else []
    swap_cfg = args.swap_config[0]
    e_only = "E" in phases and swap_cfg not in configs
    if e_only:
        configs.append(swap_cfg)
    for i, (w, t, tt) in enumerate(configs):
        run_e = "E" in phases and (w, t, tt) == swap_cfg
        only_e = e_only and i == len(configs) - 1
        server = Server(data_dir, w, t, tt, log_dir, poll_seconds=args.poll_seconds,
                        metrics_dir=not args.no_multiproc_metrics)
        cfg: dict[str, Any] = {"workers": w, "threads": t, "torch_threads": tt, "label": server.label,
                               "gunicorn": " ".join(shlex.quote(a) for a in server.command()),
                               "env": {k: v for k, v in server.env().items()
                                       if k.startswith(("RECSYS_", "PROMETHEUS")) or k == "HF_HUB_OFFLINE"}}
        print(f"\n[config {i + 1}/{len(configs)}] {server.label}: starting gunicorn on 127.0.0.1:{server.port}",
              flush=True)
        try:
            server.start()
            cfg["ready_s"] = server.ready_s
            cfg["warmup"] = warm_up(server, warm_queries, args.warmup)
            cfg["rss_mib"] = server.rss_mib()
            cfg["http_floor"] = http_floor(server)
            print(f"  ready in {server.ready_s} s, workers {server.worker_pids()}, RSS MiB {cfg['rss_mib']}, "
                  f"/health/live p50 {cfg['http_floor'].get('p50_ms')} ms", flush=True)
            if "A" in phases and not only_e:
                for mode in ("semantic", "hybrid"):
                    meter = CpuMeter()
                    cfg[f"A_{mode}"] = res = run_sequential(server, queries, mode, args.phase_time_limit)
                    res["cpu"] = meter.stop()
                    c = res["client"]
                    print(f"  A {mode}: p50 {c.get('p50_ms')} p90 {c.get('p90_ms')} p99 {c.get('p99_ms')} ms, "
                          f"{c.get('qps')} QPS, errors {res['errors']}; server p50 {res['server_header'].get('p50_ms')}"
                          f", took p50 {res['view_took'].get('p50_ms')} ms; stages {res['stages']}; cpu {res['cpu']}",
                          flush=True)
            if "A" in phases and "B" in phases and not only_e and args.paired_queries:
                meter = CpuMeter()
                cfg["AB_paired"] = pr = run_paired(server, data_dir, queries[: args.paired_queries], None, tt,
                                                   args.paired_block, args.phase_time_limit)
                pr["cpu"] = meter.stop()
                print(f"  A/B paired ({pr['block']}-query blocks, torch {pr['torch_threads']}): service p50 "
                      f"{pr['service'].get('p50_ms')} p99 {pr['service'].get('p99_ms')} ms vs bare p50 "
                      f"{pr['bare'].get('p50_ms')} p99 {pr['bare'].get('p99_ms')} ms: ratio p50 {pr['p50_ratio']}x, "
                      f"p99 {pr['p99_ratio']}x, +{pr['p50_overhead_ms']} ms; cpu {pr['cpu']}", flush=True)
            if "C" in phases and not only_e:
                cfg["C"] = []
                for n in client_counts:
                    before = server.metrics()
                    meter = CpuMeter()
                    res = run_concurrent(server, pool, n, args.duration, track_workers=True)
                    res["cpu"] = meter.stop()
                    res["stages"] = stage_breakdown(before, server.metrics())
                    cfg["C"].append(res)
                    print(f"  C {n} clients: {res.get('qps')} QPS, p50 {res.get('p50_ms')} p99 {res.get('p99_ms')} ms, "
                          f"errors {res['errors']}, per worker {res.get('responses_per_worker')}; cpu {res['cpu']}",
                          flush=True)
            if "D" in phases and not only_e:
                c = Client(server.port)
                status, _h, _b, dt = c.get("/suggest?q=a")
                c.close()
                meter = CpuMeter()
                cfg["D"] = run_suggest(server, prefixes, args.phase_time_limit)
                cfg["D"]["cpu"] = meter.stop()
                cfg["D"]["first_request_ms"] = round(dt * 1000, 2)
                d = cfg["D"]["client"]
                print(f"  D suggest: p50 {d.get('p50_ms')} p99 {d.get('p99_ms')} ms, {d.get('qps')} QPS, "
                      f"errors {cfg['D']['errors']}", flush=True)
            if run_e:
                print(f"  E: {args.swap_clients} clients for {args.swap_duration} s, publish at {args.swap_at} s "
                      f"({args.swap_mode}) ...", flush=True)
                meter = CpuMeter()
                cfg["E"] = e = run_swap(server, data_dir, pool[::-1], args.swap_clients, args.swap_duration,
                                        args.swap_at, "semantic", prebuilt)
                e["cpu"] = meter.stop()
                print(f"  E: {e['total_requests']} requests, {e['failed_requests']} failed; published at "
                      f"{e['swap'].get('published_s')} s; all workers switched {e['all_workers_switched']} "
                      f"(last old answer {e['last_old_version_s']} s); {e['per_worker']}", flush=True)
                if e["swap"].get("error"):
                    print(f"  E: swap error {e['swap']['error']}", flush=True)
        except Exception as exc:
            cfg["error"] = f"{type(exc).__name__}: {exc}"
            print(f"  [error] {cfg['error']}", flush=True)
        finally:
            server.stop()
            with contextlib.suppress(OSError):
                cfg["gunicorn_log_tail"] = server.log_path.read_text(errors="replace")[-2000:]
        result["configs"].append(cfg)

    a_version = served_version
    for cfg in result["configs"]:
        v = cfg.get("A_semantic", {}).get("index_versions")
        if v:
            a_version = max(v, key=v.get)
            break
    torch_counts = sorted({tt for (_w, _t, tt) in args.configs} | {0})
    if "B" in phases:
        import torch

        print(f"\n[B] bare loop: encode([q]) + FAISS on version {a_version}, torch threads {torch_counts} ...",
              flush=True)
        meter = CpuMeter()
        result["B"] = run_bare(data_dir, queries, a_version, torch_counts, warm_queries[:30], args.phase_time_limit)
        result["B"]["cpu"] = meter.stop()
        print(f"  cpu {result['B']['cpu']}", flush=True)
        for th, b in result["B"]["by_torch_threads"].items():
            print(f"  B torch {th}: total p50 {b['total'].get('p50_ms')} p99 {b['total'].get('p99_ms')} ms "
                  f"(encode p50 {b['encode'].get('p50_ms')}, FAISS p50 {b['faiss'].get('p50_ms')})", flush=True)
        default_threads = str(torch.get_num_threads())
        result["ratios"] = []
        for cfg in result["configs"]:
            if "A_semantic" not in cfg:
                continue
            key = str(cfg["torch_threads"] or default_threads)
            bare = result["B"]["by_torch_threads"].get(key) or next(iter(result["B"]["by_torch_threads"].values()))
            s, b = cfg["A_semantic"]["client"], bare["total"]
            result["ratios"].append({
                "config": cfg["label"], "bare_torch_threads": key,
                "service_p50_ms": s["p50_ms"], "bare_p50_ms": b["p50_ms"], "p50_ratio": round(s["p50_ms"] / b["p50_ms"], 2),
                "service_p99_ms": s["p99_ms"], "bare_p99_ms": b["p99_ms"], "p99_ratio": round(s["p99_ms"] / b["p99_ms"], 2),
            })
    if "P" in phases:
        tt = args.configs[0][2]
        print(f"\n[P] in-process profile (Flask test client, torch threads {tt or 'default'}) ...", flush=True)
        meter = CpuMeter()
        result["P"] = run_profile(data_dir, queries, tt, args.profile_queries, warm_queries[:30])
        result["P"]["cpu"] = meter.stop()

    # Targets (from the brief): semantic p50 <= 15 ms, p99 <= 40 ms; service/bare p50 <= 1.5x; suggest p99 <= 10 ms.
    targets = []
    for cfg in result["configs"]:
        if "A_semantic" in cfg:
            c = cfg["A_semantic"]["client"]
            targets.append({"what": f"A semantic p50 [{cfg['label']}]", "value": c["p50_ms"], "target": "<= 15 ms",
                            "met": c["p50_ms"] <= 15})
            targets.append({"what": f"A semantic p99 [{cfg['label']}]", "value": c["p99_ms"], "target": "<= 40 ms",
                            "met": c["p99_ms"] <= 40})
        if "D" in cfg and cfg["D"]["client"].get("n"):
            c = cfg["D"]["client"]
            targets.append({"what": f"D suggest p99 [{cfg['label']}]", "value": c["p99_ms"], "target": "<= 10 ms",
                            "met": c["p99_ms"] <= 10})
        if "E" in cfg:
            targets.append({"what": "E failed requests during swap", "value": cfg["E"]["failed_requests"],
                            "target": "0", "met": cfg["E"]["failed_requests"] == 0})
            targets.append({"what": "E every worker switched", "value": cfg["E"]["all_workers_switched"],
                            "target": "True", "met": bool(cfg["E"]["all_workers_switched"])})
    for cfg in result["configs"]:
        if cfg.get("AB_paired", {}).get("p50_ratio") is not None:
            targets.append({"what": f"service/bare p50, paired [{cfg['label']}]", "value": cfg["AB_paired"]["p50_ratio"],
                            "target": "<= 1.5x", "met": cfg["AB_paired"]["p50_ratio"] <= 1.5})
    for r in result.get("ratios", []):
        targets.append({"what": f"service/bare p50, separate phases [{r['config']}]", "value": r["p50_ratio"], "target": "<= 1.5x",
                        "met": r["p50_ratio"] <= 1.5})
    result["targets"] = targets
    result["load_at_end"] = load_snapshot()
    result["total_s"] = round(time.perf_counter() - t_run, 1)
    print_tables(result)
    if args.out:
        write_result(args.out, result)
        print(f"[run] wrote {args.out}")
    shutil.rmtree(log_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())