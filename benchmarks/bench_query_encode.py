"""One search-bar query to a vector, five ways, side by side: ``encode([q])`` (sentence-
transformers' batch machinery), ``encode_query(q)`` (the torch one-string fast path), the
rebuild's ONNX exports in ONNX Runtime (fp32 and int8, ``query_backend``) and a hit in the
service's query-vector cache.

    python -m benchmarks.bench_query_encode [--queries 200] [--rounds 3] [--threads 1]

Loads the packaged all-MiniLM-L6-v2 on CPU with the service's torch threads per worker
(``torch_threads``, 1 by default; ONNX Runtime gets as many intra-op threads), exports the
ONNX query encoders as the rebuild does (``indexer.query_export``) and times every query on each
path in turn, in rotating order, so load and clock drift hit all of them alike. Writes
``benchmarks/results/query_encode.json``.
"""

from __future__ import annotations

import argparse
import tempfile
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

    from indexer.query_export import export_query_encoder
    from service.vectors.onnx_query import load_onnx_query_encoder

    onnx, exports = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for backend in ("onnx", "onnx-int8"):
            t0 = time.perf_counter()
            section = export_query_encoder(encoder, Path(tmp) / backend, backend=backend, probes=queries[:50])
            onnx[backend] = load_onnx_query_encoder(Path(tmp) / backend, threads=threads)
            exports[backend] = {"seconds": round(time.perf_counter() - t0, 2), "agreement": section["agreement"],
                                "model_bytes": (Path(tmp) / backend / "model.onnx").stat().st_size}

    for q in queries[:10]:  # first-call setup, off the clock
        encoder.encode([q])
        encoder.encode_query(q)
        for enc in onnx.values():
            enc.encode_query(q)
    worst = 0.0
    agreement: dict[str, list[float]] = {b: [] for b in onnx}
    for q in queries:  # fills the cache (misses) and checks the paths agree
        ref = encoder.encode([q])[0]
        worst = max(worst, float(np.abs(cached(q) - ref).max()))
        for backend, enc in onnx.items():
            agreement[backend].append(float(enc.encode_query(q) @ ref))

    paths = [
        ("encode([q])", lambda q: encoder.encode([q])),
        ("encode_query(q)", encoder.encode_query),
        ("onnx fp32", onnx["onnx"].encode_query),
        ("onnx int8", onnx["onnx-int8"].encode_query),
        ("cache hit", cached),
    ]
    times: dict[str, list[float]] = {name: [] for name, _fn in paths}
    clock = time.perf_counter
    load_before = load_snapshot()
    for r in range(args.rounds):
        for i, q in enumerate(queries):
            shift = (i + r) % len(paths)
            order = paths[shift:] + paths[:shift]
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
        "onnx_fp32_vs_encode_query_p50": round(fast["p50_ms"] / stats["onnx fp32"]["p50_ms"], 3),
        "onnx_int8_vs_encode_query_p50": round(fast["p50_ms"] / stats["onnx int8"]["p50_ms"], 3),
    }
    cosines = {b: {"min": round(min(c), 6), "mean": round(float(np.mean(c)), 6)} for b, c in agreement.items()}

    print(f"{len(queries)} queries x {args.rounds} rounds, torch threads {torch.get_num_threads()}, "
          f"model load {load_s:.1f}s, max |encode_query - encode| = {worst:g}, "
          f"load average {load_before['loadavg'][0]} -> {load_after['loadavg'][0]}")
    print(f"{'path':<18}{'p50 ms':>10}{'p90 ms':>10}{'p99 ms':>10}{'mean ms':>10}{'p50 x':>9}")
    for name, s in stats.items():
        print(f"{name:<18}{s['p50_ms']:>10.3f}{s['p90_ms']:>10.3f}{s['p99_ms']:>10.3f}{s['mean_ms']:>10.3f}"
              f"{s['p50_ratio_vs_encode']:>9}")
    print("speedup:", speedup)
    print("cosine to encode([q]) over the queries:", cosines)

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
        "onnx_exports": exports,
        "onnx_cosine_to_torch": cosines,
        "speedup": speedup,
    }
    write_result(Path(args.out), result)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
