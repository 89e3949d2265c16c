"""Exploration (not served): two ways to make the sequence signal stronger on bench_movielens's
MovieLens-100K split, scored like ``benchmarks.baselines`` (same exclusions, tuned on validation,
refitted on train+validation for test).

    .venv/bin/python -m benchmarks.explore_sequences          # ~3 min on 2 cores

* **Gap-weighted transitions**: ``transitions_recency`` with each (i, j) pair counted
  ``gap ** -gamma`` instead of 1 (``gamma`` 0 is the served ``sequence`` family), windows up to 50.
* **SLIT** (Choi et al., WWW 2021, the transition half of SLIST): a closed-form next-item
  regression ``W = (XᵀX + λI)⁻¹ XᵀY``, one row per position of each user's liked items in order,
  X the previous ``window`` items weighted ``delta ** distance``, Y the next ``targets`` items.

Each is scored alone and in the service's kind of ensemble (each part's scores divided by its
best candidate per user, then added with weights from {0, 0.5, 1, 2} chosen on validation),
against the same ensemble with the served sequence model. The paired per-user NDCG@10 difference
against the best single baseline (``transitions_recency``) is printed with its standard error.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402

from benchmarks import baselines as B  # noqa: E402
from benchmarks.movielens import load_split  # noqa: E402

K = 10
WEIGHTS = (0.0, 0.5, 1.0, 2.0)


def user_sequences(ranks: sp.csr_matrix):
    """Each user's liked items, oldest first (``recency_ranks``: 0 is the newest)."""
    for u in range(ranks.shape[0]):
        row = slice(ranks.indptr[u], ranks.indptr[u + 1])
        yield ranks.indices[row][np.argsort(-ranks.data[row], kind="stable")]


def fit_gap_transitions(ranks: sp.csr_matrix, window: int, gamma: float, alpha=0.5, beta=0.3, k=500) -> np.ndarray:
    n = ranks.shape[1]
    w = np.zeros((n, n))
    for seq in user_sequences(ranks):
        for gap in range(1, min(window, len(seq) - 1) + 1):
            np.add.at(w, (seq[:-gap], seq[gap:]), gap ** -gamma)
    out, into = w.sum(1), w.sum(0)
    w *= np.power(out, -alpha, out=np.zeros_like(out), where=out > 0)[:, None]
    w *= np.power(into, -beta, out=np.zeros_like(into), where=into > 0)[None, :]
    drop = np.argpartition(-w, k, axis=1)[:, k:]
    np.put_along_axis(w, drop, 0.0, axis=1)
    return w


def fit_slit(ranks: sp.csr_matrix, window: int, delta: float, lam: float, targets: int) -> np.ndarray:
    n = ranks.shape[1]
    xr, xc, xv, yr, yc, yv = [], [], [], [], [], []
    r = 0
    for seq in user_sequences(ranks):
        for t in range(1, len(seq)):
            prev = seq[max(0, t - window):t][::-1]  # newest first
            xr += [r] * len(prev)
            xc += prev.tolist()
            xv += (delta ** np.arange(len(prev))).tolist()
            nxt = seq[t:t + targets]
            yr += [r] * len(nxt)
            yc += nxt.tolist()
            yv += (0.5 ** np.arange(len(nxt))).tolist()
            r += 1
    x = sp.csr_matrix((xv, (xr, xc)), shape=(r, n))
    y = sp.csr_matrix((yv, (yr, yc)), shape=(r, n))
    return np.linalg.solve((x.T @ x).toarray() + lam * np.eye(n), (x.T @ y).toarray())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.parse_args()
    data = load_split()
    users = data.split.users

    def ndcg(scores, phase):
        recs = B.rank_top_k(scores, users, data.excluded(phase), K)
        return B.score_recommendations(data, recs, phase, K)["ndcg"], recs

    def scaled(scores, phase):  # each part divided by its best candidate per user (exclusions out)
        s = scores.copy()
        ex = data.excluded(phase)[np.asarray(users)]
        s[np.repeat(np.arange(len(users)), np.diff(ex.indptr)), ex.indices] = 0
        best = s.max(1, keepdims=True)
        best[best <= 0] = 1
        return s / best

    scores: dict[str, dict] = {"valid": {}, "test": {}}
    for phase in scores:
        ranks, fit = B.recency_ranks(data, phase), data.fit_matrix(phase)
        rows = {d: B.recency_rows(data, phase, d) for d in B.SEED_DECAYS}
        for gamma, window in itertools.product((0.0, 0.5, 1.0), (10, 20, 50)):
            w = fit_gap_transitions(ranks, window, gamma)
            for d in B.SEED_DECAYS:
                scores[phase][("transitions", gamma, window, d)] = B.score_item_matrix(w, rows[d], users)
        for window, delta, lam, targets in itertools.product((10, 20), (0.8, 0.9), (30, 100, 300), (1, 3)):
            w = fit_slit(ranks, window, delta, lam, targets)
            for d in B.SEED_DECAYS:
                scores[phase][("slit", window, delta, lam, targets, d)] = B.score_item_matrix(w, rows[d], users)
        ease, rp3 = B.fit_ease(fit, {"lam": 500.0}), B.fit_rp3beta(fit, {"alpha": 0.5, "beta": 0.6, "K": 500})
        for d in B.SEED_DECAYS:
            scores[phase][("ease", d)] = B.score_item_matrix(ease, rows[d], users)
            scores[phase][("rp3beta", d)] = B.score_item_matrix(rp3, rows[d], users)
        print(f"{phase}: {len(scores[phase])} candidates scored", file=sys.stderr, flush=True)

    valid = {key: ndcg(s, "valid")[0] for key, s in scores["valid"].items()}
    best = lambda pred: max((k for k in valid if pred(k)), key=valid.get)  # noqa: E731
    served_seq = best(lambda k: k[0] == "transitions" and k[1] == 0.0 and k[2] in (10, 20))
    gap_seq = best(lambda k: k[0] == "transitions")
    slit = best(lambda k: k[0] == "slit")
    ease, rp3 = best(lambda k: k[0] == "ease"), best(lambda k: k[0] == "rp3beta")
    base_ndcg, base_recs = ndcg(scores["test"][served_seq], "test")
    base = B.per_user_ndcg(data, base_recs)
    print(f"best single baseline (transitions, gamma 0): {served_seq} valid {valid[served_seq]:.4f} test {base_ndcg:.4f}")
    for key in (gap_seq, slit, ease, rp3):
        print(f"alone: {key} valid {valid[key]:.4f} test {ndcg(scores['test'][key], 'test')[0]:.4f}")
    for parts in ((served_seq, ease, rp3), (gap_seq, ease, rp3), (slit, ease, rp3), (slit, served_seq, ease, rp3)):
        chosen, best_valid = None, -1.0
        for ws in itertools.product(WEIGHTS, repeat=len(parts) - 1):
            v = ndcg(scaled(scores["valid"][parts[0]], "valid")
                     + sum(w * scaled(scores["valid"][p], "valid") for w, p in zip(ws, parts[1:])), "valid")[0]
            if v > best_valid:
                chosen, best_valid = ws, v
        t, recs = ndcg(scaled(scores["test"][parts[0]], "test")
                       + sum(w * scaled(scores["test"][p], "test") for w, p in zip(chosen, parts[1:])), "test")
        got = B.per_user_ndcg(data, recs)
        diff = np.array([got[u] - base[u] for u in got])
        print(f"ensemble {parts} weights {chosen}: valid {best_valid:.4f} test {t:.4f}; vs the best baseline "
              f"{diff.mean():+.4f} ± {diff.std(ddof=1) / np.sqrt(len(diff)):.4f} (SE)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
