"""Offline evaluation of recommenders: a per-user temporal hold-out split and top-k metrics.

Pure functions on numpy arrays and plain Python containers (no database, no Flask), shared by the
benchmarks (``benchmarks/baselines.py``, ``benchmarks/bench_movielens.py``) and usable on the
service's own event log.

Protocol: :func:`holdout_split` holds out each user's most recent interactions; tune on
train -> valid (``split.train_idx`` -> ``split.valid_truth``), then report on
train+valid -> test (:func:`train_valid_indices` -> ``split.test_truth``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Iterable, Mapping, Sequence

import numpy as np

__all__ = [
    "Split",
    "holdout_split",
    "train_valid_indices",
    "recall_at_k",
    "ndcg_at_k",
    "catalog_coverage",
    "popularity_bias",
    "item_popularity",
    "evaluate",
]


@dataclass(frozen=True)
class Split:
    """Result of :func:`holdout_split`. All ``*_idx`` arrays index the input arrays (sorted, int64).

    Attributes:
        train_idx: rows used for fitting while tuning.
        valid_idx: each evaluated user's ``n_valid`` interactions just before the test ones.
        test_idx: each evaluated user's last ``n_test`` interactions.
        users: evaluated users (those with enough interactions), sorted ascending.
        valid_truth: user -> set of item ids in ``valid_idx`` (evaluated users only).
        test_truth: user -> set of item ids in ``test_idx`` (evaluated users only).
        n_test, n_valid, min_train: the parameters the split was made with.
    """

    train_idx: np.ndarray
    valid_idx: np.ndarray
    test_idx: np.ndarray
    users: np.ndarray
    valid_truth: dict[Any, set[Any]] = field(repr=False)
    test_truth: dict[Any, set[Any]] = field(repr=False)
    n_test: int = 1
    n_valid: int = 1
    min_train: int = 1

    @property
    def train_valid_idx(self) -> np.ndarray:
        """Rows for the final fit (train + valid), sorted; see :func:`train_valid_indices`."""
        return train_valid_indices(self)

    def truth(self, phase: str) -> dict[Any, set[Any]]:
        """Ground truth for ``phase`` ``"valid"`` or ``"test"``."""
        if phase == "valid":
            return self.valid_truth
        if phase == "test":
            return self.test_truth
        raise ValueError(f"phase must be 'valid' or 'test', got {phase!r}")

    def fit_idx(self, phase: str) -> np.ndarray:
        """Rows to fit on before scoring ``phase``: train for "valid", train+valid for "test"."""
        if phase == "valid":
            return self.train_idx
        if phase == "test":
            return self.train_valid_idx
        raise ValueError(f"phase must be 'valid' or 'test', got {phase!r}")


def holdout_split(
    user_ids: Sequence[Hashable] | np.ndarray,
    item_ids: Sequence[Hashable] | np.ndarray,
    timestamps: Sequence[float] | np.ndarray,
    *,
    n_test: int = 1,
    n_valid: int = 1,
    min_train: int = 1,
) -> Split:
    """Per-user temporal leave-last-out split.

    For every user, that user's rows are ordered by ``timestamp`` ascending, ties broken by the
    row's position in the input (earlier row = earlier interaction; a stable sort). In that order
    the last ``n_test`` rows are test, the ``n_valid`` rows just before them are validation and
    all earlier rows are train. A user with fewer than ``n_test + n_valid + min_train`` rows keeps
    every row in train and is not evaluated. Fully deterministic: no randomness.

    Rows are taken as given: drop non-positive interactions and repeated (user, item) pairs
    before splitting if they should not count. Ground-truth sets are the held-out item ids as
    given (not filtered against the user's train items).

    Args:
        user_ids, item_ids, timestamps: one entry per interaction, equal lengths. Users and items
            may be any hashable values (ints recommended); timestamps any numbers.
        n_test: held-out test interactions per evaluated user (>= 1).
        n_valid: validation interactions per evaluated user (>= 0).
        min_train: train interactions an evaluated user must keep (>= 0).
    """
    if n_test < 1 or n_valid < 0 or min_train < 0:
        raise ValueError("need n_test >= 1, n_valid >= 0, min_train >= 0")
    users = np.asarray(user_ids)
    items = np.asarray(item_ids)
    ts = np.asarray(timestamps)
    n = len(users)
    if len(items) != n or len(ts) != n:
        raise ValueError("user_ids, item_ids and timestamps must have equal lengths")

    train_idx = np.arange(n, dtype=np.int64)
    empty = np.empty(0, dtype=np.int64)
    if n == 0:
        return Split(train_idx, empty, empty, np.empty(0, dtype=users.dtype), {}, {}, n_test, n_valid, min_train)

    # Group rows by user, then within a user by (timestamp, row position): lexsort is stable and
    # its last key is the primary one.
    user_codes, inverse = np.unique(users, return_inverse=True)
    inverse = inverse.reshape(-1)
    order = np.lexsort((np.arange(n), ts, inverse))
    sorted_users = inverse[order]
    starts = np.flatnonzero(np.r_[True, sorted_users[1:] != sorted_users[:-1]])
    ends = np.r_[starts[1:], n]

    need = n_test + n_valid + min_train
    is_train = np.ones(n, dtype=bool)
    valid_parts: list[np.ndarray] = []
    test_parts: list[np.ndarray] = []
    evaluated: list[int] = []
    for start, end in zip(starts.tolist(), ends.tolist()):
        if end - start < need:
            continue
        test_rows = order[end - n_test : end]
        valid_rows = order[end - n_test - n_valid : end - n_test]
        is_train[test_rows] = False
        is_train[valid_rows] = False
        test_parts.append(test_rows)
        valid_parts.append(valid_rows)
        evaluated.append(int(sorted_users[start]))

    valid_idx = np.sort(np.concatenate(valid_parts)).astype(np.int64) if valid_parts else empty
    test_idx = np.sort(np.concatenate(test_parts)).astype(np.int64) if test_parts else empty
    eval_users = user_codes[np.asarray(evaluated, dtype=np.int64)] if evaluated else user_codes[:0]

    def _truth(parts: list[np.ndarray]) -> dict[Any, set[Any]]:
        return {
            _py(user_codes[code]): {_py(v) for v in items[rows]}
            for code, rows in zip(evaluated, parts)
        }

    return Split(
        train_idx=train_idx[is_train],
        valid_idx=valid_idx,
        test_idx=test_idx,
        users=eval_users,
        valid_truth=_truth(valid_parts),
        test_truth=_truth(test_parts),
        n_test=n_test,
        n_valid=n_valid,
        min_train=min_train,
    )


def train_valid_indices(split: Split) -> np.ndarray:
    """Rows to fit the final model on (train + validation, sorted) before scoring the test set."""
    return np.sort(np.concatenate([split.train_idx, split.valid_idx])).astype(np.int64)


def _py(value: Any) -> Any:
    """numpy scalar -> plain Python value, so dict keys compare and serialise predictably."""
    return value.item() if isinstance(value, np.generic) else value


# --------------------------------------------------------------------------------------------------
# Metrics. ``recommended[u]`` is user u's ranked list (best first); ``relevant[u]`` its held-out set.
# Each is averaged over users whose relevant set is non-empty (others are skipped). A repeated item
# in one list takes a slot but only its first occurrence can be a hit.


def _head(ranked: Iterable[Any], k: int | None) -> list[Any]:
    """The first k entries (all when k is None) as plain Python values."""
    out: list[Any] = []
    for item in ranked:
        if k is not None and len(out) >= k:
            break
        out.append(_py(item))
    return out


def _hit_ranks(ranked: Iterable[Any], relevant: set[Any], k: int) -> list[int]:
    """0-based ranks within the first k slots holding a relevant item's first occurrence."""
    seen: set[Any] = set()
    ranks = []
    for rank, item in enumerate(_head(ranked, k)):
        if item in relevant and item not in seen:
            ranks.append(rank)
        seen.add(item)
    return ranks


def _check(recommended: Sequence[Sequence[Any]], relevant: Sequence[set[Any]], k: int) -> None:
    if k < 1:
        raise ValueError("k must be >= 1")
    if len(recommended) != len(relevant):
        raise ValueError("recommended and relevant must have one entry per user")


def recall_at_k(recommended: Sequence[Sequence[Any]], relevant: Sequence[set[Any]], k: int = 10) -> float:
    """Mean over users of hits@k / min(k, |relevant|).

    The denominator is capped at k (sometimes called "R-recall" or capped recall), so a perfect
    list scores 1.0 even when a user has more than k held-out items. With ``|relevant| <= k``
    (e.g. 2 held-out items, k = 10) it equals plain recall hits / |relevant|.
    """
    _check(recommended, relevant, k)
    scores = []
    for recs, rel in zip(recommended, relevant):
        if not rel:
            continue
        hits = len(_hit_ranks(recs, rel, k))
        scores.append(hits / min(k, len(rel)))
    return float(np.mean(scores)) if scores else 0.0


def ndcg_at_k(recommended: Sequence[Sequence[Any]], relevant: Sequence[set[Any]], k: int = 10) -> float:
    """Mean over users of DCG@k / IDCG@k with binary relevance.

    DCG@k = sum over ranks r = 1..k of rel_r / log2(r + 1); IDCG@k is the DCG of a list with all
    min(k, |relevant|) relevant items first.
    """
    scores = ndcg_per_user(recommended, relevant, k)
    scores = scores[~np.isnan(scores)]
    return float(np.mean(scores)) if len(scores) else 0.0


def ndcg_per_user(recommended: Sequence[Sequence[Any]], relevant: Sequence[set[Any]], k: int = 10) -> np.ndarray:
    """Each user's NDCG@k (see :func:`ndcg_at_k`); NaN for a user with nothing relevant."""
    _check(recommended, relevant, k)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    out = np.full(len(relevant), np.nan)
    for u, (recs, rel) in enumerate(zip(recommended, relevant)):
        if rel:
            dcg = float(sum(discounts[r] for r in _hit_ranks(recs, rel, k)))
            out[u] = dcg / float(discounts[: min(k, len(rel))].sum())
    return out


def paired_difference(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> dict[str, float]:
    """Mean of ``a - b`` over the users both score (NaN skipped), its standard error and the count."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    d = d[~np.isnan(d)]
    if len(d) < 2:
        return {"mean": float(d.mean()) if len(d) else 0.0, "se": float("inf"), "users": int(len(d))}
    return {"mean": float(d.mean()), "se": float(d.std(ddof=1) / np.sqrt(len(d))), "users": int(len(d))}


def catalog_coverage(recommended: Sequence[Sequence[Any]], n_items: int, k: int | None = None) -> float:
    """Fraction of the catalog (``n_items`` items) that appears in at least one (top-k) list."""
    if n_items <= 0:
        raise ValueError("n_items must be positive")
    distinct: set[Any] = set()
    for recs in recommended:
        distinct.update(_head(recs, k))
    return len(distinct) / n_items


def item_popularity(item_ids: Sequence[int] | np.ndarray, n_items: int) -> np.ndarray:
    """Interaction count per item id 0..n_items-1 (e.g. of the training rows)."""
    return np.bincount(np.asarray(item_ids, dtype=np.int64), minlength=n_items).astype(np.float64)


def popularity_bias(
    recommended: Sequence[Sequence[int]],
    item_popularity: Sequence[float] | np.ndarray,
    k: int | None = None,
) -> dict[str, float]:
    """How popular the recommended items are, measured on the training data.

    Args:
        recommended: ranked lists of integer item ids indexing ``item_popularity``.
        item_popularity: training interaction count of every catalog item (see
            :func:`item_popularity`); its length is the catalog size.
        k: only the first k items of each list count (None: all).

    Returns:
        ``pop_percentile``: mean popularity percentile of the recommended items (0 = least,
        1 = most popular catalog item; the mid-rank percentile, so tied items share one value:
        (#items less popular + (#items equally popular - 1) / 2) / (n_items - 1)).
        ``avg_rec_popularity``: mean training count of the recommended items.
        ``pop_lift``: avg_rec_popularity / the mean item popularity over training interactions
        (sum(pop^2) / sum(pop), i.e. how popular what users actually interacted with is);
        1 = as popular as users' own history, > 1 = biased towards popular items.
        All averages run over every (user, recommended item) pair.
    """
    pop = np.asarray(item_popularity, dtype=np.float64)
    n = len(pop)
    ids = [i for recs in recommended for i in _head(recs, k)]
    if n == 0 or not ids:
        return {"pop_percentile": 0.0, "avg_rec_popularity": 0.0, "pop_lift": 0.0}
    ids_arr = np.asarray(ids, dtype=np.int64)
    if ids_arr.min() < 0 or ids_arr.max() >= n:
        raise ValueError("recommended item ids must index item_popularity")
    sorted_pop = np.sort(pop)
    less = np.searchsorted(sorted_pop, pop, side="left")
    equal = np.searchsorted(sorted_pop, pop, side="right") - less
    percentile = (less + (equal - 1) / 2.0) / max(n - 1, 1)
    avg_rec = float(pop[ids_arr].mean())
    total = pop.sum()
    avg_interacted = float((pop * pop).sum() / total) if total > 0 else 0.0
    return {
        "pop_percentile": float(percentile[ids_arr].mean()),
        "avg_rec_popularity": avg_rec,
        "pop_lift": avg_rec / avg_interacted if avg_interacted > 0 else math.nan,
    }


def evaluate(
    recommend_fn: Callable[[Any], Sequence[Any]],
    split_or_users: Split | Iterable[Any],
    k: int = 10,
    *,
    relevant: Mapping[Any, set[Any]] | None = None,
    phase: str = "test",
    n_items: int | None = None,
    item_popularity: Sequence[float] | np.ndarray | None = None,
    progress: bool = False,
) -> dict[str, float]:
    """Score ``recommend_fn(user) -> ranked item ids`` on held-out data; returns every metric.

    Args:
        recommend_fn: returns the user's ranking, best first (at least k items; items the user
            already interacted with in the fitting data should be excluded by the function).
        split_or_users: a :class:`Split` (its ``users`` and ``phase`` ground truth), or users
            together with ``relevant``.
        k: cut-off.
        relevant: user -> held-out items, when ``split_or_users`` is not a Split.
        phase: "valid" or "test", when given a Split.
        n_items: catalog size; adds ``coverage`` when given (or implied by ``item_popularity``).
        item_popularity: training counts per integer item id; adds the :func:`popularity_bias` keys.
        progress: show a tqdm progress bar (when tqdm is installed).

    Returns:
        ``{"k", "n_users", "recall", "ndcg"}`` plus ``coverage`` and ``pop_percentile``,
        ``avg_rec_popularity``, ``pop_lift`` when their inputs are known.
    """
    if isinstance(split_or_users, Split):
        truth = split_or_users.truth(phase)
        users = [_py(u) for u in split_or_users.users]
    else:
        if relevant is None:
            raise ValueError("relevant is required unless a Split is given")
        truth = dict(relevant)
        users = [_py(u) for u in split_or_users]
    iterator: Iterable[Any] = users
    if progress:
        try:
            from tqdm.auto import tqdm

            iterator = tqdm(users, desc=f"evaluate@{k}", unit="user")
        except ImportError:  # pragma: no cover - tqdm is a service dependency
            pass
    recommended: list[list[Any]] = []
    rel_sets: list[set[Any]] = []
    for user in iterator:
        recommended.append(_head(recommend_fn(user), k))
        rel_sets.append(set(truth.get(user, set())))
    result: dict[str, float] = {
        "k": k,
        "n_users": sum(1 for r in rel_sets if r),
        "recall": recall_at_k(recommended, rel_sets, k),
        "ndcg": ndcg_at_k(recommended, rel_sets, k),
    }
    if n_items is None and item_popularity is not None:
        n_items = len(item_popularity)
    if n_items is not None:
        result["coverage"] = catalog_coverage(recommended, n_items, k)
    if item_popularity is not None:
        result.update(popularity_bias(recommended, item_popularity, k))
    return result
