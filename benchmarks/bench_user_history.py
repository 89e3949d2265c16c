"""A user's history as a recommendation reads it: the index of migration 0007 against the one before.

Every ``GET /users/{id}/recommendations`` reads the user's newest ``history_limit`` events
(``user_history``) and the items of all their events of the excluded types (``consumed_items``).
This benchmark copies a ``bench_recommend`` data folder's database twice: one copy as migrated
(``ix_events_user_history``: every column both reads use, so SQLite answers from the index) and
one taken back to revision 0006 (the old ``(user_id, occurred_at)`` index: each row a lookup into
``events``). It then times both reads for the heavy users with the service's own functions,
alternating the copies over ``--rounds`` rounds, checks that both give the same history and
consumed items, and reports medians. The wider index costs every event write more: each round
also stores ``--batches`` batches of 100 new events in each copy through ``record_events`` and a
commit, as ``POST /events`` does (fresh event ids, existing users and items).

    .venv/bin/python -m benchmarks.bench_user_history --data benchmarks/_data/recommend-100000-10000000
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, command_line, machine_info, write_result

DEFAULT_OUT = REPO / "benchmarks" / "results" / "user_history.json"
COPIES = ("0006 index", "0007 index")


def make_copies(data: Path, folder: Path) -> dict[str, Path]:
    """The data folder's database at this code's head and at revision 0006."""
    from service.store.db import downgrade, make_engine, upgrade

    out = {}
    for name in COPIES:
        dst = folder / f"{name.replace(' ', '-')}.db"
        with sqlite3.connect(data / "recsys.db") as src, sqlite3.connect(dst) as copy:
            src.backup(copy)
        engine = make_engine(f"sqlite:///{dst}")
        upgrade(engine)
        if name == "0006 index":
            downgrade(engine, "0006")
        engine.dispose()
        out[name] = dst
    return out


def time_reads(db: Path, users: list[str], limit: int, types: tuple[str, ...]) -> dict[str, Any]:
    """Each heavy user's history and consumed items, timed one read at a time."""
    from service.store.db import make_engine, make_session_factory
    from service.store.events import consumed_items, user_history

    engine = make_engine(f"sqlite:///{db}")
    factory = make_session_factory(engine)
    hist, cons, answers = [], [], []
    with factory() as session:
        for u in users[:5]:  # warm the page cache and SQLAlchemy's statement cache
            consumed_items(session=session, history=user_history(session=session, external_id=u, limit=limit),
                           types=types)
        for u in users:
            t0 = time.perf_counter()
            h = user_history(session=session, external_id=u, limit=limit)
            t1 = time.perf_counter()
            consumed = consumed_items(session=session, history=h, types=types)
            t2 = time.perf_counter()
            hist.append((t1 - t0) * 1e3)
            cons.append((t2 - t1) * 1e3)
            answers.append((h.item_ids, h.times, sorted(consumed)))
    engine.dispose()
    return {"history_ms": hist, "consumed_ms": cons, "answers": answers}


def time_writes(db: Path, users: list[str], items: list[str], batches: int, tag: str) -> list[float]:
    """``batches`` batches of 100 new events stored as ``POST /events`` stores them, ms each."""
    import random

    from service.store.db import make_engine, make_session_factory
    from service.store.events import record_events
    from service.store.models import utcnow
    from service.store.records import EventRecord

    rng = random.Random(tag)
    engine = make_engine(f"sqlite:///{db}")
    factory = make_session_factory(engine)
    out = []
    for b in range(batches):
        now = utcnow()
        records = [EventRecord(f"{tag}-{b}-{j}", rng.choice(users), rng.choice(items), "view", None, now)
                   for j in range(100)]
        t0 = time.perf_counter()
        with factory() as session:
            assert record_events(session=session, records=records).inserted == 100
            session.commit()
        out.append((time.perf_counter() - t0) * 1e3)
    engine.dispose()
    return out


def main() -> None:
    from service.settings import Settings

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="a bench_recommend data folder")
    ap.add_argument("--rounds", type=int, default=6, help="rounds, alternating the copies (default 6)")
    ap.add_argument("--batches", type=int, default=50, help="batches of 100 events written per copy and round")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()
    settings = Settings()
    with sqlite3.connect(f"file:{args.data / 'recsys.db'}?mode=ro", uri=True) as con:
        users = [r[0] for r in con.execute("SELECT external_id FROM users WHERE external_id LIKE 'heavy-%' ORDER BY 1")]
        writers = [r[0] for r in con.execute(  # never a heavy user: their histories are compared
            "SELECT external_id FROM users WHERE external_id NOT LIKE 'heavy-%' ORDER BY id LIMIT 5000")]
        items = [r[0] for r in con.execute("SELECT external_id FROM items WHERE deleted_at IS NULL ORDER BY id LIMIT 20000")]
        events = con.execute("SELECT max(id) FROM events").fetchone()[0]
    with tempfile.TemporaryDirectory(dir=args.data) as tmp:
        t0 = time.perf_counter()
        copies = make_copies(args.data, Path(tmp))
        print(f"copies made in {time.perf_counter() - t0:.1f} s; {len(users)} heavy users, ~{events:,} events", flush=True)
        samples: dict[str, dict[str, list[float]]] = {n: {"history_ms": [], "consumed_ms": [], "write_100_ms": []}
                                                      for n in COPIES}
        for r in range(args.rounds):
            order = COPIES if r % 2 == 0 else COPIES[::-1]
            got = {}
            for name in order:
                res = time_reads(copies[name], users, settings.history_limit, settings.exclude_seen_types)
                got[name] = res.pop("answers")
                for k, v in res.items():
                    samples[name][k].extend(v)
            assert got[COPIES[0]] == got[COPIES[1]], "the two indexes gave different histories"
            for name in order:  # after the reads: the reads compare the same data
                samples[name]["write_100_ms"].extend(time_writes(copies[name], writers, items, args.batches, f"r{r}"))
            print(f"round {r + 1}/{args.rounds}: " + ", ".join(
                f"{n} history {statistics.median(samples[n]['history_ms']):.2f} ms, "
                f"100 events written {statistics.median(samples[n]['write_100_ms']):.2f} ms" for n in COPIES), flush=True)
    summary = {}
    for name, s in samples.items():
        summary[name] = {k: {"p50": round(statistics.median(v), 3), "p99": round(sorted(v)[int(0.99 * (len(v) - 1))], 3),
                             "n": len(v)} for k, v in s.items()}
        print(f"{name}: history p50 {summary[name]['history_ms']['p50']} p99 {summary[name]['history_ms']['p99']} ms; "
              f"consumed p50 {summary[name]['consumed_ms']['p50']} p99 {summary[name]['consumed_ms']['p99']} ms; "
              f"100 events written p50 {summary[name]['write_100_ms']['p50']} p99 {summary[name]['write_100_ms']['p99']} ms")
    write_result(args.out, {"command": command_line(), "machine": machine_info(), "data": str(args.data),
                            "events": events, "heavy_users": len(users), "rounds": args.rounds, "summary": summary})


if __name__ == "__main__":
    main()
