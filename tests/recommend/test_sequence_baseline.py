"""The MovieLens table's ``transitions_recency`` baseline (``benchmarks/baselines.py``) is the
service's ``sequence`` family written again in dense numpy: the same counts, scaling and
pruning, so the table compares the service with its own model tuned on a larger grid, not
with a weaker copy. If either changes alone, this fails."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from benchmarks.baselines import fit_transitions
from service.recommend.collab import Interactions, _fit_sequence

USERS, ITEMS = 60, 25


def _world(seed: int = 3) -> tuple[Interactions, sp.csr_matrix]:
    """Users' items in engagement order, as the service's input (``order``: 1 = first) and as
    the baseline's (recency ranks: 0 = newest)."""
    rng = np.random.default_rng(seed)
    rows, cols, order = [], [], []
    for u in range(USERS):
        seq = rng.choice(ITEMS, size=int(rng.integers(2, 14)), replace=False)
        rows += [u] * len(seq)
        cols += seq.tolist()
        order += range(1, len(seq) + 1)
    first = sp.csr_matrix((np.array(order, np.float64), (rows, cols)), shape=(USERS, ITEMS))
    per_user = np.diff(first.indptr)
    ranks = first.copy()
    ranks.data = np.repeat(per_user, per_user) - first.data  # the newest is 0, kept explicitly
    matrix = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(USERS, ITEMS))
    return Interactions(matrix, np.arange(ITEMS, dtype=np.int64), np.arange(USERS), order=first), ranks


def _dense(model) -> np.ndarray:
    a = model.arrays
    return sp.csr_matrix((a["data"], a["indices"], a["indptr"]), shape=(ITEMS, ITEMS)).toarray()


@pytest.mark.parametrize("window,alpha,beta", [(1, 0.5, 0.3), (3, 0.5, 0.6), (20, 1.0, 0.0)])
def test_the_transitions_baseline_is_the_service_sequence_model(window, alpha, beta):
    data, ranks = _world()
    ours = _dense(_fit_sequence(data, window=window, alpha=alpha, beta=beta, neighbours=ITEMS))
    theirs = fit_transitions(ranks, {"window": window, "alpha": alpha, "beta": beta, "K": ITEMS})
    assert (ours > 0).sum() > ITEMS  # not a vacuous comparison
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-8)
    # Pruned to 4 neighbours per item: the same values kept in every row (ties may keep other columns).
    ours = _dense(_fit_sequence(data, window=window, alpha=alpha, beta=beta, neighbours=4))
    theirs = fit_transitions(ranks, {"window": window, "alpha": alpha, "beta": beta, "K": 4})
    for i in range(ITEMS):
        np.testing.assert_allclose(np.sort(ours[i][ours[i] > 0]), np.sort(theirs[i][theirs[i] > 0]), rtol=1e-5)
