"""Reading the whole event log for the training stage: rows at once against chunks to arrays.

``service.recommend.offline_eval.load_event_log`` is the training stage's first step (and the
fine-tune's). It used to fetch every row as a SQLAlchemy ``Row`` (``.all()``), copy the columns
into Python lists and mark each (user, item)'s first positive event with a Python set of
tuples. It now reads through ``service.store.events.read_events``, which converts
``EVENT_READ_CHUNK`` rows at a time into numpy arrays (one string object per event type, SQLite's
time text parsed by numpy), and finds the first positives with ``np.unique``. This benchmark runs both ways on
one database, each in its own subprocess so that ``ru_maxrss`` is that read's peak alone,
alternating the order over ``--repeats`` rounds, and checks that both give the same log.

    .venv/bin/python -m benchmarks.bench_read_log --db benchmarks/_data/recommend-100000-10000000/recsys.db

Any SQLite file the service wrote will do (``bench_recommend`` and ``bench_scale_recs`` cache
theirs under ``benchmarks/_data``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import REPO, bench_settings, command_line, machine_info, write_result

DEFAULT_OUT = REPO / "benchmarks" / "results" / "read_log.json"
WAYS = ("rows", "chunks")


def rows_at_once(session, settings):
    """The reading before: every Row at once, Python lists, a set of (user, item) tuples."""
    from sqlalchemy import select

    from service.recommend.offline_eval import EventLog
    from service.recommend.ranking import event_weights
    from service.store.models import Event, User, to_seconds

    columns = [Event.user_id, Event.item_id, Event.type, Event.value, Event.occurred_at]
    rows = session.execute(select(*columns).order_by(Event.id)).all()
    names = dict(session.execute(select(User.id, User.external_id)).all())
    users, items, types = [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]
    values, times = [r[3] for r in rows], [to_seconds(r[4]) for r in rows]
    w = event_weights(types, values, settings.event_weights, settings.rating_neutral)
    seen: set[tuple] = set()
    keep = []
    for i, (u, it) in enumerate(zip(users, items)):
        if w[i] > 0 and (u, it) not in seen:
            seen.add((u, it))
            keep.append(i)
    return EventLog(np.asarray(users), np.asarray(items, dtype=np.int64), types, values,
                    np.asarray(times, dtype=np.float64), w, np.asarray(keep, dtype=np.int64), names)


def digest(log) -> str:
    """One hash of every field the training stage uses."""
    h = hashlib.sha256()
    for a in (log.users, log.items, log.times, log.weights, log.positive):
        h.update(np.ascontiguousarray(a).tobytes())
    h.update("\0".join(log.types).encode())
    h.update(repr(log.values).encode())
    return h.hexdigest()[:16]


def child(way: str, db: Path) -> dict[str, Any]:
    from service.recommend.offline_eval import load_event_log
    from service.store.db import make_engine, make_session_factory

    settings = bench_settings(db.parent, database_url=f"sqlite:///{db}")
    factory = make_session_factory(make_engine(settings))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    with factory() as session:
        log = (rows_at_once if way == "rows" else load_event_log)(session, settings)
    wall = time.perf_counter() - t0
    return {"way": way, "events": len(log), "positives": int(len(log.positive)), "wall_s": round(wall, 2),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "peak_rss_before_read_mib": round(base, 1), "digest": digest(log)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--db", type=Path, required=True, help="a SQLite database the service wrote")
    ap.add_argument("--repeats", type=int, default=2, help="rounds, each way once per round (order alternates)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--child", choices=WAYS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.db.resolve())))
        return 0
    runs = []
    for r in range(args.repeats):
        for way in (WAYS if r % 2 == 0 else WAYS[::-1]):
            out = subprocess.run([sys.executable, "-m", "benchmarks.bench_read_log", "--db", str(args.db), "--child", way],
                                 cwd=REPO, capture_output=True, text=True, check=True)
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(json.dumps(runs[-1]), flush=True)
    summary = {}
    for way in WAYS:
        mine = [x for x in runs if x["way"] == way]
        summary[way] = {"wall_s_median": float(np.median([x["wall_s"] for x in mine])),
                        "peak_rss_mib_median": float(np.median([x["peak_rss_mib"] for x in mine]))}
    same = len({x["digest"] for x in runs}) == 1
    summary["same_log"] = same
    summary["ratio_wall"] = round(summary["chunks"]["wall_s_median"] / summary["rows"]["wall_s_median"], 3)
    summary["ratio_peak_rss"] = round(summary["chunks"]["peak_rss_mib_median"] / summary["rows"]["peak_rss_mib_median"], 3)
    print(json.dumps(summary, indent=2))
    write_result(args.out, {"command": command_line(), "machine": machine_info(), "db": str(args.db),
                            "runs": runs, "summary": summary})
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
