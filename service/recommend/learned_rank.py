"""A learned ranker over the candidate sources: LightGBM LambdaRank instead of fixed weights.

Fixed blend weights rescale each source by its best score, so an item only one source found
(a cold item, found by content alone) is capped at that source's small weight and can never
beat items the behaviour sources agree on. The ranker scores each candidate from features
that keep their meaning across users:

- per source, the score scaled by that source's best for this person (0 when it did not find
  the item), and the content profile's raw cosine similarity (absolute: 0.95 means a
  near-duplicate whoever asks);
- whether the item is cold (nobody engaged with it). Its popularity itself is left out: on
  MovieLens-100K it made the ranker overfit (validation NDCG@10 0.106 with it, 0.126 without).

It is trained by the rebuild on validation behaviour (:mod:`indexer.train`), one query group
per user, with the behaviour features of a random share of candidates dropped as if nobody
had touched them (the positives' too: DropoutNet, Volkovs et al., NeurIPS 2017). Without that,
the training data would hold no cold positives, and the ranker could not learn what a strong
content match is worth for an item nobody has touched yet. Scores rise monotonically with every source's score.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np


SOURCES = ("profile", "co_engagement", "model", "trending")
FEATURES = tuple(f"{s}_scaled" for s in SOURCES) + ("profile_cosine", "cold")
# A higher score from any source never lowers an item's rank.
MONOTONE = (1, 1, 1, 1, 1, 0)
# Columns a "nobody touched it" candidate loses (behaviour sources) and gains (cold).
_BEHAVIOUR_COLS = [FEATURES.index(f) for f in ("co_engagement_scaled", "model_scaled", "trending_scaled")]
_COLD_COL = FEATURES.index("cold")
RANKER_FILE = "ranker.txt"
PARAMS = {"objective": "lambdarank", "n_estimators": 150, "learning_rate": 0.05, "num_leaves": 15,
          "min_child_samples": 20, "subsample": 0.8, "subsample_freq": 1, "verbose": -1,
          "deterministic": True, "force_row_wise": True, "n_jobs": 1}


# Which of some item ids are new (nobody engaged with them): ``recommender.is_cold`` of an engine.
IsNew = Callable[[Sequence[int]], np.ndarray]


def candidate_features(scores: Mapping[str, Mapping[int, float]], is_new: IsNew) -> tuple[list[int], np.ndarray]:
    """Every candidate of every source (sorted ids) and its feature row (see :data:`FEATURES`)."""
    items = sorted({i for found in scores.values() for i in found})
    x = np.zeros((len(items), len(FEATURES)), dtype=np.float32)
    if not items:
        return items, x
    pos = {item: j for j, item in enumerate(items)}
    for col, source in enumerate(SOURCES):
        found = scores.get(source) or {}
        top = max(found.values(), default=0.0)
        if top <= 0:
            continue
        for item, s in found.items():
            x[pos[item], col] = max(s, 0.0) / top
    for item, s in (scores.get("profile") or {}).items():
        x[pos[item], FEATURES.index("profile_cosine")] = s
    x[:, _COLD_COL] = is_new(items)  # no event at all: an item people disliked is not new
    return items, x


def drop_behaviour(x: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    """A copy with ``rate`` of the rows made to look cold (behaviour features zero, cold flag set)."""
    out = x.copy()
    rows = rng.random(len(out)) < rate
    out[np.ix_(rows, _BEHAVIOUR_COLS)] = 0.0
    out[rows, _COLD_COL] = 1.0
    return out


class Ranker:
    """A fitted LambdaRank booster and how it was trained."""

    def __init__(self, booster, info: Mapping | None = None):
        self.booster = booster
        self.info = dict(info or {})

    def predict(self, x: np.ndarray) -> np.ndarray:
        if not len(x):
            return np.zeros(0)
        return np.asarray(self.booster.predict(x, num_threads=1), dtype=np.float64)

    def blend(self, scores: Mapping[str, Mapping[int, float]], is_new: IsNew) -> dict[int, tuple[float, tuple[str, ...]]]:
        """Like :func:`service.recommend.ranking.blend`: item -> (score in (0, 1), sources that found it)."""
        items, x = candidate_features(scores, is_new)
        raw = self.predict(x)
        out = {}
        for item, r in zip(items, raw.tolist()):
            signals = tuple(s for s in scores if item in scores[s])
            out[item] = (1.0 / (1.0 + np.exp(-r)), signals)  # a logistic squash keeps API scores in (0, 1)
        return out

    def save(self, folder: Path) -> list[str]:
        folder.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(str(folder / RANKER_FILE))
        return [RANKER_FILE]

    @classmethod
    def load(cls, folder: Path, info: Mapping | None = None) -> "Ranker":
        import lightgbm

        return cls(lightgbm.Booster(model_file=str(folder / RANKER_FILE)), info)


def fit_ranker(groups: Sequence[tuple[np.ndarray, np.ndarray]], *, dropout: float = 0.2, seed: int = 0) -> Ranker | None:
    """LambdaRank on per-user (features, 0/1 labels) groups; None when no group has a positive.

    Each group appears as it is and once more with ``dropout`` of its rows made cold.
    """
    import lightgbm

    rng = np.random.default_rng(seed)
    xs, ys, sizes = [], [], []
    for x, y in groups:
        if not len(x) or not y.any():
            continue  # a group without a positive teaches LambdaRank nothing
        for variant in (x, drop_behaviour(x, dropout, rng)):
            xs.append(variant)
            ys.append(y)
            sizes.append(len(y))
    if not sizes:
        return None
    model = lightgbm.LGBMRanker(**PARAMS, random_state=seed, monotone_constraints=list(MONOTONE))
    model.fit(np.concatenate(xs), np.concatenate(ys).astype(np.int32), group=sizes,
              feature_name=list(FEATURES))
    return Ranker(model.booster_, {"groups": len(sizes) // 2, "dropout": dropout, "features": list(FEATURES)})
