"""Collaborative models (EASE, item-kNN, RP3beta, PureSVD): known answers, the memory budget, the mmap round trip."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from service.recommend import collab
from service.recommend.collab import (FAMILIES, MODEL_DIR, Interactions, ease_item_limit, estimate_bytes, fit,
                                      interaction_matrix, load_model, param_grid, seed_row)

DAY = 86_400.0
# Small enough that every family knows the answer, big enough that each has something to weigh.
PARAMS = {"ease": {"l2": 1.0}, "item_knn": {"neighbours": 5, "user_damping": 0.5},
          "rp3beta": {"alpha": 0.5, "beta": 0.3, "neighbours": 5}, "factor": {"factors": 2},
          "sequence": {"window": 5, "alpha": 0.5, "beta": 0.3, "neighbours": 5}}
BLOCK_A, BLOCK_B = [100, 101, 102, 103, 104], [105, 106, 107, 108, 109]


def checkerboard() -> Interactions:
    """Users 0-9 like items 100-104, users 10-19 like 105-109; user 0 has not met 102.

    Users 20 and 21 cross over, so block B items get (small) co-engagement with block A.
    """
    pairs = [(u, i) for u in range(10) for i in BLOCK_A if (u, i) != (0, 102)]
    pairs += [(u, i) for u in range(10, 20) for i in BLOCK_B]
    pairs += [(20, 100), (20, 105), (21, 101), (21, 106), (21, 107)]
    users, items = zip(*pairs)
    return interaction_matrix(users, items, np.ones(len(pairs)), np.zeros(len(pairs)), half_life_days=0)


def random_data(n_users: int = 200, n_items: int = 60, seed: int = 0) -> Interactions:
    rng = np.random.default_rng(seed)
    # Item popularity falls off like real catalogues, so "most active" means something.
    n = n_users * 8
    items = (rng.pareto(1.0, n) * 5).astype(np.int64) % n_items * 7 + 3
    users = rng.integers(0, n_users, n)
    return interaction_matrix(users, items, rng.uniform(-1, 5, n), rng.uniform(0, 100 * DAY, n), half_life_days=30)


def mapped(a) -> bool:
    """True when ``a`` is a np.memmap or a view of one."""
    while a is not None:
        if isinstance(a, np.memmap):
            return True
        a = getattr(a, "base", None)
    return False


# --- interactions ------------------------------------------------------------------------------------
def test_interaction_matrix_sums_drops_non_positive_and_takes_log1p():
    data = interaction_matrix(["a", "a", "a", "b", "b", "c"], [1, 1, 2, 1, 3, 3], [2, 1, -1, 1, 0, 5],
                              np.zeros(6), half_life_days=0)
    assert data.item_ids.tolist() == [1, 3] and data.item_ids.dtype == np.int64  # item 2 only disliked
    assert data.user_keys.tolist() == ["a", "b", "c"]
    assert data.matrix.dtype == np.float32 and isinstance(data.matrix, sp.csr_matrix)
    assert data.matrix.toarray() == pytest.approx(np.log1p([[3, 0], [1, 0], [0, 5]]))


def test_interaction_decay_is_relative_to_each_users_newest_event():
    now = 1000 * DAY
    data = interaction_matrix(["old", "old", "old", "new"], [1, 2, 2, 1], [1, 1, 1, 1],
                              [0.0, -30 * DAY, -60 * DAY, now], half_life_days=30)
    # "old" stopped years before "new": its newest event still counts in full.
    assert data.user_keys.tolist() == ["new", "old"]
    assert data.matrix.toarray() == pytest.approx(np.log1p([[1, 0], [1, 0.5 + 0.25]]))
    for off in (0, -1, np.inf):  # no decay
        flat = interaction_matrix(["old", "old", "old", "new"], [1, 2, 2, 1], [1, 1, 1, 1],
                                  [0.0, -30 * DAY, -60 * DAY, now], half_life_days=off)
        assert flat.matrix.toarray() == pytest.approx(np.log1p([[1, 0], [1, 2]]))


def test_empty_events_give_an_empty_matrix():
    data = interaction_matrix(np.zeros(0, np.int64), np.zeros(0), np.zeros(0), np.zeros(0), half_life_days=7)
    assert data.matrix.shape == (0, 0) and len(data.item_ids) == 0
    assert all(param_grid(f, data, 10 ** 9) == [] for f in FAMILIES)


def test_seed_row_is_log1p_of_positive_weights():
    assert seed_row({1: 2.0, 2: -1.0, 3: 0.0, 4: 1e-3}) == pytest.approx({1: np.log1p(2.0), 4: np.log1p(1e-3)})


def test_seed_row_decay_weighs_positive_seeds_by_their_order_newest_first():
    # The k-th *positive* seed in the mapping's order weighs decay ** k (the disliked one has no rank).
    assert seed_row({7: 3.0, 2: -1.0, 5: 1.0, 1: 9.0}, binary=True, decay=0.5) == pytest.approx({7: 1.0, 5: 0.5, 1: 0.25})
    assert seed_row({7: 3.0, 5: 1.0}, decay=0.5) == pytest.approx({7: np.log1p(3.0), 5: 0.5 * np.log1p(1.0)})
    assert seed_row({7: 3.0, 5: 1.0}, binary=True, decay=1.0) == {7: 1.0, 5: 1.0}


# --- known answers ---------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_checkerboard_completes_the_missing_item_first(family):
    model = fit(family, checkerboard(), **PARAMS[family])
    seeds = {i: 1.0 for i in BLOCK_A if i != 102}
    recs = model.recommend(seeds, n=10, exclude=seeds)
    assert next(iter(recs)) == 102
    assert not set(recs) & set(seeds)
    scores = model.score_rows(model.seed_vector(seeds))
    rows = model.rows_of(BLOCK_B)
    assert (scores[rows] < scores[model.rows_of([102])[0]]).all()


def test_ease_matches_the_closed_form():
    rng = np.random.default_rng(3)
    x = sp.random(40, 15, density=0.3, random_state=rng, format="csr", dtype=np.float32)
    data = Interactions(x, np.arange(15, dtype=np.int64) * 10, np.arange(40))
    model = fit("ease", data, l2=3.0)
    g = x.toarray().astype(np.float64)
    p = np.linalg.inv(g.T @ g + 3.0 * np.eye(15))
    b = p / -np.diag(p)
    np.fill_diagonal(b, 0.0)
    assert model.B.dtype == np.float32
    np.testing.assert_allclose(model.B, b, rtol=1e-5, atol=1e-7)
    row = x[4].toarray()[0]
    np.testing.assert_allclose(model.score_rows(row), row @ b, rtol=1e-4, atol=1e-6)


def test_ease_keeps_the_most_active_items_and_aligns_other_columns():
    data = random_data()
    model = fit("ease", data, l2=10.0, max_items=20)
    activity = np.bincount(data.matrix.indices, minlength=len(data.item_ids))
    assert len(model.item_ids) == 20 and model.params["items"] == 20
    assert (np.diff(model.item_ids) > 0).all()
    assert activity[np.searchsorted(data.item_ids, model.item_ids)].min() >= np.sort(activity)[-20]
    aligned = model.align(data.matrix, data.item_ids)
    cols = np.searchsorted(data.item_ids, model.item_ids)
    np.testing.assert_array_equal(aligned.toarray(), data.matrix[:, cols].toarray())
    np.testing.assert_allclose(model.score_batch(aligned), aligned.toarray() @ model.B, rtol=1e-5,
                               atol=1e-6)
    # Items outside the 20 are never recommended, and as seeds they are unknown.
    outside = int(np.setdiff1d(data.item_ids, model.item_ids)[0])
    assert outside not in model.recommend({int(model.item_ids[0]): 1.0}, n=100)
    assert model.recommend({outside: 1.0}, n=5) == {}


def test_rp3beta_matches_the_dense_definition():
    data = random_data()
    x = data.matrix.toarray().astype(np.float64)
    p_ui = x / np.maximum(x.sum(axis=1, keepdims=True), 1e-300)
    p_iu = x.T / np.maximum(x.T.sum(axis=1, keepdims=True), 1e-300)
    popularity = (x > 0).sum(axis=0).astype(np.float64)
    for alpha, beta in ((0.5, 0.6), (1.0, 0.0)):
        w = (p_iu ** alpha) @ (p_ui ** alpha) * np.where(popularity > 0, popularity, 1.0) ** -beta
        np.fill_diagonal(w, 0.0)
        model = fit("rp3beta", data, alpha=alpha, beta=beta, neighbours=len(data.item_ids))
        assert model.family == "rp3beta" and model.params["alpha"] == alpha and model.params["beta"] == beta
        np.testing.assert_allclose(model.sim.toarray(), w, rtol=1e-4, atol=1e-7)
        k = 6  # the largest k per row are kept, the rest dropped
        top = fit("rp3beta", data, alpha=alpha, beta=beta, neighbours=k).sim.toarray()
        assert ((top > 0).sum(axis=1) <= k).all()
        for r in np.flatnonzero((w > 0).sum(axis=1) > k)[:10]:
            kept = top[r] > 0
            assert kept.sum() == k and w[r][kept].min() >= w[r][~kept].max() - 1e-7


def test_order_is_each_users_items_by_their_last_positive_event():
    # a: 7 at t=5, 8 at t=1, 9 at t=5 (after 7 in the log: a tie keeps log order), 8 again at
    # t=9 (its last event counts), 6 disliked (no entry); b: one item.
    data = interaction_matrix(["a", "a", "a", "a", "a", "b"], [7, 8, 9, 8, 6, 7], [1, 1, 1, 1, -1, 1],
                              [5, 1, 5, 9, 0, 3], half_life_days=0)
    assert data.item_ids.tolist() == [7, 8, 9]
    assert data.order.toarray().tolist() == [[1, 3, 2], [1, 0, 0]]
    assert (data.order != 0).toarray().tolist() == (data.matrix != 0).toarray().tolist()


def test_sequence_counts_what_followed_within_the_window_one_way():
    # Ten users engage with 1, 2, 3, 4 in that order; one user engages with 4 then 1.
    users = [u for u in range(10) for _ in range(4)] + [10, 10]
    items = [1, 2, 3, 4] * 10 + [4, 1]
    data = interaction_matrix(users, items, np.ones(len(users)), np.arange(len(users), dtype=float),
                              half_life_days=0)
    dense = fit("sequence", data, window=3, alpha=0.0, beta=0.0, neighbours=3).sim.toarray()
    assert dense.tolist() == [[0, 10, 10, 10], [0, 0, 10, 10], [0, 0, 0, 10], [1, 0, 0, 0]]
    # A window of one: only the next item counts.
    near = fit("sequence", data, window=1, alpha=0.0, beta=0.0, neighbours=3).sim.toarray()
    assert near.tolist() == [[0, 10, 0, 0], [0, 0, 10, 0], [0, 0, 0, 10], [1, 0, 0, 0]]
    # alpha and beta divide by the source's outgoing and the target's incoming counts.
    scaled = fit("sequence", data, window=3, alpha=1.0, beta=0.5, neighbours=3).sim.toarray()
    out, into = dense.sum(axis=1), dense.sum(axis=0)
    np.testing.assert_allclose(scaled, dense / out[:, None] / np.sqrt(into)[None, :], rtol=1e-6)
    # What comes after the newest seed ranks first; the item before it only through the stray user.
    model = fit("sequence", data, window=3, alpha=0.5, beta=0.3, neighbours=3, seed_decay=0.5)
    assert list(model.recommend({2: 1.0}, n=3)) == [3, 4]
    assert list(model.recommend({3: 1.0, 1: 1.0}, n=3, exclude=[1, 3])) == [4, 2]
    # The fewest neighbours are the strongest ones.
    top1 = fit("sequence", data, window=3, alpha=0.0, beta=0.5, neighbours=1).sim.toarray()
    assert ((top1 > 0).sum(axis=1) <= 1).all() and top1[0].argmax() == 1


def test_sequence_needs_the_order():
    data = checkerboard()
    no_order = Interactions(data.matrix, data.item_ids, data.user_keys)
    assert param_grid("sequence", no_order, 10 ** 9) == []
    with pytest.raises(ValueError, match="order"):
        fit("sequence", no_order, window=3)


def test_rp3beta_popularity_penalty_demotes_the_popular_item():
    # Of item 0's 4 users, 1 also likes item 1 and 3 like item 2, which 6 others like too. Without
    # the penalty item 2 (more paths: 3/8 against 1/8) ranks first; with beta 1 (9 users against 1)
    # item 1 does.
    pairs = [(u, 0) for u in range(4)] + [(0, 1), (1, 2), (2, 2), (3, 2)] + [(u, 2) for u in range(4, 10)]
    users, items = zip(*pairs)
    data = interaction_matrix(users, items, np.ones(len(pairs)), np.zeros(len(pairs)), half_life_days=0)
    plain = fit("rp3beta", data, alpha=1.0, beta=0.0, neighbours=5).recommend({0: 1.0}, n=2)
    penalised = fit("rp3beta", data, alpha=1.0, beta=1.0, neighbours=5).recommend({0: 1.0}, n=2)
    assert list(plain) == [2, 1] and list(penalised) == [1, 2]


@pytest.mark.parametrize("family", FAMILIES)
def test_seed_decay_ranks_the_newest_seeds_neighbours_first(family):
    # Two blocks, one seed in each: without decay the tie is broken by the item id; with it the
    # newest seed's block comes first, whichever block that is. The fit keeps the param. (The
    # sequence model finds what came after a seed: its seeds are the first of their blocks.)
    model = fit(family, checkerboard(), **PARAMS[family], seed_decay=0.5)
    assert model.params["seed_decay"] == 0.5
    a, b = (100, 105) if family == "sequence" else (103, 108)
    for newest, older, block in ((a, b, BLOCK_A), (b, a, BLOCK_B)):
        recs = model.recommend({newest: 1.0, older: 1.0}, n=2, exclude=[newest, older])
        assert set(recs) <= set(block), (newest, recs)


def test_item_knn_is_the_same_whatever_the_block_size():
    data = random_data()
    one = fit("item_knn", data, neighbours=7, user_damping=0.5, block=len(data.item_ids))
    tiny = fit("item_knn", data, neighbours=7, user_damping=0.5, block=3)
    assert (one.sim != tiny.sim).nnz == 0
    per_item = np.diff(one.arrays["indptr"])
    assert per_item.max() <= 7 and one.sim.diagonal().max() == 0  # an item is not its own neighbour
    assert one.arrays["indices"].dtype == np.int32 and one.sim.has_sorted_indices
    one = fit("rp3beta", data, alpha=0.5, beta=0.6, neighbours=7, block=len(data.item_ids))
    tiny = fit("rp3beta", data, alpha=0.5, beta=0.6, neighbours=7, block=3)
    assert (one.sim != tiny.sim).nnz == 0 and np.diff(one.arrays["indptr"]).max() <= 7


def test_factor_fits_are_reproducible():
    data = random_data()
    a, b = fit("factor", data, factors=8), fit("factor", data, factors=8)
    np.testing.assert_array_equal(a.arrays["factors"], b.arrays["factors"])
    assert a.arrays["factors"].shape == (len(data.item_ids), 8)
    assert fit("factor", checkerboard(), factors=500).params["factors"] == 9  # below min(X.shape)


# --- recommend() ---------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_recommend_needs_a_known_positive_seed_and_honours_n_and_exclude(family):
    model = fit(family, checkerboard(), **PARAMS[family])
    assert model.recommend({}, n=5) == {}
    assert model.recommend({999: 1.0}, n=5) == {}
    assert model.recommend({100: -1.0, 101: 0.0}, n=5) == {}
    full = model.recommend({100: 1.0, 105: 0.5, 103: -2.0}, n=10)
    assert full and all(s > 0 for s in full.values())
    assert list(full.values()) == sorted(full.values(), reverse=True)
    top3 = model.recommend({100: 1.0, 105: 0.5}, n=3)
    assert list(top3) == list(full)[:3]
    some = model.recommend({100: 1.0, 105: 0.5}, n=10, exclude=list(full)[:2])
    assert not set(some) & set(list(full)[:2])


# --- save / load ------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_save_and_mmap_load_give_the_same_recommendations(family, tmp_path):
    data = random_data()
    model = fit(family, data, **param_grid(family, data, 10 ** 8)[0], seed_decay=0.8)
    folder = tmp_path / "v1" / MODEL_DIR
    names = model.save(folder)
    assert sorted(p.name for p in folder.iterdir()) == sorted(names)
    loaded = load_model(folder, family, model.params)
    assert loaded.family == family and loaded.params == model.params and loaded.nbytes == model.nbytes > 0
    for name, arr in loaded.arrays.items():
        assert mapped(arr), name
        np.testing.assert_array_equal(arr, model.arrays[name])
    if family in ("item_knn", "rp3beta", "sequence"):  # the CSR wraps the mapped arrays, no copies
        assert mapped(loaded.sim.data) and mapped(loaded.sim.indices) and mapped(loaded.sim.indptr)
    rng = np.random.default_rng(1)
    for _ in range(5):
        seeds = {int(i): float(w) for i, w in zip(rng.choice(data.item_ids, 4), rng.uniform(-1, 3, 4))}
        assert loaded.recommend(seeds, n=10, exclude=list(seeds)[:1]) == model.recommend(seeds, n=10,
                                                                                          exclude=list(seeds)[:1])
    eager = load_model(folder, family, model.params, mmap=False)
    assert not any(mapped(a) for a in eager.arrays.values())


# --- ensemble ---------------------------------------------------------------------------------------
def test_ensemble_adds_each_parts_scores_scaled_to_its_best_candidate():
    data = random_data()
    ease = fit("ease", data, l2=5.0, binary=False, seed_decay=0.9)
    rp3 = fit("rp3beta", data, alpha=0.5, beta=0.3, neighbours=20, seed_decay=0.8)
    model = collab.ensemble([ease, rp3], [1.0, 2.0])
    assert model.family == collab.ENSEMBLE and model.params["weights"] == [1.0, 2.0]
    assert [p["family"] for p in model.params["parts"]] == ["ease", "rp3beta"]
    assert model.params["parts"][1]["params"]["seed_decay"] == 0.8 and model.params["binary"] is False
    seeds = {int(data.item_ids[3]): 2.0, int(data.item_ids[10]): 1.0, int(data.item_ids[0]): 1.5}
    exclude = [int(data.item_ids[5])]
    # The known answer, by hand: each part's own seed row (its own decay) times its matrix,
    # exclusions out, divided by its best score, weighted.
    want = {}
    for part, weight in ((ease, 1.0), (rp3, 2.0)):
        x = part.seed_vector(seeds)
        dense = x @ part.B if part.family == "ease" else (part.sim.T @ x)
        dense = np.asarray(dense, dtype=np.float64).ravel()
        dense[part.rows_of(exclude + list(seeds)) [part.rows_of(exclude + list(seeds)) >= 0]] = 0.0
        for i, v in zip(part.item_ids.tolist(), (weight * dense / dense.max()).tolist()):
            want[i] = want.get(i, 0.0) + v
    best = sorted((i for i in want if want[i] > 0), key=lambda i: -want[i])[:10]
    got = model.recommend(seeds, n=10, exclude=exclude + list(seeds))
    assert list(got) == best
    assert list(got.values()) == pytest.approx([want[i] for i in best], rel=1e-5)
    # A part that knows no seed adds nothing; none known: empty, as for a single model.
    assert model.recommend({999: 1.0}, n=5) == {}
    assert model.nbytes == ease.nbytes + rp3.nbytes


def test_ensemble_fits_saves_and_loads_memory_mapped(tmp_path):
    data = random_data()
    parts = [fit("ease", data, l2=5.0, seed_decay=0.9), fit("item_knn", data, neighbours=10, user_damping=0.5)]
    model = collab.ensemble(parts, [1.0, 0.5])
    refit = fit(collab.ENSEMBLE, data, **model.params)  # what the rebuild does with the recipe
    seeds = {int(data.item_ids[1]): 1.0, int(data.item_ids[7]): 3.0}
    assert refit.recommend(seeds, n=10) == model.recommend(seeds, n=10)
    folder = tmp_path / MODEL_DIR
    names = model.save(folder)
    assert sorted(p.name for p in folder.iterdir()) == sorted(names) and len(names) == 2 + 4
    loaded = load_model(folder, collab.ENSEMBLE, model.params)
    assert all(mapped(a) for part in loaded.parts for a in part.arrays.values())
    assert loaded.recommend(seeds, n=10, exclude=[int(data.item_ids[2])]) == \
        model.recommend(seeds, n=10, exclude=[int(data.item_ids[2])])
    assert estimate_bytes(collab.ENSEMBLE, data, model.params) == \
        estimate_bytes("ease", data, parts[0].params) + estimate_bytes("item_knn", data, parts[1].params)
    # Three parts (the training stage adds a third to the best pair): the same round trip.
    three = collab.ensemble(parts + [fit("sequence", data, window=5, seed_decay=0.8)], [1.0, 0.5, 2.0])
    refit = fit(collab.ENSEMBLE, data, **three.params)
    assert refit.recommend(seeds, n=10) == three.recommend(seeds, n=10) != model.recommend(seeds, n=10)
    three.save(tmp_path / "three")
    loaded = load_model(tmp_path / "three", collab.ENSEMBLE, three.params)
    assert [p.family for p in loaded.parts] == ["ease", "item_knn", "sequence"]
    assert loaded.recommend(seeds, n=10) == three.recommend(seeds, n=10)
    with pytest.raises(ValueError):  # two parts of one family would write the same files
        collab.ensemble([parts[0], fit("ease", data, l2=1.0)], [1.0, 1.0])
    with pytest.raises(ValueError):
        param_grid(collab.ENSEMBLE, data, 10 ** 9)


def test_unknown_family_is_refused(tmp_path):
    with pytest.raises(ValueError):
        fit("als", checkerboard())
    with pytest.raises(ValueError):
        param_grid("als", checkerboard(), 10 ** 9)
    with pytest.raises(ValueError):
        load_model(tmp_path, "als", {})


# --- memory budget ---------------------------------------------------------------------------------
def test_ease_item_limit_counts_the_float64_inverse_and_float32_result():
    assert ease_item_limit(0) == 0 and ease_item_limit(1000) == 0
    previous = 0
    for budget in (10 ** 5, 10 ** 6, 10 ** 7, 10 ** 9, 4 * 2 ** 30):
        n = ease_item_limit(budget)
        assert 12 * n * n <= collab._ease_bytes(n) <= budget < collab._ease_bytes(n + 1)
        assert n >= previous
        previous = n
    assert 15_000 < ease_item_limit(4 * 2 ** 30) < 19_000


def test_param_grids_stay_within_the_budget():
    data = random_data(n_users=300, n_items=150)
    n = len(data.item_ids)
    assert n > collab.EASE_MIN_ITEMS
    # EASE: a budget for fewer items than the minimum gives nothing; a bigger one caps the items.
    assert param_grid("ease", data, collab._ease_bytes(collab.EASE_MIN_ITEMS - 1)) == []
    budget = collab._ease_bytes(120)
    grid = param_grid("ease", data, budget)
    assert len(grid) == len(collab.EASE_L2_SCALES) and {g["max_items"] for g in grid} == {120}
    assert len({g["l2"] for g in grid}) == len(grid)
    assert len(fit("ease", data, **grid[0]).item_ids) == 120
    # The cap is the budget's, not this data's item count: a refit on more items keeps them all.
    roomy = param_grid("ease", data, 10 ** 9)[0]
    assert roomy["max_items"] == collab.ease_item_limit(10 ** 9) > n
    assert len(fit("ease", data, **roomy).item_ids) == n
    # item-kNN: the block shrinks with the budget, never below one item, never beyond it.
    for budget in (collab._knn_bytes(n, n - 1, 1), 2 * 10 ** 6, 10 ** 8):
        grid = param_grid("item_knn", data, budget)
        assert grid and all(1 <= g["block"] <= n and estimate_bytes("item_knn", data, g) <= budget for g in grid)
    assert param_grid("item_knn", data, collab._knn_bytes(n, 50, 0)) == []
    small = param_grid("item_knn", data, collab._knn_bytes(n, n - 1, 10))
    assert fit("item_knn", data, **small[0]).params["block"] == small[0]["block"] < n
    # RP3beta: the same product as item-kNN's, so the same budget; every alpha x beta.
    k = min(min(collab.RP3_NEIGHBOUR_GRID), n - 1)
    for budget in (collab._knn_bytes(n, k, 1), 2 * 10 ** 6, 10 ** 8):
        grid = param_grid("rp3beta", data, budget)
        assert len(grid) == len(collab.RP3_ALPHAS) * len(collab.RP3_BETAS)
        assert all(1 <= g["block"] <= n and estimate_bytes("rp3beta", data, g) <= budget for g in grid)
    assert param_grid("rp3beta", data, collab._knn_bytes(n, k, 0)) == []
    # More items: each neighbour count of the grid, the larger ones only where the budget has room.
    rng = np.random.default_rng(2)
    users, items = rng.integers(0, 400, 6000), rng.integers(0, 700, 6000)
    wide = interaction_matrix(users, items, np.ones(6000), np.zeros(6000), half_life_days=0)
    assert wide.matrix.shape[1] > 600
    grid = param_grid("rp3beta", wide, 10 ** 9)
    assert sorted({g["neighbours"] for g in grid}) == sorted(collab.RP3_NEIGHBOUR_GRID)
    tight = collab._knn_bytes(wide.matrix.shape[1], 200, 1)
    assert {g["neighbours"] for g in param_grid("rp3beta", wide, tight)} == {200}
    # Sequences: every window x beta within the budget (here every neighbour count is capped by
    # the 121 items); the distinct pairs bound the counts.
    grid = param_grid("sequence", data, 10 ** 9)
    assert len(grid) == len(collab.SEQUENCE_WINDOWS) * len(collab.SEQUENCE_BETAS)
    assert all(g["neighbours"] == n - 1 for g in grid)
    small = max(collab.SEQUENCE_WINDOWS)
    tight = estimate_bytes("sequence", data, {"window": small, "neighbours": grid[0]["neighbours"]}) - 1
    assert {g["window"] for g in param_grid("sequence", data, tight)} == set(collab.SEQUENCE_WINDOWS) - {small}
    assert all(estimate_bytes("sequence", data, g) <= tight for g in param_grid("sequence", data, tight))
    # More items: each neighbour count, the larger only where the budget has room.
    grid = param_grid("sequence", wide, 10 ** 9)
    assert sorted({g["neighbours"] for g in grid}) == sorted(collab.SEQUENCE_NEIGHBOUR_GRID)
    tight = estimate_bytes("sequence", wide, {"window": small, "neighbours": 200})
    assert {g["neighbours"] for g in param_grid("sequence", wide, tight)} == {200}
    # Factors: capped by the data (half of its 121 items) and by the budget.
    assert n == 121 and [g["factors"] for g in param_grid("factor", data, 10 ** 9)] == [32, 60]
    assert param_grid("factor", data, 1000) == []
    assert all(estimate_bytes("factor", data, g) <= 10 ** 6 for g in param_grid("factor", data, 10 ** 6))
