"""What the soft-maximum content scoring costs per recommendation, against the mean profile.

``ranking.PROFILE_WAYS``: the mean profile searches the index once per request; a soft maximum
(``pow3``, ``pow8``: the same searches, another power) searches once per liked item, for the
heaviest ``profile_max_seeds`` of them (the setting; ``--max-seeds`` tries several), in one batch. This times the content source exactly as ``gather`` calls it
(``recommender._profile_scores``) for users with ``--history`` liked items (all excluded, as
consumed), over the index the rebuild would choose and tune for ``--n`` vectors (``choose_index``
with the default budget, ``tune_search_params`` to the 0.95 floor), FAISS on one thread (the
service's ``faiss_threads`` default), the ways interleaved user by user. Vectors are
``bench_index.structured_vectors`` (clustered, 384-d): the cost depends on the index and the
count, not on what the vectors mean.

    .venv/bin/python -m benchmarks.bench_profile_ways [--n 20000,100000] [--users 200] [--history 500] \
        [--max-seeds 8,16,32]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import service  # noqa: E402,F401  (installs the torchvision hook first)
import numpy as np  # noqa: E402

from benchmarks.bench_index import structured_vectors  # noqa: E402
from benchmarks.common import REPO  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "profile_ways.json"


def loaded_space(n: int, dim: int, seed: int):
    """The index the rebuild would build for ``n`` vectors, tuned as it tunes, as a served space."""
    import faiss

    from indexer.index_build import build_index, tune_search_params
    from indexer.index_choice import choose_index
    from service.vectors.index_store import LoadedSpace

    vectors = structured_vectors(n, dim, seed=seed)
    spec = choose_index(n, dim, 4096.0)
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    index = build_index(vectors, spec, progress=False)
    tuned = tune_search_params(index, vectors, spec, floor=0.95, sample=500, seed=seed)
    faiss.omp_set_num_threads(1)
    ids = np.arange(1, n + 1, dtype=np.int64)
    space = LoadedSpace("text", index, ids, vectors, dict(tuned.params),
                        {"name": "bench", "revision": "r", "dim": dim})
    return space, spec.factory_key, dict(tuned.params)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", default="20000,100000", help="catalog sizes, comma-separated")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--users", type=int, default=200)
    ap.add_argument("--history", type=int, default=500, help="liked items per user (all excluded as consumed)")
    ap.add_argument("--max-seeds", default="8,16,32", help="profile_max_seeds values to time pow8 with")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    from service.recommend.behaviour import Snapshot
    from service.recommend.ranking import PROFILE_WAYS
    from service.recommend.recommender import Engine, Seeds, _profile_scores, make_ask
    from service.settings import load_settings

    settings = load_settings({"data_dir": "/tmp/bench-profile-ways"}, environ={})
    empty = Snapshot(np.array([], dtype=np.int64), np.array([], dtype=np.int64), np.array([]), np.array([]))
    rng = np.random.default_rng(args.seed)
    result = {"benchmark": "bench_profile_ways", "command": " ".join(["python -m benchmarks.bench_profile_ways",
                                                                       *sys.argv[1:]]),
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "loadavg": os.getloadavg()},
              "history": args.history, "users": args.users, "sizes": {}}
    for n in [int(x) for x in args.n.split(",")]:
        t0 = time.perf_counter()
        space, key, params = loaded_space(n, args.dim, args.seed)
        print(f"n={n}: {key} {params} built and tuned in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        engines = {"mean": Engine(space, None, empty, candidates_per_source=settings.candidates_per_source)}
        for seeds_cap in [int(x) for x in args.max_seeds.split(",")]:
            engines[f"pow8/{seeds_cap}"] = Engine(space, None, empty, candidates_per_source=settings.candidates_per_source,
                                                  profile_power=PROFILE_WAYS["pow8"], profile_max_seeds=seeds_cap)
        times: dict[str, list[float]] = {way: [] for way in engines}
        for u in range(args.users + 5):  # the first 5 users warm up
            liked = rng.choice(n, size=args.history, replace=False) + 1
            # Newest first, each event weighing a little less than the one after it (time decay).
            seeds = Seeds(items={int(i): 0.99 ** j for j, i in enumerate(liked.tolist())})
            ask = make_ask(settings, k=10, now=0.0, exclude=liked.tolist(), weights={"profile": 1.0})
            for way in (list(engines) if u % 2 else list(engines)[::-1]):
                start = time.perf_counter()
                found, _done = _profile_scores(engines[way], seeds, ask, settings.candidates_per_source)
                if u >= 5:
                    times[way].append((time.perf_counter() - start) * 1000)
                assert found, way
        row = {"index": key, "search_params": params}
        for way, ms in times.items():
            row[way] = {"p50_ms": float(np.median(ms)), "p99_ms": float(np.percentile(ms, 99))}
        for way in engines:
            row[way]["p50_vs_mean"] = row[way]["p50_ms"] / row["mean"]["p50_ms"]
        result["sizes"][str(n)] = row
        print(f"n={n} {key}: " + ", ".join(f"{way} p50 {row[way]['p50_ms']:.2f} ms p99 {row[way]['p99_ms']:.2f} ms "
                                            f"(x{row[way]['p50_vs_mean']:.1f})" for way in engines))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
