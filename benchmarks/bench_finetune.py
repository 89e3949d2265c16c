"""MovieLens-100K: the text encoder fine-tuned on behaviour against the pretrained one.

The split is :mod:`benchmarks.bench_cold_items`'s: a seeded 10% of the items with >= 5 positives
are **cold** (no event of theirs reaches fine-tuning, the collaborative model, the recipe
choice or any history; they stay in the catalog and are embedded from their text); the rest,
the training world, is split per user as ``bench_movielens`` splits it (last 2 positives test,
the 2 before validation).

1. Pairs (:func:`indexer.finetune_pairs.build_pairs`) from the training world's events minus
   each user's test period, positive only, within ``finetune_window_days``; one query-like
   probe pair per item, then the heaviest item pairs up to ``--max-pairs``, as texts exactly as
   the text space embeds items (what ``recsys-indexer finetune`` trains on); a tenth held out
   for early stopping. MovieLens has no search log: no query pairs.
2. The packaged MiniLM is fine-tuned on them (:func:`indexer.finetune.fit_text_encoder`,
   the code ``recsys-indexer finetune`` runs), timed, with the process's peak memory.
3. Both encoders embed the whole catalog; every figure comes from the service's code with
   each space (``for_user`` through :class:`~service.recommend.cold_eval.ColdEvaluator`):
   content-only NDCG@10 for warm users (test), cold-item Recall@10 over the whole catalog
   (content only), cold-only Recall@10 (the service's content scoring ranking only the cold
   items), each with content scored the way the training stage chooses on validation for that
   space (``indexer.train.choose_profile``: mean profile or soft maximum) and, for comparison,
   by the mean profile; and the served blend: the recipe ``indexer.train.choose_recipe`` picks
   on validation with that space (content scoring, model, blend weights, ranker), scored on test.
4. Paired per-user differences (mean ± standard error), the targets, a JSON file and a plot.

    .venv/bin/python -m benchmarks.bench_finetune [--max-pairs 20000] [--epochs 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import service  # noqa: E402,F401  (installs the torchvision hook first)
import numpy as np  # noqa: E402

from benchmarks.bench_cold_items import FRACTION, MIN_POSITIVES, SEED, paired, per_user_recall  # noqa: E402
from benchmarks.bench_movielens import DATA_ROOT, prepare_service  # noqa: E402
from benchmarks.common import REPO  # noqa: E402
from benchmarks.movielens import load_split  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "finetune_movielens.json"
PLOT = REPO / "docs" / "img" / "finetune_movielens.png"


def seed_rows(ev, user, phase: str, settings, row_of: dict[int, int]) -> tuple[list[int], np.ndarray, frozenset[int]]:
    """A user's seeds as the service weighs them (``user_seeds``): their rows in the space, their
    weights, and the items the user consumed."""
    from service.recommend.recommender import user_seeds

    history, consumed = ev.history(user, phase)
    seeds = user_seeds(history, settings, now=ev.world(phase).now)
    known = [i for i in seeds.items if i in row_of]
    return [row_of[i] for i in known], np.array([seeds.items[i] for i in known]), consumed


def cold_only_recall(ev, space, cold_items: np.ndarray, settings, k: int, power: int = 0) -> dict[Any, float]:
    """Per cold user: Recall@k of their cold items when the service's content scoring (the mean
    profile vector, or with ``power`` the soft maximum over the heaviest liked items, as
    ``recommender._soft_max`` does, ``profile_max_seeds``) ranks only the cold items."""
    from service.recommend.cold_eval import COLD
    from service.recommend.ranking import profile_vector, soft_max_terms
    from service.recommend.recommender import soft_max_seeds

    row_of = {int(i): r for r, i in enumerate(space.ids.tolist())}
    cold_rows = np.array([row_of[int(i)] for i in cold_items])
    cold_vecs = space.vectors[cold_rows]
    out = {}
    for user, truth in ev.truth(COLD).items():
        rows, weights, _consumed = seed_rows(ev, user, COLD, settings, row_of)
        rows, weights = np.asarray(rows, dtype=np.int64), np.asarray(weights, dtype=np.float64)
        if power and (weights > 0).any():
            pos = soft_max_seeds(weights, settings.profile_max_seeds)
            scores = soft_max_terms(space.vectors[rows[pos]] @ cold_vecs.T, weights[pos, None], power).sum(0)
        else:
            profile = profile_vector(space.vectors[rows], weights) if len(rows) and not power else None
            if profile is None:
                out[user] = 0.0
                continue
            scores = cold_vecs @ profile
        top = cold_items[np.argsort(-scores, kind="stable")[:k]]
        out[user] = len(set(top.tolist()) & truth) / min(k, len(truth))
    return out


def score_space(ev, space, settings, cold_items, k: int) -> tuple[dict, dict]:
    """(figures, per-user values) of one encoder's space through the service's code: content
    scored the way the training stage chooses for it on validation (``choose_recipe``), and,
    for comparison with earlier runs, by the mean profile."""
    from indexer.train import choose_recipe, _interactions
    from service.recommend import collab
    from service.recommend.cold_eval import COLD
    from service.recommend.offline_eval import Blend

    ev.space = space
    hl = settings.event_half_life_days
    content = Blend({"profile": 1.0}, 0.0, hl, fallbacks=False)
    lists: dict[str, dict] = {"warm": {}, "cold": {}, "served": {}, "warm_mean": {}, "cold_mean": {}}
    figures: dict[str, Any] = {}
    t0 = time.perf_counter()
    recipe = choose_recipe(ev, settings, collab.fit)  # chooses the content scoring first, left on ev
    power = ev.profile_power
    figures["profile"] = {"way": recipe.profile, "validation_ndcg": recipe.profile_scores}
    figures["content_warm"] = ev.run(content, phase="test", lists=lists["warm"])
    figures["content_cold"] = ev.run(content, phase=COLD, lists=lists["cold"])
    per_user = {"content_warm_ndcg": dict(zip(ev.truth("test"), ev.per_user_ndcg(lists["warm"], "test"))),
                "content_cold_recall": per_user_recall(lists["cold"], ev.truth(COLD), k),
                "cold_only_recall": cold_only_recall(ev, space, cold_items, settings, k, power)}
    figures["cold_only_recall"] = float(np.mean(list(per_user["cold_only_recall"].values())))
    ev.profile_power = 0
    figures["mean_profile"] = {"content_warm": ev.run(content, phase="test")["ndcg"],
                               "content_cold": ev.run(content, phase=COLD)["recall"],
                               "cold_only_recall": float(np.mean(list(
                                   cold_only_recall(ev, space, cold_items, settings, k).values())))}
    ev.profile_power = power
    params, family = recipe.best["params"], recipe.best["family"]
    model = collab.fit(family, _interactions(ev.world_arrays("test"), settings, params), **params)
    served = Blend(dict(recipe.weights), settings.co_engagement_popularity_damping, hl, served=True)
    figures["served"] = ev.run(served, phase="test", model=model, ranker=recipe.ranker, lists=lists["served"])
    figures["recipe"] = {"family": family, "params": params, "blend": dict(recipe.weights),
                         "ranker": recipe.ranker is not None, "profile": recipe.profile}
    per_user["served_ndcg"] = dict(zip(ev.truth("test"), ev.per_user_ndcg(lists["served"], "test")))
    figures["seconds"] = round(time.perf_counter() - t0, 1)
    return figures, per_user


def paired_nan(a: dict, b: dict) -> dict:
    """:func:`paired` over the users both score (NDCG is NaN where nothing is held out)."""
    users = [u for u in a if not (np.isnan(a[u]) or np.isnan(b[u]))]
    return paired({u: a[u] for u in users}, {u: b[u] for u in users})


def plot(rows: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = ["content NDCG@10\n(warm users)", "cold Recall@10\n(whole catalog)", "cold-only\nRecall@10",
              "served blend\nNDCG@10"]
    keys = ["content_warm_ndcg", "content_cold_recall", "cold_only_recall", "served_ndcg"]
    x = np.arange(len(keys))
    fig, ax = plt.subplots(figsize=(8, 3.6))
    for j, (name, vals) in enumerate(rows.items()):
        ax.bar(x + (j - 0.5) * 0.38, [vals[key] for key in keys], 0.38, label=name)
    ax.set_xticks(x, labels)
    ax.set_title("MovieLens-100K: MiniLM pretrained vs fine-tuned on behaviour")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--max-pairs", type=int, default=20_000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--learning-rate", type=float, default=3e-5)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--vectors", type=Path, default=None,
                    help="an .npz of the fine-tuned catalog vectors: written after the fit, or, when it exists and "
                         "was made with the same pairs and options, read instead of fitting again")
    args = ap.parse_args()
    k = args.k
    started = time.perf_counter()

    from indexer.finetune import FitOptions, fit_text_encoder
    from indexer.finetune_eval import memory_space
    from indexer.finetune_pairs import EventRows, build_pairs
    from indexer.finetune_stage import pair_texts, split_pairs, texts_and_probes
    from service.recommend.cold_eval import ColdEvaluator, cold_split
    from service.recommend.offline_eval import load_event_log, split_log
    from service.vectors.index_store import load_version
    from service.vectors.text_encoder import load_text_encoder

    data = load_split(n_test=2, n_valid=2)  # imports the database when it is not there yet
    settings, factory, version = prepare_service(data, DATA_ROOT)
    pretrained_space = load_version(settings.index_path, version).spaces["text"]
    with factory() as session:
        log = load_event_log(session, settings, queries=True)
    cold = cold_split(log, settings, fraction=FRACTION, min_positives=MIN_POSITIVES, seed=SEED)
    split = split_log(cold.world, n_test=2, n_valid=2)
    ev = ColdEvaluator(cold.world, split, pretrained_space, settings, factory, k=k, cold_truth=cold.truth)

    # --- pairs: the training world minus each evaluated user's test period --------------------
    keep = np.zeros(len(log), dtype=bool)
    keep[cold.world_rows[ev.world("test").rows]] = True
    rows = EventRows.from_log(log)
    pairs = build_pairs(rows, window_seconds=settings.finetune_window_days * 86_400.0, keep=keep,
                        max_pairs_per_user=settings.finetune_max_pairs_per_user)
    assert not set(cold.cold_items.tolist()) & {i for p in pairs.item_pairs for i in p}
    texts, probes = texts_and_probes(factory, [int(i) for i in pretrained_space.ids], seed=SEED)
    every = pair_texts(pairs, texts, max_pairs=args.max_pairs, seed=SEED, probes=probes)
    train, valid = split_pairs(every, seed=SEED)
    print(f"cold items {len(cold.cold_items)}, cold users {len(cold.truth)}, warm users {len(split.users)}; "
          f"{len(pairs.item_pairs)} distinct item pairs, {len(every)} used ({len(train)} train, {len(valid)} "
          f"held out)", file=sys.stderr)

    # --- fine-tune (or its saved vectors) -------------------------------------------------------
    base = load_text_encoder(settings)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    options = FitOptions(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate, seed=SEED)
    ids = pretrained_space.ids
    made_with = json.dumps({"pairs": len(every), "train": train.anchors[:50], "options": vars(options)},
                           sort_keys=True, default=str)
    saved = np.load(args.vectors) if args.vectors and args.vectors.exists() else None
    if saved is not None and str(saved["made_with"]) == made_with and np.array_equal(saved["ids"], ids):
        tuned_vectors, fit_info = saved["vectors"], json.loads(str(saved["fit"]))
        embed_s = float(saved["embed_seconds"])
        print(f"fine-tuned vectors read from {args.vectors} (fit: {fit_info['seconds']:.0f} s)", file=sys.stderr)
    else:
        tuned = load_text_encoder(settings, training=True)
        with tempfile.TemporaryDirectory() as work:
            report = fit_text_encoder(tuned.model, train, valid, work_dir=Path(work), options=options,
                                      device=tuned.device, progress=sys.stderr.isatty())
        fit_info = report.as_dict()
        print(f"fine-tuned in {report.seconds:.0f} s ({report.pairs_per_second:.1f} pairs/s), held-out loss "
              f"{report.valid_loss}, peak RSS {report.peak_rss_mb:.0f} MB (before: {rss_before:.0f} MB)",
              file=sys.stderr)
        t0 = time.perf_counter()
        tuned_vectors = tuned.encode([texts[int(i)] for i in ids], batch_size=128)
        embed_s = time.perf_counter() - t0
        if args.vectors:
            args.vectors.parent.mkdir(parents=True, exist_ok=True)
            np.savez(args.vectors, ids=ids, vectors=tuned_vectors, made_with=made_with,
                     fit=json.dumps(fit_info, default=float), embed_seconds=embed_s)

    # --- both encoders through the service's code ---------------------------------------------
    spaces = {"pretrained": pretrained_space,
              "fine-tuned": memory_space(ids, tuned_vectors, {"name": "minilm+finetuned", "revision": "bench"})}
    assert np.allclose(base.encode(texts[int(ids[0])]), pretrained_space.vectors[0], atol=1e-4)
    figures, per_user = {}, {}
    for name, space in spaces.items():
        figures[name], per_user[name] = score_space(ev, space, settings, cold.cold_items, k)
        f = figures[name]
        m = f["mean_profile"]
        print(f"  {name}: content by {f['profile']['way']} (validation {f['profile']['validation_ndcg']}): "
              f"NDCG@{k} {f['content_warm']['ndcg']:.4f}, cold Recall@{k} {f['content_cold']['recall']:.4f}, "
              f"cold-only {f['cold_only_recall']:.4f} (mean profile: {m['content_warm']:.4f}, "
              f"{m['content_cold']:.4f}, {m['cold_only_recall']:.4f}); served NDCG@{k} {f['served']['ndcg']:.4f} "
              f"({f['recipe']['family']}, {f['seconds']:.0f} s)", file=sys.stderr)

    comparisons = {key: paired_nan(per_user["fine-tuned"][key], per_user["pretrained"][key])
                   if key.endswith("ndcg") else paired(per_user["fine-tuned"][key], per_user["pretrained"][key])
                   for key in ("content_warm_ndcg", "content_cold_recall", "cold_only_recall", "served_ndcg")}
    summary = {name: {"content_warm_ndcg": f["content_warm"]["ndcg"], "content_cold_recall": f["content_cold"]["recall"],
                      "cold_only_recall": f["cold_only_recall"], "served_ndcg": f["served"]["ndcg"]}
               for name, f in figures.items()}
    pre, ft = summary["pretrained"], summary["fine-tuned"]
    targets = {
        "content_warm_2x": {"ratio": ft["content_warm_ndcg"] / pre["content_warm_ndcg"], "target": 2.0},
        "cold_recall_+25%": {"ratio": ft["content_cold_recall"] / max(pre["content_cold_recall"], 1e-12),
                             "target": 1.25},
        "cold_only_+25%": {"ratio": ft["cold_only_recall"] / max(pre["cold_only_recall"], 1e-12), "target": 1.25},
        "served_not_lower": {"ratio": ft["served_ndcg"] / pre["served_ndcg"], "target": 1.0},
    }
    for t in targets.values():
        t["met"] = bool(t["ratio"] >= t["target"])
    # The same content ratios with the mean profile in both spaces (what earlier runs reported).
    by_mean = {name: f["mean_profile"] for name, f in figures.items()}
    mean_ratios = {key: by_mean["fine-tuned"][key] / max(by_mean["pretrained"][key], 1e-12)
                   for key in ("content_warm", "content_cold", "cold_only_recall")}
    result = {
        "benchmark": "bench_finetune", "command": " ".join(["python -m benchmarks.bench_finetune", *sys.argv[1:]]),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "split": {"cold_items": len(cold.cold_items), "cold_users": len(cold.truth), "warm_users": len(split.users),
                  "events": len(log), "fraction": FRACTION, "min_positives": MIN_POSITIVES, "seed": SEED},
        "pairs": {"distinct_item_pairs": len(pairs.item_pairs), "used": len(every), "train": len(train),
                  "valid": len(valid), "window_days": settings.finetune_window_days,
                  "max_per_user": settings.finetune_max_pairs_per_user},
        "fit": fit_info, "embed_catalog_seconds": round(embed_s, 1), "rss_before_fit_mb": round(rss_before),
        "figures": figures, "summary": summary, "paired_fine_tuned_minus_pretrained": comparisons, "targets": targets,
        "mean_profile_ratios": mean_ratios,
        "seconds": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=float))
    print(f"{'':28} {'pretrained':>11} {'fine-tuned':>11} {'diff ± SE':>20} {'target':>16}")
    names = {"content_warm_ndcg": "content NDCG@10 (warm)", "content_cold_recall": "cold Recall@10 (catalog)",
             "cold_only_recall": "cold-only Recall@10", "served_ndcg": "served blend NDCG@10"}
    target_of = {"content_warm_ndcg": "content_warm_2x", "content_cold_recall": "cold_recall_+25%",
                 "cold_only_recall": "cold_only_+25%", "served_ndcg": "served_not_lower"}
    for key, label in names.items():
        c, t = comparisons[key], targets[target_of[key]]
        print(f"{label:28} {pre[key]:11.4f} {ft[key]:11.4f} {c['mean_diff']:+9.4f} ± {c['se']:.4f} "
              f"  x{t['ratio']:.2f} {'met' if t['met'] else 'NOT met'}")
    print("content ways: " + ", ".join(f"{name} {f['profile']['way']}" for name, f in figures.items())
          + "; fine-tuned / pretrained with the mean profile in both: "
          + ", ".join(f"{key} x{r:.2f}" for key, r in mean_ratios.items()))
    if not args.no_plot:
        plot(summary, PLOT)
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
