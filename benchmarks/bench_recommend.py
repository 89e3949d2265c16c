"""Recommendation latency and event-ingest throughput of the service under gunicorn (issue 5).

Two targets, measured over real HTTP against ``gunicorn -w 2 -k gthread --threads 2`` (the
service defaults, as ``make serve``) on 127.0.0.1:

1. ``GET /users/{id}/recommendations`` for a user with a 500-event history, over a catalog of
   100,000 items and 1,000,000 events: p99 <= 50 ms on the 2-core build machine;
2. ``POST /events`` in batches of 100: >= 5,000 events/s stored durably on SQLite (the service
   commits with ``synchronous=FULL`` before it answers); afterwards the rows are counted in the
   database to confirm that every accepted event is there.

Data (cached under ``benchmarks/_data/recommend-<items>-<events>/``; ``prepared.json`` says what is there and
is checked before reuse; ``--rebuild-data`` starts over):

* N catalog items from ``benchmarks.catalog.make_catalog`` (products and articles with categories),
  imported with ``service.store.importing.import_items``;
* item vectors from a FAKE text encoder injected into ``indexer.pipeline.Pipeline``. Embedding
  100k texts with MiniLM takes ~75 minutes on this machine, and what the vectors mean does not
  change what a FAISS search costs: that depends on the number of vectors, their dimension and
  the index type. The fake encoder reports the ``name``, ``revision`` and ``dim`` (384) of the
  real packaged MiniLM (loaded once to read them), so the service's compatibility check accepts
  the index, and returns deterministic clustered unit vectors: per category a random centroid,
  per (category, first two tags) a sub-centroid, plus per-item noise in a 32-dimensional
  per-category subspace and a little full-dimensional noise, seeded from a hash of the text.
  The real index chooser and tuner pick and tune the index (defaults kept). The build exports
  the real MiniLM as the version's ONNX query encoder (checked against torch MiniLM, as every
  build checks it), so workers start as a deployment's do: queries through ONNX Runtime, torch
  loaded in the background for item writes. /search results on this data are meaningless; the
  recommendation endpoints never encode text;
* ~1,000,000 events over ~20,000 users (``--events``, ``--users``): users with 1-3 favourite
  categories, Zipf-like item popularity (1/(rank+10)), a funnel view -> click (22%) -> cart (25%
  of clicks) -> purchase (40% of carts) -> rating (15% of purchases), timestamps spread uniformly
  over the 60 days before preparation; among them ``--heavy`` users (default 50) with exactly
  500 events each: the subjects of the latency target. Written as CSV in the service's import
  format (``event_id,user_id,item_id,type,value,timestamp``) and imported with
  ``service.store.importing.import_events``;
* then the training stage (``recsys-indexer train``, the service's default settings), so the
  rounds serve the model a scheduled rebuild would publish (``--no-train``: co-engagement only,
  as issue 5 first measured).

First (phase S; ``--no-startup-check`` skips it) the service is started once with exactly
``make serve``'s command line, whose gunicorn worker timeout is the default 30 s: a worker that
takes longer to load the app is killed (``WORKER TIMEOUT``) and booted again. The rounds then
use ``benchmarks.server.Server``'s command line (``--timeout 120``, warning-level logs).

Each round (``--rounds``, default 3) starts from a fresh copy of the prepared database (so
rounds are alike and the cache stays clean), starts gunicorn (timed: each worker loads the index,
the query encoder and the newest ``behaviour_max_events`` events before it answers), warms every
worker up, waits until the workers are idle (they load torch in the background, for item writes),
then runs:

  A  one client, sequential, interleaved blocks of each request type (``--requests`` each):
     heavy-user recommendations ``?k=10``; the same with ``explain=true&diversity=0.3``; cold
     start (unknown users); ``/items/{id}/also``; ``/items/{id}/similar``; ``/trending``;
     ``POST /recommend`` with a session of 5 items. Client-side and server-side
     (``X-Response-Time-ms``) p50/p95/p99/max, and per type the Prometheus histograms (request
     and the ``recommend`` stage, every worker: ``PROMETHEUS_MULTIPROC_DIR`` is set);
  B  4 concurrent clients for ``--duration`` s on heavy-user recommendations: QPS, p50/p99;
  C  ``POST /events`` with batches of 100 fresh events (unique event ids, existing users and
     items, ~2% new users), 1 client and then 4 clients, ``--post-duration`` s each (bounded by
     ``--max-batches`` too): events/s = accepted events / wall time, latency per batch; then the
     rows are counted in SQLite (every accepted event must be stored);
  D  freshness: for ``--fresh-users`` heavy users, take the top recommendation, post a purchase
     of it through one worker, and at once ask for the user's recommendations through the other
     worker (and the first): the item must be gone and the list must change (a user's own
     history is read from SQL on every request);
  M  (last round; ``--no-mixed`` skips it) phase A's heavy-user requests while one client posts
     batches of events: latency under writes (every new event makes each worker rebuild its
     behaviour snapshot within ``behaviour_refresh_seconds``). One unpaced sample, with the two
     connections on whichever workers took them: ``bench_mixed`` paces the poster and places
     the connections on the same or different workers.

Each phase records the CPU other processes took meanwhile (``others_cores``; the machine is
shared). After the rounds, with no server running, phase P times the steps of the
recommendation view and of a 100-event POST in this process (the service's own functions, the
Flask test client, a cProfile) and how long loading the behaviour model takes, to say what
dominates. Medians over the rounds are reported; everything goes to ``--out`` as JSON.

    .venv/bin/python -m benchmarks.bench_recommend --quick                 # smoke run (~1-3 min)
    .venv/bin/python -m benchmarks.bench_recommend                         # full (100k items, 1M events)
    .venv/bin/python -m benchmarks.bench_recommend --events 10000000 --users 200000   # issue 12's scale
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import csv
import datetime as dt
import hashlib
import json
import os
import pstats
import resource
import shlex
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Callable

import numpy as np

from benchmarks.catalog import make_catalog
from benchmarks.common import (
    DATA_ROOT, PREPARED, REPO, CpuMeter, bench_settings, command_line, group_profile, load_snapshot, machine_info,
    profile_top, published_problem, run_for, self_rss_mib, stats_ms, write_result,
)
from benchmarks.server import Client, Server, http_floor, settle

DATA_FORMAT = 3  # bump when the generated data changes, so stale folders are rebuilt
DEFAULT_OUT = REPO / "benchmarks" / "results" / "bench_recommend.json"
TARGET_P99_MS = 50.0
# Issue 12's targets at scale: with the trained model, and while another client posts events.
TARGET_TRAINED_P99_MS = 30.0
TARGET_MIXED_P99_MS, TARGET_MIXED_EVENTS_PER_S = 50.0, 4000.0
TARGET_EVENTS_PER_S = 5000.0

# Event funnel: P(click | view), P(cart | click), P(purchase | cart), P(rating | purchase).
FUNNEL = (0.22, 0.25, 0.40, 0.15)
ZIPF_OFFSET, ZIPF_S = 10.0, 1.0
HISTORY_DAYS = 60


# =============================================================================================
# Fake text encoder: clustered unit vectors with the real MiniLM's identity
# =============================================================================================


def item_text_key(title: str, text: str) -> str:
    """What ``indexer.pipeline._text_inputs`` hands the encoder for an item."""
    return f"{title.strip()}\n{text.strip()}".strip()


class FakeTextEncoder:
    """Deterministic clustered vectors; ``name``/``revision``/``dim`` of the real encoder.

    FOR BENCHMARKS ONLY: the vectors mean nothing; they have the shape and cluster structure
    (categories, sub-groups, a low-dimensional spread inside each) that make a FAISS search cost
    what it costs on real embeddings of the same size.
    """

    SUBSPACE = 32

    def __init__(self, name: str, revision: str, dim: int, groups: dict[str, tuple[str, str]], seed: int = 5):
        self.name, self.revision, self.dim = name, revision, int(dim)
        self.groups = groups  # text key -> (category, sub-group)
        self.seed = seed
        self._centroids: dict[str, np.ndarray] = {}
        self._bases: dict[str, np.ndarray] = {}
        self.unmapped = 0

    def _unit(self, label: str) -> np.ndarray:
        if label not in self._centroids:
            rng = np.random.default_rng(int.from_bytes(hashlib.sha256(f"{self.seed}:{label}".encode()).digest()[:8], "little"))
            v = rng.standard_normal(self.dim)
            self._centroids[label] = v / np.linalg.norm(v)
        return self._centroids[label]

    def _basis(self, category: str) -> np.ndarray:
        if category not in self._bases:
            rng = np.random.default_rng(int.from_bytes(hashlib.sha256(f"{self.seed}:basis:{category}".encode()).digest()[:8], "little"))
            q, _r = np.linalg.qr(rng.standard_normal((self.dim, self.SUBSPACE)))
            self._bases[category] = q  # dim x SUBSPACE, orthonormal columns
        return self._bases[category]

    def vector(self, text: str) -> np.ndarray:
        digest = hashlib.sha256(text.encode("utf-8")).digest()
        group = self.groups.get(text)
        if group is None:
            self.unmapped += 1
            group = (f"unknown-{digest[0] % 8}", "")
        category, sub = group
        rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        z = rng.standard_normal(self.SUBSPACE) / np.sqrt(self.SUBSPACE)
        eps = rng.standard_normal(self.dim) / np.sqrt(self.dim)
        v = self._unit(f"cat:{category}") + 0.6 * self._unit(f"sub:{category}:{sub}") + 0.7 * (self._basis(category) @ z) + 0.25 * eps
        return (v / np.linalg.norm(v)).astype(np.float32)

    def encode(self, texts, *, batch_size: int | None = None, progress: bool = False) -> np.ndarray:
        single = isinstance(texts, str)
        items = [texts] if single else list(texts)
        out = np.zeros((len(items), self.dim), dtype=np.float32)
        for i, t in enumerate(items):
            out[i] = self.vector(t)
            if progress and i and i % 20000 == 0:
                print(f"[data] fake-encoded {i}/{len(items)}", flush=True)
        return out[0] if single else out


# =============================================================================================
# Events: users with favourite categories, Zipf-like popularity, a purchase funnel
# =============================================================================================


class Popularity:
    """Zipf-like item sampling, over the whole catalog or one category."""

    def __init__(self, categories: list[str], seed: int):
        rng = np.random.default_rng(seed)
        n = len(categories)
        self.rank = rng.permutation(n)  # popularity rank of each item (0 = most popular)
        w = 1.0 / (self.rank + ZIPF_OFFSET) ** ZIPF_S
        self.weights = w
        self.cdf = np.cumsum(w) / w.sum()
        self.cat_names = sorted(set(categories))
        cat_idx = np.array([self.cat_names.index(c) for c in categories])
        self.members: list[np.ndarray] = []
        self.cat_cdf: list[np.ndarray] = []
        self.cat_weight = np.zeros(len(self.cat_names))
        for c in range(len(self.cat_names)):
            idx = np.flatnonzero(cat_idx == c)
            self.members.append(idx)
            self.cat_cdf.append(np.cumsum(w[idx]) / w[idx].sum())
            self.cat_weight[c] = w[idx].sum()
        self.cat_weight /= self.cat_weight.sum()

    def sample(self, rng: np.random.Generator, k: int) -> np.ndarray:
        return np.minimum(np.searchsorted(self.cdf, rng.random(k)), len(self.cdf) - 1)

    def sample_in(self, rng: np.random.Generator, cat: int, k: int) -> np.ndarray:
        cdf = self.cat_cdf[cat]
        return self.members[cat][np.minimum(np.searchsorted(cdf, rng.random(k)), len(cdf) - 1)]


def user_events(rng: np.random.Generator, pop: Popularity, n_events: int, now: float) -> list[tuple[float, int, str, float | None]]:
    """``n_events`` events of one user: (unix time, item index, type, value), in time order."""
    favs = rng.choice(len(pop.cat_names), size=int(rng.integers(1, 4)), replace=False, p=pop.cat_weight)
    out: list[tuple[float, int, str, float | None]] = []
    m = int(n_events / 1.25) + 4
    while len(out) < n_events:
        from_fav = rng.random(m) < 0.75
        cats = favs[rng.integers(0, len(favs), m)]
        items = pop.sample(rng, m)
        for c in np.unique(cats[from_fav]):
            sel = np.flatnonzero(from_fav & (cats == c))
            items[sel] = pop.sample_in(rng, int(c), len(sel))
        starts = now - rng.uniform(60.0, HISTORY_DAYS * 86400.0, m)
        u = rng.random((m, 4))
        gaps = rng.uniform((5, 30, 60, 86400), (120, 600, 1800, 5 * 86400), (m, 4))
        for j in range(m):
            t, item = float(starts[j]), int(items[j])
            out.append((t, item, "view", None))
            for step, kind in enumerate(("click", "cart", "purchase", "rating")):
                if u[j, step] >= FUNNEL[step]:
                    break
                t = min(t + gaps[j, step], now - 1.0)
                out.append((t, item, kind, float(rng.integers(1, 6)) if kind == "rating" else None))
        m = max(4, int((n_events - len(out)) / 1.25) + 4)
    out = out[:n_events]
    out.sort(key=lambda e: e[0])
    return out


def write_events_csv(path: Path, items: list[dict], n_events: int, n_users: int, n_heavy: int,
                     heavy_events: int, seed: int, now: float) -> dict[str, Any]:
    """Generate the event log and write it in the import format; returns a description."""
    rng = np.random.default_rng(seed)
    pop = Popularity([it["category"] for it in items], seed)
    ext = [it["id"] for it in items]
    n_ordinary = n_users - n_heavy
    remaining = max(n_ordinary, n_events - n_heavy * heavy_events)
    activity = rng.lognormal(0.0, 1.3, n_ordinary)
    for _ in range(5):  # rescale after clipping so the total stays close to the request
        activity = np.clip(activity / activity.sum() * remaining, 1, 1000)
    counts = np.maximum(1, np.round(activity)).astype(int)
    users = [(f"heavy-{i + 1:03d}", heavy_events) for i in range(n_heavy)]
    users += [(f"u-{i + 1:06d}", int(c)) for i, c in enumerate(counts)]
    rows: list[tuple[float, str, int, str, float | None]] = []
    for user, n in users:
        rows.extend((t, user, item, kind, value) for t, item, kind, value in user_events(rng, pop, n, now))
    rows.sort(key=lambda r: r[0])
    types = Counter(r[3] for r in rows)
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["event_id", "user_id", "item_id", "type", "value", "timestamp"])
        for i, (t, user, item, kind, value) in enumerate(rows, start=1):
            ts = dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            w.writerow([f"e-{i:07d}", user, ext[item], kind, "" if value is None else int(value), ts])
    item_counts = np.bincount([r[2] for r in rows], minlength=len(items))
    top = np.sort(item_counts)[::-1]
    return {
        "events": len(rows), "users": len(users), "heavy_users": n_heavy, "heavy_events_each": heavy_events,
        "types": dict(types.most_common()),
        "events_per_ordinary_user": {"mean": round(float(counts.mean()), 1), "median": float(np.median(counts)),
                                     "max": int(counts.max())},
        "items_with_events": int((item_counts > 0).sum()),
        "top_item_events": int(top[0]), "top_100_share": round(float(top[:100].sum() / max(1, len(rows))), 4),
        "popularity": f"1/(rank+{ZIPF_OFFSET:g})^{ZIPF_S:g}, 75% of a user's items from 1-3 favourite categories",
        "funnel": dict(zip(("click|view", "cart|click", "purchase|cart", "rating|purchase"), FUNNEL)),
        "time_span_days": HISTORY_DAYS,
    }


# =============================================================================================
# Data folder
# =============================================================================================


def db_path(data_dir: Path) -> Path:
    return data_dir / "recsys.db"


def checkpoint(db: Path) -> None:
    """Fold the WAL into the main file so the database is one file to copy."""
    with contextlib.closing(sqlite3.connect(str(db))) as con:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def migrate_cached(data_dir: Path) -> dict[str, Any]:
    """Bring a reused database to this code's schema, as ``recsys db upgrade`` would a deployment's
    (a folder prepared before a migration would otherwise be measured without it)."""
    from service.store.db import current_revision, head_revision, make_engine, upgrade

    engine = make_engine(f"sqlite:///{db_path(data_dir)}")
    try:
        before, head = current_revision(engine), head_revision()
        t0 = time.perf_counter()
        if before != head:
            upgrade(engine)
            print(f"[data] database migrated {before} -> {head} in {time.perf_counter() - t0:.1f} s", flush=True)
    finally:
        engine.dispose()
    if before != head:
        checkpoint(db_path(data_dir))
    return {"from": before, "to": head, "s": round(time.perf_counter() - t0, 1)}


def prepare_data(args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    """The data folder for these sizes: reused when its ``prepared.json`` matches, else built."""
    from indexer.pipeline import Pipeline
    from service.store.db import make_engine, make_session_factory, upgrade
    from service.vectors.text_encoder import load_text_encoder
    from service.store.importing import import_events, import_items
    from service.settings import BUILTIN_EVENT_TYPES

    data_dir = args.data_root / f"recommend-{args.items}-{args.events}"
    marker = data_dir / PREPARED
    wanted = {"format": DATA_FORMAT, "items": args.items, "events": args.events, "users": args.users,
              "heavy": args.heavy, "heavy_events": args.heavy_events, "trained": not args.no_train}
    if marker.is_file() and not args.rebuild_data:
        info = json.loads(marker.read_text())
        if all(info.get(k) == v for k, v in wanted.items()):
            problem = published_problem(data_dir)
            if problem is None:
                age_days = (time.time() - info.get("now", time.time())) / 86400
                print(f"[data] reusing {data_dir} (prepared {info['prepared_at']}, {age_days:.1f} days ago, "
                      f"version {info['version']})", flush=True)
                if age_days > 3:
                    print(f"[data] [warn] events end {age_days:.1f} days ago: the 7-day trending window sees fewer "
                          "of them than on the day of preparation (use --rebuild-data)", flush=True)
                info["reused"] = True
                info["age_days"] = round(age_days, 2)
                info["migrated"] = migrate_cached(data_dir)
                return data_dir, info
            print(f"[data] {data_dir}: published index unusable ({problem}); rebuilding everything", flush=True)
        else:
            print(f"[data] {data_dir} holds other sizes ({ {k: info.get(k) for k in wanted} }); rebuilding", flush=True)
    if data_dir.exists():
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True)
    info: dict[str, Any] = {**wanted, "reused": False}
    t_all = time.perf_counter()

    t0 = time.perf_counter()
    items = make_catalog(args.items)
    info["catalog_generate_s"] = round(time.perf_counter() - t0, 2)
    info["kinds"] = dict(Counter(it["kind"] for it in items))
    info["categories"] = dict(Counter(it["category"] for it in items).most_common())
    src = data_dir / "items.jsonl"
    with src.open("w", encoding="utf-8") as fh:
        for it in items:
            fh.write(json.dumps(it, ensure_ascii=False) + "\n")
    settings = bench_settings(data_dir)
    engine = make_engine(settings)
    upgrade(engine)
    factory = make_session_factory(engine)
    t0 = time.perf_counter()
    summary = import_items(src, session_factory=factory, progress=True)
    info["items_import_s"] = round(time.perf_counter() - t0, 2)
    src.unlink()
    print(f"[data] {summary.inserted} items imported in {info['items_import_s']} s: {info['kinds']}", flush=True)

    # The real encoder's identity, so the service accepts the index; then the fake vectors.
    t0 = time.perf_counter()
    real = load_text_encoder(settings)
    name, revision, dim = real.name, real.revision, real.dim
    info["encoder_identity"] = {"name": name, "revision": revision, "dim": dim,
                                "load_s": round(time.perf_counter() - t0, 2)}
    groups = {item_text_key(it["title"], it["text"]): (it["category"], ",".join(it["tags"][:2])) for it in items}
    fake = FakeTextEncoder(name, revision, dim, groups)
    # The real model, for the build's ONNX query export only (checked against torch MiniLM as
    # every build checks it): workers then start as a real deployment's do, without torch.
    fake.model = real.model
    print(f"[data] building the index with FAKE clustered vectors as {name}@{revision} ({dim}-d) ...", flush=True)
    t0 = time.perf_counter()
    report = Pipeline(settings, factory, load_text_encoder=lambda _s: fake, progress=True).run()
    info["index_build_s"] = round(time.perf_counter() - t0, 2)
    info["index_timings"] = report.timings
    info["fake_vectors_unmapped"] = fake.unmapped
    info["query_encoder"] = report.manifest.get("query_encoder", {}).get("backend") or \
        f"none: {report.manifest.get('query_encoder_skipped')}"
    del real, fake.model
    info["version"] = report.version
    text = report.manifest["spaces"]["text"]
    info["index"] = {k: text.get(k) for k in ("index_key", "search_params", "recall_at_10", "count", "encoder")}
    print(f"[data] index {report.version} in {info['index_build_s']} s: {info['index']} "
          f"(unmapped texts: {fake.unmapped})", flush=True)

    now = time.time()
    info["now"] = now
    csv_path = data_dir / "events.csv"
    t0 = time.perf_counter()
    info["events_data"] = write_events_csv(csv_path, items, args.events, args.users, args.heavy,
                                           args.heavy_events, seed=11, now=now)
    info["events_generate_s"] = round(time.perf_counter() - t0, 2)
    print(f"[data] {info['events_data']['events']} events for {info['events_data']['users']} users generated in "
          f"{info['events_generate_s']} s: {info['events_data']['types']}", flush=True)
    t0 = time.perf_counter()
    ev = import_events(csv_path, session_factory=factory, event_types=BUILTIN_EVENT_TYPES, progress=True)
    info["events_import_s"] = round(time.perf_counter() - t0, 2)
    info["events_imported"] = ev.inserted
    info["events_import_per_s"] = round(ev.inserted / max(1e-9, info["events_import_s"]))
    print(f"[data] {ev.inserted} events imported in {info['events_import_s']} s "
          f"({info['events_import_per_s']} events/s)", flush=True)
    csv_path.unlink()
    if not args.no_train:
        info["training"] = train_model(settings, factory, fake)
    engine.dispose()
    checkpoint(db_path(data_dir))
    info["db_mib"] = round(db_path(data_dir).stat().st_size / 2**20, 1)
    info["prepare_s"] = round(time.perf_counter() - t_all, 1)
    info["prepared_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    marker.write_text(json.dumps(info, indent=2))
    return data_dir, info


def train_model(settings, factory, fake) -> dict[str, Any]:
    """``recsys-indexer train`` on the imported events, as a scheduled rebuild would publish them.

    The build above ran before any event existed, so it published no model; the service would
    otherwise answer from co-engagement alone, which is not what a deployment serves.
    """
    from indexer.pipeline import Pipeline

    print("[data] training stage (recsys-indexer train) on the imported events ...", flush=True)
    t0 = time.perf_counter()
    report = Pipeline(settings, factory, load_text_encoder=lambda _s: fake, progress=True).train()
    section = report.manifest.get("behaviour") or {}
    out = {"train_s": round(time.perf_counter() - t0, 1), "version": report.version, "status": section.get("status"),
           "family": section.get("family"), "params": section.get("params"), "blend": section.get("blend"),
           "ranker_used": (section.get("ranker") or {}).get("used"), "model_items": section.get("model_items"),
           "bytes": section.get("bytes"), "cold_place": section.get("cold_place"),
           "peak_rss_mib_of_this_process": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    print(f"[data] trained in {out['train_s']} s: {out['status']} {out['family']} {out['params']}", flush=True)
    return out


def workload_ids(db: Path) -> dict[str, Any]:
    """Ids the requests use: heavy users, ordinary users, items by popularity."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
        heavy = [r[0] for r in con.execute(
            "SELECT external_id FROM users WHERE external_id LIKE 'heavy-%' ORDER BY external_id")]
        ordinary = [r[0] for r in con.execute(
            "SELECT external_id FROM users WHERE external_id LIKE 'u-%' ORDER BY external_id")]
        items = [r[0] for r in con.execute("SELECT external_id FROM items WHERE deleted_at IS NULL ORDER BY id")]
        counts = dict(con.execute("SELECT item_id, COUNT(*) FROM events GROUP BY item_id").fetchall())
        pk = [r[0] for r in con.execute("SELECT id FROM items WHERE deleted_at IS NULL ORDER BY id")]
        cats = [r[0] for r in con.execute("SELECT category FROM items WHERE deleted_at IS NULL ORDER BY id")]
        heavy_counts = [r[0] for r in con.execute(
            "SELECT COUNT(*) FROM events e JOIN users u ON u.id = e.user_id WHERE u.external_id LIKE 'heavy-%' "
            "GROUP BY u.id")]
    w = np.array([counts.get(p, 0) for p in pk], dtype=np.float64) + 0.05
    return {"heavy": heavy, "ordinary": ordinary, "items": items, "item_p": w / w.sum(), "categories": cats,
            "heavy_event_counts": sorted(set(heavy_counts))}


# =============================================================================================
# HTTP
# =============================================================================================


class RecServer(Server):
    """``benchmarks.server.Server`` on a working copy of the database (index from the cache).

    ``make_serve=True`` runs exactly ``make serve``'s command line instead (gunicorn's defaults
    otherwise: a 30 s worker timeout, info logging) to see whether the workers start at all.
    """

    def __init__(self, run_dir: Path, index_dir: Path, log_dir: Path, workers: int = 2, threads: int = 2,
                 make_serve: bool = False, extra_env: dict[str, str] | None = None):
        # torch threads 0: RECSYS_TORCH_THREADS is left unset, so the service default (1) applies.
        super().__init__(run_dir, workers, threads, 0, log_dir, extra_env=extra_env)
        self.index_dir = index_dir
        self.make_serve = make_serve

    def command(self) -> list[str]:
        cmd = super().command()
        if not self.make_serve:
            return cmd
        return [cmd[0], "-w", str(self.workers), "-k", "gthread", "--threads", str(self.threads),
                "-b", f"127.0.0.1:{self.port}", "service.web.app:create_app()"]

    def env(self) -> dict[str, str]:
        env = super().env()
        env["RECSYS_INDEX_DIR"] = str(self.index_dir)
        return env


def lat_stats(seconds: list[float], elapsed: float | None = None) -> dict[str, Any]:
    out = stats_ms(seconds, elapsed)
    if seconds:
        out["p95_ms"] = round(float(np.percentile(np.asarray(seconds) * 1000.0, 95)), 3)
    return out


def metric_delta(before: dict, after: dict) -> dict[str, tuple[float, float]]:
    out = {}
    for key, (s1, c1) in after.items():
        s0, c0 = before.get(key, (0.0, 0.0))
        if c1 - c0 > 0:
            out[key] = (s1 - s0, c1 - c0)
    return out


def ids_of(body: bytes) -> list[str]:
    with contextlib.suppress(ValueError, KeyError, TypeError):
        return [h["id"] for h in json.loads(body)["hits"]]
    return []


# =============================================================================================
# Requests
# =============================================================================================

Req = tuple[str, str, bytes | None]  # method, path, body


def make_requests(ids: dict[str, Any], n: int, seed: int, tag: str) -> dict[str, list[Req]]:
    """Phase A's request types, ``n`` each, deterministic for a seed."""
    rng = np.random.default_rng(seed)
    heavy = ids["heavy"]
    items = ids["items"]
    item_idx = rng.choice(len(items), size=3 * n, p=ids["item_p"])
    by_cat: dict[str, list[int]] = defaultdict(list)
    for i, c in enumerate(ids["categories"]):
        by_cat[c].append(i)
    cats = sorted(by_cat)
    sessions = []
    for _ in range(n):
        members = np.asarray(by_cat[cats[int(rng.integers(len(cats)))]])
        p = ids["item_p"][members] / ids["item_p"][members].sum()
        sessions.append([items[int(j)] for j in rng.choice(members, size=5, p=p)])
    return {
        "user_recs": [("GET", f"/users/{heavy[i % len(heavy)]}/recommendations?k=10", None) for i in range(n)],
        "user_recs_explain_div": [("GET", f"/users/{heavy[(i + 7) % len(heavy)]}/recommendations?k=10&explain=true&diversity=0.3", None)
                                  for i in range(n)],
        "cold_start": [("GET", f"/users/cold-{tag}-{i}/recommendations?k=10", None) for i in range(n)],
        "item_also": [("GET", f"/items/{items[int(j)]}/also?k=10", None) for j in item_idx[:n]],
        "item_similar": [("GET", f"/items/{items[int(j)]}/similar?k=10", None) for j in item_idx[n: 2 * n]],
        "trending": [("GET", "/trending?k=10", None) for _ in range(n)],
        "post_recommend_session": [("POST", "/recommend", json.dumps({"session": s, "k": 10}).encode()) for s in sessions],
    }


ENDPOINT_OF = {
    "user_recs": "/users/<string:user_id>/recommendations",
    "user_recs_explain_div": "/users/<string:user_id>/recommendations",
    "cold_start": "/users/<string:user_id>/recommendations",
    "item_also": "/items/<string:item_id>/also",
    "item_similar": "/items/<string:item_id>/similar",
    "trending": "/trending",
    "post_recommend_session": "/recommend",
}


def make_event_batches(ids: dict[str, Any], n_batches: int, size: int, prefix: str, seed: int) -> list[bytes]:
    """JSON bodies of ``size`` fresh events each: unique ids, existing items, ~2% new users."""
    rng = np.random.default_rng(seed)
    users, items = ids["ordinary"], ids["items"]
    total = n_batches * size
    item_idx = rng.choice(len(items), size=total, p=ids["item_p"])
    user_idx = rng.integers(0, len(users), total)
    new_user = rng.random(total) < 0.02
    kinds = rng.choice(["view", "click", "cart", "purchase"], size=total, p=[0.77, 0.17, 0.042, 0.018])
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    bodies = []
    for b in range(n_batches):
        batch = []
        for j in range(b * size, (b + 1) * size):
            user = f"{prefix}new-{j // 7}" if new_user[j] else users[int(user_idx[j])]
            batch.append({"event_id": f"{prefix}{j:08d}", "user_id": user, "item_id": items[int(item_idx[j])],
                          "type": str(kinds[j]), "timestamp": now})
        bodies.append(json.dumps(batch).encode())
    return bodies


def count_stored(db: Path, prefix: str) -> int:
    """Events whose client id starts with ``prefix`` (a range on the unique index)."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)) as con:
        return con.execute("SELECT COUNT(*) FROM events WHERE client_event_id >= ? AND client_event_id < ?",
                           (prefix, prefix + "\U0010ffff")).fetchone()[0]


# =============================================================================================
# Phases
# =============================================================================================


def warm_up(server: RecServer, reqs: dict[str, list[Req]], per_type: int) -> dict[str, Any]:
    """A few requests of every type through each worker (not measured); first-call latencies."""
    conns = server.clients_per_worker()
    first: dict[str, float] = {}
    statuses: Counter = Counter()
    for pid, c in conns.items():
        for name, lst in reqs.items():
            for i, (method, path, body) in enumerate(lst[-per_type:]):
                status, _h, _b, dt_s = c.request(method, path, body)
                statuses[status] += 1
                if i == 0:
                    first[f"{pid}:{name}"] = round(dt_s * 1000, 1)
        c.close()
    return {"workers_warmed": len(conns), "first_request_ms": first, "statuses": {str(k): v for k, v in statuses.items()}}


def run_phase_a(server: RecServer, reqs: dict[str, list[Req]], passes: int) -> dict[str, Any]:
    """One client; each type in ``passes`` interleaved blocks; stage histograms per type."""
    client = Client(server.port)
    lat: dict[str, list[float]] = defaultdict(list)
    hdr: dict[str, list[float]] = defaultdict(list)
    statuses: dict[str, Counter] = defaultdict(Counter)
    strategies: dict[str, Counter] = defaultdict(Counter)
    sizes: dict[str, list[int]] = defaultdict(list)
    stage_sum: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(lambda: [0.0, 0.0]))
    errors: list[str] = []
    busy: dict[str, float] = defaultdict(float)
    for p in range(passes):
        for name, lst in reqs.items():
            block = lst[p * len(lst) // passes: (p + 1) * len(lst) // passes]
            before = server.metrics()
            t0 = time.perf_counter()
            for method, path, body in block:
                status, headers, data, dt_s = client.request(method, path, body)
                statuses[name][status] += 1
                if status != 200:
                    if len(errors) < 10:
                        errors.append(f"{name} {path}: {status} {data[:200]!r}")
                    continue
                lat[name].append(dt_s)
                sizes[name].append(len(data))
                with contextlib.suppress(KeyError, ValueError):
                    hdr[name].append(float(headers["x-response-time-ms"]) / 1000)
                with contextlib.suppress(ValueError, KeyError):
                    strategies[name][json.loads(data)["strategy"]] += 1
            busy[name] += time.perf_counter() - t0
            for key, (s, c) in metric_delta(before, server.metrics()).items():
                if key == "recsys_stage_seconds:stage=recommend" or (
                        key.startswith("recsys_request_seconds:") and f"endpoint={ENDPOINT_OF[name]}," in key):
                    label = "stage recommend" if key.startswith("recsys_stage") else "request (after_request hook)"
                    stage_sum[name][label][0] += s
                    stage_sum[name][label][1] += c
    worker = server.worker_of(client)
    client.close()
    out: dict[str, Any] = {"worker_pid": worker, "errors": errors, "types": {}}
    for name in reqs:
        out["types"][name] = {
            "client": lat_stats(lat[name], busy[name]), "server_header": lat_stats(hdr[name]),
            "statuses": {str(k): v for k, v in statuses[name].items()},
            "strategies": dict(strategies[name]),
            "response_bytes_mean": round(statistics.fmean(sizes[name])) if sizes[name] else None,
            "histograms_mean_ms": {k: {"mean_ms": round(s / c * 1000, 3), "count": int(c)}
                                   for k, (s, c) in stage_sum[name].items() if c},
        }
    return out


def run_load(port: int, reqs: list[Req], clients: int, duration: float, max_requests: int) -> dict[str, Any]:
    """``clients`` threads, one keep-alive connection each, cycling ``reqs`` for ``duration`` s."""
    lock = threading.Lock()
    state = {"next": 0}
    stop = threading.Event()
    lat: list[float] = []
    statuses: Counter = Counter()
    errors: list[str] = []

    def worker() -> None:
        c = Client(port)
        while not stop.is_set():
            with lock:
                i = state["next"]
                if i >= max_requests:
                    break
                state["next"] = i + 1
            method, path, body = reqs[i % len(reqs)]
            status, _h, data, dt_s = c.request(method, path, body)
            with lock:
                statuses[status] += 1
                if status == 200:
                    lat.append(dt_s)
                elif len(errors) < 10:
                    errors.append(f"{status}: {data[:200]!r}")
        c.close()

    t0 = time.perf_counter()
    run_for(worker, clients, duration, stop, poll=0.05, join_timeout=60)
    elapsed = time.perf_counter() - t0
    return {"clients": clients, **lat_stats(lat, elapsed), "statuses": {str(k): v for k, v in statuses.items()},
            "errors": sum(v for k, v in statuses.items() if k != 200), "error_samples": errors}


def run_posts(server: RecServer, db: Path, bodies: list[bytes], clients: int, duration: float, prefix: str,
              batch_size: int) -> dict[str, Any]:
    """Phase C: ``clients`` threads posting the prepared batches; then count the stored rows."""
    lock = threading.Lock()
    state = {"next": 0}
    stop = threading.Event()
    lat: list[float] = []
    accepted = {"n": 0, "dup": 0, "rejected": 0, "batches": 0}
    statuses: Counter = Counter()
    errors: list[str] = []
    t_last = [0.0]

    def worker() -> None:
        c = Client(server.port)
        while not stop.is_set():
            with lock:
                i = state["next"]
                if i >= len(bodies):
                    break
                state["next"] = i + 1
            status, _h, data, dt_s = c.request("POST", "/events", bodies[i])
            now = time.perf_counter()
            doc = None
            if status == 200:
                with contextlib.suppress(ValueError):
                    doc = json.loads(data)
            with lock:
                statuses[status] += 1
                t_last[0] = max(t_last[0], now)
                if doc is not None:
                    lat.append(dt_s)
                    accepted["n"] += int(doc.get("accepted", 0))
                    accepted["dup"] += int(doc.get("duplicates", 0))
                    accepted["rejected"] += int(doc.get("rejected", 0))
                    accepted["batches"] += 1
                elif len(errors) < 10:
                    errors.append(f"{status}: {data[:300]!r}")
        c.close()

    t0 = time.perf_counter()
    run_for(worker, clients, duration, stop, poll=0.02, join_timeout=120)
    wall = max(t_last[0], t0) - t0
    stored = count_stored(db, prefix)
    sent = accepted["batches"] * batch_size
    return {
        "clients": clients, "batch_size": batch_size, "batches": accepted["batches"], "events_sent": sent,
        "accepted": accepted["n"], "duplicates": accepted["dup"], "rejected": accepted["rejected"],
        "wall_s": round(wall, 3), "events_per_s": round(accepted["n"] / wall, 1) if wall > 0 else None,
        "batch_latency": lat_stats(lat), "statuses": {str(k): v for k, v in statuses.items()},
        "errors": sum(v for k, v in statuses.items() if k != 200), "error_samples": errors,
        "stored_rows": stored, "all_accepted_stored": stored == accepted["n"],
        "stopped_by": "batches exhausted" if state["next"] >= len(bodies) else "duration",
    }


def run_freshness(server: RecServer, heavy: list[str], n: int, tag: str) -> dict[str, Any]:
    """Phase D: post a purchase of the user's top item through one worker, read through both."""
    conns = server.clients_per_worker()
    pids = sorted(conns)
    rows = []
    for i, user in enumerate(heavy[:n]):
        w_post = pids[i % len(pids)]
        w_other = pids[(i + 1) % len(pids)]
        path = f"/users/{user}/recommendations?k=10"
        s0, _h, b0, _d = conns[w_post].request("GET", path)
        before = ids_of(b0)
        if s0 != 200 or not before:
            rows.append({"user": user, "error": f"GET {s0}"})
            continue
        top = before[0]
        body = json.dumps([{"event_id": f"fresh-{tag}-{i}", "user_id": user, "item_id": top, "type": "purchase"}]).encode()
        t0 = time.perf_counter()
        sp, _h, bp, dpost = conns[w_post].request("POST", "/events", body)
        s1, _h, b1, d1 = conns[w_other].request("GET", path)
        t_other = time.perf_counter() - t0
        s2, _h, b2, _d2 = conns[w_post].request("GET", path)
        after_other, after_same = ids_of(b1), ids_of(b2)
        rows.append({
            "user": user, "post_status": sp, "accepted": json.loads(bp).get("accepted") if sp == 200 else None,
            "post_ms": round(dpost * 1000, 2), "get_other_worker_ms": round(d1 * 1000, 2),
            "post_to_fresh_answer_ms": round(t_other * 1000, 2),
            "top_item": top, "changed_other_worker": after_other != before, "changed_same_worker": after_same != before,
            "top_gone_other_worker": s1 == 200 and top not in after_other,
            "top_gone_same_worker": s2 == 200 and top not in after_same,
            "workers": [w_post, w_other],
        })
    for c in conns.values():
        c.close()
    ok = [r for r in rows if "error" not in r]
    return {
        "users": len(rows), "workers": pids,
        "fresh_on_other_worker": sum(r["top_gone_other_worker"] and r["changed_other_worker"] for r in ok),
        "fresh_on_same_worker": sum(r["top_gone_same_worker"] and r["changed_same_worker"] for r in ok),
        "post_to_fresh_answer_ms_median": round(statistics.median(r["post_to_fresh_answer_ms"] for r in ok), 2) if ok else None,
        "rows": rows,
    }


def run_mixed(server: RecServer, db: Path, reqs: list[Req], bodies: list[bytes], duration: float, prefix: str,
              batch_size: int) -> dict[str, Any]:
    """Phase M: heavy-user recommendations (1 client) while 1 client posts batches."""
    box: dict[str, Any] = {}
    poster = threading.Thread(target=lambda: box.update(post=run_posts(server, db, bodies, 1, duration, prefix, batch_size)),
                              daemon=True)
    poster.start()
    time.sleep(0.5)
    box["recs"] = run_load(server.port, reqs, 1, duration - 0.5, 10**9)
    poster.join(timeout=duration + 120)
    return box


# =============================================================================================
# Phase P: where the time goes, in this process
# =============================================================================================


CODE_FILES = ("service/web/app.py", "service/recommend/behaviour.py", "service/recommend/recommender.py", "service/recommend/ranking.py",
              "service/store/events.py", "service/search/hybrid.py", "service/store/db.py", "service/settings.py",
              "service/web/recommend.py", "service/web/items.py", "service/store/records.py", "indexer/pipeline.py")


def code_fingerprint() -> dict[str, str]:
    """sha256 prefix and mtime of the service files measured (they change while others work)."""
    out = {}
    for rel in CODE_FILES:
        path = REPO / rel
        with contextlib.suppress(OSError):
            out[rel] = (hashlib.sha256(path.read_bytes()).hexdigest()[:12] + " "
                        + time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(path.stat().st_mtime)))
    return out


def _timed(steps: dict[str, list[float]], name: str, fn: Callable[[], Any]) -> Any:
    t0 = time.perf_counter()
    out = fn()
    steps[name].append(time.perf_counter() - t0)
    return out


_GROUPS = [
    ("SQL (sqlalchemy/sqlite3)", ("sqlalchemy", "sqlite3", "service/store/events.py", "service/items.py")),
    ("scipy.sparse (co-engagement)", ("scipy",)),
    ("numpy", ("numpy",)),
    ("faiss", ("faiss",)),
    ("marshmallow/flask_smorest/webargs", ("marshmallow", "flask_smorest", "webargs", "apispec")),
    ("flask/werkzeug/json", ("flask", "werkzeug", "json")),
    ("prometheus_client", ("prometheus_client",)),
    ("service recommend/behaviour/ranking", ("service/recommend/recommender.py", "service/recommend/behaviour.py", "service/recommend/ranking.py",
                                             "service/search/hybrid.py", "service/web/recommend.py")),
]


def _c_call_label(func: str) -> str:
    return "C calls: " + ("sqlite3" if "sqlite3" in func or "execute" in func or "fetch" in func
                          else "numpy" if "numpy" in func else "faiss" if "faiss" in func or "swig" in func
                          else "other")


def _group_profile(st: pstats.Stats) -> dict[str, float]:
    return group_profile(st, _GROUPS, _c_call_label, ndigits=2)


def behaviour_costs(rt) -> dict[str, Any]:
    """A second BehaviourModel loaded here step by step, as each worker does at start."""
    import gc
    import inspect

    from service.recommend.behaviour import BehaviourModel, Catalog, Snapshot

    s = rt.settings
    wanted = {"event_weights": s.event_weights, "rating_neutral": s.rating_neutral,
              "popularity_damping": s.co_engagement_popularity_damping,
              "user_damping": getattr(s, "co_engagement_user_damping", 0.0)}
    params = inspect.signature(BehaviourModel.__init__).parameters
    gc.collect()
    rss = {"before": self_rss_mib()}
    with rt.session_factory() as session:
        model = BehaviourModel(**{k: v for k, v in wanted.items() if k in params})
        t0 = time.perf_counter()
        model._pull_events(session)
        t1 = time.perf_counter()
        rss["after_pull_events"] = self_rss_mib()
        model._pull_items(session)
        t2 = time.perf_counter()
        model.refresh(session)  # nothing new: builds the first snapshot
        t3 = time.perf_counter()
        rss["after_first_snapshot"] = self_rss_mib()
        model.refresh(session)  # nothing new, snapshot kept: the idle cost every refresh interval
        t4 = time.perf_counter()
        cat = lambda parts, dtype: np.concatenate(parts) if parts else np.zeros(0, dtype)  # noqa: E731
        args = [cat(model._users, np.int64), cat(model._items, np.int64), cat(model._weights, np.float64),
                cat(model._times, np.float64),
                Catalog(dict(model._kinds), dict(model._categories), frozenset(model._deleted)), model.popularity_damping]
        if "user_damping" in inspect.signature(Snapshot.__init__).parameters:
            args.append(getattr(model, "user_damping", 0.0))
        t5 = time.perf_counter()
        Snapshot(*args)
        t6 = time.perf_counter()
        session.rollback()
    snap = model.snapshot
    arrays = sum(a.nbytes for a in (snap.times, snap.event_items, snap.event_weights, snap.item_ids))
    arrays += sum(m.data.nbytes + m.indices.nbytes + m.indptr.nbytes for m in (snap.iu, snap.ui))
    raw = sum(a.nbytes for parts in (model._users, model._items, model._weights, model._times) for a in parts)
    del model, snap, args
    gc.collect()
    rss["after_del_gc"] = self_rss_mib()
    return {"pull_events_s (SQL + Python, all events)": round(t1 - t0, 3),
            "pull_items_s": round(t2 - t1, 3),
            "first_snapshot_build_s": round(t3 - t2, 3),
            "idle_refresh_s (no new events)": round(t4 - t3, 3),
            "snapshot_rebuild_s (each worker, when new events are due)": round(t6 - t5, 3),
            "model_arrays_mib": round(raw / 2**20, 1), "snapshot_arrays_mib": round(arrays / 2**20, 1),
            "rss_mib": rss}


def run_profile(run_dir: Path, index_dir: Path, ids: dict[str, Any], n: int, tag: str) -> dict[str, Any]:
    """The recommendation view's steps and a 100-event POST, timed one by one in this process."""
    from flask import json as flask_json

    from service.web.recommend import _engine, _respond
    from service.web.schemas import RecommendOut
    from service.web.app import create_app
    from service.store.models import to_seconds
    from service.store.events import consumed_items, ensure_users, existing_event_ids, user_history
    from service.store.events import _insert_ignoring_conflicts
    from service.store.items import item_ids_by_external
    from service.store.models import Event, utcnow
    from service.recommend.recommender import Answer, Sources, _profile_scores, explain_recs, make_ask, rank, user_seeds
    from service.store.records import parse_event

    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("RECSYS_")}
    rss0 = self_rss_mib()
    try:
        t0 = time.perf_counter()
        app = create_app({"data_dir": str(run_dir), "index_dir": str(index_dir), "clip_enabled": False})
        create_s = time.perf_counter() - t0
    finally:
        os.environ.update(saved)
    rt = app.extensions["recsys"]
    s = rt.settings
    out: dict[str, Any] = {"create_app_s": round(create_s, 2), "n": n,
                           "rss_mib": {"before_create_app (torch imported)": rss0, "after_create_app": self_rss_mib()}}
    heavy = ids["heavy"]
    client = app.test_client()
    for u in heavy[:10]:
        client.get(f"/users/{u}/recommendations?k=10")

    # 1) Flask test client (no HTTP, no gunicorn).
    for label, extra in (("k=10", ""), ("k=10&explain=true&diversity=0.3", "&explain=true&diversity=0.3")):
        lat = []
        for i in range(n):
            t0 = time.perf_counter()
            r = client.get(f"/users/{heavy[i % len(heavy)]}/recommendations?k=10{extra}")
            lat.append(time.perf_counter() - t0)
            assert r.status_code == 200, r.data[:300]
        out[f"test_client {label}"] = lat_stats(lat)

    # 2) The view's steps with the service's own functions (same order as user_recommendations).
    steps: dict[str, list[float]] = defaultdict(list)
    sizes: dict[str, list[int]] = defaultdict(list)
    schema = RecommendOut()
    for i in range(n):
        user = heavy[i % len(heavy)]
        explain = i % 2 == 1
        with app.test_request_context(f"/users/{user}/recommendations"):
            session = rt.session_factory()
            from flask import g
            g.db_session = session
            try:
                t_start = time.perf_counter()
                engine, version = _timed(steps, "_engine (store, delta sync, snapshot)", lambda: _engine(rt))
                history = _timed(steps, "user_history (SQL, 500 rows)", lambda: user_history(
                    session=session, external_id=user, limit=s.history_limit))
                now = to_seconds(utcnow())
                seeds = _timed(steps, "seeds_from_history", lambda: user_seeds(history, s, now=now))
                exclude = _timed(steps, "consumed_items", lambda: frozenset(consumed_items(
                    session=session, history=history, types=s.exclude_seen_types)))
                ask = make_ask(s, k=10, now=now, diversity=0.3 if explain else None, exclude=exclude)
                ncand = engine.candidates_per_source
                snap = engine.behaviour
                found, _done = _timed(steps, "gather: profile (vectors_of + FAISS k=n+excluded)",
                                               lambda: _profile_scores(engine, seeds, ask, ncand))
                allowed = lambda items: {k: v for k, v in items.items() if snap.catalog.allows(k, ask.kinds, ask.category)}  # noqa: E731
                co = _timed(steps, "gather: co_engaged (scipy.sparse)",
                            lambda: allowed(snap.co_engaged(seeds.items, ncand, exclude=ask.exclude)))
                tr = _timed(steps, "gather: trending", lambda: snap.trending(
                    now=ask.now, window_days=engine.trending_window_days, half_life_days=engine.trending_half_life_days,
                    n=ncand, kinds=ask.kinds, category=ask.category, exclude=ask.exclude))
                sources = Sources({"profile": allowed(found), "co_engagement": co, "trending": tr}, False)
                sizes["excluded"].append(len(exclude))
                sizes["seed_items"].append(len(seeds.items))
                sizes["co_candidates"].append(len(co))
                recs = _timed(steps, "rank (blend, load_items SQL, mmr)" + (" [diversity 0.3]" if explain else ""),
                              lambda: rank(engine, seeds, ask, sources, session=session, explain=False))
                if explain:
                    _timed(steps, "explain_recs [explain]", lambda: explain_recs(engine, seeds, sources, recs, session=session))
                body = _timed(steps, "_respond (item_json)", lambda: _respond(
                    rt, Answer(recs, "personalized"), version=version, started=t_start, explain=explain, user_id=user))
                _timed(steps, "marshmallow dump + JSON", lambda: flask_json.dumps(schema.dump(body)))
                steps["sum of steps" + (" [explain+diversity]" if explain else " [plain]")].append(time.perf_counter() - t_start)
            finally:
                g.pop("db_session", None)
                session.close()
    out["view_steps"] = {k: lat_stats(v) for k, v in steps.items()}
    out["sizes_mean"] = {k: round(statistics.fmean(v), 1) for k, v in sizes.items() if v}

    # Co-engagement alone, per heavy user: how many users and events one call touches.
    snap = rt.behaviour.snapshot
    out["snapshot"] = {"events": snap.event_count, "items": int(len(snap.item_ids)), "users": int(snap.ui.shape[0]),
                       "iu_nnz": int(snap.iu.nnz)}

    # 3) cProfile of test-client requests, grouped by library.
    prof = cProfile.Profile()
    m = min(n, 150)
    prof.enable()
    for i in range(m):
        client.get(f"/users/{heavy[i % len(heavy)]}/recommendations?k=10")
    prof.disable()
    st = pstats.Stats(prof)
    out["cprofile"] = {"requests": m, "own_ms_per_request_by_group": {k: round(v / m, 3) for k, v in _group_profile(st).items()}}
    out["cprofile"]["top_tottime"] = profile_top(prof, "tottime", 20)
    out["cprofile"]["top_cumulative"] = profile_top(prof, "cumulative", 30)

    # 4) Behaviour model: the load every worker does at start (time and memory), each refresh's cost.
    try:
        out["behaviour"] = behaviour_costs(rt)
    except Exception as exc:  # private attributes may move while others work on the service
        out["behaviour"] = {"error": f"{type(exc).__name__}: {exc}"}

    # 5) POST /events: a 100-event batch through its steps (scratch copy of the database).
    usteps: dict[str, list[float]] = defaultdict(list)
    pbodies = make_event_batches(ids, 60, 100, f"prof-{tag}-", seed=99)
    types = s.event_types
    for b, body in enumerate(pbodies[:30]):
        raw = json.loads(body)
        t_all = time.perf_counter()
        nowd = utcnow()
        recs = _timed(usteps, "parse_event x100", lambda: [parse_event(r, event_types=types, default_time=nowd) for r in raw])
        session = rt.session_factory()
        try:
            items = _timed(usteps, "item_ids_by_external (SQL)", lambda: item_ids_by_external(
                session=session, external_ids=(r.item_external_id for r in recs)))
            _timed(usteps, "existing_event_ids (SQL)", lambda: existing_event_ids(
                session=session, client_ids=(r.client_event_id for r in recs)))
            users = _timed(usteps, "ensure_users (SQL, may insert)", lambda: ensure_users(
                session=session, external_ids=(r.user_external_id for r in recs)))
            rows = [{"client_event_id": r.client_event_id, "user_id": users[r.user_external_id],
                     "item_id": items[r.item_external_id], "type": r.type, "value": r.value,
                     "occurred_at": r.occurred_at, "recommendation_id": r.recommendation_id} for r in recs]
            _timed(usteps, "insert events (executemany)", lambda: _insert_ignoring_conflicts(session, Event, rows, "client_event_id"))
            _timed(usteps, "commit (WAL fsync, synchronous=FULL)", session.commit)
        finally:
            session.close()
        usteps["sum of steps"].append(time.perf_counter() - t_all)
    lat = []
    for body in pbodies[30:]:
        t0 = time.perf_counter()
        r = client.post("/events", data=body, content_type="application/json")
        lat.append(time.perf_counter() - t0)
        assert r.status_code == 200 and r.get_json()["accepted"] == 100, r.data[:300]
    out["post_events_steps"] = {k: lat_stats(v) for k, v in usteps.items()}
    out["post_events_test_client"] = lat_stats(lat)
    with rt.engine.connect() as conn:
        out["sqlite_pragmas"] = {p: conn.exec_driver_sql(f"PRAGMA {p}").scalar() for p in ("journal_mode", "synchronous")}
    rt.behaviour.stop()
    rt.store.stop()
    rt.engine.dispose()
    return out


# =============================================================================================
# Driver
# =============================================================================================


def fresh_copy(data_dir: Path, run_dir: Path) -> Path:
    """A working copy of the prepared database (the cache itself is never written by a run)."""
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    src = db_path(data_dir)
    for suffix in ("", "-wal"):
        if Path(str(src) + suffix).exists():
            shutil.copyfile(str(src) + suffix, str(db_path(run_dir)) + suffix)
    return db_path(run_dir)


def run_round(r: int, args: argparse.Namespace, data_dir: Path, ids: dict[str, Any], tag: str,
              log_dir: Path, last: bool) -> dict[str, Any]:
    run_dir = data_dir / "run"
    t0 = time.perf_counter()
    db = fresh_copy(data_dir, run_dir)
    res: dict[str, Any] = {"round": r + 1, "copy_s": round(time.perf_counter() - t0, 2)}
    server = RecServer(run_dir, data_dir / "indexes", log_dir)
    res["gunicorn"] = " ".join(shlex.quote(a) for a in server.command())
    print(f"\n[round {r + 1}/{args.rounds}] gunicorn {server.label} on 127.0.0.1:{server.port} ...", flush=True)
    reqs = make_requests(ids, args.requests, seed=1000 + r, tag=f"{tag}-r{r + 1}")
    warm = make_requests(ids, args.warmup, seed=5000 + r, tag=f"{tag}-w{r + 1}")
    try:
        meter = CpuMeter()
        server.start()
        res["startup"] = {"ready_s": server.ready_s, "cpu": meter.stop(), "rss_mib_at_ready": server.rss_mib()}
        res["warmup"] = warm_up(server, warm, args.warmup)
        # Workers load torch in the background once ready (for item writes): time nothing until done.
        res["settled_after_warmup_s"] = settle(server.worker_pids(), timeout=120.0, cores=0.05)
        res["rss_mib_after_warmup"] = server.rss_mib()
        res["http_floor"] = http_floor(server, 200)
        print(f"  ready in {server.ready_s} s (each worker loads the index, the query encoder and the behaviour window); "
              f"idle {res['settled_after_warmup_s']} s after warm-up; RSS MiB "
              f"{res['rss_mib_after_warmup']}; /health/live p50 {res['http_floor'].get('p50_ms')} ms; "
              f"others {res['startup']['cpu']['others_cores']} cores", flush=True)

        meter = CpuMeter()
        res["A"] = a = run_phase_a(server, reqs, args.passes)
        a["cpu"] = meter.stop()
        for name, t in a["types"].items():
            c, h = t["client"], t["server_header"]
            print(f"  A {name:<24} p50 {c.get('p50_ms')} p95 {c.get('p95_ms')} p99 {c.get('p99_ms')} max "
                  f"{c.get('max_ms')} ms (server p50 {h.get('p50_ms')} p99 {h.get('p99_ms')}); {t['strategies']}; "
                  f"{t['histograms_mean_ms']}", flush=True)
        print(f"  A others {a['cpu']['others_cores']} cores; errors {a['errors'][:3]}", flush=True)

        meter = CpuMeter()
        res["B"] = b = run_load(server.port, reqs["user_recs"] * 20, 4, args.duration, 10**9)
        b["cpu"] = meter.stop()
        print(f"  B 4 clients: {b.get('qps')} QPS, p50 {b.get('p50_ms')} p99 {b.get('p99_ms')} ms, errors {b['errors']}; "
              f"others {b['cpu']['others_cores']} cores", flush=True)

        res["C"] = []
        for clients in (1, 4):
            prefix = f"bench-{tag}-r{r + 1}-c{clients}-"
            bodies = make_event_batches(ids, args.max_batches, args.batch_size, prefix, seed=r * 10 + clients)
            meter = CpuMeter()
            c = run_posts(server, db, bodies, clients, args.post_duration, prefix, args.batch_size)
            c["cpu"] = meter.stop()
            res["C"].append(c)
            bl = c["batch_latency"]
            print(f"  C {clients} client(s): {c['accepted']} accepted in {c['wall_s']} s = {c['events_per_s']} events/s "
                  f"({c['stopped_by']}); batch p50 {bl.get('p50_ms')} p99 {bl.get('p99_ms')} ms; stored {c['stored_rows']} "
                  f"(all: {c['all_accepted_stored']}); errors {c['errors']}; others {c['cpu']['others_cores']} cores",
                  flush=True)
        res["rss_mib_after_posts"] = server.rss_mib()

        time.sleep(2 * 2.0 + 1)  # let the workers fold the posted events into their snapshots first
        meter = CpuMeter()
        res["D"] = d = run_freshness(server, ids["heavy"], args.fresh_users, f"{tag}-r{r + 1}")
        d["cpu"] = meter.stop()
        print(f"  D freshness: {d['fresh_on_other_worker']}/{d['users']} fresh through the other worker, "
              f"{d['fresh_on_same_worker']}/{d['users']} through the same; post -> fresh answer median "
              f"{d['post_to_fresh_answer_ms_median']} ms", flush=True)

        if last and not args.no_mixed:
            prefix = f"bench-{tag}-r{r + 1}-mixed-"
            bodies = make_event_batches(ids, args.max_batches, args.batch_size, prefix, seed=777)
            meter = CpuMeter()
            res["M"] = mx = run_mixed(server, db, reqs["user_recs"] * 20, bodies, args.post_duration, prefix,
                                      args.batch_size)
            mx["cpu"] = meter.stop()
            print(f"  M recs under writes: p50 {mx['recs'].get('p50_ms')} p99 {mx['recs'].get('p99_ms')} ms "
                  f"({mx['recs'].get('qps')} QPS) while posting {mx['post']['events_per_s']} events/s (stored all: "
                  f"{mx['post']['all_accepted_stored']}); others {mx['cpu']['others_cores']} cores", flush=True)
        res["rss_mib_end"] = server.rss_mib()
    except Exception as exc:
        res["error"] = f"{type(exc).__name__}: {exc}"
        print(f"  [error] {res['error']}", flush=True)
    finally:
        server.stop()
        with contextlib.suppress(OSError):
            res["gunicorn_log_tail"] = server.log_path.read_text(errors="replace")[-3000:]
    return res


def run_startup_check(args: argparse.Namespace, data_dir: Path, log_dir: Path) -> dict[str, Any]:
    """Phase S: start the service with ``make serve``'s exact command line (worker timeout 30 s)."""
    run_dir = data_dir / "run"
    fresh_copy(data_dir, run_dir)
    server = RecServer(run_dir, data_dir / "indexes", log_dir, make_serve=True)
    out: dict[str, Any] = {"gunicorn": " ".join(shlex.quote(a) for a in server.command()),
                           "ready_timeout_s": args.startup_timeout}
    print(f"\n[S] start-up with make serve's command line (gunicorn default --timeout 30): {out['gunicorn']}", flush=True)
    meter = CpuMeter()
    try:
        server.start(ready_timeout=args.startup_timeout)
        out["ready_s"] = server.ready_s
        out["started"] = True
        out["rss_mib"] = server.rss_mib()
    except RuntimeError as exc:
        out["started"] = False
        out["error"] = str(exc)[:500]
    finally:
        out["cpu"] = meter.stop()
        server.stop()
        log = server.log_path.read_text(errors="replace") if server.log_path.exists() else ""
        out["worker_timeouts"] = log.count("WORKER TIMEOUT")
        out["workers_booted"] = log.count("Booting worker")
        out["all_workers_ok"] = bool(out.get("started")) and out["worker_timeouts"] == 0
        out["log_tail"] = log[-1500:]
    print(f"  started: {out['started']}, ready in {out.get('ready_s')} s, WORKER TIMEOUT lines {out['worker_timeouts']}, "
          f"workers booted {out['workers_booted']}; others {out['cpu']['others_cores']} cores", flush=True)
    return out


def median_of(rounds: list[dict], path: Callable[[dict], Any]) -> float | None:
    vals = []
    for r in rounds:
        with contextlib.suppress(KeyError, TypeError, IndexError):
            v = path(r)
            if v is not None:
                vals.append(v)
    return round(float(statistics.median(vals)), 3) if vals else None


def summarise(rounds: list[dict]) -> dict[str, Any]:
    ok = [r for r in rounds if "error" not in r]
    out: dict[str, Any] = {"rounds": len(ok), "A": {}, "C": {}}
    types = list(ok[0]["A"]["types"]) if ok else []
    for name in types:
        row = {}
        for side in ("client", "server_header"):
            for p in ("p50_ms", "p95_ms", "p99_ms", "max_ms", "mean_ms"):
                row[f"{side}_{p}"] = median_of(ok, lambda r, s=side, p=p: r["A"]["types"][name][s][p])
        row["n_per_round"] = median_of(ok, lambda r: r["A"]["types"][name]["client"]["n"])
        row["stage_recommend_mean_ms"] = median_of(
            ok, lambda r: r["A"]["types"][name]["histograms_mean_ms"]["stage recommend"]["mean_ms"])
        row["request_hist_mean_ms"] = median_of(
            ok, lambda r: r["A"]["types"][name]["histograms_mean_ms"]["request (after_request hook)"]["mean_ms"])
        out["A"][name] = row
    out["A_others_cores"] = median_of(ok, lambda r: r["A"]["cpu"]["others_cores"])
    out["B"] = {k: median_of(ok, lambda r, k=k: r["B"][k]) for k in ("qps", "p50_ms", "p99_ms", "max_ms")}
    out["B"]["others_cores"] = median_of(ok, lambda r: r["B"]["cpu"]["others_cores"])
    for i, clients in enumerate((1, 4)):
        out["C"][f"{clients}_clients"] = {
            "events_per_s": median_of(ok, lambda r: r["C"][i]["events_per_s"]),
            "batch_p50_ms": median_of(ok, lambda r: r["C"][i]["batch_latency"]["p50_ms"]),
            "batch_p99_ms": median_of(ok, lambda r: r["C"][i]["batch_latency"]["p99_ms"]),
            "accepted_per_round": [r["C"][i]["accepted"] for r in ok],
            "stored_per_round": [r["C"][i]["stored_rows"] for r in ok],
            "all_stored_every_round": all(r["C"][i]["all_accepted_stored"] for r in ok),
            "errors": sum(r["C"][i]["errors"] for r in ok),
            "others_cores": median_of(ok, lambda r: r["C"][i]["cpu"]["others_cores"]),
        }
    out["D"] = {"fresh_other_worker": [f"{r['D']['fresh_on_other_worker']}/{r['D']['users']}" for r in ok],
                "fresh_same_worker": [f"{r['D']['fresh_on_same_worker']}/{r['D']['users']}" for r in ok],
                "post_to_fresh_answer_ms": median_of(ok, lambda r: r["D"]["post_to_fresh_answer_ms_median"])}
    out["startup_ready_s"] = median_of(ok, lambda r: r["startup"]["ready_s"])
    out["startup_ready_s_rounds"] = [r["startup"]["ready_s"] for r in ok]
    out["rss_mib_after_warmup"] = [r["rss_mib_after_warmup"] for r in ok]
    out["rss_mib_end"] = [r.get("rss_mib_end") for r in ok]
    return out


def fmt(v: Any, nd: int = 1) -> str:
    return "-" if v is None else (f"{v:,.{nd}f}" if isinstance(v, float) else str(v))


def print_summary(result: dict[str, Any]) -> None:
    s = result["summary"]
    m = result["machine"]
    d = result["data"]
    print("\n" + "=" * 110)
    print(f"bench_recommend: {d['items']} items, {d.get('events_data', {}).get('events', d['events'])} events, "
          f"index {d.get('index', {}).get('index_key')} {d.get('index', {}).get('search_params')} (FAKE vectors), "
          f"{m['cpu_count']} x {m['cpu_model']}; medians of {s['rounds']} rounds")
    print("=" * 110)
    row = "{:<34} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9}"
    print(row.format("A (1 client, sequential)", "p50 ms", "p95 ms", "p99 ms", "max ms", "srv p50", "srv p99", "stage ms"))
    for name, a in s["A"].items():
        print(row.format(name, fmt(a["client_p50_ms"], 2), fmt(a["client_p95_ms"], 2), fmt(a["client_p99_ms"], 2),
                         fmt(a["client_max_ms"], 1), fmt(a["server_header_p50_ms"], 2), fmt(a["server_header_p99_ms"], 2),
                         fmt(a["stage_recommend_mean_ms"], 2)))
    print(f"  others during A: {s['A_others_cores']} cores")
    b = s["B"]
    print(f"B 4 clients, heavy-user recs: {fmt(b['qps'])} QPS, p50 {fmt(b['p50_ms'], 2)} p99 {fmt(b['p99_ms'], 2)} ms "
          f"(others {b['others_cores']} cores)")
    for k, c in s["C"].items():
        print(f"C POST /events x{result['args']['batch_size']}, {k.replace('_', ' ')}: {fmt(c['events_per_s'], 0)} events/s, "
              f"batch p50 {fmt(c['batch_p50_ms'], 2)} p99 {fmt(c['batch_p99_ms'], 2)} ms; accepted {c['accepted_per_round']} "
              f"stored {c['stored_per_round']} (all stored: {c['all_stored_every_round']}); others {c['others_cores']} cores")
    print(f"D freshness (top item purchased -> gone at once): other worker {s['D']['fresh_other_worker']}, same worker "
          f"{s['D']['fresh_same_worker']}; post -> fresh answer {s['D']['post_to_fresh_answer_ms']} ms")
    mx = next((r.get("M") for r in result["rounds"] if r.get("M")), None)
    if mx:
        print(f"M recs while 1 client posts: p50 {mx['recs'].get('p50_ms')} p99 {mx['recs'].get('p99_ms')} ms; "
              f"{mx['post'].get('events_per_s')} events/s; others {mx['cpu']['others_cores']} cores")
    print(f"start-up (all workers ready, --timeout 120): {s['startup_ready_s_rounds']} s; RSS MiB after warm-up "
          f"{s['rss_mib_after_warmup']}")
    st = result.get("S")
    if st:
        print(f"S make serve's command line (--timeout 30): started {st['started']}, ready {st.get('ready_s')} s, "
              f"WORKER TIMEOUT x{st['worker_timeouts']}, workers booted {st['workers_booted']}")
    p = result.get("P")
    if p and "error" not in p:
        print(f"P in-process steps (heavy users, {p['n']} requests; others {p.get('cpu', {}).get('others_cores')} cores):")
        for k, v in p["view_steps"].items():
            print(f"   {k:<58} p50 {fmt(v.get('p50_ms'), 3)}  p99 {fmt(v.get('p99_ms'), 3)}  mean {fmt(v.get('mean_ms'), 3)} ms")
        print(f"   cProfile own ms/request: {p['cprofile']['own_ms_per_request_by_group']}")
        print(f"   behaviour model: {p['behaviour']}")
        for k, v in p["post_events_steps"].items():
            print(f"   POST step {k:<48} p50 {fmt(v.get('p50_ms'), 3)}  p99 {fmt(v.get('p99_ms'), 3)} ms")
        print(f"   POST /events x100 via test client: p50 {p['post_events_test_client'].get('p50_ms')} ms; "
              f"pragmas {p.get('sqlite_pragmas')}")
    print("-- targets")
    for t in result["targets"]:
        print(f"   {t['what']:<70} {t['value']} vs {t['target']}: {'MET' if t['met'] else 'MISSED'}")
    print()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--items", type=int, default=100_000, help="catalog size (default 100000)")
    ap.add_argument("--events", type=int, default=1_000_000, help="events to generate (default 1000000)")
    ap.add_argument("--users", type=int, default=20_000, help="users, heavy ones included (default 20000)")
    ap.add_argument("--heavy", type=int, default=50, help="heavy users, the latency subjects (default 50)")
    ap.add_argument("--heavy-events", type=int, default=500, help="events per heavy user (default 500)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of A-D, each on a fresh server (default 3)")
    ap.add_argument("--requests", type=int, default=300, help="phase A requests per type per round (default 300)")
    ap.add_argument("--passes", type=int, default=3, help="phase A: interleaved blocks per type (default 3)")
    ap.add_argument("--warmup", type=int, default=10, help="warm-up requests per type per worker (default 10)")
    ap.add_argument("--duration", type=float, default=15.0, help="phase B seconds (default 15)")
    ap.add_argument("--post-duration", type=float, default=20.0, help="phase C seconds per client count (default 20)")
    ap.add_argument("--max-batches", type=int, default=2500, help="phase C: at most this many batches (default 2500)")
    ap.add_argument("--batch-size", type=int, default=100, help="events per POST (default 100)")
    ap.add_argument("--fresh-users", type=int, default=10, help="phase D users (default 10)")
    ap.add_argument("--profile-requests", type=int, default=200, help="phase P requests (0: skip; default 200)")
    ap.add_argument("--no-mixed", action="store_true", help="skip phase M (recommendations while posting)")
    ap.add_argument("--no-train", action="store_true",
                    help="serve without a trained model (co-engagement only; issue 5's first measurement)")
    ap.add_argument("--no-startup-check", action="store_true",
                    help="skip phase S (start-up with make serve's exact command line, gunicorn's 30 s timeout)")
    ap.add_argument("--startup-timeout", type=float, default=240.0,
                    help="phase S: give up when the workers are not all ready after this many seconds (default 240)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 5000 items, 50000 events, 2000 users, 10 heavy, 1 round, short phases")
    ap.add_argument("--data-root", type=Path, default=DATA_ROOT)
    ap.add_argument("--rebuild-data", action="store_true", help="ignore a cached data folder")
    ap.add_argument("--prepare-only", action="store_true", help="prepare (or check) the data folder, then stop")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON results (default {DEFAULT_OUT.relative_to(REPO)})")
    args = ap.parse_args()
    if args.quick:
        args.items, args.events, args.users, args.heavy = 5000, 50_000, 2000, 10
        args.rounds, args.requests, args.duration, args.post_duration = 1, 60, 5.0, 5.0
        args.max_batches, args.fresh_users, args.profile_requests, args.warmup = 500, 4, 40, 3
        if args.out == DEFAULT_OUT:
            args.out = REPO / "benchmarks" / "out" / "bench_recommend_quick.json"
    t_run = time.perf_counter()
    tag = time.strftime("%Y%m%d%H%M%S")
    result: dict[str, Any] = {
        "command": command_line(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "args": {k: str(v) if isinstance(v, Path) else v
                                                                     for k, v in vars(args).items()},
        "machine": machine_info(), "load_at_start": load_snapshot(), "code": code_fingerprint(),
    }
    print(f"[run] {result['command']}", flush=True)
    print(f"[run] machine: {result['machine']['cpu_count']} x {result['machine']['cpu_model']}; load "
          f"{result['load_at_start']}", flush=True)
    meter = CpuMeter()
    data_dir, info = prepare_data(args)
    info["cpu"] = meter.stop()
    result["data"] = {**info, "dir": str(data_dir)}
    if args.prepare_only:
        print(json.dumps(info, indent=2, default=str))
        return 0
    ids = workload_ids(db_path(data_dir))
    result["workload"] = {"heavy_users": len(ids["heavy"]), "heavy_event_counts": ids["heavy_event_counts"],
                          "ordinary_users": len(ids["ordinary"]), "items": len(ids["items"])}
    print(f"[run] {len(ids['heavy'])} heavy users (events each: {ids['heavy_event_counts']}), "
          f"{len(ids['ordinary'])} other users, {len(ids['items'])} items", flush=True)

    log_dir = Path(tempfile.mkdtemp(prefix="bench-recommend-logs-"))
    if not args.no_startup_check:
        result["S"] = run_startup_check(args, data_dir, log_dir)
    result["rounds"] = []
    for r in range(args.rounds):
        result["rounds"].append(run_round(r, args, data_dir, ids, tag, log_dir, last=r == args.rounds - 1))
    result["summary"] = summarise(result["rounds"])

    if args.profile_requests:
        print(f"\n[P] in-process steps on a fresh copy ({args.profile_requests} requests) ...", flush=True)
        run_dir = data_dir / "run"
        fresh_copy(data_dir, run_dir)
        meter = CpuMeter()
        try:
            result["P"] = run_profile(run_dir, data_dir / "indexes", ids, args.profile_requests, tag)
            result["P"]["cpu"] = meter.stop()
        except Exception as exc:
            result["P"] = {"error": f"{type(exc).__name__}: {exc}"}
            print(f"  [error] {result['P']['error']}", flush=True)
    shutil.rmtree(data_dir / "run", ignore_errors=True)

    s = result["summary"]
    targets = []
    if s["A"]:
        a = s["A"]["user_recs"]
        targets.append({"what": "A heavy-user GET recommendations p99 (client, 1 client)", "value": a["client_p99_ms"],
                        "target": f"<= {TARGET_P99_MS:g} ms", "met": a["client_p99_ms"] is not None and a["client_p99_ms"] <= TARGET_P99_MS})
        e = s["A"]["user_recs_explain_div"]
        targets.append({"what": "A same with explain=true&diversity=0.3, p99 (reference)", "value": e["client_p99_ms"],
                        "target": f"<= {TARGET_P99_MS:g} ms", "met": e["client_p99_ms"] is not None and e["client_p99_ms"] <= TARGET_P99_MS})
        for k, c in s["C"].items():
            targets.append({"what": f"C POST /events x{args.batch_size}, {k.replace('_', ' ')}: events/s, all stored",
                            "value": f"{c['events_per_s']} ({'all stored' if c['all_stored_every_round'] else 'NOT ALL STORED'})",
                            "target": f">= {TARGET_EVENTS_PER_S:g}",
                            "met": bool(c["events_per_s"] and c["events_per_s"] >= TARGET_EVENTS_PER_S and c["all_stored_every_round"])})
    trained = (result["data"].get("training") or {}).get("status") == "trained"
    if s["A"] and trained:
        a = s["A"]["user_recs"]
        targets.append({"what": "A heavy-user GET recommendations p99, trained model (issue 12)",
                        "value": a["client_p99_ms"], "target": f"<= {TARGET_TRAINED_P99_MS:g} ms",
                        "met": a["client_p99_ms"] is not None and a["client_p99_ms"] <= TARGET_TRAINED_P99_MS})
    mx = next((r.get("M") for r in result["rounds"] if r.get("M")), None)
    if mx:
        p99, rate = mx["recs"].get("p99_ms"), mx["post"].get("events_per_s")
        targets.append({"what": "M heavy-user GET p99 while 1 client posts events (issue 12)",
                        "value": f"{p99} ms at {rate} events/s",
                        "target": f"<= {TARGET_MIXED_P99_MS:g} ms at >= {TARGET_MIXED_EVENTS_PER_S:g} events/s",
                        "met": bool(p99 is not None and rate and p99 <= TARGET_MIXED_P99_MS
                                    and rate >= TARGET_MIXED_EVENTS_PER_S)})
    result["targets"] = targets
    result["load_at_end"] = load_snapshot()
    result["code_at_end"] = code_fingerprint()
    if result["code_at_end"] != result["code"]:
        changed = sorted(k for k in result["code"] if result["code"].get(k) != result["code_at_end"].get(k))
        print(f"[run] [warn] service files changed during the run: {changed}", flush=True)
        result["code_changed_during_run"] = changed
    result["total_s"] = round(time.perf_counter() - t_run, 1)
    print_summary(result)
    write_result(args.out, result)
    print(f"[run] wrote {args.out} ({result['total_s']} s)")
    shutil.rmtree(log_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
