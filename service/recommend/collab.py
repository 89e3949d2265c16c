"""Collaborative models fitted offline and memory-mapped online: EASE, item-kNN, RP3beta, PureSVD
and item sequences (what people engage with next), and ensembles of two or three of them.

The co-engagement cosine in :mod:`service.recommend.behaviour` is rebuilt by every worker from raw
events, so it has to stay cheap. These models cost more to fit (an N x N inverse, a blocked
all-pairs cosine, a truncated SVD), so the index rebuild fits them once, keeps the
hyper-parameters that score best offline and writes the arrays into the versioned index artifact
(``<version>/behaviour/``). Workers memory-map those files: the pages are shared between
processes, and a request reads only its seeds' rows. Training rows and online seeds get the same
transform (:func:`interaction_matrix`, :func:`seed_row`): weights <= 0 are dropped (none of these
models can say "less than unseen"), repeats add up, and ``log1p`` keeps a hundred views from
outweighing a few purchases. Online, a model may also weigh a user's seeds by recency
(``seed_decay``: the k-th most recent positive seed counts ``seed_decay ** k``), chosen offline
like any other hyper-parameter but applied only to the seed row, so it costs no refit.

An ensemble (family ``ENSEMBLE``, :class:`EnsembleModel`) is two or more fitted models of different
families on the same input, each with its own params and seed weighting: per request each part's
scores are scaled to its best candidate and added, part j weighted ``weights[j]``. The training
stage builds them from the families' best fits; it is not one of ``FAMILIES``.

Memory: ``memory_budget_bytes`` counts the fitted arrays plus the fit's own working set (EASE's
float64 N x N matrix and float32 result, item-kNN's per-block similarity rows and neighbour lists,
RP3beta's as item-kNN's, the SVD's Lanczos vectors and its dense users x k step); the input matrix and copies of its size
are not counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import scipy.sparse as sp
from scipy.linalg import get_lapack_funcs
from scipy.sparse.linalg import svds

from service.recommend.ranking import decay, rows_in, top_n

FAMILIES = ("ease", "item_knn", "rp3beta", "factor", "sequence")
MODEL_DIR = "behaviour"  # sub-folder of an index version that holds the model files
# Every item with any event up to the training watermark (sorted ids): what the model's own
# item list cannot say, since it keeps only liked items (EASE only the most active of them).
TOUCHED_FILE = "touched_items.npy"

# EASE over fewer items than this (when the budget forces it) covers too little to be worth a fit.
EASE_MIN_ITEMS = 100
# Rows of the N x N matrices handled at once (Gram product, symmetrising, scaling to B).
EASE_BLOCK = 256
# lambda as multiples of the mean diagonal of X'X: Steck's best values (ML-20M 500, Netflix 1000,
# MSD 200; binary X) are 0.25-1x that mean there, and the mean moves with event weights and data
# size, so fixed values would be wrong somewhere. Small data wants more shrinkage: steps above 1x.
EASE_L2_SCALES = (0.25, 1.0, 4.0, 16.0)
KNN_NEIGHBOURS = (50, 200)
KNN_USER_DAMPING = (0.0, 0.5)
# Bytes per (item in the block, item) pair: the sparse product (value + index), its dense float32
# copy, the int64 argpartition result, slack.
KNN_PAIR_BYTES = 32
# Bytes per kept neighbour while fitting: int64 row + int64 column + float32 value, then the CSR.
KNN_NEIGHBOUR_BYTES = 28
FACTORS = (32, 64, 128)
# RP3beta (Paudel et al. 2017): the transition probabilities' exponent alpha and the popularity
# penalty beta; neighbours kept per item as item-kNN's largest.
RP3_ALPHAS = (0.5, 1.0)
RP3_BETAS = (0.3, 0.6)
RP3_NEIGHBOURS = 200  # the default
# Neighbours tried per item. 200 alone was too few: on MovieLens-100K (1,682 items) RP3beta with
# recency-weighted seeds scored validation NDCG@10 0.134 at 200, 0.142 at 500 (the baseline's K).
RP3_NEIGHBOUR_GRID = (200, 500)
# Online weight of the k-th most recent positive seed: seed_decay ** k (1.0: order ignored).
# Tried for every fitted model (scoring only, no refit, but each costs a validation pass). On
# MovieLens-100K, where people rate in sessions, the order of the history says a lot about the
# next item: validation NDCG@10 of the best EASE went from 0.123 (1.0) to 0.139 (0.9); 0.95 and
# 0.7 never won there by enough to pay for their passes.
SEED_DECAYS = (1.0, 0.9, 0.8)
# Item sequences: item j counts after item i when a user engaged with j within ``window`` positive
# items after i. On MovieLens-100K (validation NDCG@10, recency-weighted seeds) the model alone
# scored 0.124-0.127 against EASE's 0.141, but added to EASE it raised it to 0.155-0.157: order
# says what comes next, which co-occurrence over whole histories does not.
SEQUENCE_WINDOWS = (10, 20)
SEQUENCE_ALPHA = 0.5  # the source item's outgoing count, to this power, divides its row
SEQUENCE_BETAS = (0.3, 0.6)  # the target item's incoming count, to this power, divides its column
SEQUENCE_NEIGHBOURS = 500  # the default
# Neighbours tried per item, as RP3beta's: 500 kept neighbours over 100k items (1.4 GB while
# fitting) leave no room in the default budget, 200 do.
SEQUENCE_NEIGHBOUR_GRID = (200, 500)
ENSEMBLE = "ensemble"
# The last part's weight (the first's is 1) tried for an ensemble; each part is scaled to its
# best candidate per request first, so only the ratios matter.
ENSEMBLE_WEIGHTS = (0.5, 1.0, 2.0)


@dataclass
class Interactions:
    """Who engaged with what: users x items, ``log1p`` of the summed decayed positive weight."""

    matrix: sp.csr_matrix  # users x items, float32
    item_ids: np.ndarray  # int64, ascending: column -> item primary key
    user_keys: np.ndarray  # row -> user key
    # Same pattern as ``matrix``: 1 + the position of the user's last positive event on the item
    # among the user's items (1: engaged with first); None when unknown (no sequence model).
    order: sp.csr_matrix | None = None


def interaction_matrix(users, items, weights, times, *, half_life_days: float, binary: bool = False) -> Interactions:
    """Events (user key, item id, weight, Unix seconds) as a users x items matrix.

    Events with weight <= 0 are dropped. Each weight decays with its age relative to *that
    user's* newest event (someone who stopped visiting a year ago still says which items go
    together), sums per (user, item), then ``log1p``. ``half_life_days`` <= 0 or inf: no decay.
    ``binary``: every positive (user, item) counts 1 (what EASE's paper fits).
    """
    w = np.asarray(weights, dtype=np.float64)
    keep = w > 0
    user_keys, u = np.unique(np.asarray(users)[keep], return_inverse=True)
    item_ids, i = np.unique(np.asarray(items, dtype=np.int64)[keep], return_inverse=True)
    w, t = w[keep], np.asarray(times, dtype=np.float64)[keep]
    if half_life_days > 0 and np.isfinite(half_life_days) and len(w):
        latest = np.full(len(user_keys), -np.inf)
        np.maximum.at(latest, u, t)
        w = w * decay(latest[u] - t, half_life_days)
    m = sp.csr_matrix((w, (u.ravel(), i.ravel())), shape=(len(user_keys), len(item_ids)))
    m.sum_duplicates()
    m.data = np.ones_like(m.data) if binary else np.log1p(m.data)
    m = m.astype(np.float32)
    m.eliminate_zeros()  # decayed below float32's range
    return Interactions(m, item_ids, user_keys, _positions(u.ravel(), i.ravel(), t, m))


def _positions(u: np.ndarray, i: np.ndarray, t: np.ndarray, m: sp.csr_matrix) -> sp.csr_matrix:
    """:attr:`Interactions.order` of ``m`` from its positive events (user row, item column, time),
    given in log order: ties in time keep that order, as the evaluator's histories do."""
    by_time = np.lexsort((np.arange(len(u)), t, u))  # by user, each user's events oldest first
    pair = u[by_time].astype(np.int64) * m.shape[1] + i[by_time]
    _, last_reversed = np.unique(pair[::-1], return_index=True)
    keep = np.sort(len(pair) - 1 - last_reversed)  # each (user, item)'s last event, still in that order
    rows, cols = u[by_time][keep], i[by_time][keep]
    start = np.searchsorted(rows, rows, side="left")  # where each user's items begin
    order = sp.csr_matrix((np.arange(len(keep)) - start + 1.0, (rows, cols)), shape=m.shape)
    return sp.csr_matrix(order.multiply(m != 0))  # entries ``m`` lost to decay go too


def model_input(users, items, weights, times, params: Mapping[str, Any], *, half_life_days: float) -> Interactions:
    """The matrix a model with ``params`` is fitted on: its input params (``INPUT_PARAMS``) say
    how it is made; ``half_life_days`` is the decay when they do not say (the service's)."""
    return interaction_matrix(users, items, weights, times, half_life_days=params.get("half_life_days", half_life_days),
                              binary=bool(params.get("binary", False)))


def seed_row(seeds: Mapping[int, float], binary: bool = False, decay: float = 1.0) -> dict[int, float]:
    """The online counterpart of a matrix row: ``log1p(w)`` (or 1 when ``binary``) for w > 0,
    the others dropped; with ``decay`` < 1 the k-th positive seed *in the mapping's order* (newest
    first, as ``seeds_from_history`` and ``seeds_from_session`` build them) is also weighed
    ``decay ** k``."""
    row = {int(i): 1.0 if binary else float(np.log1p(w)) for i, w in seeds.items() if w > 0}
    if decay != 1.0:
        row = {i: v * float(decay) ** k for k, (i, v) in enumerate(row.items())}
    return row


class CollabModel:
    """A fitted model: named arrays (saved as .npy, memory-mapped when loaded) and its params."""

    family = ""
    ARRAYS: tuple[str, ...] = ("item_ids",)

    def __init__(self, arrays: Mapping[str, np.ndarray], params: Mapping[str, Any]):
        self.arrays = dict(arrays)
        self.item_ids: np.ndarray = self.arrays["item_ids"]
        self.params = dict(params)

    @property
    def nbytes(self) -> int:
        """Bytes of the model's arrays (what a worker maps)."""
        return int(sum(a.nbytes for a in self.arrays.values()))

    def rows_of(self, item_ids: Iterable[int]) -> np.ndarray:
        """Position of each item id in ``item_ids`` (-1 when the model does not know it)."""
        return rows_in(self.item_ids, item_ids)

    def seed_vector(self, seeds: Mapping[int, float]) -> np.ndarray | None:
        """Seeds as a dense row over ``item_ids`` (via :func:`seed_row`); None when none is known."""
        row = seed_row(seeds, bool(self.params.get("binary")), float(self.params.get("seed_decay", 1.0)))
        rows = self.rows_of(row)
        known = rows >= 0
        if not known.any():
            return None
        x = np.zeros(len(self.item_ids), dtype=np.float32)
        x[rows[known]] = np.fromiter(row.values(), dtype=np.float64, count=len(row))[known]
        return x

    def align(self, matrix: sp.spmatrix, item_ids: np.ndarray) -> sp.csr_matrix:
        """Columns of ``matrix`` (named by ``item_ids``) moved to this model's items; others dropped."""
        rows = self.rows_of(item_ids)
        known = np.flatnonzero(rows >= 0)
        move = sp.csr_matrix((np.ones(len(known), np.float32), (known, rows[known])),
                             shape=(len(item_ids), len(self.item_ids)))
        return sp.csr_matrix(sp.csr_matrix(matrix) @ move)

    def score_rows(self, x: np.ndarray) -> np.ndarray:
        """Scores over ``item_ids`` for one dense row ``x`` (n_items,)."""
        return self.score_batch(np.asarray(x)[None, :])[0]

    def score_batch(self, x) -> np.ndarray:
        """Scores (b, n_items) for rows ``x`` (b, n_items), dense or sparse."""
        x = x.toarray() if sp.issparse(x) else np.asarray(x)
        x = np.atleast_2d(x).astype(np.float32, copy=False)
        if x.shape[1] != len(self.item_ids):
            raise ValueError(f"rows have {x.shape[1]} columns, the model knows {len(self.item_ids)} items")
        # Only the seeds' rows of the model are read: a request touches a few pages of the map.
        cols = np.flatnonzero((x != 0).any(axis=0))
        if not len(cols):
            return np.zeros(x.shape, dtype=np.float32)
        return np.ascontiguousarray(self._score(x[:, cols], cols), dtype=np.float32)

    def _score(self, x: np.ndarray, cols: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def recommend(self, seeds: Mapping[int, float], n: int, exclude: Iterable[int] = ()) -> dict[int, float]:
        """Best ``n`` items for the seeds (item id -> score > 0), ``exclude`` removed.

        Seeds are raw weights (as for ``Snapshot.co_engaged``), newest first; :func:`seed_row` is
        applied here. Seeds are candidates too; empty when no positive seed is known to the model.
        """
        x = self.seed_vector(seeds)
        if x is None:
            return {}
        scores = self.score_rows(x)
        blocked = self.rows_of(set(exclude))
        scores[blocked[blocked >= 0]] = 0.0
        best = top_n(scores, n)
        best = best[scores[best] > 0]
        return dict(zip(self.item_ids[best].tolist(), scores[best].astype(float).tolist()))

    def save(self, folder: Path) -> list[str]:
        """Write each array as ``<family>.<name>.npy`` into ``folder``; the names written."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        names = []
        for name in self.ARRAYS:
            names.append(f"{self.family}.{name}.npy")
            np.save(folder / names[-1], np.ascontiguousarray(self.arrays[name]), allow_pickle=False)
        return names


class EaseModel(CollabModel):
    """EASE (Steck, WWW 2019): ``scores = x @ B`` over the N most active items."""

    family = "ease"
    ARRAYS = ("item_ids", "B")

    @property
    def B(self) -> np.ndarray:  # noqa: N802 - Steck's name
        """Item-item weights, N x N float32 with a zero diagonal."""
        return self.arrays["B"]

    @B.setter
    def B(self, value: np.ndarray) -> None:  # noqa: N802
        self.arrays["B"] = value

    def _score(self, x, cols):
        return x @ self.B[cols]


class ItemKnnModel(CollabModel):
    """Item-item cosine, top neighbours per item: ``scores = x @ S`` with S sparse (CSR)."""

    family = "item_knn"
    ARRAYS = ("item_ids", "data", "indices", "indptr")

    def __init__(self, arrays, params):
        super().__init__(arrays, params)
        n = len(self.item_ids)
        # copy=False and int32 indices (when they fit) keep scipy from copying the mapped arrays.
        self.sim = sp.csr_matrix((self.arrays["data"], self.arrays["indices"], self.arrays["indptr"]),
                                 shape=(n, n), copy=False)

    def _score(self, x, cols):
        return (self.sim[cols].T @ x.T).T


class Rp3BetaModel(ItemKnnModel):
    """RP3beta (Paudel et al., TiiS 2017): item -> user -> item transition probabilities, each
    raised to ``alpha``, every target item divided by its popularity ** ``beta``, top neighbours
    per item kept: ``scores = x @ W`` with W sparse (CSR), stored as item-kNN's."""

    family = "rp3beta"


class SequenceModel(ItemKnnModel):
    """What people engage with next: ``W[i, j]`` counts the users who engaged with j within
    ``window`` positive items after i, divided by i's outgoing count ** ``alpha`` and j's
    incoming count ** ``beta``, top neighbours per item kept: ``scores = x @ W`` with W sparse
    (CSR), stored as item-kNN's. Not symmetric: a seed's row lists what followed it, so with
    recency-weighted seeds (``seed_decay``) the newest items say most about the next one."""

    family = "sequence"


class FactorModel(CollabModel):
    """PureSVD (Cremonesi et al. 2010): ``scores = (x @ Q) @ Q.T`` with Q the item factors."""

    family = "factor"
    ARRAYS = ("item_ids", "factors")

    def _score(self, x, cols):
        q = self.arrays["factors"]
        return (x @ q[cols]) @ q.T


class EnsembleModel(CollabModel):
    """Two fitted models of different families (``parts``): per request each part scores its own
    seed row (its own ``binary`` and ``seed_decay``), its scores are divided by its best
    candidate's (exclusions out; a part with no positive score adds nothing) and added,
    part j weighted ``params["weights"][j]``. Items: the union of the parts'. Params:
    ``parts`` ([{family, params}, ...]), ``weights``, and the input params the parts share."""

    family = ENSEMBLE
    ARRAYS = ()

    def __init__(self, parts: list[CollabModel], params: Mapping[str, Any]):
        if len(parts) < 2 or len({p.family for p in parts}) != len(parts) or ENSEMBLE in {p.family for p in parts}:
            raise ValueError("an ensemble needs two or more parts of different (single) families")
        self.parts = list(parts)
        self.params = dict(params)
        self.weights = [float(w) for w in self.params.get("weights", [1.0] * len(parts))]
        if len(self.weights) != len(parts):
            raise ValueError(f"{len(parts)} parts, {len(self.weights)} weights")
        self.item_ids = np.unique(np.concatenate([np.asarray(p.item_ids, dtype=np.int64) for p in parts]))
        self.arrays = {}
        self._rows = [self.rows_of(p.item_ids) for p in parts]  # each part's items in ``item_ids``

    @property
    def nbytes(self) -> int:
        return int(sum(p.nbytes for p in self.parts))

    def recommend(self, seeds: Mapping[int, float], n: int, exclude: Iterable[int] = ()) -> dict[int, float]:
        exclude = set(exclude)
        total = np.zeros(len(self.item_ids), dtype=np.float64)
        for part, rows, weight in zip(self.parts, self._rows, self.weights):
            x = part.seed_vector(seeds)
            if x is None or weight <= 0:
                continue
            scores = part.score_rows(x).astype(np.float64)
            blocked = part.rows_of(exclude)
            scores[blocked[blocked >= 0]] = 0.0
            best = scores.max(initial=0.0)
            if best > 0:
                total[rows] += weight * scores / best
        blocked = self.rows_of(exclude)
        total[blocked[blocked >= 0]] = 0.0
        best = top_n(total, n)
        best = best[total[best] > 0]
        return dict(zip(self.item_ids[best].tolist(), total[best].tolist()))

    def score_batch(self, x) -> np.ndarray:
        raise NotImplementedError("an ensemble scores per request (recommend): each part has its own seed row")

    def save(self, folder: Path) -> list[str]:
        """Each part's files (``<family>.<name>.npy``: the families differ, so the names do)."""
        return [name for part in self.parts for name in part.save(folder)]


def ensemble(parts: list[CollabModel], weights: list[float]) -> EnsembleModel:
    """Fitted ``parts`` (made from the same input) as an ensemble; its params record each part."""
    inputs = {k: parts[0].params[k] for k in INPUT_PARAMS if k in parts[0].params}
    spec = [{"family": p.family, "params": dict(p.params)} for p in parts]
    return EnsembleModel(parts, {"parts": spec, "weights": [float(w) for w in weights], **inputs})


_MODELS: dict[str, type[CollabModel]] = {"ease": EaseModel, "item_knn": ItemKnnModel, "rp3beta": Rp3BetaModel,
                                          "factor": FactorModel, "sequence": SequenceModel, ENSEMBLE: EnsembleModel}


def _model_class(family: str) -> type[CollabModel]:
    if family not in _MODELS:
        raise ValueError(f"unknown collaborative family {family!r} (known: {', '.join(FAMILIES)}, {ENSEMBLE})")
    return _MODELS[family]


def save_touched(folder: Path, item_ids: np.ndarray) -> str:
    """Write the sorted distinct ``item_ids`` (every event's item) as :data:`TOUCHED_FILE`; its name."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / TOUCHED_FILE, np.unique(np.asarray(item_ids, dtype=np.int64)), allow_pickle=False)
    return TOUCHED_FILE


def load_touched(folder: Path) -> np.ndarray | None:
    """What :func:`save_touched` wrote (memory-mapped); None for a version trained before it existed."""
    path = Path(folder) / TOUCHED_FILE
    if not path.is_file():
        return None
    ids = np.load(path, mmap_mode="r", allow_pickle=False)
    if ids.ndim != 1 or ids.dtype != np.int64:
        raise ValueError(f"{TOUCHED_FILE}: expected a 1-d int64 array, found {ids.ndim}-d {ids.dtype}")
    return ids


def load_model(folder: Path, family: str, params: Mapping[str, Any], *, mmap: bool = True) -> CollabModel:
    """The model :meth:`CollabModel.save` wrote into ``folder``, arrays memory-mapped read-only."""
    cls = _model_class(family)
    if cls is EnsembleModel:
        return EnsembleModel([load_model(folder, p["family"], p["params"], mmap=mmap) for p in params["parts"]],
                             params)
    arrays = {name: np.load(Path(folder) / f"{family}.{name}.npy", mmap_mode="r" if mmap else None,
                            allow_pickle=False) for name in cls.ARRAYS}
    return cls(arrays, params)


# --- fitting ----------------------------------------------------------------------------------
# Params that say how the input matrix was made (see :func:`interaction_matrix`), not how to fit.
INPUT_PARAMS = ("half_life_days", "binary")
# Params that say how online seeds are weighed (see :func:`seed_row`): no part of the fit.
SEED_PARAMS = ("seed_decay",)


def fit(family: str, data: Interactions, **params) -> CollabModel:
    """Fit one family on ``data``; ``items`` in params (a fitted model's size) is ignored, and
    the input params (``INPUT_PARAMS``, which ``data`` must have been made with) are kept in
    the model's params: ``binary`` also shapes its online seed rows; so are the seed params
    (``SEED_PARAMS``), which only shape them. An ensemble fits each of its ``parts`` in turn."""
    if family == ENSEMBLE:
        return ensemble([fit(p["family"], data, **p["params"]) for p in params["parts"]], params["weights"])
    params.pop("items", None)
    inputs = {k: params.pop(k) for k in INPUT_PARAMS + SEED_PARAMS if k in params}
    _model_class(family)
    model = {"ease": _fit_ease, "item_knn": _fit_knn, "rp3beta": _fit_rp3beta,
             "factor": _fit_factor, "sequence": _fit_sequence}[family](data, **params)
    model.params.update(inputs)
    return model


def _spd_inverse(g: np.ndarray) -> np.ndarray:
    """Inverse of the symmetric positive-definite ``g`` (C order, float64), overwriting it.

    LAPACK potrf/potri in place (np.linalg.inv would need a second N x N float64); they fill
    one triangle, copied to the other in blocks.
    """
    potrf, potri = get_lapack_funcs(("potrf", "potri"), (g,))
    c, info = potrf(g.T, lower=1, clean=0, overwrite_a=1)  # g.T: the same memory, Fortran order
    if info == 0:
        c, info = potri(c, lower=1, overwrite_c=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"X'X + l2*I is not positive definite (LAPACK info {info})")
    p = c.T  # its upper triangle holds the inverse
    for r0 in range(0, len(p), EASE_BLOCK):
        r1 = min(r0 + EASE_BLOCK, len(p))
        p[r0:r1, :r0] = p[:r0, r0:r1].T
        block, low = p[r0:r1, r0:r1], np.tril_indices(r1 - r0, -1)
        block[low] = block.T[low]
    return p


def _most_active(x: sp.csr_matrix, n: int) -> np.ndarray:
    """Columns of the ``n`` items the most users touched, ascending (so item ids stay sorted)."""
    return np.sort(top_n(np.bincount(x.indices, minlength=x.shape[1]).astype(np.float64), n))


def ease_gram(xs: sp.csr_matrix) -> np.ndarray:
    """X'X of a users x items float64 CSR matrix, dense (N x N float64, C order)."""
    n = xs.shape[1]
    xt = xs.T.tocsr()
    g = np.empty((n, n), dtype=np.float64)
    for r0 in range(0, n, EASE_BLOCK):  # X'X block by block: never a sparse N x N product
        (xt[r0:r0 + EASE_BLOCK] @ xs).toarray(out=g[r0:r0 + EASE_BLOCK])
    return g


def _fit_ease(data: Interactions, l2: float, max_items: int | None = None,
              gram: Callable[[sp.csr_matrix], np.ndarray] = ease_gram) -> EaseModel:
    """``gram``: computes X'X as :func:`ease_gram` does (a cluster's sums partial Grams of row blocks)."""
    x = data.matrix
    n = x.shape[1] if max_items is None else min(x.shape[1], int(max_items))
    cols = _most_active(x, n)
    # Inverted in place below: a read-only result (an object store's) is copied first.
    g = np.require(gram(sp.csr_matrix(x[:, cols], dtype=np.float64)), np.float64, ["C", "W"])
    g[np.diag_indices(n)] += float(l2)
    p = _spd_inverse(g) if n else g
    neg_diag = -np.diag(p).copy()
    b = np.empty((n, n), dtype=np.float32)
    for r0 in range(0, n, EASE_BLOCK):  # B = -P / diag(P), column by column's diagonal
        b[r0:r0 + EASE_BLOCK] = p[r0:r0 + EASE_BLOCK] / neg_diag
    np.fill_diagonal(b, 0.0)
    params = {"l2": float(l2), "items": n} | ({} if max_items is None else {"max_items": int(max_items)})
    return EaseModel({"item_ids": data.item_ids[cols].astype(np.int64), "B": b}, params)


def knn_block(xt: sp.csr_matrix, x: sp.csr_matrix, r0: int, r1: int, k: int) -> tuple[np.ndarray, ...]:
    """Top ``k`` neighbours of items ``r0:r1`` (rows of ``xt``): (rows, columns, similarities)."""
    # Sparse all the way: only item pairs someone engaged with together are ever touched
    # (a dense block x n array cost ~270 s per fit at 100k items and 10M events).
    sims = sp.csr_matrix(xt[r0:r1] @ x)
    row = np.repeat(np.arange(r1 - r0), np.diff(sims.indptr))
    value = np.where(sims.indices == row + r0, 0.0, sims.data)  # an item is not its own neighbour
    order = np.lexsort((-value, row))  # by row, best first within a row
    rank = np.arange(len(order)) - sims.indptr[row[order]]
    keep = order[(rank < k) & (value[order] > 0)]
    return row[keep] + r0, sims.indices[keep], value[keep]


def knn_blocks(xt: sp.csr_matrix, x: sp.csr_matrix, bounds: list[tuple[int, int]], k: int) -> list[tuple]:
    """:func:`knn_block` of each ``(r0, r1)`` in ``bounds``, in order."""
    return [knn_block(xt, x, r0, r1, k) for r0, r1 in bounds]


def _fit_knn(data: Interactions, neighbours: int = 200, user_damping: float = 0.5,
             block: int | None = None, blocks: Callable[..., list[tuple]] = knn_blocks) -> ItemKnnModel:
    """``blocks``: runs the row blocks as :func:`knn_blocks` does (a cluster's runs them as tasks)."""
    x = sp.csr_matrix(data.matrix, dtype=np.float32, copy=True)
    n = x.shape[1]
    if user_damping:  # inverse user frequency, as in Snapshot
        per_user = np.maximum(np.diff(x.indptr), 1).astype(np.float64)
        x.data *= np.repeat(per_user ** -float(user_damping), np.diff(x.indptr)).astype(np.float32)
    norms = np.sqrt(np.bincount(x.indices, weights=np.square(x.data, dtype=np.float64), minlength=n))
    x.data *= np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)[x.indices].astype(np.float32)
    arrays, block = _top_k_product(x.T.tocsr(), x, data.item_ids, neighbours, block, blocks)
    return ItemKnnModel(arrays, {"neighbours": int(neighbours), "user_damping": float(user_damping),
                                 "block": block, "items": n})


def _top_k_product(left: sp.csr_matrix, right: sp.csr_matrix, item_ids: np.ndarray, neighbours: int,
                   block: int | None, blocks: Callable[..., list[tuple]]) -> tuple[dict[str, np.ndarray], int]:
    """(CSR arrays of ``left @ right`` keeping each row's ``neighbours`` largest, the block size):
    item-kNN's and RP3beta's product, computed in row blocks by ``blocks``."""
    n = right.shape[1]
    k = max(0, min(int(neighbours), n - 1))
    block = max(1, int(block) if block else 2 ** 28 // (KNN_PAIR_BYTES * max(n, 1)))
    found = blocks(left, right, [(r0, min(r0 + block, n)) for r0 in range(0, n if k else 0, block)], k)
    rows, cols, vals = ([part[j] for part in found] for j in range(3))
    cat = lambda parts, dtype: np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)  # noqa: E731
    s = sp.csr_matrix((cat(vals, np.float32), (cat(rows, np.int64), cat(cols, np.int64))), shape=(n, n))
    idx = np.int32 if s.nnz < 2 ** 31 else np.int64
    return ({"item_ids": item_ids.astype(np.int64), "data": s.data.astype(np.float32),
             "indices": s.indices.astype(idx), "indptr": s.indptr.astype(idx)}, block)


def _row_normalised(m: sp.csr_matrix) -> sp.csr_matrix:
    """Each row divided by its sum (empty rows stay empty)."""
    sums = np.asarray(m.sum(axis=1), dtype=np.float64).ravel()
    scale = np.divide(1.0, sums, out=np.zeros_like(sums), where=sums > 0)
    out = sp.csr_matrix(m, dtype=np.float64, copy=True)
    out.data *= np.repeat(scale, np.diff(out.indptr))
    return out


def _fit_rp3beta(data: Interactions, alpha: float = 0.5, beta: float = 0.6, neighbours: int = RP3_NEIGHBOURS,
                 block: int | None = None, blocks: Callable[..., list[tuple]] = knn_blocks) -> Rp3BetaModel:
    """W = P_iu P_ui diag(popularity ** -beta), diagonal zeroed, the ``neighbours`` largest per row.

    The product is item-kNN's (:func:`knn_blocks`, sparse row blocks, top-k as they come) with
    the transition matrices in place of the normalised rows: the popularity penalty is a
    column scaling, so it is folded into P_ui first and never touches an N x N array.
    """
    x = sp.csr_matrix(data.matrix, dtype=np.float64)
    n = x.shape[1]
    popularity = np.bincount(x.indices, minlength=n).astype(np.float64)  # users per item
    p_ui, p_iu = _row_normalised(x), _row_normalised(x.T.tocsr())
    p_ui.data **= float(alpha)
    p_iu.data **= float(alpha)
    p_ui.data *= np.power(popularity, -float(beta), out=np.zeros_like(popularity),
                          where=popularity > 0)[p_ui.indices]
    arrays, block = _top_k_product(p_iu.astype(np.float32), p_ui.astype(np.float32), data.item_ids, neighbours,
                                   block, blocks)
    return Rp3BetaModel(arrays, {"alpha": float(alpha), "beta": float(beta), "neighbours": int(neighbours),
                                 "block": block, "items": n})


def _sequences(order: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """(user row, item column) of every entry of ``order``, by user, each user's oldest first."""
    users = np.repeat(np.arange(order.shape[0]), np.diff(order.indptr))
    by_position = np.lexsort((order.data, users))
    return users[by_position], order.indices[by_position]


def _keep_top_per_row(s: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """``s`` with only the ``k`` largest positive entries of each row (ties: lower column first)."""
    s = sp.csr_matrix(s)
    s.sort_indices()
    row = np.repeat(np.arange(s.shape[0]), np.diff(s.indptr))
    order = np.lexsort((-s.data, row))
    rank = np.arange(len(order)) - s.indptr[row[order]]
    keep = np.sort(order[(rank < k) & (s.data[order] > 0)])
    return sp.csr_matrix((s.data[keep], (row[keep], s.indices[keep])), shape=s.shape)


def _fit_sequence(data: Interactions, window: int = 20, alpha: float = SEQUENCE_ALPHA, beta: float = 0.6,
                  neighbours: int = SEQUENCE_NEIGHBOURS) -> SequenceModel:
    """:class:`SequenceModel` from ``data.order``: one gap (1..``window``) at a time, so the
    pairs in memory at once are at most the number of interactions."""
    if data.order is None:
        raise ValueError("a sequence model needs the order of each user's items (Interactions.order)")
    n = data.order.shape[1]
    owner, items = _sequences(sp.csr_matrix(data.order))
    counts = sp.csr_matrix((n, n), dtype=np.float32)
    for gap in range(1, int(window) + 1):
        same = owner[:-gap] == owner[gap:]
        if not same.any():
            break
        counts = counts + sp.csr_matrix((np.ones(int(same.sum()), np.float32), (items[:-gap][same], items[gap:][same])),
                                        shape=(n, n))
    out = np.asarray(counts.sum(axis=1), dtype=np.float64).ravel()
    into = np.asarray(counts.sum(axis=0), dtype=np.float64).ravel()
    counts = sp.csr_matrix(counts, dtype=np.float64)
    row = np.repeat(np.arange(n), np.diff(counts.indptr))
    counts.data *= np.power(out[row], -float(alpha)) * np.power(into[counts.indices], -float(beta))
    w = _keep_top_per_row(counts, max(0, min(int(neighbours), n - 1)))
    idx = np.int32 if w.nnz < 2 ** 31 else np.int64
    arrays = {"item_ids": data.item_ids.astype(np.int64), "data": w.data.astype(np.float32),
              "indices": w.indices.astype(idx), "indptr": w.indptr.astype(idx)}
    return SequenceModel(arrays, {"window": int(window), "alpha": float(alpha), "beta": float(beta),
                                  "neighbours": int(neighbours), "items": n})


def _fit_factor(data: Interactions, factors: int = 64, seed: int = 0) -> FactorModel:
    x = sp.csr_matrix(data.matrix, dtype=np.float64)
    k = min(int(factors), min(x.shape) - 1)
    if k < 1:
        raise ValueError(f"a {x.shape[0]} x {x.shape[1]} matrix is too small for a factor model")
    # A seeded start vector makes ARPACK, and so the whole fit, reproducible.
    v0 = np.random.default_rng(seed).uniform(-1.0, 1.0, min(x.shape))
    _, _, vt = svds(x, k=k, v0=v0, return_singular_vectors="vh")
    arrays = {"item_ids": data.item_ids.astype(np.int64), "factors": np.ascontiguousarray(vt.T, dtype=np.float32)}
    return FactorModel(arrays, {"factors": k, "seed": int(seed), "items": x.shape[1]})


# --- memory and hyper-parameters ------------------------------------------------------------------
def _ease_bytes(n: int) -> int:
    # float64 X'X (inverted in place) + float32 B, per-block sparse products and float64 rows, ids.
    return 12 * n * n + (16 * EASE_BLOCK + 16) * n


def ease_item_limit(memory_budget_bytes: int) -> int:
    """Most items a dense EASE fits in the budget (N x N float64 work matrix + float32 result)."""
    n = int(np.sqrt(max(memory_budget_bytes, 0) / 12)) + 1  # 12 N^2 alone: an upper bound
    while n > 0 and _ease_bytes(n) > memory_budget_bytes:
        n -= 1
    return n


def _knn_bytes(n: int, k: int, block: int) -> int:
    return KNN_NEIGHBOUR_BYTES * n * k + KNN_PAIR_BYTES * block * n + 16 * n


def _sequence_pairs(order: sp.csr_matrix, window: int) -> int:
    """(earlier item, later item) pairs within ``window`` positions, over every user."""
    n_u = np.diff(order.indptr).astype(np.int64)
    w = int(window)
    return int(np.where(n_u > w, w * n_u - w * (w + 1) // 2, n_u * (n_u - 1) // 2).sum())


def _sequence_bytes(data: Interactions, window: int, k: int) -> int:
    # The summed counts (float32 + int32 per distinct pair, held twice while one gap is added),
    # one gap's pairs (coordinates and values), the float64 normalised copy, kept neighbours.
    n = data.matrix.shape[1]
    distinct = min(_sequence_pairs(data.order, window), n * n)
    return 32 * distinct + 24 * data.order.nnz + KNN_NEIGHBOUR_BYTES * n * k + 16 * n


def _factor_bytes(n_users: int, n_items: int, k: int) -> int:
    # ARPACK keeps ncv = max(2k + 1, 20) Lanczos vectors of the smaller side; then svds puts X @ V
    # (larger side x k, float64) through a dense SVD (about three such arrays); V.T and Q (float32).
    small, large = sorted((n_users, n_items))
    return 8 * small * (max(2 * k + 1, 20) + k + 4) + 24 * large * k + 12 * n_items * k


def estimate_bytes(family: str, data: Interactions, params: Mapping[str, Any]) -> int:
    """Bytes a fit with ``params`` holds at its peak, as the budget counts them."""
    n_users, n = data.matrix.shape
    if family == ENSEMBLE:  # fitted in turn, the first kept while the second fits: a bound
        return sum(estimate_bytes(p["family"], data, p["params"]) for p in params["parts"])
    if family == "ease":
        return _ease_bytes(min(n, int(params.get("max_items") or n)))
    if family in ("item_knn", "rp3beta"):
        block = int(params.get("block") or 2 ** 28 // (KNN_PAIR_BYTES * max(n, 1)))
        default = 200 if family == "item_knn" else RP3_NEIGHBOURS
        return _knn_bytes(n, max(0, min(int(params.get("neighbours", default)), n - 1)), min(block, n))
    if family == "sequence":
        if data.order is None:
            return 0
        k = max(0, min(int(params.get("neighbours", SEQUENCE_NEIGHBOURS)), n - 1))
        return _sequence_bytes(data, int(params.get("window", max(SEQUENCE_WINDOWS))), k)
    _model_class(family)
    return _factor_bytes(n_users, n, min(int(params.get("factors", 64)), max(min(n_users, n) - 1, 0)))


def param_grid(family: str, data: Interactions, memory_budget_bytes: int) -> list[dict]:
    """Hyper-parameter settings worth trying, each within the budget; [] when none fits."""
    if family == ENSEMBLE:
        raise ValueError("an ensemble has no grid of its own: it is made of fitted models (see ensemble)")
    n_users, n = data.matrix.shape
    if family == "ease":
        items = min(n, ease_item_limit(memory_budget_bytes))
        if items < 2 or items < min(n, EASE_MIN_ITEMS) or not data.matrix.nnz:
            return []
        x = data.matrix
        diag = np.bincount(x.indices, weights=np.square(x.data, dtype=np.float64), minlength=n)
        mean = float(diag[_most_active(x, items)].mean())
        # max_items is the budget's cap, not this data's item count: a refit on more data (the
        # test world, every event) must keep items this one had no positive for yet.
        cap = ease_item_limit(memory_budget_bytes)
        return [{"l2": float(f"{s * mean:.3g}"), "max_items": cap} for s in EASE_L2_SCALES]
    if family == "item_knn":
        grid = []
        for k in sorted({min(v, n - 1) for v in KNN_NEIGHBOURS} if n > 1 else ()):
            block = min(n, (memory_budget_bytes - _knn_bytes(n, k, 0)) // (KNN_PAIR_BYTES * n))
            grid += [{"neighbours": k, "user_damping": d, "block": int(block)} for d in KNN_USER_DAMPING if block >= 1]
        return grid
    if family == "rp3beta":
        grid = []
        for k in sorted({min(v, n - 1) for v in RP3_NEIGHBOUR_GRID} if n > 1 else ()):
            block = min(n, (memory_budget_bytes - _knn_bytes(n, k, 0)) // (KNN_PAIR_BYTES * max(n, 1)))
            grid += [{"alpha": a, "beta": b, "neighbours": k, "block": int(block)}
                     for a in RP3_ALPHAS for b in RP3_BETAS if block >= 1]
        return grid
    if family == "sequence":
        if data.order is None or not data.order.nnz or n < 2:
            return []
        return [{"window": w, "alpha": SEQUENCE_ALPHA, "beta": b, "neighbours": k}
                for k in sorted({min(v, n - 1) for v in SEQUENCE_NEIGHBOUR_GRID}) for w in SEQUENCE_WINDOWS
                for b in SEQUENCE_BETAS if _sequence_bytes(data, w, k) <= memory_budget_bytes]
    _model_class(family)
    # Capped at half the smaller side: with k near the item count Q Q' is close to the identity
    # and gives the seeds back (svds itself needs k < min(X.shape)).
    cap = min(n_users, n) // 2
    return [{"factors": k} for k in sorted({min(f, cap) for f in FACTORS} if cap >= 1 else ())
            if _factor_bytes(n_users, n, k) <= memory_budget_bytes]
