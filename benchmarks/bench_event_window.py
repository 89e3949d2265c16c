"""A worker's first behaviour load: the newest events from SQL against the version's event window.

A worker starts its behaviour model (co-engagement, trending, popular) from the newest
``behaviour_max_events`` events. It used to read them all from SQL. The training stage now also
writes them into the version (``service.recommend.event_window``), and a worker loads that file,
checks a few rows against the database and reads only newer events from SQL. This benchmark runs
the worker's own first load (``BehaviourModel.refresh`` as ``create_app`` calls it, with
``Runtime.event_window`` as the window source, or without one) on a data folder whose published
version has a window, alternating the order over ``--repeats`` rounds, and checks that both ways
build the same snapshot.

    .venv/bin/python -m benchmarks.bench_event_window --data benchmarks/_data/recommend-100000-1000000

The data folder is one ``bench_recommend`` prepared (its training stage writes the window).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import REPO, bench_settings, command_line, machine_info, write_result

DEFAULT_OUT = REPO / "benchmarks" / "results" / "event_window.json"
WAYS = ("sql", "window")


def first_load(rt, way: str):
    """One worker's first behaviour load, timed: (seconds, the model)."""
    from service.recommend.behaviour import BehaviourModel

    source = rt.event_window if way == "window" else None
    model = BehaviourModel.from_settings(rt.settings, window_source=source)
    started = time.perf_counter()
    with rt.session_factory() as session:
        model.refresh(session, force=True)
    return time.perf_counter() - started, model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="a bench_recommend data folder")
    ap.add_argument("--repeats", type=int, default=5, help="rounds, each way once per round (default 5)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()

    from service.web.runtime import Runtime

    rt = Runtime(bench_settings(args.data))
    rt.store.update()
    version = rt.store.current
    if version is None or not (version.manifest.get("behaviour") or {}).get("window"):
        raise SystemExit(f"{args.data}: the published version has no event window (run `recsys-indexer train`)")
    seconds: dict[str, list[float]] = {w: [] for w in WAYS}
    for r in range(args.repeats):
        order = WAYS if r % 2 == 0 else WAYS[::-1]
        models = {}
        for way in order:
            took, models[way] = first_load(rt, way)
            seconds[way].append(took)
            print(f"round {r + 1}: {way:6s} {took:6.2f} s ({models[way].event_count} events)", flush=True)
        a, b = models["sql"].snapshot, models["window"].snapshot
        assert a.event_count == b.event_count and np.array_equal(a.item_ids, b.item_ids)
        assert np.array_equal(a.popularity, b.popularity) and (a.iu != b.iu).nnz == 0
    med = {w: statistics.median(s) for w, s in seconds.items()}
    result: dict[str, Any] = {
        "command": command_line(), "machine": machine_info(), "version": version.name,
        "window": version.manifest["behaviour"]["window"], "seconds": seconds, "median_s": med,
        "ratio_window_over_sql": med["window"] / med["sql"],
    }
    print(f"median first load: SQL {med['sql']:.2f} s, window {med['window']:.2f} s "
          f"(x{result['ratio_window_over_sql']:.2f}); same snapshot both ways", flush=True)
    write_result(args.out, result)


if __name__ == "__main__":
    main()
