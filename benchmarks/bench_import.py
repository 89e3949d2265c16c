"""Event import throughput on SQLite and PostgreSQL.

Generates a catalog of items and an event log (CSV, with client event ids), imports the catalog,
then times ``recsys import events`` code path (``service.store.importing.import_events``) on a fresh,
migrated database per backend and round. Reports the median events/s.

    .venv/bin/python -m benchmarks.bench_import --events 100000 --rounds 3
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

from sqlalchemy import func, select

from benchmarks.common import fresh_database
from service.store.db import make_engine, make_session_factory, upgrade
from service.store.importing import import_events, import_items
from service.store.models import Event
from service.settings import BUILTIN_EVENT_TYPES


def make_files(folder: Path, n_items: int, n_events: int, n_users: int, seed: int = 0) -> tuple[Path, Path]:
    rng = random.Random(seed)
    items = folder / "items.jsonl"
    with open(items, "w") as fh:
        for i in range(n_items):
            fh.write(json.dumps({"id": f"p{i}", "kind": "product", "title": f"Product {i}", "text": "x", "category": f"c{i % 20}"}) + "\n")
    events = folder / "events.csv"
    start = dt.datetime(2026, 1, 1)
    types = ["view"] * 70 + ["click"] * 20 + ["cart"] * 6 + ["purchase"] * 3 + ["rating"]
    with open(events, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["event_id", "user_id", "item_id", "type", "value", "timestamp"])
        for e in range(n_events):
            t = rng.choice(types)
            w.writerow([
                f"e{e}", f"u{rng.randrange(n_users)}", f"p{int(rng.paretovariate(1.2)) % n_items}", t,
                rng.randint(1, 5) if t == "rating" else "", (start + dt.timedelta(seconds=e * 7)).isoformat() + "Z",
            ])
    return items, events


def run(backend: str, items: Path, events: Path, folder: Path, batch_size: int) -> dict:
    url, drop = fresh_database(backend, folder)
    try:
        engine = make_engine(url)
        upgrade(engine)
        factory = make_session_factory(engine)
        import_items(items, session_factory=factory, progress=False)
        t0 = time.perf_counter()
        summary = import_events(events, session_factory=factory, event_types=BUILTIN_EVENT_TYPES,
                                batch_size=batch_size, progress=False)
        seconds = time.perf_counter() - t0
        with factory() as s:
            stored = s.scalar(select(func.count()).select_from(Event))
        engine.dispose()
        assert stored == summary.inserted, (stored, summary.inserted)
        return {"backend": backend, "events": summary.rows, "stored": stored, "seconds": seconds,
                "events_per_s": summary.rows / seconds}
    finally:
        drop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--items", type=int, default=5_000)
    ap.add_argument("--users", type=int, default=2_000)
    ap.add_argument("--batch-size", type=int, default=5_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--out", type=Path, help="write results as JSON")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        items, events = make_files(folder, args.items, args.events, args.users)
        results = []
        # Interleave backends so machine noise hits both alike.
        for r in range(args.rounds):
            for backend in args.backends.split(","):
                res = run(backend, items, events, folder, args.batch_size)
                res["round"] = r
                results.append(res)
                print(f"round {r} {backend:10} {res['events']:>8} events {res['seconds']:6.2f} s "
                      f"{res['events_per_s']:>10,.0f} events/s", flush=True)
    print("\nmedian events/s:")
    summary = {}
    for backend in args.backends.split(","):
        rates = [x["events_per_s"] for x in results if x["backend"] == backend]
        summary[backend] = statistics.median(rates)
        print(f"  {backend:10} {summary[backend]:>10,.0f}")
    if args.out:
        args.out.write_text(json.dumps({"runs": results, "median_events_per_s": summary}, indent=2))


if __name__ == "__main__":
    main()
