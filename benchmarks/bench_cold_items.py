"""MovieLens-100K cold items: movies nobody has touched yet, ranked over the whole catalog.

The issue's cold-item target: hold 10% of the items with at least 5 positives out of all
training; score the users' positive interactions with those items, ranking the whole catalog.
Target: Recall@10 on them at least the content-only ranking's, while the warm NDCG@10 stays
within 2% of the best setting.

One run:

1. prepares (or reuses) the service database of :mod:`benchmarks.bench_movielens`
   (``benchmarks/_data/movielens-service``: ML-100K imported as items and ``rating`` events, the
   MiniLM text index) and reads its event log as the rebuild does (``load_event_log``);
2. picks, with a seeded generator, 10% of the items with at least 5 positive interactions
   (first positive event per user and item, rating >= 4) as **cold items**;
3. the **training world** is every event not on a cold item: cold items stay in the catalog and
   in the text index (their content is known), but no event of theirs reaches the behaviour
   snapshot, the model, the recipe choice or any user's history;
4. the rebuild's training stage on that world: the training-world log is split as
   ``bench_movielens`` splits it (per user the last 2 positives test, the 2 before validation),
   ``indexer.train.choose_recipe`` chooses family, setting, blend weights and learned ranker on
   validation (what the rebuild would publish for this world), and the model is fitted on every
   training-world event;
5. **cold evaluation**: every user with a positive interaction on a cold item; ground truth =
   those cold items; history = every training-world event of the user (every type, newest first,
   as ``for_user`` reads it; consumed = their training-world rated items); clock = the last
   training-world event; behaviour snapshot from every training-world event; the whole catalog
   ranked (k = 10) by ``for_user`` (through ``Evaluator.run``) for five settings:
   (a) content only (profile 1, no fallbacks), (b) the recipe's fixed blend weights with the
   model (no ranker), (c) the served recipe (the ranker when ``choose_ranker`` kept it, else (b)),
   (d) the learned ranker forced on (fitted by ``learned_rank.fit_ranker`` on
   ``indexer.train.candidate_groups`` even where ``choose_ranker`` declined it), (e) the shipped
   default blend without a model, (f) the served recipe without the cold place (the warm
   reference: what the place costs); ``--cold-ranks`` adds the served recipe with other bars for
   the cold place (``cold_item_rank``);
6. **warm evaluation**: the usual test metric of ``bench_movielens``'s trained row on the
   training-world split (model refit on its test world, ``Evaluator.run`` with fallbacks on) for
   the same settings;
7. paired per-user Recall@10 on cold items of each setting against content only (mean ± SE);
   and, as a diagnostic, for (c) and (d): the share of the cold positives among the candidates
   the served blend gathers, where the best-placed cold candidate lands in its order, and
   for how many users even a cold item with a perfect content match could enter the top 10;
8. prints one table, writes ``benchmarks/results/cold_items.json`` and ``docs/img/cold_items.png``.

    .venv/bin/python -m benchmarks.bench_cold_items
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import service  # noqa: E402,F401  (installs the torchvision hook first)
import numpy as np  # noqa: E402

from benchmarks.bench_movielens import DATA_ROOT, _short, prepare_service  # noqa: E402
from benchmarks.common import REPO  # noqa: E402
from benchmarks.movielens import load_split  # noqa: E402
from service.recommend.cold_eval import COLD, ColdEvaluator, pick_cold_items, subset_log  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "cold_items.json"
PLOT = REPO / "docs" / "img" / "cold_items.png"
MIN_POSITIVES = 5
FRACTION = 0.10
SEED = 0
# Target: served recipe's cold Recall@10 >= content only's; warm NDCG@10 >= (1 - 2%) x the best.
WARM_TOLERANCE = 0.02

SETTINGS = {
    "a": "content only",
    "b": "fixed blend weights + model",
    "c": "served recipe",
    "d": "learned ranker forced on",
    "e": "shipped default blend, no model",
    "f": "served recipe, no cold place",
}


def per_user_recall(lists: dict, truth: dict, k: int) -> dict:
    """Each user's hits@k / min(k, |relevant|), as ``recall_at_k`` averages it."""
    return {u: len(set(lists.get(u, [])[:k]) & rel) / min(k, len(rel)) for u, rel in truth.items() if rel}


def cold_stats(lists: dict, cold: set[int], k: int) -> dict:
    """Cold items in the top-k lists: distinct ones, and their share of all list slots."""
    slots = [i for rec in lists.values() for i in rec[:k]]
    in_lists = [i for i in slots if i in cold]
    return {"cold_items_in_any_top_k": len(set(in_lists)), "cold_slots": len(in_lists),
            "cold_slot_share": len(in_lists) / len(slots) if slots else 0.0,
            "users_with_a_cold_item": sum(1 for rec in lists.values() if cold & set(rec[:k]))}


def paired(a: dict, b: dict) -> dict:
    """Per-user ``a - b`` over the same users: mean, standard error std/sqrt(n), counts."""
    users = sorted(a)
    assert users == sorted(b)
    d = np.array([a[u] - b[u] for u in users])
    mean, se = float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d)))
    return {"n_users": len(d), "mean_diff": mean, "se": se, "z": mean / se if se > 0 else float("nan"),
            "exceeds_2se": bool(abs(mean) > 2 * se), "users_better": int((d > 0).sum()),
            "users_worse": int((d < 0).sum()), "users_tied": int((d == 0).sum())}


def reach(ev: ColdEvaluator, engine, weights: dict, ranker, cold: set[int], k: int) -> dict:
    """Why cold items do (not) make the page: per cold user, gather the candidates the served
    blend gathers (every source in ``weights``) and order them as ``rank`` would before SQL and
    diversity (``ranker.blend``, else the weighted blend). Returns the share of the user's cold
    positives among the candidates, where the best-placed cold candidate lands, and the
    *ceiling*: the score a cold item with the best possible content match would get (content
    source's best for this user, cosine 1, no behaviour) against each user's k-th best score."""
    from service.recommend import learned_rank
    from service.recommend.ranking import blend as weighted_blend
    from service.recommend.recommender import gather, make_ask, user_seeds

    if ranker is not None:
        best = np.zeros((1, len(learned_rank.FEATURES)), dtype=np.float32)
        for name in ("profile_scaled", "profile_cosine", "cold"):
            best[0, learned_rank.FEATURES.index(name)] = 1.0
        ceiling = float(1.0 / (1.0 + np.exp(-ranker.predict(best)[0])))  # as Ranker.blend squashes it
    else:
        ceiling = float(weights.get("profile", 0.0))  # content scaled to 1, every other source 0
    truth, now = ev.truth(COLD), ev.world(COLD).now
    found = total = 0
    best_rank, n_cands, kth = [], [], []
    for user, rel in truth.items():
        history, consumed = ev.history(user, COLD)
        seeds = user_seeds(history, ev.settings, now=now)
        if not seeds.liked:
            continue
        ask = make_ask(ev.settings, k=k, now=now, exclude=consumed, weights=weights)
        scores = gather(engine, seeds, ask).scores
        blended = ranker.blend(scores, engine.behaviour) if ranker is not None else weighted_blend(scores, weights)
        order = sorted(blended, key=lambda i: (-blended[i][0], i))
        found += len(rel & set(order))
        total += len(rel)
        n_cands.append(len(order))
        ranks = [r for r, i in enumerate(order) if i in cold]
        if ranks:
            best_rank.append(ranks[0] + 1)
        kth.append(blended[order[k - 1]][0] if len(order) >= k else 0.0)
    kth_arr = np.asarray(kth)
    return {"truth_among_candidates": found / total if total else 0.0, "mean_candidates": float(np.mean(n_cands)),
            "ceiling_score": ceiling, "kth_score_min": float(kth_arr.min()), "kth_score_median": float(np.median(kth_arr)),
            "users_a_perfect_cold_match_could_enter": int((kth_arr < ceiling).sum()),
            "users_with_a_cold_candidate": len(best_rank), "users": len(n_cands),
            "best_cold_rank_median": float(np.median(best_rank)) if best_rank else None,
            "best_cold_rank_min": int(min(best_rank)) if best_rank else None}


def plot(rows: dict, k: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(rows)
    names = [f"({key}) {rows[key]['name']}" for key in keys]
    y = np.arange(len(keys))
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.5 * len(keys) + 1.6), sharey=True)
    ax = axes[0]
    ax.barh(y - 0.2, [rows[x]["cold"]["recall"] for x in keys], 0.4, label=f"Recall@{k}", color="#1f6feb")
    ax.barh(y + 0.2, [rows[x]["cold"]["ndcg"] for x in keys], 0.4, label=f"NDCG@{k}", color="#79c0ff")
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_title("cold items (no behaviour in training)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2, frameon=False)
    ax = axes[1]
    warm = [rows[x]["warm"]["ndcg"] for x in keys]
    ax.barh(y, warm, 0.5, color=["#cf222e" if x == "c" else "#8c959f" for x in keys])
    best = max(w for x, w in zip(keys, warm) if x in "bcdef")
    ax.axvline(best * (1 - WARM_TOLERANCE), color="black", lw=1, ls="--", label="best (b-f) - 2%")
    ax.set_title(f"warm test NDCG@{k} (training-world split)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), frameon=False)
    fig.suptitle("MovieLens-100K: 10% of items with >= 5 positives held out of all training")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--seed", type=int, default=SEED, help="seed of the cold-item draw")
    ap.add_argument("--fraction", type=float, default=FRACTION)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--content-scoring", default=None, help="the content_scoring setting (default: the service's, auto)")
    ap.add_argument("--cold-slots", type=int, default=None,
                    help="cold_item_slots for every setting (default: the service's setting)")
    ap.add_argument("--cold-ranks", default="",
                    help="comma-separated cold_item_rank values to score the served recipe with as well "
                         "(a sweep beside the shipped setting, e.g. 5,10,20,50)")
    args = ap.parse_args()
    k = args.k
    started = time.perf_counter()

    from indexer.train import _interactions, candidate_groups, choose_recipe
    from service.recommend import collab, learned_rank
    from service.recommend.offline_eval import Blend, load_event_log, split_log
    from service.vectors.index_store import load_version

    data = load_split(n_test=2, n_valid=2)  # only used to import the database when it is not there yet
    settings, factory, version = prepare_service(data, DATA_ROOT)
    if args.cold_slots is not None:
        settings = dataclasses.replace(settings, cold_item_slots=args.cold_slots)
    if args.content_scoring is not None:
        settings = dataclasses.replace(settings, content_scoring=args.content_scoring)
    print(f"cold_item_slots {settings.cold_item_slots}", file=sys.stderr)
    space = load_version(settings.index_path, version).spaces["text"]
    with factory() as session:
        log = load_event_log(session, settings)

    # --- cold items and the training world ---------------------------------------------------
    cold_items, n_eligible = pick_cold_items(log, fraction=args.fraction, min_positives=MIN_POSITIVES,
                                             seed=args.seed)
    cold = set(cold_items.tolist())
    on_cold = np.isin(log.items, cold_items)
    cold_truth: dict[Any, set[int]] = {}
    for i in log.positive[on_cold[log.positive]].tolist():
        cold_truth.setdefault(log.users[i].item(), set()).add(int(log.items[i]))
    train_log = subset_log(log, ~on_cold, settings)
    assert not np.isin(train_log.items, cold_items).any()
    split = split_log(train_log, n_test=2, n_valid=2)
    # Users with a cold positive but no training-world event would be cold start: none on ML-100K.
    train_users = set(np.unique(train_log.users).tolist())
    cold_truth = {u: t for u, t in cold_truth.items() if u in train_users}
    info = {"events": len(log), "positives": int(len(log.positive)), "eligible_items": n_eligible,
            "min_positives": MIN_POSITIVES, "fraction": args.fraction, "seed": args.seed,
            "cold_items": len(cold), "cold_events": int(on_cold.sum()),
            "cold_positives": int(on_cold[log.positive].sum()), "cold_users": len(cold_truth),
            "cold_truth_pairs": sum(len(t) for t in cold_truth.values()),
            "training_world_events": len(train_log), "training_world_positives": int(len(train_log.positive)),
            "warm_eval_users": int(len(split.users)), "warm_valid_rows": int(len(split.valid_idx)),
            "warm_test_rows": int(len(split.test_idx))}
    print(f"cold items: {len(cold)} of {n_eligible} items with >= {MIN_POSITIVES} positives (seed {args.seed}); "
          f"{info['cold_events']} events on them left out ({info['cold_positives']} positive); "
          f"{len(cold_truth)} users with a cold positive ({info['cold_truth_pairs']} pairs); training world "
          f"{len(train_log)} events, warm split {len(split.users)} users", file=sys.stderr)

    ev = ColdEvaluator(train_log, split, space, settings, factory, k=k, cold_truth=cold_truth)
    assert set(ev.catalog_ids) >= cold, "cold items stay in the catalog"

    # --- the recipe the rebuild would publish for the training world --------------------------
    t0 = time.perf_counter()
    recipe = choose_recipe(ev, settings, collab.fit)
    choose_s = time.perf_counter() - t0
    family, params, weights = recipe.best["family"], recipe.best["params"], dict(recipe.weights)
    served = "ranker" if recipe.ranker is not None else "weights"
    recipe_text = (f"{family} {_short(params)}; blend " + ", ".join(f"{n} {v:g}" for n, v in weights.items())
                   + f"; content by {recipe.profile}; served by the {served}; cold place from content rank "
                   + f"{recipe.cold_rank if recipe.cold_rank is not None else 'default'}")
    print(f"recipe chosen on the training world's validation: {recipe_text} (blend NDCG@{k} "
          f"{recipe.valid_ndcg:.4f}; ranker: {recipe.ranker_record.get('reason', 'kept')}; {choose_s:.0f} s)",
          file=sys.stderr)
    t0 = time.perf_counter()
    if recipe.ranker is not None:
        forced, forced_how = recipe.ranker, "the recipe's own ranker (choose_ranker kept it)"
    else:
        valid_model = collab.fit(family, _interactions(ev.world_arrays("valid"), settings, params), **params)
        groups = candidate_groups(ev, valid_model, settings)
        forced = learned_rank.fit_ranker([(g.x, g.y) for g in groups])
        forced_how = f"fit_ranker on {len(groups)} validation candidate groups (choose_ranker declined it)"
        assert forced is not None
    forced_s = time.perf_counter() - t0
    all_model = collab.fit(family, _interactions(ev.world_arrays(COLD), settings, params), **params)
    test_model = collab.fit(family, _interactions(ev.world_arrays("test"), settings, params), **params)
    assert not set(all_model.item_ids.tolist()) & cold, "the model never saw a cold item"

    hl, damping = settings.event_half_life_days, settings.co_engagement_popularity_damping
    served_blend = Blend.served_with(weights, settings)
    runs = {  # key: (blend, model per phase, ranker)
        "a": (Blend({"profile": 1.0}, 0.0, hl, fallbacks=False), None, None),
        "b": (served_blend, "model", None),
        "c": (served_blend, "model", recipe.ranker),
        "d": (served_blend, "model", forced),
        "e": (Blend.configured(settings), None, None),
        "f": (served_blend, "model", recipe.ranker),
    }
    # The served recipe with other bars for the cold place: what each bar trades, in the same run.
    sweep = [int(v) for v in args.cold_ranks.split(",") if v.strip()]
    for n in sweep:
        runs[f"c@{n}"] = runs["c"]
        SETTINGS[f"c@{n}"] = f"served recipe, cold_item_rank {n}"
    # (Content only scores one source alone, without fallbacks: ``for_user`` keeps no cold place in it.)
    row_settings = {"f": dataclasses.replace(settings, cold_item_slots=0),
                    **{f"c@{n}": dataclasses.replace(settings, cold_item_rank=str(n)) for n in sweep}}
    models = {COLD: all_model, "test": test_model}
    rows: dict[str, dict] = {}
    lists: dict[str, dict[str, dict]] = {}
    chosen_power, chosen_rank = ev.profile_power, ev.cold_rank  # choose_recipe left its choices on ev
    for key, (blend, model, ranker) in runs.items():
        # Without a trained model a version scores content by the mean and fills the cold place with
        # the default bar (the choices live with the model).
        ev.profile_power, ev.cold_rank = (0, None) if key == "e" else (chosen_power, chosen_rank)
        ev.settings = row_settings.get(key, settings)
        rows[key] = {"name": SETTINGS[key], **blend.settings(), "fallbacks": blend.fallbacks,
                     "served": blend.served, "model": model is not None, "ranker": ranker is not None}
        lists[key] = {}
        for phase, label in ((COLD, "cold"), ("test", "warm")):
            t0 = time.perf_counter()
            out: dict = {}
            metrics = ev.run(blend, phase=phase, model=models[phase] if model else None, ranker=ranker, lists=out)
            rows[key][label] = {**{m: float(v) for m, v in metrics.items()}, **cold_stats(out, cold, k),
                                "users": len(out), "seconds": round(time.perf_counter() - t0, 1)}
            lists[key][label] = out
        print(f"  ({key}) {SETTINGS[key]}: cold Recall@{k} {rows[key]['cold']['recall']:.4f}, "
              f"warm NDCG@{k} {rows[key]['warm']['ndcg']:.4f}", file=sys.stderr)

    ev.profile_power, ev.cold_rank, ev.settings = chosen_power, chosen_rank, settings

    # --- where cold candidates land (diagnostic: the pieces of ``recommend``, before SQL) -------
    t0 = time.perf_counter()
    every = {src: 1.0 for src in learned_rank.SOURCES}
    diagnostics = {"c": reach(ev, ev.engine(COLD, damping, all_model), every if recipe.ranker else weights,
                              recipe.ranker, cold, k),
                   "d": reach(ev, ev.engine(COLD, damping, all_model), every, forced, cold, k)}
    diagnostics["seconds"] = round(time.perf_counter() - t0, 1)

    # --- paired comparisons and the target ---------------------------------------------------
    recall = {key: per_user_recall(lists[key]["cold"], ev.truth(COLD), k) for key in runs}
    for key in runs:
        assert abs(np.mean(list(recall[key].values())) - rows[key]["cold"]["recall"]) < 1e-9
    comparisons = {f"{key}_vs_a": {"ours": SETTINGS[key], "baseline": SETTINGS["a"], **paired(recall[key], recall["a"])}
                   for key in runs if key != "a"}
    best_warm_key = max("bcdef", key=lambda x: rows[x]["warm"]["ndcg"])
    best_warm = rows[best_warm_key]["warm"]["ndcg"]
    for key in runs:
        r = rows[key]
        r["warm_vs_best_pct"] = (r["warm"]["ndcg"] / best_warm - 1) * 100
        r["meets_cold"] = bool(r["cold"]["recall"] >= rows["a"]["cold"]["recall"])
        r["meets_warm"] = bool(r["warm"]["ndcg"] >= (1 - WARM_TOLERANCE) * best_warm)
    target = {"setting": "c", "cold_recall": rows["c"]["cold"]["recall"],
              "content_only_cold_recall": rows["a"]["cold"]["recall"],
              "warm_ndcg": rows["c"]["warm"]["ndcg"], "best_warm_ndcg": best_warm,
              "best_warm_setting": SETTINGS[best_warm_key], "warm_tolerance": WARM_TOLERANCE,
              "cold_met": rows["c"]["meets_cold"], "warm_met": rows["c"]["meets_warm"],
              "met": bool(rows["c"]["meets_cold"] and rows["c"]["meets_warm"])}

    head = (f"{'setting':36} {'cold R@' + str(k):>9} {'cold N@' + str(k):>9} {'cold items':>10} "
            f"{'cold slots':>10} {'warm N@' + str(k):>9} {'vs best':>8} {'warm R@' + str(k):>9} "
            f"{'warm cold':>9} {'target':>7}")
    print(head)
    print("-" * len(head))
    for key, r in rows.items():
        ok = ("cold" if r["meets_cold"] else "-") + "/" + ("warm" if r["meets_warm"] else "-")
        print(f"({key}) {r['name']:32} {r['cold']['recall']:9.4f} {r['cold']['ndcg']:9.4f} "
              f"{r['cold']['cold_items_in_any_top_k']:10d} {r['cold']['cold_slot_share']:10.3f} "
              f"{r['warm']['ndcg']:9.4f} {r['warm_vs_best_pct']:+7.1f}% {r['warm']['recall']:9.4f} "
              f"{r['warm']['cold_items_in_any_top_k']:9d} {ok:>7}")
    print(f"\ncold: {len(cold_truth)} users, {info['cold_truth_pairs']} (user, cold item) positives, "
          f"{len(cold)} cold items; 'cold items' = distinct cold items in any top {k}, 'cold slots' = "
          f"share of top-{k} slots holding a cold item; warm: test phase of the training-world split, "
          f"{rows['c']['warm']['users']} users; 'warm cold' = cold items in any warm top {k}")
    for key, c in comparisons.items():
        print(f"paired cold Recall@{k}, ({key[0]}) {c['ours']} - (a) content only: {c['mean_diff']:+.4f} +- "
              f"{c['se']:.4f} (SE, n={c['n_users']}), {abs(c['z']):.1f} SE "
              f"(better for {c['users_better']}, worse for {c['users_worse']}, tied for {c['users_tied']})")
    for key in ("c", "d"):
        d = diagnostics[key]
        print(f"({key}) {SETTINGS[key]}: {d['truth_among_candidates']:.1%} of the cold positives are among the "
              f"~{d['mean_candidates']:.0f} candidates gathered; best-placed cold candidate before SQL: median rank "
              f"{d['best_cold_rank_median']}, best {d['best_cold_rank_min']} ({d['users_with_a_cold_candidate']} "
              f"of {d['users']} users have one); a cold item with a perfect content match would score "
              f"{d['ceiling_score']:.3f} against a {k}th-best score of {d['kth_score_median']:.3f} (median; min "
              f"{d['kth_score_min']:.3f}): it could enter the top {k} of {d['users_a_perfect_cold_match_could_enter']} "
              f"of {d['users']} users")
    print(f"recipe: {recipe_text}; forced ranker: {forced_how}")
    print(f"target (served recipe: cold Recall@{k} >= content only's, {target['cold_recall']:.4f} vs "
          f"{target['content_only_cold_recall']:.4f}: {'met' if target['cold_met'] else 'NOT met'}; warm NDCG@{k} "
          f"within {WARM_TOLERANCE:.0%} of the best, {target['warm_ndcg']:.4f} vs {best_warm:.4f} "
          f"({target['best_warm_setting']}): {'met' if target['warm_met'] else 'NOT met'}): "
          f"{'met' if target['met'] else 'NOT met'}")
    total = time.perf_counter() - started
    print(f"total {total:.0f} s (recipe choice {choose_s:.0f} s, forced ranker {forced_s:.0f} s)")

    report = {
        "benchmark": "movielens-100k cold items", "k": k, "index_version": version, "cold_split": info,
        "recipe": {"family": family, "params": params, "blend": weights, "served": served, "text": recipe_text,
                   "profile": {"way": recipe.profile, "validation_ndcg": recipe.profile_scores},
                   "cold_place": {"rank": recipe.cold_rank, **recipe.cold_record},
                   "valid_ndcg": recipe.valid_ndcg, "model_valid_ndcg": recipe.best["ndcg"],
                   "ranker": recipe.ranker_record, "candidates": recipe.table,
                   "forced_ranker": {"how": forced_how, **forced.info},
                   "model_items_all": int(len(all_model.item_ids)), "model_items_test": int(len(test_model.item_ids))},
        "settings": rows, "comparisons": comparisons, "target": target, "cold_candidates": diagnostics,
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
        "timing": {"choose_recipe_seconds": round(choose_s, 1), "forced_ranker_seconds": round(forced_s, 1)},
        "seconds": round(total, 1),
        "command": " ".join(["python -m benchmarks.bench_cold_items", *sys.argv[1:]]),
        "cold_item_slots": settings.cold_item_slots, "cold_item_rank": settings.cold_item_rank,
        "cold_item_warm_tolerance": settings.cold_item_warm_tolerance,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)) + "\n")
    wrote = [str(args.out)]
    if not args.no_plot:
        plot(rows, k, PLOT)
        wrote.append(str(PLOT))
    print("wrote " + " and ".join(wrote))


if __name__ == "__main__":
    main()
