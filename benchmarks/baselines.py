#!/usr/bin/env python
"""Collaborative-filtering baselines on MovieLens-100K, tuned and scored on one hold-out split.

Baselines (CPU, on the binary user x item CSR matrix of positives, ratings >= 4):

* ``most_popular``: items by number of positives in the fitting data (ties: lower column first).
* ``als``: ``implicit`` AlternatingLeastSquares (conjugate gradient); the matrix is multiplied by
  ``alpha`` (confidence scaling) before fitting.
* ``bpr``: ``implicit`` BayesianPersonalizedRanking (single-threaded, so fits are reproducible).
* ``item_cosine``: ``implicit`` CosineRecommender (item-item cosine, K neighbours per item).
* ``ease``: EASE (Steck, WWW 2019), closed form ``B = -P / diag(P)``, ``P = (XᵀX + λI)⁻¹``,
  zero diagonal; dense numpy (1,682 items).
* ``rp3beta``: RP3beta (Paudel et al., 2017): item -> user -> item transition probabilities
  raised to ``alpha``, divided by the target item's popularity^``beta``, top ``K`` per item.
* ``transitions_recency``: what users engaged with next (a windowed first-order sequence model):
  ``W[i, j]`` counts users whose positive on j came within ``window`` positives after i (in
  the order :func:`recency_ranks` gives), divided by i's outgoing count^``alpha`` and j's
  incoming count^``beta``, top ``K`` per item; users scored from recency-weighted rows. The
  service's ``sequence`` family is this model; written here again, in dense numpy, as a check.
* ``item_cosine_recency``, ``ease_recency``, ``rp3beta_recency``, ``als_recency``: the same models
  and grids, each user scored from their history row weighted by recency, as the service weighs
  its seeds (``seed_decay``; :func:`recency_rows`): the k-th most recent fitting positive
  (newest first by time, then by position in the ratings file, k = 0 for the newest) counts
  ``seed_decay ** k``, ``seed_decay`` from ``SEED_DECAYS`` (the service's grid) tried for every
  grid point on the same fit and chosen on validation jointly with the model's own
  hyperparameters, as the training stage chooses the service's. The item-based models multiply
  the weighted row into their item x item matrix; ALS recomputes the user's factors from the
  weighted row against the fitted item factors (implicit's ``recalculate_user``, for every decay,
  1.0 included). BPR is not given the knob: its user vectors are fitted and implicit offers no
  recalculation for it.

Protocol (see ``benchmarks.movielens.SPLIT_DESCRIPTION``): every grid point fits on train and is
scored on validation; the best by NDCG@k (first in grid order on ties) is refitted on
train+validation and scored on test. Every baseline leaves out the same per-user set,
``MovieLensData.excluded(phase)``: every item the user rated (any rating value) in the fitting
period, which is what the service's evaluator excludes (``benchmarks.bench_movielens`` asserts the
sets are equal). Scores and the shared top-k (:func:`rank_top_k`) are computed here from each
model's factors / similarities, as implicit's ``recommend`` computes them. Seeds fixed.

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
from service.recommend.evaluation import evaluate, ndcg_at_k  # noqa: E402

SEED = 42
RESULTS_PATH = ROOT / "benchmarks" / "results" / "movielens_baselines.json"

Recs = dict[int, list[int]]


# --------------------------------------------------------------------------------------------------
# Models. ``fit(matrix, params) -> model``; ``score(model, rows, users) -> scores`` (dense
# float64, one row per user, one column per item) with ``rows`` the users' input rows: the
# (binary) fitting matrix, or its recency-weighted copy (:func:`recency_rows`). Ranking and
# exclusion are shared (:func:`rank_top_k`): every baseline leaves out the same per-user set,
# ``MovieLensData.excluded(phase)`` (every item rated in the fitting period), the set the
# service's evaluator leaves out.


def _grid(**axes: Sequence[Any]) -> list[dict[str, Any]]:
    keys = list(axes)
    return [dict(zip(keys, values)) for values in itertools.product(*(axes[k] for k in keys))]


def _binary(matrix: sp.csr_matrix) -> sp.csr_matrix:
    x = matrix.astype(np.float64).tocsr(copy=True)
    x.data[:] = 1.0
    return x


def fit_most_popular(matrix: sp.csr_matrix, params: Mapping[str, Any] | None = None) -> np.ndarray:
    """Positives per item in ``matrix`` (ranked descending; ties by column ascending)."""
    return np.asarray(matrix.getnnz(axis=0), dtype=np.float64).ravel()


def score_most_popular(counts: np.ndarray, matrix: sp.csr_matrix, users: Sequence[int]) -> np.ndarray:
    return np.broadcast_to(counts, (len(users), len(counts))).copy()


def fit_als(matrix: sp.csr_matrix, params: Mapping[str, Any]) -> Any:
    from implicit.cpu.als import AlternatingLeastSquares

    p = dict(params)
    alpha = float(p.pop("alpha", 1.0))
    model = AlternatingLeastSquares(**p, alpha=1.0, random_state=SEED, num_threads=0)
    model.fit((matrix * alpha).tocsr(), show_progress=False)
    model.bench_alpha = alpha  # the confidence scaling, for rows recalculated later
    return model


def fit_bpr(matrix: sp.csr_matrix, params: Mapping[str, Any]) -> Any:
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    # One thread: BPR's parallel SGD (hogwild) is not reproducible.
    model = BayesianPersonalizedRanking(**params, random_state=SEED, num_threads=1)
    model.fit(matrix, show_progress=False)
    return model


def score_factors(model: Any, matrix: sp.csr_matrix, users: Sequence[int]) -> np.ndarray:
    """What implicit's ``recommend`` ranks by (without recalculate_user): user . item factors.

    For BPR the factors carry the item bias (an extra item column against a user column of ones).
    """
    u = np.asarray(model.user_factors, dtype=np.float64)[np.asarray(users, dtype=np.int64)]
    return u @ np.asarray(model.item_factors, dtype=np.float64).T


def score_als_recalculated(model: Any, rows: sp.csr_matrix, users: Sequence[int]) -> np.ndarray:
    """ALS with the user's factors recomputed from ``rows`` (e.g. recency-weighted), scaled by the
    fit's ``alpha`` as the fitting matrix was, against the fitted item factors: implicit's
    ``recommend(..., recalculate_user=True)``."""
    users = np.asarray(users, dtype=np.int64)
    x = (rows[users].astype(np.float32) * float(getattr(model, "bench_alpha", 1.0))).tocsr()
    u = np.asarray(model.recalculate_user(users, x), dtype=np.float64)
    return u @ np.asarray(model.item_factors, dtype=np.float64).T


def fit_item_cosine(matrix: sp.csr_matrix, params: Mapping[str, Any]) -> Any:
    from implicit.nearest_neighbours import CosineRecommender

    model = CosineRecommender(**params, num_threads=0)
    model.fit(matrix, show_progress=False)
    return model


def score_item_cosine(model: Any, rows: sp.csr_matrix, users: Sequence[int]) -> np.ndarray:
    """What implicit's item-item scorer computes: the user's row times the K-NN similarity."""
    x = rows[np.asarray(users, dtype=np.int64)].astype(np.float64)
    return np.asarray((x @ model.similarity.astype(np.float64)).todense())


def fit_ease(matrix: sp.csr_matrix, params: Mapping[str, Any]) -> np.ndarray:
    """EASE (Steck, WWW 2019): ``G = XᵀX + λI``, ``P = G⁻¹``, ``B = -P / diag(P)``, diag(B) = 0."""
    x = _binary(matrix)
    gram = (x.T @ x).toarray()
    gram[np.diag_indices_from(gram)] += float(params["lam"])
    p = np.linalg.inv(gram)
    b = -p / np.diag(p)[None, :]
    b[np.diag_indices_from(b)] = 0.0
    return b


def score_item_matrix(w: np.ndarray, rows: sp.csr_matrix, users: Sequence[int]) -> np.ndarray:
    """``X_u W`` for an item x item weight matrix (EASE's B, RP3beta's W); ``X_u`` the user's
    input row (binary, or recency-weighted)."""
    return np.asarray(rows[np.asarray(users, dtype=np.int64)].astype(np.float64) @ w)


# --------------------------------------------------------------------------------------------------
# Recency-weighted input rows: the service's ``seed_decay`` (service.recommend.collab.seed_row)

# The service's grid (``service.recommend.collab.SEED_DECAYS``), tried in this order.
SEED_DECAYS = (1.0, 0.9, 0.8)


def recency_ranks(data: MovieLensData, phase: str) -> sp.csr_matrix:
    """``data.fit_matrix(phase)`` with each entry replaced by its recency rank among the user's
    fitting positives: 0 for the newest, ordered newest first by timestamp, then by position in
    the ratings file (later line first): the order of the service's evaluator
    (``Evaluator.history``: its rows sorted by (time, log row) descending, the log in file order),
    which is the order ``seed_row`` counts positive seeds in."""
    key = ("recency_ranks", phase)
    if key in data._cache:
        return data._cache[key]
    fit = data.fit_matrix(phase).tocsr()
    fit.sort_indices()
    n_items = fit.shape[1]
    pos_key = data.pos_user.astype(np.int64) * n_items + data.pos_item.astype(np.int64)
    order = np.argsort(pos_key, kind="stable")
    users = np.repeat(np.arange(fit.shape[0], dtype=np.int64), np.diff(fit.indptr))
    fit_key = users * n_items + fit.indices.astype(np.int64)
    at = np.searchsorted(pos_key[order], fit_key)
    if not np.array_equal(pos_key[order][at], fit_key):
        raise ValueError("a fitting entry is not a positive")
    pos = order[at]  # index into the positives of each fitting entry, in CSR order
    t, line = data.pos_time[pos].astype(np.float64), data.pos_rows[pos].astype(np.int64)
    newest_first = np.lexsort((-line, -t, users))  # by user, then time desc, then line desc
    start = np.repeat(fit.indptr[:-1], np.diff(fit.indptr))  # row start of each entry
    ranks = np.empty(len(pos), dtype=np.float64)
    ranks[newest_first] = np.arange(len(pos)) - start[newest_first]
    out = sp.csr_matrix((ranks, fit.indices.copy(), fit.indptr.copy()), shape=fit.shape)
    data._cache[key] = out
    return out


def recency_rows(data: MovieLensData, phase: str, decay: float) -> sp.csr_matrix:
    """The users' input rows for ``phase``: ``decay ** rank`` per fitting positive
    (:func:`recency_ranks`); with ``decay`` 1.0 the binary fitting matrix itself."""
    if float(decay) == 1.0:
        return data.fit_matrix(phase)
    key = ("recency_rows", phase, float(decay))
    if key not in data._cache:
        ranks = recency_ranks(data, phase)
        data._cache[key] = sp.csr_matrix((np.power(float(decay), ranks.data), ranks.indices, ranks.indptr),
                                         shape=ranks.shape)
    return data._cache[key]


def fit_rp3beta(matrix: sp.csr_matrix, params: Mapping[str, Any]) -> np.ndarray:
    """RP3beta (Paudel et al., 2017; as in Dacrema et al.'s reference implementation).

    ``P_ui`` / ``P_iu``: the row-normalised user->item and item->user transition matrices, each
    entry raised to ``alpha``; ``W = P_iu P_ui`` (item -> user -> item, 3 steps with the
    user's own item), each column j divided by popularity(j)^beta, diagonal zeroed, then only
    the ``K`` largest entries of each row kept.
    """
    alpha, beta, k = float(params["alpha"]), float(params["beta"]), int(params["K"])
    x = _binary(matrix)
    user_deg = np.asarray(x.sum(axis=1)).ravel()
    item_deg = np.asarray(x.sum(axis=0)).ravel()
    p_ui = sp.diags(np.divide(1.0, user_deg, out=np.zeros_like(user_deg), where=user_deg > 0)) @ x
    p_iu = sp.diags(np.divide(1.0, item_deg, out=np.zeros_like(item_deg), where=item_deg > 0)) @ x.T.tocsr()
    p_ui, p_iu = p_ui.tocsr(), p_iu.tocsr()
    if alpha != 1.0:
        p_ui.data **= alpha
        p_iu.data **= alpha
    w = (p_iu @ p_ui).toarray()
    w *= np.power(item_deg, -beta, out=np.zeros_like(item_deg), where=item_deg > 0)[None, :]
    w[np.diag_indices_from(w)] = 0.0
    if k < w.shape[1]:
        drop = np.argpartition(-w, k, axis=1)[:, k:]
        np.put_along_axis(w, drop, 0.0, axis=1)
    return w


def fit_transitions(ranks: sp.csr_matrix, params: Mapping[str, Any]) -> np.ndarray:
    """The windowed next-item model from the users' recency ranks (0: newest; see the module
    docstring), dense: ``W[i, j]`` = users with j within ``window`` positives after i, scaled."""
    window, alpha, beta, k = int(params["window"]), float(params["alpha"]), float(params["beta"]), int(params["K"])
    n = ranks.shape[1]
    w = np.zeros((n, n), dtype=np.float64)
    for u in range(ranks.shape[0]):
        row = slice(ranks.indptr[u], ranks.indptr[u + 1])
        seq = ranks.indices[row][np.argsort(-ranks.data[row], kind="stable")]  # oldest first
        for gap in range(1, min(window, len(seq) - 1) + 1):
            np.add.at(w, (seq[:-gap], seq[gap:]), 1.0)
    out, into = w.sum(axis=1), w.sum(axis=0)
    w *= np.power(out, -alpha, out=np.zeros_like(out), where=out > 0)[:, None]
    w *= np.power(into, -beta, out=np.zeros_like(into), where=into > 0)[None, :]
    if k < n:
        drop = np.argpartition(-w, k, axis=1)[:, k:]
        np.put_along_axis(w, drop, 0.0, axis=1)
    return w


def rank_top_k(
    scores: np.ndarray, users: Sequence[int], exclude: sp.csr_matrix, k: int, *, positive_only: bool = False,
) -> Recs:
    """Top ``k`` columns of each row of ``scores`` (ties: lower column first), leaving out the
    user's row of ``exclude``; with ``positive_only`` items scoring <= 0 are no candidates (item
    neighbourhoods: a user whose neighbourhood holds fewer than k items gets a shorter list, no
    back-fill)."""
    users = np.asarray(users, dtype=np.int64)
    s = np.array(scores, dtype=np.float64)  # copy
    ex = exclude[users]
    s[np.repeat(np.arange(len(users)), np.diff(ex.indptr)), ex.indices] = -np.inf
    if positive_only:
        s[s <= 0] = -np.inf
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    out: Recs = {}
    for row, u in enumerate(users.tolist()):
        top = order[row]
        out[u] = top[np.isfinite(s[row, top])].astype(np.int64).tolist()
    return out


@dataclass(frozen=True)
class Baseline:
    name: str
    fit: Callable[[sp.csr_matrix, Mapping[str, Any]], Any]
    score: Callable[[Any, sp.csr_matrix, Sequence[int]], np.ndarray]
    grid: list[dict[str, Any]]
    default: dict[str, Any]
    positive_only: bool = False  # only items with a positive score are candidates
    # Recency weightings of the users' input rows tried per grid point (:func:`recency_rows`);
    # (1.0,): unweighted rows, as the model was published.
    seed_decays: tuple[float, ...] = (1.0,)
    default_seed_decay: float = 1.0  # without tuning
    # What ``fit`` is given: the binary fitting matrix, or its recency ranks (:func:`recency_ranks`).
    fit_on_ranks: bool = False

    def fit_phase(self, data: MovieLensData, phase: str, params: Mapping[str, Any]) -> Any:
        """The model fitted on ``phase``'s fitting data."""
        return self.fit(recency_ranks(data, phase) if self.fit_on_ranks else data.fit_matrix(phase), params)

    @property
    def recency(self) -> bool:
        return self.seed_decays != (1.0,)

    def recommend(self, model: Any, rows: sp.csr_matrix, exclude: sp.csr_matrix, users: Sequence[int],
                  k: int) -> Recs:
        """``{user: top-k items}`` from the users' input ``rows``, leaving out each user's row of
        ``exclude``."""
        return rank_top_k(self.score(model, rows, users), users, exclude, k, positive_only=self.positive_only)


BASELINES: dict[str, Baseline] = {
    "most_popular": Baseline("most_popular", fit_most_popular, score_most_popular, [{}], {}),
    "als": Baseline(
        "als", fit_als, score_factors,
        _grid(factors=[16, 32, 64, 128], regularization=[0.01, 0.1, 1.0, 10.0], alpha=[1.0, 10.0, 40.0],
              iterations=[15, 30]),
        {"factors": 64, "regularization": 0.1, "alpha": 10.0, "iterations": 15},
    ),
    "bpr": Baseline(
        "bpr", fit_bpr, score_factors,
        _grid(factors=[64, 128, 256], learning_rate=[0.003, 0.01, 0.03], regularization=[0.001, 0.01],
              iterations=[100, 300]),
        {"factors": 64, "learning_rate": 0.01, "regularization": 0.01, "iterations": 100},
    ),
    "item_cosine": Baseline(
        "item_cosine", fit_item_cosine, score_item_cosine, _grid(K=[10, 20, 50, 100, 200, 500]), {"K": 20},
        positive_only=True,
    ),
    "ease": Baseline(
        "ease", fit_ease, score_item_matrix, _grid(lam=[10.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0]),
        {"lam": 500.0},
    ),
    "rp3beta": Baseline(
        "rp3beta", fit_rp3beta, score_item_matrix,
        _grid(alpha=[0.5, 1.0], beta=[0.0, 0.2, 0.4, 0.6], K=[50, 100, 200, 500]),
        {"alpha": 1.0, "beta": 0.4, "K": 100},
        positive_only=True,
    ),
}
BASELINES["transitions_recency"] = Baseline(
    "transitions_recency", fit_transitions, score_item_matrix,
    _grid(window=[5, 10, 20, 50], alpha=[0.5, 1.0], beta=[0.0, 0.3, 0.6], K=[200, 500]),
    {"window": 20, "alpha": 0.5, "beta": 0.6, "K": 500}, positive_only=True,
    seed_decays=SEED_DECAYS, default_seed_decay=0.9, fit_on_ranks=True,
)
# The same models, grids and defaults, each user scored from a recency-weighted row, the decay
# tuned with the hyperparameters (as the service's seed_decay); the unweighted rows stay above.
BASELINES.update({
    f"{name}_recency": Baseline(
        f"{name}_recency", BASELINES[name].fit,
        score_als_recalculated if name == "als" else BASELINES[name].score,
        BASELINES[name].grid, BASELINES[name].default, BASELINES[name].positive_only,
        seed_decays=SEED_DECAYS, default_seed_decay=0.9,
    )
    for name in ("als", "item_cosine", "ease", "rp3beta")
})


# --------------------------------------------------------------------------------------------------
# Scoring and the tuning loop


def score_recommendations(
    data: MovieLensData, recs: Mapping[int, Sequence[int]], phase: str = "test", k: int = 10, *,
    check_seen: bool = True,
) -> dict[str, float]:
    """All metrics of ``recs`` ({user row: ranked item columns}) on ``phase`` ("valid"/"test").

    Popularity is counted on that phase's fitting data, coverage over the whole catalog.
    ``check_seen`` raises if a list contains an item of the user's exclusion set
    (``data.excluded(phase)``: every item rated in the fitting period).
    """
    if check_seen:
        for u in data.split.users.tolist():
            seen = data.excluded_items(phase, u)
            if np.isin(np.asarray(list(recs.get(u, ())[:k]), dtype=np.int64), seen).any():
                raise ValueError(f"user {u}: recommendations contain items rated in the fitting period")
    return evaluate(
        lambda u: recs.get(u, []), data.split, k, phase=phase, item_popularity=data.popularity(phase)
    )


def per_user_ndcg(data: MovieLensData, recs: Mapping[int, Sequence[int]], phase: str = "test",
                  k: int = 10) -> dict[int, float]:
    """NDCG@k of each evaluated user (``service.recommend.evaluation.ndcg_at_k`` on one list)."""
    truth = data.split.truth(phase)
    return {int(u): ndcg_at_k([list(recs.get(int(u), []))], [set(truth[int(u)])], k)
            for u in data.split.users.tolist() if truth.get(int(u))}


def run_baseline(baseline: Baseline, data: MovieLensData, k: int = 10, tune: bool = True, *,
                 keep_recs: bool = False) -> dict[str, Any]:
    """Tune ``baseline`` on validation (optional), refit on train+valid, score on test.

    ``keep_recs`` adds ``test_recs`` ({user row: test list}) for paired comparisons.
    With ``baseline.seed_decays`` beyond (1.0,), every grid point is fitted once and scored once
    per decay (the users' rows weighted by :func:`recency_rows`), the decay chosen with the
    hyperparameters (grid point outer, decay inner: first in that order on ties), as the training
    stage chooses the service's ``seed_decay``; ``params`` then includes ``seed_decay``.
    """
    users = data.split.users
    ex_valid, ex_test = data.excluded("valid"), data.excluded("test")
    trials = []
    t_tune = time.perf_counter()
    best, best_decay = baseline.default, baseline.default_seed_decay
    if tune and len(baseline.grid) * len(baseline.seed_decays) > 1:
        best_ndcg = -1.0
        for params in baseline.grid:
            t0 = time.perf_counter()
            model = baseline.fit_phase(data, "valid", params)
            fit_s = time.perf_counter() - t0
            for decay in baseline.seed_decays:
                rows = recency_rows(data, "valid", decay)
                m = score_recommendations(data, baseline.recommend(model, rows, ex_valid, users, k), "valid", k)
                trials.append({"params": dict(params, seed_decay=decay) if baseline.recency else params,
                               "valid_ndcg": m["ndcg"], "valid_recall": m["recall"], "fit_seconds": round(fit_s, 3)})
                if m["ndcg"] > best_ndcg:
                    best, best_decay, best_ndcg = params, decay, m["ndcg"]
    elif baseline.grid == [{}]:
        best = {}
    tune_seconds = time.perf_counter() - t_tune

    # Validation score of the chosen point (also when not tuning), for the table.
    model = baseline.fit_phase(data, "valid", best)
    valid = score_recommendations(
        data, baseline.recommend(model, recency_rows(data, "valid", best_decay), ex_valid, users, k), "valid", k)

    t0 = time.perf_counter()
    model = baseline.fit_phase(data, "test", best)
    fit_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    recs = baseline.recommend(model, recency_rows(data, "test", best_decay), ex_test, users, k)
    recommend_seconds = time.perf_counter() - t0
    result: dict[str, Any] = score_recommendations(data, recs, "test", k)
    result.update({
        "valid_recall": valid["recall"],
        "valid_ndcg": valid["ndcg"],
        "params": dict(best, seed_decay=best_decay) if baseline.recency else dict(best),
        "fit_seconds": round(fit_seconds, 3),
        "recommend_seconds": round(recommend_seconds, 3),
        "tune_seconds": round(tune_seconds, 3),
        "grid_size": len(trials),
        "trials": trials,
    })
    if keep_recs:
        result["test_recs"] = recs
    return result


def run_baselines(
    data: MovieLensData, k: int = 10, tune: bool = True, names: Sequence[str] | None = None,
    verbose: bool = True, keep_recs: bool = False,
) -> dict[str, dict[str, Any]]:
    """Run the baselines (default: all) on ``data``'s split; {name: metrics + params + timings}.

    Metric keys (test set): recall, ndcg, coverage, pop_percentile, avg_rec_popularity, pop_lift,
    n_users, k; plus valid_recall, valid_ndcg, params, fit_seconds (final refit),
    recommend_seconds, tune_seconds, grid_size, trials (per grid point validation scores), and
    test_recs ({user row: test list}) when ``keep_recs``.
    """
    results: dict[str, dict[str, Any]] = {}
    with threadpoolctl.threadpool_limits(1, "blas"), warnings.catch_warnings():
        # implicit notes each CSR conversion it makes of the per-user rows; harmless.
        warnings.filterwarnings("ignore", message="Method expects CSR input")
        for name in names or list(BASELINES):
            t0 = time.perf_counter()
            results[name] = run_baseline(BASELINES[name], data, k=k, tune=tune, keep_recs=keep_recs)
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
            "seed_decays": {name: list(BASELINES[name].seed_decays) for name in results},
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
