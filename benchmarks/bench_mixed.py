"""Recommendations while another client posts events: settings side by side (issue 12).

Issue 12's target: ``GET /users/{id}/recommendations`` p99 <= 50 ms for a 500-event user while
another client posts 4,000 events/s. ``bench_recommend``'s phase M measures it once, at the end of
its last round, with the poster as fast as the server takes it, and its two keep-alive
connections land on whichever gunicorn workers accept them. This benchmark measures only that,
on a ``bench_recommend`` data folder, so that settings can be compared in one run:

* an **arm** is a set of ``RECSYS_*`` settings (``--arm name:VAR=value,VAR=value``; the default
  compares ``background_niceness`` 0 and 10), and optionally ``DB_REVISION=<rev>``: its copy of
  the database is taken back to that migration (to compare a schema change). Every round starts
  gunicorn once per arm, on a fresh copy of the database, in an order that alternates between
  rounds;
* per server, the mixed run is repeated for each **placement** of the two connections (the reader
  and the poster on different workers, then on the same worker: each worker is one Python
  process, so the second shares its GIL and its request threads) and each **posting rate**
  (``--rates``, events/s in batches of ``--batch-size``; 0 = as fast as the server answers);
* the reader asks the heavy users' recommendations (``k=10``) one after the other, the poster
  posts fresh events on its schedule; afterwards every accepted event is counted in SQLite.

    .venv/bin/python -m benchmarks.bench_mixed --data benchmarks/_data/recommend-100000-10000000

Reported per arm, placement and rate: the reader's p50/p99 (medians over rounds) and max, the
events/s achieved, and the CPU other processes took meanwhile; per arm, the full garbage
collections over 100 ms its workers logged (``service.heap``), start-up included.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import statistics
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.bench_recommend import (RecServer, count_stored, fresh_copy, lat_stats, make_event_batches,
                                        make_requests, migrate_cached, warm_up, workload_ids)
from benchmarks.common import REPO, CpuMeter, command_line, machine_info, write_result
from benchmarks.server import Client, Server, settle

DEFAULT_OUT = REPO / "benchmarks" / "results" / "mixed.json"
DEFAULT_ARMS = ("niceness-0:RECSYS_BACKGROUND_NICENESS=0", "niceness-10:RECSYS_BACKGROUND_NICENESS=10")
PLACEMENTS = ("different", "same")


def parse_arm(text: str) -> tuple[str, dict[str, str]]:
    """``name:VAR=value,VAR=value`` -> (name, environment; ``DB_REVISION`` is kept there too)."""
    name, _, rest = text.partition(":")
    env = {}
    for part in filter(None, rest.split(",")):
        key, sep, value = part.partition("=")
        if not sep or not (key.startswith("RECSYS_") or key == "DB_REVISION"):
            raise SystemExit(f"--arm {text!r}: expected name:RECSYS_VAR=value,... or DB_REVISION=<rev>")
        env[key] = value
    return name, env


def connections(server: Server, placement: str) -> tuple[Client, Client, list[int]]:
    """(reader, poster, their workers): keep-alive connections held by two different workers
    (``Server.clients_per_worker``), or by the same one."""
    if placement == "different":
        found = list(server.clients_per_worker(count=64).items())
        if len(found) >= 2:
            (pid_a, reader), (pid_b, poster) = found[:2]
            return reader, poster, [pid_a, pid_b]
        for _pid, c in found:
            c.close()
        raise RuntimeError("could not place the two connections on different workers")
    opened: list[tuple[int | None, Client]] = []
    try:
        for _ in range(64):
            c = Client(server.port)
            c._connect()
            time.sleep(0.01)
            pid = server.worker_of(c)
            twin = next((o for p, o in opened if p is not None and p == pid), None)
            if twin is not None:
                opened.remove((pid, twin))
                return twin, c, [pid, pid]
            opened.append((pid, c))
        raise RuntimeError("could not place the two connections on the same worker")
    finally:
        for _pid, c in opened:
            c.close()


def run_mixed(server: Server, db: Path, reqs: list, bodies: list[bytes], placement: str, rate: float,
              duration: float, prefix: str, batch_size: int) -> dict[str, Any]:
    """The reader for ``duration`` s while the poster posts at ``rate`` events/s (0: unpaced)."""
    reader, poster, workers = connections(server, placement)
    stop = threading.Event()
    post_lat: list[float] = []
    posted = {"accepted": 0, "batches": 0, "errors": 0, "behind_s": 0.0}

    def post() -> None:
        interval = batch_size / rate if rate > 0 else 0.0
        t0 = time.perf_counter()
        for i, body in enumerate(bodies):
            if stop.is_set():
                break
            due = t0 + i * interval
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            elif interval:
                posted["behind_s"] = max(posted["behind_s"], -wait)
            status, _h, data, dt_s = poster.request("POST", "/events", body)
            if status == 200:
                post_lat.append(dt_s)
                posted["accepted"] += batch_size
                posted["batches"] += 1
            else:
                posted["errors"] += 1
        posted["wall_s"] = time.perf_counter() - t0

    meter = CpuMeter()
    thread = threading.Thread(target=post, daemon=True)
    thread.start()
    time.sleep(0.5)  # the stream is going before the first timed read
    lat: list[float] = []
    errors = 0
    t0 = time.perf_counter()
    i = 0
    while time.perf_counter() - t0 < duration:
        method, path, body = reqs[i % len(reqs)]
        status, _h, _data, dt_s = reader.request(method, path, body)
        i += 1
        if status == 200:
            lat.append(dt_s)
        else:
            errors += 1
    stop.set()
    thread.join(timeout=120)
    cpu = meter.stop()
    reader.close()
    poster.close()
    stored = count_stored(db, prefix)
    wall = posted.get("wall_s") or duration
    return {
        "placement": placement, "rate_asked": rate, "workers": workers, "reads": lat_stats(lat), "read_errors": errors,
        "events_per_s": round(posted["accepted"] / wall, 1), "post_errors": posted["errors"],
        "post_batch": lat_stats(post_lat), "poster_behind_s_max": round(posted["behind_s"], 3),
        "accepted": posted["accepted"], "stored": stored, "all_stored": stored == posted["accepted"],
        "cpu": cpu,
    }


def run_arm(name: str, env: dict[str, str], args: argparse.Namespace, ids: dict[str, Any], r: int,
            log_dir: Path) -> dict[str, Any]:
    run_dir = args.data / "run"
    db = fresh_copy(args.data, run_dir)
    env = dict(env)
    revision = env.pop("DB_REVISION", None)
    if revision is not None:
        from service.store.db import downgrade, make_engine

        engine = make_engine(f"sqlite:///{db}")
        downgrade(engine, revision)
        engine.dispose()
    server = RecServer(run_dir, args.data / "indexes", log_dir, extra_env=env)
    out: dict[str, Any] = {"arm": name, "env": env, "db_revision": revision, "round": r + 1, "runs": []}
    reqs = make_requests(ids, 200, seed=1000 + r, tag=f"mixed-{name}-r{r}")
    try:
        server.start()
        out["ready_s"] = server.ready_s
        warm_up(server, make_requests(ids, 5, seed=5000 + r, tag=f"mixed-w-{name}-r{r}"), 5)
        out["settled_s"] = settle(server.worker_pids(), timeout=120.0, cores=0.05)
        k = 0
        for placement in PLACEMENTS:
            for rate in args.rates:
                prefix = f"mixed-{name}-r{r}-{k}-"
                n_batches = int((args.duration + 5) * (rate or 20_000) / args.batch_size) + 1
                bodies = make_event_batches(ids, n_batches, args.batch_size, prefix, seed=100 * r + k)
                res = run_mixed(server, db, reqs["user_recs"], bodies, placement, rate, args.duration, prefix,
                                args.batch_size)
                out["runs"].append(res)
                rd = res["reads"]
                print(f"  [{name} r{r + 1}] {placement:<9} rate {rate or 'max':>5}: reads p50 {rd.get('p50_ms')} "
                      f"p99 {rd.get('p99_ms')} max {rd.get('max_ms')} ms (n {rd.get('n')}), posted {res['events_per_s']} events/s "
                      f"(all stored: {res['all_stored']}), others {res['cpu']['others_cores']} cores", flush=True)
                k += 1
                time.sleep(args.pause)  # the workers fold the last events in before the next run
    finally:
        server.stop()
        with contextlib.suppress(OSError):
            text = server.log_path.read_text(errors="replace")
            out["log_tail"] = text[-1500:]
            # The workers' own account of their pauses (service.heap): full collections over 100 ms.
            out["slow_full_collections_ms"] = [int(m) for m in re.findall(r"full garbage collection paused this worker for (\d+) ms", text)]
    return out


def summarise(arms: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Medians over rounds per (arm, placement, rate)."""
    groups: dict[tuple, list[dict]] = {}
    for a in arms:
        for run in a["runs"]:
            groups.setdefault((a["arm"], run["placement"], run["rate_asked"]), []).append(run)
    rows = []
    for (arm, placement, rate), runs in groups.items():
        med = lambda f: round(statistics.median(f(x) for x in runs), 2)  # noqa: E731
        rows.append({"arm": arm, "placement": placement, "rate_asked": rate, "rounds": len(runs),
                     "p50_ms": med(lambda x: x["reads"]["p50_ms"]), "p99_ms": med(lambda x: x["reads"]["p99_ms"]),
                     "max_ms": med(lambda x: x["reads"]["max_ms"]),
                     "max_ms_rounds": [x["reads"]["max_ms"] for x in runs],
                     "p99_ms_rounds": [x["reads"]["p99_ms"] for x in runs],
                     "events_per_s": med(lambda x: x["events_per_s"]),
                     "others_cores": med(lambda x: x["cpu"]["others_cores"]),
                     "all_stored": all(x["all_stored"] for x in runs)})
    for row in rows:
        row["slow_full_collections_ms"] = [ms for a in arms if a["arm"] == row["arm"] for ms in a.get("slow_full_collections_ms", [])]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="a bench_recommend data folder")
    ap.add_argument("--arm", action="append", help=f"name:RECSYS_VAR=value,... (default {' and '.join(DEFAULT_ARMS)})")
    ap.add_argument("--rates", default="4000,0", help="events/s to post, 0 = unpaced (default 4000,0)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=20.0, help="seconds of reads per run (default 20)")
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--pause", type=float, default=5.0, help="seconds between runs (default 5)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()
    args.rates = [float(x) for x in args.rates.split(",")]
    arms = [parse_arm(a) for a in (args.arm or DEFAULT_ARMS)]
    migrated = migrate_cached(args.data)
    ids = workload_ids(args.data / "recsys.db")
    log_dir = REPO / "benchmarks" / "out" / "mixed"
    results = []
    for r in range(args.rounds):
        order = arms if r % 2 == 0 else arms[::-1]
        for name, env in order:
            print(f"[round {r + 1}/{args.rounds}] arm {name} {env}", flush=True)
            results.append(run_arm(name, env, args, ids, r, log_dir))
    summary = summarise(results)
    for row in summary:
        print(f"{row['arm']:<14} {row['placement']:<9} rate {row['rate_asked'] or 'max':>6}: p50 {row['p50_ms']} "
              f"p99 {row['p99_ms']} ms {row['p99_ms_rounds']} max {row['max_ms_rounds']} at {row['events_per_s']} events/s; "
              f"slow full collections {row['slow_full_collections_ms']}; "
              f"others {row['others_cores']} cores; all stored {row['all_stored']}", flush=True)
    write_result(args.out, {"command": command_line(), "machine": machine_info(), "data": str(args.data),
                            "migrated": migrated,
                            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                            "summary": summary, "arms": results})


if __name__ == "__main__":
    main()
