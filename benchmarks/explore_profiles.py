"""Exploration (not served): other ways to turn a user's liked items into content scores, for the
pretrained and the fine-tuned MiniLM spaces on bench_finetune's MovieLens-100K split.

    .venv/bin/python -m benchmarks.bench_finetune --vectors benchmarks/_data/finetuned-minilm-ml100k.npz
    .venv/bin/python -m benchmarks.explore_profiles --vectors benchmarks/_data/finetuned-minilm-ml100k.npz

The service scores content with one profile vector (the weighted mean of liked items,
``ranking.profile_vector``): ``mean`` below, which reproduces bench_finetune's content-only
figures. The alternatives score every item from its similarities to each liked item h (weight
w_h, the service's seed weight): ``knnK`` sums w_h * sim over h's K nearest items only; ``powP``
sums w_h * max(0, sim) ** P (a soft maximum: the closest liked item counts most); ``max`` takes
the best similarity. Same users, exclusions and truth as bench_finetune (warm NDCG@10 on test,
cold-item Recall@10 over the whole catalog, cold-only Recall@10 among the cold items).
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import service  # noqa: E402,F401  (installs the torchvision hook first)
import numpy as np  # noqa: E402

from benchmarks.bench_cold_items import FRACTION, MIN_POSITIVES, SEED  # noqa: E402
from benchmarks.bench_finetune import seed_rows  # noqa: E402
from benchmarks.bench_movielens import DATA_ROOT, prepare_service  # noqa: E402
from benchmarks.movielens import load_split  # noqa: E402

K = 10


def scores_for(vectors: np.ndarray, sims_all: np.ndarray, rows: list[int], w: np.ndarray) -> dict[str, np.ndarray]:
    from service.recommend.ranking import profile_vector

    profile = profile_vector(vectors[rows], w)
    out = {"mean": vectors @ profile if profile is not None else np.zeros(len(vectors))}
    pos, wp = np.array(rows)[w > 0], w[w > 0]
    sims = sims_all[pos]
    for k in (20, 50):
        kth = -np.sort(-sims, axis=1)[:, k][:, None]
        out[f"knn{k}"] = (wp[:, None] * np.where(sims >= kth, sims, 0)).sum(0)
    for p in (3, 8, 16):
        out[f"pow{p}"] = (wp[:, None] * np.clip(sims, 0, None) ** p).sum(0)
    out["max"] = sims.max(0)
    return out


def ndcg(top: list[int], truth: set[int]) -> float:
    dcg = sum(1 / np.log2(r + 2) for r, i in enumerate(top) if i in truth)
    return dcg / sum(1 / np.log2(r + 2) for r in range(min(K, len(truth))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vectors", required=True, help="bench_finetune --vectors output (the fine-tuned catalog)")
    args = ap.parse_args()

    from service.recommend.cold_eval import COLD, ColdEvaluator, cold_split
    from service.recommend.offline_eval import load_event_log, split_log
    from service.vectors.index_store import load_version

    settings, factory, version = prepare_service(load_split(n_test=2, n_valid=2), DATA_ROOT)
    space = load_version(settings.index_path, version).spaces["text"]
    with factory() as session:
        log = load_event_log(session, settings, queries=True)
    cold = cold_split(log, settings, fraction=FRACTION, min_positives=MIN_POSITIVES, seed=SEED)
    ev = ColdEvaluator(cold.world, split_log(cold.world, n_test=2, n_valid=2), space, settings, factory, k=K,
                       cold_truth=cold.truth)
    saved = np.load(args.vectors)
    if not np.array_equal(saved["ids"], space.ids):
        sys.exit(f"{args.vectors} was made for another catalog")
    ids, row_of = space.ids, {int(i): r for r, i in enumerate(space.ids.tolist())}
    cold_items = np.asarray(cold.cold_items)
    cold_rows = np.array([row_of[int(i)] for i in cold_items])
    results: dict[str, dict[str, float]] = {}
    for name, vectors in (("pretrained", space.vectors), ("fine-tuned", saved["vectors"])):
        sims_all = vectors @ vectors.T
        for metric, phase in (("warm NDCG@10", "test"), ("cold Recall@10", COLD), ("cold-only Recall@10", COLD)):
            per: dict[str, list[float]] = {}
            for user, truth in ev.truth(phase).items():
                rows, w, consumed = seed_rows(ev, user, phase, settings, row_of)
                if not rows or not (w > 0).any():
                    per.setdefault("mean", []).append(0.0)  # as the service: no profile, nothing found
                    continue
                excluded = np.array([row_of[i] for i in consumed if i in row_of] + rows)
                for way, s in scores_for(vectors, sims_all, rows, w).items():
                    s = s.astype(np.float64)
                    if metric.startswith("cold-only"):
                        top = cold_items[np.argsort(-s[cold_rows], kind="stable")[:K]].tolist()
                    else:
                        s[excluded] = -np.inf
                        top = ids[np.argsort(-s, kind="stable")[:K]].tolist()
                    value = ndcg(top, truth) if phase == "test" else len(set(top) & truth) / min(K, len(truth))
                    per.setdefault(way, []).append(value)
            n = len(ev.truth(phase))
            for way, values in per.items():  # users without a profile count 0 for every way
                results.setdefault(f"{name} {metric}", {})[way] = float(np.sum(values) / n)
    ways = list(next(iter(results.values())))
    print(f"{'':36}" + "".join(f"{w:>8}" for w in ways))
    for row, values in results.items():
        print(f"{row:36}" + "".join(f"{values.get(w, float('nan')):8.4f}" for w in ways))


if __name__ == "__main__":
    main()
