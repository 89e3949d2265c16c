"""One search-bar query to a vector, three ways, side by side: ``encode([q])`` (sentence-
transformers' batch machinery), ``encode_query(q)`` (the one-string fast path) and a hit in the
service's query-vector cache.

    python -m benchmarks.bench_query_encode [--queries 200] [--rounds 3] [--threads 1]

Loads the packaged all-MiniLM-L6-v2 on CPU with the service's torch threads per worker
(``torch_threads``, 1 by default) and times every query on each path in turn, so load and clock
drift hit all three alike. Writes ``benchmarks/results/query_encode.json``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from benchmarks.catalog import make_queries
from benchmarks.common import REPO, command_line, load_snapshot, machine_info, stats_ms, write_result

RESULT = REPO / "benchmarks" / "results" / "query_encode.json"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3, help="passes over the queries (each path every pass)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: the torch_threads setting)")
    parser.add_argument("--out", default=str(RESULT))
    args = parser.parse_args(argv)

    import torch

    from service.settings import load_settings
    from service.vectors.query_cache import QueryCache
    from service.vectors.text_encoder import load_text_encoder

    settings = load_settings({"device": "cpu"}, environ={})
    threads = settings.torch_threads if args.threads is None else args.threads
    if threads:
        torch.set_num_threads(threads)
    started = time.perf_counter()
    encoder = load_text_encoder(settings)
    load_s = time.perf_counter() - started
    queries = make_queries(args.queries, set())
    cache = QueryCache(max(settings.query_cache_size, len(queries)))
    cached = cache.wrap("text", encoder, encoder.encode_query)

    for q in queries[:10]:  # torch's first-call setup, off the clock
        encoder.encode([q])
        encoder.encode_query(q)
    worst = 0.0
    for q in queries:  # fills the cache (misses) and checks the paths agree
        worst = max(worst, float(np.abs(cached(q) - encoder.encode([q])[0]).max()))

    times: dict[str, list[float]] = {"encode([q])": [], "encode_query(q)": [], "cache hit": []}
    paths = [
        ("encode([q])", lambda q: encoder.encode([q])),
        ("encode_query(q)", encoder.encode_query),
        ("cache hit", cached),
    ]
    clock = time.perf_counter
    load_before = load_snapshot()
    for r in range(args.rounds):
        for i, q in enumerate(queries):
            order = paths if (i + r) % 2 == 0 else paths[1::-1] + paths[2:]
            for name, fn in order:
                t0 = clock()
                fn(q)
                times[name].append(clock() - t0)
    assert cache.misses == len(queries), "a timed cache call missed"
    load_after = load_snapshot()

    stats = {name: stats_ms(ts) for name, ts in times.items()}
    base = stats["encode([q])"]["p50_ms"]
    for s in stats.values():
        s["p50_ratio_vs_encode"] = round(base / s["p50_ms"], 2) if s["p50_ms"] else None
    fast = stats["encode_query(q)"]
    speedup = {
        "encode_query_vs_encode_p50": round(base / fast["p50_ms"], 3),
        "encode_query_vs_encode_p99": round(stats["encode([q])"]["p99_ms"] / fast["p99_ms"], 3),
        "cache_hit_vs_encode_query_p50": round(fast["p50_ms"] / stats["cache hit"]["p50_ms"], 1),
        "saved_per_query_p50_ms": round(base - fast["p50_ms"], 3),
    }

    print(f"{len(queries)} queries x {args.rounds} rounds, torch threads {torch.get_num_threads()}, "
          f"model load {load_s:.1f}s, max |encode_query - encode| = {worst:g}, "
          f"load average {load_before['loadavg'][0]} -> {load_after['loadavg'][0]}")
    print(f"{'path':<18}{'p50 ms':>10}{'p90 ms':>10}{'p99 ms':>10}{'mean ms':>10}{'p50 x':>9}")
    for name, s in stats.items():
        print(f"{name:<18}{s['p50_ms']:>10.3f}{s['p90_ms']:>10.3f}{s['p99_ms']:>10.3f}{s['mean_ms']:>10.3f}"
              f"{s['p50_ratio_vs_encode']:>9}")
    print("speedup:", speedup)

    result = {
        "benchmark": "query_encode",
        "command": command_line(),
        "machine": machine_info(),
        "model": {"name": encoder.name, "revision": encoder.revision, "device": encoder.device,
                  "max_seq_length": encoder.model.max_seq_length},
        "torch_threads": torch.get_num_threads(),
        "queries": len(queries),
        "rounds": args.rounds,
        "query_examples": queries[:5],
        "load": {"before": load_before, "after": load_after},
        "max_abs_diff_encode_query_vs_encode": worst,
        "paths": stats,
        "speedup": speedup,
    }
    write_result(Path(args.out), result)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
