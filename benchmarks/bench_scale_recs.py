"""Recommendations at scale (issue 12): the rebuild's training stage and a worker's behaviour
memory on a synthetic event log of millions of events over a large catalog.

    .venv/bin/python -m benchmarks.bench_scale_recs --events 1000000 --items 100000
    .venv/bin/python -m benchmarks.bench_scale_recs --events 10000000 --items 100000

Steps (each in its own subprocess, so every peak RSS is that step's alone):

1. ``prepare``: a fresh SQLite database under ``benchmarks/_data/scale-<events>`` (reused when
   its ``prepared.json`` matches): ``--items`` item rows (no text, no index) and ``--events``
   events: Zipf item popularity, a heavy-tailed number of events per user (some users with
   exactly 500), timestamps over the last 90 days (ids increase with time), view/click/purchase.
   Inserted with the sqlite3 module in batches of 50k inside one transaction; the events' two
   secondary indexes are dropped during the insert and recreated after (same SQL).
2. ``train``: :func:`indexer.train.train_model` with the service's default settings and
   ``space=None``: wall time, per-stage time, peak RSS (``ru_maxrss``), the chosen model.
3. ``behaviour``: a worker's start-up, ``BehaviourModel(...).refresh(session, force=True)``
   built as :class:`service.web.runtime.Runtime` builds it, with the default
   ``behaviour_max_events`` and with 1,000,000: wall time, ``ru_maxrss`` and VmRSS after load.
4. ``latency``: :func:`service.recommend.recommender.for_user` in-process (no HTTP) for users
   with 500 events, with an Engine built as ``service/web/recommend.py`` builds it (space None,
   the behaviour snapshot, the trained model of step 2 when it finished): p50/p99.

Results: ``benchmarks/results/scale_recs.json``, one entry per event count (runs of other sizes
are kept).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import DATA_ROOT, PREPARED, REPO, bench_settings, command_line, stats_ms, write_result

RESULT = REPO / "benchmarks" / "results" / "scale_recs.json"
DATA_FORMAT = 1
BATCH = 50_000
DAYS = 90
HEAVY_USERS = 50  # users with exactly 500 events
HEAVY_EVENTS = 500
TYPES = np.array(["view", "click", "purchase"])
TYPE_P = np.array([0.80, 0.15, 0.05])
CATEGORIES = [f"cat{j:02d}" for j in range(40)]
KINDS = ["product", "article", "image"]


def rss_now_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def peak_rss_mib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def sql_time(seconds: np.ndarray) -> list[str]:
    """Unix seconds -> SQLAlchemy's SQLite DateTime text ('YYYY-MM-DD HH:MM:SS.ffffff')."""
    us = (np.asarray(seconds) * 1e6).astype("int64").astype("datetime64[us]")
    return [s.replace("T", " ") for s in np.datetime_as_string(us, unit="us").tolist()]


# =============================================================================================
# 1. Data
# =============================================================================================


def generate(n_events: int, n_items: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Event arrays in time order (user index, item id, type index, time) and the user count."""
    rng = np.random.default_rng(seed)
    # Users: a Pareto-tailed number of events each (median ~8), capped at 2,000; HEAVY_USERS of
    # them with exactly 500. Users are added until the total reaches n_events.
    counts = np.minimum(np.ceil((rng.pareto(1.2, size=n_events // 4 + 100) + 1) * 4), 2000).astype(np.int64)
    counts[:HEAVY_USERS] = HEAVY_EVENTS
    total = np.cumsum(counts)
    n_users = int(np.searchsorted(total, n_events) + 1)
    counts = counts[:n_users]
    counts[-1] -= int(total[n_users - 1] - n_events)
    users = np.repeat(np.arange(n_users, dtype=np.int64), counts)
    # Items: Zipf popularity (exponent 1.0) over a random permutation of the ids.
    ranks = np.arange(1, n_items + 1, dtype=np.float64)
    p = 1.0 / ranks
    p /= p.sum()
    popular = rng.permutation(n_items).astype(np.int64) + 1  # item ids 1..n_items
    items = popular[rng.choice(n_items, size=n_events, p=p)]
    types = rng.choice(len(TYPES), size=n_events, p=TYPE_P).astype(np.int8)
    end = time.time() - 60
    times = end - rng.random(n_events) * DAYS * 86400
    order = np.argsort(times, kind="stable")
    return {"users": users[order], "items": items[order], "types": types[order], "times": times[order],
            "n_users": np.int64(n_users), "end": np.float64(end)}


def prepare(args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    from service.store.db import make_engine, upgrade

    data_dir = DATA_ROOT / f"scale-{args.events}"
    marker = data_dir / PREPARED
    wanted = {"format": DATA_FORMAT, "items": args.items, "events": args.events}
    if marker.is_file() and not args.rebuild_data:
        info = json.loads(marker.read_text())
        if all(info.get(k) == v for k, v in wanted.items()):
            print(f"[data] reusing {data_dir} (prepared {info['prepared_at']})", flush=True)
            return data_dir, {**info, "reused": True}
    if data_dir.exists():
        import shutil

        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True)
    settings = bench_settings(data_dir)
    engine = make_engine(settings)
    upgrade(engine)
    engine.dispose()
    db = data_dir / "recsys.db"
    info: dict[str, Any] = {**wanted}
    t_all = time.perf_counter()
    t0 = time.perf_counter()
    g = generate(args.events, args.items)
    info["generate_s"] = round(time.perf_counter() - t0, 2)
    n_users = int(g["n_users"])
    per_user = np.bincount(g["users"], minlength=n_users)
    info["users"] = n_users
    info["events_per_user"] = {"median": float(np.median(per_user)), "p90": float(np.percentile(per_user, 90)),
                               "p99": float(np.percentile(per_user, 99)), "max": int(per_user.max()),
                               "users_with_500": int((per_user == HEAVY_EVENTS).sum())}
    item_counts = np.bincount(g["items"], minlength=args.items + 1)[1:]
    top = np.sort(item_counts)[::-1]
    info["items_with_events"] = int((item_counts > 0).sum())
    info["top_1pct_items_share"] = round(float(top[: max(1, args.items // 100)].sum() / args.events), 3)
    info["types"] = {str(t): int((g["types"] == j).sum()) for j, t in enumerate(TYPES)}

    con = sqlite3.connect(str(db))
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=OFF")
    con.execute("PRAGMA cache_size=-1000000")
    indexes = [(name, sql) for name, sql in con.execute(
        "SELECT name, sql FROM sqlite_master WHERE type='index' AND tbl_name='events' AND sql IS NOT NULL")]
    t0 = time.perf_counter()
    con.execute("BEGIN")
    now_text = sql_time(np.array([g["end"]]))[0]
    rng = np.random.default_rng(1)
    cats = rng.integers(0, len(CATEGORIES), size=args.items)
    kinds = rng.integers(0, len(KINDS), size=args.items)
    con.executemany(
        "INSERT INTO items (id, external_id, kind, title, text, image_location, category, tags, attributes, "
        "content_hash, created_at, updated_at, deleted_at) VALUES (?, ?, ?, ?, '', NULL, ?, '[]', '{}', ?, ?, ?, NULL)",
        ((i + 1, f"item-{i + 1}", KINDS[kinds[i]], f"Item {i + 1}", CATEGORIES[cats[i]], f"{i + 1:064x}",
          now_text, now_text) for i in range(args.items)))
    con.executemany("INSERT INTO users (id, external_id, created_at) VALUES (?, ?, ?)",
                    ((u + 1, f"user-{u + 1}", now_text) for u in range(n_users)))
    info["items_users_insert_s"] = round(time.perf_counter() - t0, 2)
    for name, _sql in indexes:
        con.execute(f'DROP INDEX "{name}"')
    t0 = time.perf_counter()
    type_names = TYPES.tolist()
    for start in range(0, args.events, BATCH):
        stop = min(start + BATCH, args.events)
        stamps = sql_time(g["times"][start:stop])
        u = (g["users"][start:stop] + 1).tolist()
        it = g["items"][start:stop].tolist()
        ty = g["types"][start:stop].tolist()
        con.executemany(
            "INSERT INTO events (id, client_event_id, user_id, item_id, type, value, occurred_at, "
            "recommendation_id) VALUES (?, ?, ?, ?, ?, NULL, ?, NULL)",
            ((start + j + 1, f"e{start + j + 1}", u[j], it[j], type_names[ty[j]], stamps[j])
             for j in range(stop - start)))
        if (start // BATCH) % 20 == 0:
            print(f"[data] {stop:,} / {args.events:,} events ({time.perf_counter() - t0:.0f} s)", flush=True)
    info["events_insert_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    for _name, sql in indexes:
        con.execute(sql)
    info["events_index_s"] = round(time.perf_counter() - t0, 2)
    con.execute("COMMIT")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.execute("ANALYZE")
    con.close()
    info["db_bytes"] = db.stat().st_size
    info["prepare_s"] = round(time.perf_counter() - t_all, 2)
    info["prepared_at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    info["heavy_user_ids"] = [f"user-{u + 1}" for u in range(HEAVY_USERS)]
    marker.write_text(json.dumps(info, indent=2))
    print(f"[data] {args.events:,} events, {n_users:,} users, {args.items:,} items in {info['prepare_s']} s "
          f"({info['db_bytes'] / 2**20:.0f} MiB)", flush=True)
    return data_dir, {**info, "reused": False}


# =============================================================================================
# 2-4. Children (one step each, JSON on stdout's last line)
# =============================================================================================


def child_train(data_dir: Path) -> dict[str, Any]:
    import shutil

    import indexer.train as train
    from service.recommend import collab
    from service.store.db import make_engine, make_session_factory

    settings = bench_settings(data_dir)
    factory = make_session_factory(make_engine(settings))
    building = data_dir / "train"
    if building.exists():
        shutil.rmtree(building)
    building.mkdir()
    stages: dict[str, float] = {}
    rss_after: dict[str, float] = {}

    def timed(name, fn):
        def wrapper(*a, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                stages[name] = round(stages.get(name, 0.0) + time.perf_counter() - t0, 2)
                rss_after[name] = rss_now_mib()
                progress()
        return wrapper

    for name in ("read_log", "sample_split", "Evaluator", "choose_model", "choose_blend", "candidate_groups",
                 "choose_ranker", "score_recipe"):
        setattr(train, name, timed(name, getattr(train, name)))
    fits: list[dict] = []

    def progress():  # what is known so far, for a run cut short by the timeout
        (data_dir / "train_progress.json").write_text(json.dumps(
            {"stages_s": stages, "rss_after_stage_mib": rss_after, "fits": fits, "peak_rss_mib": peak_rss_mib(),
             "elapsed_s": round(time.perf_counter() - t_start, 1)}, default=str))

    t_start = time.perf_counter()

    def fit(family, data, **params):
        t0 = time.perf_counter()
        model = collab.fit(family, data, **params)
        fits.append({"family": family, "params": params, "s": round(time.perf_counter() - t0, 2),
                     "rss_mib": rss_now_mib()})
        progress()
        return model

    t0 = time.perf_counter()
    result = train.train_model(settings, factory, building, space=None, published=None, fit=fit)
    wall = time.perf_counter() - t0
    s = result.section
    out = {"wall_s": round(wall, 2), "peak_rss_mib": peak_rss_mib(), "stages_s": stages, "rss_after_stage_mib": rss_after,
           "fits": fits, "status": s.get("status"), "reason": s.get("reason"), "events": s.get("events"),
           "interactions": s.get("interactions")}
    if s.get("status") == "trained":
        out.update(family=s["family"], params=s["params"], blend=s["blend"], ranker_used=s["ranker"].get("used"),
                   model_bytes=s["bytes"], model_items=s["model_items"], users=s["users"], items=s["items"],
                   test_ndcg=s["metrics"]["model"].get("ndcg"),
                   test_ndcg_without_model=s["metrics"]["without_model"].get("ndcg"),
                   candidates=[{k: r[k] for k in ("family", "params", "ndcg", "fit_seconds", "bytes")}
                               for r in s["validation"]["candidates"]])
        (building / "section.json").write_text(json.dumps(s, indent=2, default=str))
    return out


def make_behaviour(settings, max_events: int):
    from service.recommend.behaviour import BehaviourModel

    return BehaviourModel.from_settings(settings, max_events=max_events)


def child_behaviour(data_dir: Path, max_events: int | None) -> dict[str, Any]:
    from service.store.db import make_engine, make_session_factory

    settings = bench_settings(data_dir)
    max_events = max_events or settings.behaviour_max_events
    factory = make_session_factory(make_engine(settings))
    rss0 = rss_now_mib()
    model = make_behaviour(settings, max_events)
    t0 = time.perf_counter()
    with factory() as session:
        model.refresh(session, force=True)
    wall = time.perf_counter() - t0
    return {"max_events": max_events, "held_events": model.event_count, "startup_s": round(wall, 2),
            "snapshot_build_s": round(model._build_seconds, 2), "rss_before_mib": rss0,
            "rss_after_mib": rss_now_mib(), "peak_rss_mib": peak_rss_mib()}


def child_latency(data_dir: Path, calls: int) -> dict[str, Any]:
    from service.recommend import collab
    from service.recommend.learned_rank import Ranker
    from service.recommend.recommender import Engine, for_user
    from service.store.db import make_engine, make_session_factory

    settings = bench_settings(data_dir)
    factory = make_session_factory(make_engine(settings))
    behaviour = make_behaviour(settings, settings.behaviour_max_events)
    with factory() as session:
        behaviour.refresh(session, force=True)
    model = blend = ranker = touched = None
    section_path = data_dir / "train" / "section.json"
    used_model = None
    if section_path.is_file():
        section = json.loads(section_path.read_text())
        folder = data_dir / "train" / collab.MODEL_DIR
        model = collab.load_model(folder, section["family"], dict(section["params"]))
        blend = dict(section["blend"])
        touched = collab.load_touched(folder)
        if (section.get("ranker") or {}).get("used"):
            ranker = Ranker.load(folder, section["ranker"])
        used_model = {"family": section["family"], "ranker": ranker is not None}
    s = settings
    engine = Engine(None, None, behaviour.snapshot, trending_window_days=s.trending_window_days,
                    trending_half_life_days=s.trending_half_life_days, candidates_per_source=s.candidates_per_source,
                    model=model, blend=blend, ranker=ranker, touched=touched)
    users = [f"user-{u + 1}" for u in range(HEAVY_USERS)]
    for u in users[:5]:  # warm-up
        with factory() as session:
            for_user(engine, session=session, settings=s, user_id=u, now=time.time())
    seconds, sizes = [], []
    t_all = time.perf_counter()
    for j in range(calls):
        t0 = time.perf_counter()
        with factory() as session:
            answer = for_user(engine, session=session, settings=s, user_id=users[j % len(users)], now=time.time())
        seconds.append(time.perf_counter() - t0)
        sizes.append(len(answer.recs) if hasattr(answer, "recs") else None)
    return {"calls": calls, "model": used_model, "for_user": stats_ms(seconds, time.perf_counter() - t_all),
            "rss_mib": rss_now_mib(), "answer_sizes": sorted(set(x for x in sizes if x is not None))}


def run_child(args: argparse.Namespace, step: str, extra: list[str], timeout: float) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.bench_scale_recs", "--child", step, "--events", str(args.events),
           "--items", str(args.items), *extra]
    print(f"[{step}] {' '.join(extra)} ...", flush=True)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        out = {"error": f"timed out after {timeout:.0f} s", "wall_s": round(time.perf_counter() - t0, 1)}
        partial = DATA_ROOT / f"scale-{args.events}" / f"{step}_progress.json"
        if partial.is_file() and partial.stat().st_mtime > time.time() - timeout - 5:
            out["progress_at_timeout"] = json.loads(partial.read_text())
        # subprocess.run killed and reaped the child: its peak is in RUSAGE_CHILDREN (a maximum
        # over every child so far; the steps before are smaller)
        out["children_maxrss_mib"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)
        print(f"[{step}] {out}", flush=True)
        return out
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        out = {"error": f"exit {proc.returncode}", "stderr_tail": proc.stderr[-2000:]}
    else:
        out = json.loads(lines[-1][len("RESULT "):])
    out["children_maxrss_mib"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)
    print(f"[{step}] {json.dumps(out)[:1500]}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--steps", default="prepare,behaviour,train,latency")
    ap.add_argument("--train-timeout", type=float, default=1800)
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--rebuild-data", action="store_true")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--max-events", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    data_dir = DATA_ROOT / f"scale-{args.events}"
    if args.child:
        import logging

        logging.basicConfig(level=logging.WARNING, filename=str(data_dir / f"{args.child}.log"), filemode="w")
        logging.getLogger("recsys.train").setLevel(logging.INFO)
        fn = {"train": lambda: child_train(data_dir),
              "behaviour": lambda: child_behaviour(data_dir, args.max_events),
              "latency": lambda: child_latency(data_dir, args.calls)}[args.child]
        print("RESULT " + json.dumps(fn(), default=str), flush=True)
        return

    steps = args.steps.split(",")
    results = json.loads(RESULT.read_text()) if RESULT.is_file() else {"runs": {}}
    entry = results["runs"].get(str(args.events), {})
    entry["command"] = command_line()
    entry["date"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    entry["machine"] = {"cpu_count": os.cpu_count(), "gpu": None, "database": "SQLite (WAL)",
                        "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)}

    def save():  # re-read first: a run of another size may have written meanwhile
        latest = json.loads(RESULT.read_text()) if RESULT.is_file() else {"runs": {}}
        latest["runs"][str(args.events)] = entry
        write_result(RESULT, latest)

    if "prepare" in steps:
        _, entry["data"] = prepare(args)
        save()
    if "behaviour" in steps:
        entry["behaviour_startup"] = [run_child(args, "behaviour", [], 900),
                                      run_child(args, "behaviour", ["--max-events", "1000000"], 900)]
        save()
    if "train" in steps:
        entry["train"] = run_child(args, "train", [], args.train_timeout)
        save()
    if "latency" in steps:
        entry["latency"] = run_child(args, "latency", ["--calls", str(args.calls)], 900)
        save()

    print("\n== summary", args.events, "events ==")
    for b in entry.get("behaviour_startup", []):
        print(f"behaviour start-up max_events={b.get('max_events')}: {b.get('startup_s')} s, held {b.get('held_events')}, "
              f"RSS {b.get('rss_after_mib')} MiB (peak {b.get('peak_rss_mib')} MiB) {b.get('error', '')}")
    t = entry.get("train")
    if t:
        print(f"train: {t.get('wall_s')} s, peak RSS {t.get('peak_rss_mib')} MiB, {t.get('family')} {t.get('params')} "
              f"model {t.get('model_bytes')} B, stages {t.get('stages_s')} {t.get('error', '')}")
    lat = entry.get("latency")
    if lat:
        print(f"for_user (500-event users): {lat.get('for_user')} model {lat.get('model')} {lat.get('error', '')}")


if __name__ == "__main__":
    main()
