"""Benchmark the index the indexer would choose for a collection: build time, recall, single-query speed.

    .venv/bin/python -m benchmarks.bench_index --n 1000000 --dim 384 --out benchmarks/out/bench_index.json

Steps: generate structured vectors, ``choose_index`` for the size and budget, ``build_index``
(timed), ``tune_search_params`` to the recall floor (recall@10 on a sample of the collection's
own vectors against exact search), then time single-query ``search`` calls on held-out queries
from the same distribution, and exact search (``IndexFlatIP``) for comparison.

The data: L2-normalised 384-d vectors from 1000 Gaussian clusters ("topics") in a 32-d latent
space, mapped to 384-d by a random linear map, plus isotropic noise (sigma 0.25 per coordinate,
~5% of the energy). Sentence embeddings are like that: concentrated on a low-dimensional,
clustered part of the sphere, with a small spread in every direction. Uniform noise would
instead make all neighbours nearly equidistant, which no ANN index (nor a real encoder)
exhibits, and would misstate both recall and speed. Cluster spreads vary (0.3 to 0.7) so some
topics are tight and some diffuse.

Threads: the build uses every core faiss sees (OpenMP); single-query search uses 1 thread,
because one query gives OpenMP nothing to split and its fork/join costs more than it saves.
A second throughput figure runs that loop in as many Python threads as there are cores, the way
the service's request threads share one index.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
from pathlib import Path

import numpy as np

from indexer.index_build import build_index, tune_search_params
from indexer.index_choice import MIB, choose_index
from service.vectors.vector_index import make_search_params, search

K = 10


def structured_vectors(
    n: int, dim: int, *, seed: int, latent: int = 32, clusters: int = 1000, noise: float = 0.25,
    between: bool = False,
) -> np.ndarray:
    """Return ``n`` unit vectors from the clustered low-rank distribution described above.

    Rows are generated in fixed blocks with per-block seeds, so row ``i`` is the same whatever
    ``n`` is: rows past the collection are held-out queries from the same distribution.
    ``between``: query-like vectors instead (a stream of their own): a point between two topics
    (a random mix of their centres, half the spread), the way short search-bar texts land between
    the catalog's clusters rather than inside one.
    """
    import faiss

    model = np.random.default_rng(seed)
    centres = model.standard_normal((clusters, latent), dtype=np.float32)
    spreads = model.uniform(0.3, 0.7, clusters).astype(np.float32)
    mapping = model.standard_normal((latent, dim), dtype=np.float32) / np.float32(np.sqrt(latent))
    out = np.empty((n, dim), dtype=np.float32)
    block = 100_000
    for start in range(0, n, block):
        rows = min(block, n - start)
        rng = np.random.default_rng([seed, start // block, 1 if between else 0])
        topic = rng.integers(0, clusters, rows)
        if between:
            other = rng.integers(0, clusters, rows)
            mix = rng.uniform(0.3, 0.7, rows).astype(np.float32)[:, None]
            centre = mix * centres[topic] + (1 - mix) * centres[other]
            z = centre + 0.5 * spreads[topic, None] * rng.standard_normal((rows, latent), dtype=np.float32)
        else:
            z = centres[topic] + spreads[topic, None] * rng.standard_normal((rows, latent), dtype=np.float32)
        x = z @ mapping
        x += noise * rng.standard_normal((rows, dim), dtype=np.float32)
        faiss.normalize_L2(x)
        out[start : start + rows] = x
    return out


def time_single_queries(index, queries: np.ndarray, params: dict | None, warmup: int = 50, raw: bool = False) -> dict:
    """Time one ``search`` call per query, sequentially; return QPS and latency percentiles (ms).

    ``raw`` calls ``index.search`` with a prebuilt parameter object instead, to show what the
    wrapper's validation and per-call parameter building cost.
    """
    if raw:
        prebuilt = make_search_params(index, params)
        call = lambda q: index.search(q, K, params=prebuilt)  # noqa: E731
    else:
        call = lambda q: search(index, q, K, params)  # noqa: E731
    for i in range(min(warmup, len(queries))):
        call(queries[i : i + 1])
    latencies = np.empty(len(queries))
    started = time.perf_counter()
    for i in range(len(queries)):
        t0 = time.perf_counter()
        call(queries[i : i + 1])
        latencies[i] = time.perf_counter() - t0
    total = time.perf_counter() - started
    return {
        "queries": len(queries),
        "qps": len(queries) / total,
        "p50_ms": float(np.percentile(latencies, 50) * 1e3),
        "p99_ms": float(np.percentile(latencies, 99) * 1e3),
        "mean_ms": float(latencies.mean() * 1e3),
    }


def concurrent_qps(index, queries: np.ndarray, params: dict | None, threads: int) -> float:
    """Single-query searches from ``threads`` Python threads sharing ``index``: total QPS."""
    parts = np.array_split(np.arange(len(queries)), threads)
    barrier = threading.Barrier(threads + 1)

    def work(rows):
        barrier.wait()
        for i in rows:
            search(index, queries[i : i + 1], K, params)

    pool = [threading.Thread(target=work, args=(rows,)) for rows in parts]
    for t in pool:
        t.start()
    barrier.wait()
    started = time.perf_counter()
    for t in pool:
        t.join()
    return len(queries) / (time.perf_counter() - started)


def heldout_recall(index, data: np.ndarray, queries: np.ndarray, params: dict | None) -> float:
    """Recall@10 on queries that are not in the index (the service's real situation)."""
    import faiss
    from faiss.contrib.evaluation import knn_intersection_measure
    from faiss.contrib.exhaustive_search import knn_ground_truth

    blocks = (data[i : i + 65_536] for i in range(0, len(data), 65_536))
    _, exact = knn_ground_truth(queries, blocks, K, metric_type=faiss.METRIC_INNER_PRODUCT)
    _, approx = search(index, queries, K, params)
    return float(knn_intersection_measure(approx, exact))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="collection size")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--budget-mb", type=float, default=4096.0, help="index memory budget (MiB)")
    parser.add_argument("--queries", type=int, default=2000, help="held-out single-query searches to time")
    parser.add_argument("--exact-queries", type=int, default=200, help="single exact searches to time")
    parser.add_argument("--floor", type=float, default=0.95, help="recall@10 floor for tuning")
    parser.add_argument("--recall-sample", type=int, default=1000, help="queries used to measure recall")
    parser.add_argument("--search-threads", type=int, default=1, help="OpenMP threads for single-query search")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--graph", action="store_true", help="choose_index's prefer_graph: HNSW while it fits")
    parser.add_argument("--ef-construction", type=int, default=None, help="HNSW build beam (default: choose_index's)")
    parser.add_argument("--query-like", action="store_true",
                        help="tune on query-like probes too (between topics) and report their held-out recall")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/bench_index.json"))
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    import faiss

    cores = os.cpu_count() or 1
    build_threads = faiss.omp_get_max_threads()
    load_before = os.getloadavg()
    report: dict = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": {
            "cpu_count": cores,
            "platform": platform.platform(),
            "faiss": faiss.__version__,
            "numpy": np.__version__,
            "loadavg_before": load_before,
        },
        "data": "1000 Gaussian clusters in a 32-d latent space, random linear map to dim, "
        "noise sigma 0.25 per coordinate, L2-normalised",
    }
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731

    t0 = time.perf_counter()
    everything = structured_vectors(args.n + args.queries, args.dim, seed=args.seed)
    data, queries = everything[: args.n], everything[args.n :]
    report["generate_s"] = time.perf_counter() - t0
    log(f"generated {args.n} + {args.queries} x {args.dim} in {report['generate_s']:.1f}s")

    spec = choose_index(args.n, args.dim, args.budget_mb, prefer_graph=args.graph,
                        **({"hnsw_ef_construction": args.ef_construction} if args.ef_construction else {}))
    report["spec"] = {
        "factory_key": spec.factory_key,
        "search_param": spec.search_param,
        "search_start": spec.search_start,
        "search_max": spec.search_max,
        "ef_construction": spec.ef_construction,
        "train_size": spec.train_size,
        "estimated_memory_mib": spec.memory_bytes / MIB,
    }
    log(f"choose_index -> {spec.factory_key} (~{spec.memory_bytes / MIB:.0f} MiB)")

    t0, cpu0 = time.perf_counter(), time.process_time()
    index = build_index(data, spec, progress=not args.no_progress)
    report["build_s"] = time.perf_counter() - t0
    # CPU seconds over all threads: on a shared machine wall time also counts other people's work.
    report["build_cpu_s"] = time.process_time() - cpu0
    report["build_threads"] = build_threads
    log(f"built in {report['build_s']:.1f}s ({report['build_cpu_s']:.0f} CPU s) with {build_threads} threads")

    probes = None
    if args.query_like:
        # As the rebuild does for the text space: the floor must hold on query-like probes too.
        probes = structured_vectors(args.recall_sample, args.dim, seed=args.seed, between=True)
    t0 = time.perf_counter()
    tuned = tune_search_params(index, data, spec, floor=args.floor, sample=args.recall_sample, seed=args.seed,
                               probes=probes)
    report["tune_s"] = time.perf_counter() - t0
    report["tuned_params"] = tuned.params
    report["recall_at_10_self_sample"] = tuned.recall
    report["tune_tried"] = [[p, r] for p, r in tuned.tried]
    log(f"tuned to {tuned.params} recall@10={tuned.recall:.4f} in {report['tune_s']:.1f}s; tried {tuned.tried}")
    report["recall_at_10_probes"] = tuned.recall_probes
    report["recall_at_10_heldout"] = heldout_recall(index, data, queries, tuned.params)
    log(f"held-out recall@10 = {report['recall_at_10_heldout']:.4f}")
    if args.query_like:
        # Held out from tuning: the next rows of the query-like stream.
        between = structured_vectors(args.recall_sample + args.queries, args.dim, seed=args.seed,
                                     between=True)[args.recall_sample :]
        report["recall_at_10_query_like_heldout"] = heldout_recall(index, data, between, tuned.params)
        report["single_query_query_like"] = time_single_queries(index, between, tuned.params)
        log(f"query-like held-out recall@10 = {report['recall_at_10_query_like_heldout']:.4f}, "
            f"{report['single_query_query_like']['qps']:.0f} q/s")

    faiss.omp_set_num_threads(args.search_threads)
    report["search_threads"] = args.search_threads
    report["single_query"] = time_single_queries(index, queries, tuned.params)
    report["single_query"]["concurrent_qps"] = concurrent_qps(index, queries, tuned.params, cores)
    report["single_query"]["concurrent_python_threads"] = cores
    report["single_query_raw_faiss"] = time_single_queries(index, queries, tuned.params, raw=True)
    log(f"approximate single-query: {report['single_query']}")

    exact_index = faiss.IndexFlatIP(args.dim)
    exact_index.add(data)
    exact_queries = queries[: args.exact_queries]
    report["exact_single_query"] = {"threads_1": time_single_queries(exact_index, exact_queries, None, warmup=5)}
    faiss.omp_set_num_threads(build_threads)
    report["exact_single_query"][f"threads_{build_threads}"] = time_single_queries(
        exact_index, exact_queries, None, warmup=5
    )
    del exact_index

    report["machine"]["loadavg_after"] = os.getloadavg()
    report["max_rss_mib"] = _max_rss_mib()

    single, build_s, build_cpu = report["single_query"], report["build_s"], report["build_cpu_s"]
    rows = [
        ("index", spec.factory_key),
        ("estimated index memory", f"{spec.memory_bytes / MIB:.0f} MiB"),
        ("build time", f"{build_s:.1f} s wall, {build_cpu:.0f} CPU s ({build_threads} threads)"),
        ("tuned params", json.dumps(tuned.params)),
        ("recall@10 (own-vector sample)", f"{tuned.recall:.4f}"),
        ("recall@10 (held-out queries)", f"{report['recall_at_10_heldout']:.4f}"),
        *([("recall@10 (query-like probes, tuning)", f"{tuned.recall_probes:.4f}"),
           ("recall@10 (query-like, held out)", f"{report['recall_at_10_query_like_heldout']:.4f}"),
           ("single-query QPS (query-like)", f"{report['single_query_query_like']['qps']:.0f}")]
          if args.query_like else []),
        (f"single-query QPS ({args.search_threads} thread)", f"{single['qps']:.0f}"),
        ("latency p50 / p99", f"{single['p50_ms']:.3f} / {single['p99_ms']:.3f} ms"),
        (f"QPS, {cores} Python threads", f"{single['concurrent_qps']:.0f}"),
        ("QPS, raw index.search", f"{report['single_query_raw_faiss']['qps']:.0f}"),
    ]
    for label, fig in report["exact_single_query"].items():
        rows.append((f"exact QPS ({label.replace('_', ' ')})", f"{fig['qps']:.1f} (p50 {fig['p50_ms']:.1f} ms)"))
    load_after = report["machine"]["loadavg_after"]
    rows.append(("load average before / after", f"{load_before[0]:.1f} / {load_after[0]:.1f}"))
    rows.append(("max RSS", f"{report['max_rss_mib']:.0f} MiB"))
    width = max(len(label) for label, _ in rows)
    print(f"\nbench_index: n={args.n} dim={args.dim} budget={args.budget_mb} MiB")
    for label, value in rows:
        print(f"  {label:<{width}}  {value}")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


def _max_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


if __name__ == "__main__":
    sys.exit(main())
