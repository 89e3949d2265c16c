"""Known-answer tests for service.recommend.evaluation (split and top-k metrics)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from service.recommend.evaluation import Split, catalog_coverage, evaluate, holdout_split, item_popularity, ndcg_at_k, popularity_bias, recall_at_k, train_valid_indices


def _log2(x: float) -> float:
    return math.log(x, 2)


# --------------------------------------------------------------------------------------------------
# split


def test_split_last_interactions_go_to_test_then_valid():
    # user 1: items 10..15 at times 1..6 (given out of order); user 2: 3 rows only.
    users = [1, 1, 1, 2, 1, 1, 2, 1, 2]
    items = [12, 10, 11, 20, 15, 13, 21, 14, 22]
    times = [3, 1, 2, 1, 6, 4, 2, 5, 3]
    split = holdout_split(users, items, times, n_test=2, n_valid=1, min_train=1)
    assert split.users.tolist() == [1]
    assert split.test_truth == {1: {14, 15}}
    assert split.valid_truth == {1: {13}}
    assert sorted(np.asarray(items)[split.test_idx].tolist()) == [14, 15]
    assert np.asarray(items)[split.valid_idx].tolist() == [13]
    # user 2 has 3 < 2 + 1 + 1 rows: everything stays in train, not evaluated.
    train_items = sorted(np.asarray(items)[split.train_idx].tolist())
    assert train_items == [10, 11, 12, 20, 21, 22]
    assert 2 not in split.test_truth and 2 not in split.valid_truth


def test_split_partitions_rows_and_indices_are_sorted():
    rng = np.random.default_rng(0)
    n = 500
    users = rng.integers(0, 40, n)
    items = rng.integers(0, 100, n)
    times = rng.integers(0, 20, n)  # many ties
    split = holdout_split(users, items, times, n_test=2, n_valid=2, min_train=3)
    all_idx = np.concatenate([split.train_idx, split.valid_idx, split.test_idx])
    assert sorted(all_idx.tolist()) == list(range(n))
    for idx in (split.train_idx, split.valid_idx, split.test_idx):
        assert np.all(np.diff(idx) > 0)
    assert len(split.test_idx) == 2 * len(split.users)
    assert len(split.valid_idx) == 2 * len(split.users)
    counts = np.bincount(users, minlength=40)
    assert split.users.tolist() == [u for u in range(40) if counts[u] >= 7]
    # Nothing held out happens before anything the same user keeps in train.
    for u in split.users.tolist():
        tr = split.train_idx[users[split.train_idx] == u]
        te = split.test_idx[users[split.test_idx] == u]
        va = split.valid_idx[users[split.valid_idx] == u]
        assert times[tr].max() <= times[va].min()
        assert times[va].max() <= times[te].min()
    assert np.array_equal(split.train_valid_idx, np.sort(np.concatenate([split.train_idx, split.valid_idx])))
    assert np.array_equal(train_valid_indices(split), split.fit_idx("test"))
    assert np.array_equal(split.fit_idx("valid"), split.train_idx)


def test_split_ties_broken_by_row_order():
    # All four rows share one timestamp: the later row counts as the more recent one.
    users = [7, 7, 7, 7]
    items = [1, 2, 3, 4]
    times = [100, 100, 100, 100]
    split = holdout_split(users, items, times, n_test=1, n_valid=1, min_train=1)
    assert split.test_truth == {7: {4}}
    assert split.valid_truth == {7: {3}}
    assert split.train_idx.tolist() == [0, 1]
    # Timestamps still dominate row order.
    split = holdout_split(users, items, [5, 100, 100, 1], n_test=1, n_valid=1, min_train=1)
    assert split.test_truth == {7: {3}}
    assert split.valid_truth == {7: {2}}
    assert split.train_idx.tolist() == [0, 3]


def test_split_min_train_threshold_is_inclusive():
    users = [1] * 3 + [2] * 2
    items = [1, 2, 3, 1, 2]
    times = [1, 2, 3, 1, 2]
    split = holdout_split(users, items, times, n_test=1, n_valid=1, min_train=1)
    assert split.users.tolist() == [1]  # 3 rows is enough, 2 is not
    split = holdout_split(users, items, times, n_test=1, n_valid=0, min_train=1)
    assert split.users.tolist() == [1, 2]
    assert split.valid_idx.size == 0 and split.valid_truth == {1: set(), 2: set()}


def test_split_is_deterministic_and_works_with_string_ids():
    rng = np.random.default_rng(1)
    users = [f"u{u}" for u in rng.integers(0, 10, 200)]
    items = [f"i{i}" for i in rng.integers(0, 30, 200)]
    times = rng.integers(0, 5, 200).tolist()
    a = holdout_split(users, items, times, n_test=2, n_valid=1)
    b = holdout_split(users, items, times, n_test=2, n_valid=1)
    assert np.array_equal(a.train_idx, b.train_idx)
    assert np.array_equal(a.valid_idx, b.valid_idx)
    assert np.array_equal(a.test_idx, b.test_idx)
    assert a.test_truth == b.test_truth and a.valid_truth == b.valid_truth
    assert all(isinstance(u, str) for u in a.test_truth)


def test_split_validates_input():
    with pytest.raises(ValueError):
        holdout_split([1], [1, 2], [1])
    with pytest.raises(ValueError):
        holdout_split([1], [1], [1], n_test=0)
    empty = holdout_split([], [], [])
    assert isinstance(empty, Split) and empty.users.size == 0 and empty.train_idx.size == 0


# --------------------------------------------------------------------------------------------------
# metrics


def test_ndcg_hand_computed():
    # Relevant {a, c}; hits at ranks 1 and 3.
    dcg = 1 / _log2(2) + 1 / _log2(4)  # 1 + 0.5
    idcg = 1 / _log2(2) + 1 / _log2(3)  # 1 + 0.6309
    assert ndcg_at_k([["a", "b", "c", "d"]], [{"a", "c"}], k=3) == pytest.approx(dcg / idcg)
    assert ndcg_at_k([["a", "b", "c", "d"]], [{"a", "c"}], k=3) == pytest.approx(0.91972, abs=1e-5)
    # Hit at rank 2 only, one relevant item: 1/log2(3).
    assert ndcg_at_k([["x", "a"]], [{"a"}], k=10) == pytest.approx(1 / _log2(3))
    # Outside the cut-off: 0.
    assert ndcg_at_k([["x", "y", "a"]], [{"a"}], k=2) == 0.0
    # IDCG counts only min(k, |relevant|) items: 3 relevant, k = 2, both slots hit -> 1.
    assert ndcg_at_k([["a", "b"]], [{"a", "b", "c"}], k=2) == pytest.approx(1.0)
    # Averaged over users.
    assert ndcg_at_k([["a"], ["x"]], [{"a"}, {"b"}], k=1) == pytest.approx(0.5)


def test_recall_denominator_is_min_k_relevant():
    # 2 of 4 relevant in the top 2 -> 2 / min(2, 4) = 1.0 (capped), not 2 / 4.
    assert recall_at_k([[1, 2, 3]], [{1, 2, 5, 6}], k=2) == pytest.approx(1.0)
    # With k >= |relevant| it is plain recall.
    assert recall_at_k([[1, 9, 8]], [{1, 2}], k=10) == pytest.approx(0.5)
    # Mean over users; users with no relevant items are skipped.
    assert recall_at_k([[1], [2], [3]], [{1}, {5}, set()], k=1) == pytest.approx(0.5)
    # A repeated recommendation takes a slot but is a hit only once.
    assert recall_at_k([[1, 1, 2]], [{1, 2}], k=2) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        recall_at_k([[1]], [{1}, {2}], k=1)


def test_catalog_coverage():
    recs = [[0, 1, 2], [1, 3, 4]]
    assert catalog_coverage(recs, n_items=10) == pytest.approx(0.5)
    assert catalog_coverage(recs, n_items=10, k=1) == pytest.approx(0.2)


def test_popularity_bias():
    pop = item_popularity([0, 0, 0, 1, 1, 2], n_items=4)  # counts 3, 2, 1, 0
    assert pop.tolist() == [3, 2, 1, 0]
    result = popularity_bias([[0], [0]], pop)
    assert result["pop_percentile"] == pytest.approx(1.0)
    assert result["avg_rec_popularity"] == pytest.approx(3.0)
    # Popularity of interacted items: (3*3 + 2*2 + 1*1) / 6 = 14/6.
    assert result["pop_lift"] == pytest.approx(3.0 / (14 / 6))
    result = popularity_bias([[3, 2]], pop)
    assert result["pop_percentile"] == pytest.approx((0 + 1 / 3) / 2)
    # Ties share the mid-rank percentile.
    tied = popularity_bias([[0], [1]], [5, 5, 1])
    assert tied["pop_percentile"] == pytest.approx(0.75)


def test_evaluate_with_split_and_with_users():
    users = [0, 0, 0, 1, 1, 1]
    items = [0, 1, 2, 1, 2, 3]
    times = [1, 2, 3, 1, 2, 3]
    split = holdout_split(users, items, times, n_test=1, n_valid=1, min_train=1)
    assert split.test_truth == {0: {2}, 1: {3}}
    ranked = {0: [2, 3], 1: [0, 3]}
    pop = item_popularity(np.asarray(items)[split.train_valid_idx], n_items=4)
    m = evaluate(lambda u: ranked[u], split, k=2, item_popularity=pop)
    assert m["n_users"] == 2 and m["k"] == 2
    assert m["recall"] == pytest.approx(1.0)
    assert m["ndcg"] == pytest.approx((1.0 + 1 / _log2(3)) / 2)
    assert m["coverage"] == pytest.approx(3 / 4)
    assert set(m) >= {"pop_percentile", "pop_lift", "avg_rec_popularity"}
    v = evaluate(lambda u: ranked[u], split, k=1, phase="valid", progress=True)
    assert v["recall"] == 0.0 and "coverage" not in v
    same = evaluate(lambda u: ranked[u], [0, 1], k=2, relevant={0: {2}, 1: {3}}, n_items=4)
    assert same["ndcg"] == pytest.approx(m["ndcg"])
    with pytest.raises(ValueError):
        evaluate(lambda u: [], [0])
