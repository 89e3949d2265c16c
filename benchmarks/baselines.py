#!/usr/bin/env python
"""Collaborative-filtering baselines on MovieLens-100K, tuned and scored on one hold-out split.

Baselines (CPU, on the binary user x item CSR matrix of positives, ratings >= 4):

* ``most_popular``: items by number of positives in the fitting data (ties: lower column first).
* ``als``: ``implicit`` AlternatingLeastSquares (conjugate gradient); the matrix is multiplied by
  ``alpha`` (confidence scaling) before fitting.
* ``bpr``: ``implicit`` BayesianPersonalizedRanking (single-threaded, so fits are reproducible).
* ``item_cosine``: ``implicit`` CosineRecommender (item-item cosine, K neighbours per item).

Protocol (see ``benchmarks.movielens.SPLIT_DESCRIPTION``): every grid point fits on train and is
scored on validation; the best by NDCG@k (first in grid order on ties) is refitted on
train+validation and scored on test. Items in the fitting data are never recommended. Seeds fixed.

    .venv/bin/python -m benchmarks.baselines                 # tune + test, table + JSON
    .venv/bin/python -m benchmarks.baselines --no-tune       # default hyperparameters only

Other scripts (``benchmarks.bench_movielens``) reuse the same split and scoring::

    from benchmarks.movielens import load_split
    from benchmarks.baselines import run_baselines, score_recommendations
    data = load_split()                      # n_test=2, n_valid=2, min_train=1
    results = run_baselines(data, k=10)      # {name: {metrics..., "params", "fit_seconds", ...}}
    recs = {user_row: [item_col, ...]}       # your model, fitted on data.fit_matrix("test")
    metrics = score_recommendations(data, recs, phase="test", k=10)
"""

from __future__ import annotations

import os

if __name__ == "__main__":
    # implicit warns (and runs far slower) when BLAS runs its own thread pool: as a script, turn it
    # off before numpy loads. Importers get the same inside run_baselines via threadpoolctl.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable, Mapping, Sequence  # noqa: E402

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402
import threadpoolctl  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

from benchmarks.movielens import DEFAULT_DATA_DIR, MovieLensData, load_split  # noqa: E402
from service.recommend.evaluation import evaluate  # noqa: E402

SEED = 42
RESULTS_PATH = ROOT / "benchmarks" / "results" / "movielens_baselines.json"

Recs = dict[int, list[int]]


# --------------------------------------------------------------------------------------------------
# Models. ``fit(matrix, params) -> model``; ``recommend(model, matrix, users, k) -> {user: items}``
# with ``matrix`` the fitting matrix (its items are filtered out of each user's list).


def _grid(**axes: Sequence[Any]) -> list[dict[str, Any]]:
    keys = list(axes)
    return [dict(zip(keys, values)) for values in itertools.product(*(axes[k] for k in keys))]


def fit_most_popular(matrix: sp.csr_matrix, params: Mapping[str, Any] | None = None) -> np.ndarray:
    """Items ranked by positives in ``matrix`` (descending; ties by column ascending)."""
    counts = np.asarray(matrix.getnnz(axis=0)).ravel()
    return np.argsort(-counts, kind="stable")


def recommend_most_popular(ranking: np.ndarray, matrix: sp.csr_matrix, users: Sequence[int], k: int) -> Recs:
    out: Recs = {}
    for u in users:
        seen = set(matrix.indices[matrix.indptr[u] : matrix.indptr[u + 1]].tolist())
        top: list[int] = []
        for item in ranking.tolist():
            if item not in seen:
                top.append(item)
                if len(top) == k:
                    break
        out[int(u)] = top
    return out


def fit_als(matrix: sp.csr_matrix, params: Mapping[str, Any]) -> Any:
    from implicit.cpu.als import AlternatingLeastSquares

    p = dict(params)
    alpha = float(p.pop("alpha", 1.0))
    model = AlternatingLeastSquares(**p, alpha=1.0, random_state=SEED, num_threads=0)
    model.fit((matrix * alpha).tocsr(), show_progress=False)
    return model


def fit_bpr(matrix: sp.csr_matrix, params: Mapping[str, Any]) -> Any:
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    # One thread: BPR's parallel SGD (hogwild) is not reproducible.
    model = BayesianPersonalizedRanking(**params, random_state=SEED, num_threads=1)
    model.fit(matrix, show_progress=False)
    return model


def fit_item_cosine(matrix: sp.csr_matrix, params: Mapping[str, Any]) -> Any:
    from implicit.nearest_neighbours import CosineRecommender

    model = CosineRecommender(**params, num_threads=0)
    model.fit(matrix, show_progress=False)
    return model


def recommend_implicit(model: Any, matrix: sp.csr_matrix, users: Sequence[int], k: int) -> Recs:
    """Batch ``model.recommend`` with already-liked items filtered.

    Drops padding slots (-1 ids, -FLT_MAX scores) and, again, the user's own items: implicit
    0.7.3's item-item scorer pads a user whose neighbourhood holds fewer than k candidates with
    the user's own items (score 0). Such users get fewer than k items (no back-fill).
    """
    users = np.asarray(users, dtype=np.int32)
    ids, scores = model.recommend(users, matrix[users], N=k, filter_already_liked_items=True)
    floor = -np.finfo(np.float32).max
    out: Recs = {}
    for row, u in enumerate(users.tolist()):
        seen = matrix.indices[matrix.indptr[u] : matrix.indptr[u + 1]]
        keep = (ids[row] >= 0) & np.isfinite(scores[row]) & (scores[row] > floor)
        keep &= ~np.isin(ids[row], seen)
        out[u] = ids[row][keep].astype(np.int64).tolist()
    return out


@dataclass(frozen=True)
class Baseline:
    name: str
    fit: Callable[[sp.csr_matrix, Mapping[str, Any]], Any]
    recommend: Callable[[Any, sp.csr_matrix, Sequence[int], int], Recs]
    grid: list[dict[str, Any]]
    default: dict[str, Any]


BASELINES: dict[str, Baseline] = {
    "most_popular": Baseline("most_popular", fit_most_popular, recommend_most_popular, [{}], {}),
    "als": Baseline(
        "als", fit_als, recommend_implicit,
        _grid(factors=[16, 32, 64, 128], regularization=[0.01, 0.1, 1.0, 10.0], alpha=[1.0, 10.0, 40.0],
              iterations=[15, 30]),
        {"factors": 64, "regularization": 0.1, "alpha": 10.0, "iterations": 15},
    ),
    "bpr": Baseline(
        "bpr", fit_bpr, recommend_implicit,
        _grid(factors=[64, 128, 256], learning_rate=[0.003, 0.01, 0.03], regularization=[0.001, 0.01],
              iterations=[100, 300]),
        {"factors": 64, "learning_rate": 0.01, "regularization": 0.01, "iterations": 100},
    ),
    "item_cosine": Baseline(
        "item_cosine", fit_item_cosine, recommend_implicit, _grid(K=[10, 20, 50, 100, 200, 500]), {"K": 20},
    ),
}


# --------------------------------------------------------------------------------------------------
# Scoring and the tuning loop


def score_recommendations(
    data: MovieLensData, recs: Mapping[int, Sequence[int]], phase: str = "test", k: int = 10, *,
    check_seen: bool = True,
) -> dict[str, float]:
    """All metrics of ``recs`` ({user row: ranked item columns}) on ``phase`` ("valid"/"test").

    Popularity is counted on that phase's fitting data, coverage over the whole catalog.
    ``check_seen`` raises if a list contains an item of the user's fitting data.
    """
    if check_seen:
        matrix = data.fit_matrix(phase)
        for u in data.split.users.tolist():
            seen = matrix.indices[matrix.indptr[u] : matrix.indptr[u + 1]]
            if np.isin(np.asarray(list(recs.get(u, ())[:k]), dtype=np.int64), seen).any():
                raise ValueError(f"user {u}: recommendations contain items from the fitting data")
    return evaluate(
        lambda u: recs.get(u, []), data.split, k, phase=phase, item_popularity=data.popularity(phase)
    )


def run_baseline(baseline: Baseline, data: MovieLensData, k: int = 10, tune: bool = True) -> dict[str, Any]:
    """Tune ``baseline`` on validation (optional), refit on train+valid, score on test."""
    users = data.split.users
    trials = []
    t_tune = time.perf_counter()
    best = baseline.default
    if tune and len(baseline.grid) > 1:
        best_ndcg = -1.0
        for params in baseline.grid:
            t0 = time.perf_counter()
            model = baseline.fit(data.train, params)
            fit_s = time.perf_counter() - t0
            m = score_recommendations(data, baseline.recommend(model, data.train, users, k), "valid", k)
            trials.append({"params": params, "valid_ndcg": m["ndcg"], "valid_recall": m["recall"],
                           "fit_seconds": round(fit_s, 3)})
            if m["ndcg"] > best_ndcg:
                best, best_ndcg = params, m["ndcg"]
    elif baseline.grid == [{}]:
        best = {}
    tune_seconds = time.perf_counter() - t_tune

    # Validation score of the chosen point (also when not tuning), for the table.
    model = baseline.fit(data.train, best)
    valid = score_recommendations(data, baseline.recommend(model, data.train, users, k), "valid", k)

    t0 = time.perf_counter()
    model = baseline.fit(data.train_valid, best)
    fit_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    recs = baseline.recommend(model, data.train_valid, users, k)
    recommend_seconds = time.perf_counter() - t0
    result: dict[str, Any] = score_recommendations(data, recs, "test", k)
    result.update({
        "valid_recall": valid["recall"],
        "valid_ndcg": valid["ndcg"],
        "params": dict(best),
        "fit_seconds": round(fit_seconds, 3),
        "recommend_seconds": round(recommend_seconds, 3),
        "tune_seconds": round(tune_seconds, 3),
        "grid_size": len(trials),
        "trials": trials,
    })
    return result


def run_baselines(
    data: MovieLensData, k: int = 10, tune: bool = True, names: Sequence[str] | None = None,
    verbose: bool = True,
) -> dict[str, dict[str, Any]]:
    """Run the baselines (default: all) on ``data``'s split; {name: metrics + params + timings}.

    Metric keys (test set): recall, ndcg, coverage, pop_percentile, avg_rec_popularity, pop_lift,
    n_users, k; plus valid_recall, valid_ndcg, params, fit_seconds (final refit),
    recommend_seconds, tune_seconds, grid_size, trials (per grid point validation scores).
    """
    results: dict[str, dict[str, Any]] = {}
    with threadpoolctl.threadpool_limits(1, "blas"), warnings.catch_warnings():
        # implicit notes each CSR conversion it makes of the per-user rows; harmless.
        warnings.filterwarnings("ignore", message="Method expects CSR input")
        for name in names or list(BASELINES):
            t0 = time.perf_counter()
            results[name] = run_baseline(BASELINES[name], data, k=k, tune=tune)
            if verbose:
                r = results[name]
                print(f"  {name:<13} ndcg@{k}={r['ndcg']:.4f} recall@{k}={r['recall']:.4f} "
                      f"params={r['params']} ({time.perf_counter() - t0:.1f}s)", file=sys.stderr)
    return results


# --------------------------------------------------------------------------------------------------
# Report


def format_table(results: Mapping[str, Mapping[str, Any]], k: int = 10) -> str:
    """Plain-text table: one row per method (usable for combined tables too)."""
    header = (f"{'method':<14} {'Recall@' + str(k):>9} {'NDCG@' + str(k):>8} {'valNDCG':>8} {'coverage':>8} "
              f"{'pop_pct':>7} {'pop_lift':>8} {'fit_s':>7}  params")
    lines = [header, "-" * len(header)]
    for name, r in results.items():
        params = ", ".join(f"{key}={value}" for key, value in r.get("params", {}).items()) or "-"
        valid = r.get("valid_ndcg")
        lines.append(
            f"{name:<14} {r['recall']:>9.4f} {r['ndcg']:>8.4f} "
            f"{(f'{valid:.4f}' if valid is not None else '-'):>8} {r.get('coverage', float('nan')):>8.3f} "
            f"{r.get('pop_percentile', float('nan')):>7.3f} {r.get('pop_lift', float('nan')):>8.2f} "
            f"{r.get('fit_seconds', float('nan')):>7.2f}  {params}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--n-test", type=int, default=2)
    parser.add_argument("--n-valid", type=int, default=2)
    parser.add_argument("--min-train", type=int, default=1)
    parser.add_argument("--no-tune", action="store_true", help="use each baseline's default hyperparameters")
    parser.add_argument("--only", nargs="+", choices=list(BASELINES), help="run only these baselines")
    parser.add_argument("--out", type=Path, default=RESULTS_PATH, help="JSON results ('-' to skip)")
    args = parser.parse_args(argv)

    t_start = time.perf_counter()
    load_at_start = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    data = load_split(args.data_dir, n_test=args.n_test, n_valid=args.n_valid, min_train=args.min_train)
    info = data.info
    print(f"ML-100K: {info['n_users']} users, {info['n_items']} items, {info['n_positives']} positives "
          f"(rating >= {data.threshold:g}); {info['n_eval_users']} users evaluated; "
          f"train {info['n_train']}, valid {info['n_valid_rows']}, test {info['n_test_rows']} rows",
          file=sys.stderr)
    results = run_baselines(data, k=args.k, tune=not args.no_tune, names=args.only)
    total = time.perf_counter() - t_start

    print()
    print(f"Test set (fit on train+valid), k={args.k}, {info['n_eval_users']} users; "
          f"valNDCG = validation NDCG@{args.k} of the chosen hyperparameters (fit on train)")
    print(format_table(results, args.k))
    print(f"\ntotal {total:.1f}s")

    if str(args.out) != "-":
        import implicit

        payload = {
            "benchmark": "movielens-100k offline baselines",
            "command": " ".join(["python -m benchmarks.baselines", *(argv if argv is not None else sys.argv[1:])]),
            "k": args.k,
            "dataset": info,
            "tuned": not args.no_tune,
            "selection": f"best validation NDCG@{args.k} over each grid (first in grid order on ties)",
            "grids": {name: BASELINES[name].grid for name in results},
            "seed": SEED,
            "results": results,
            "total_seconds": round(total, 1),
            "environment": {
                "python": platform.python_version(),
                "implicit": implicit.__version__,
                "numpy": np.__version__,
                "cpus": os.cpu_count(),
                "machine": platform.machine(),
                "load_average_at_start": load_at_start,
                "load_average_at_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            },
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
