"""Ranking arithmetic for recommendations: pure functions, numbers in and numbers out.

Event weights and time decay, profile vectors, per-source score scaling, the blend, and
maximal marginal relevance. Nothing here touches SQL, FAISS or Flask, so each piece is tested
with hand-made arrays.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np

SECONDS_PER_DAY = 86_400.0
# Largest absolute weight one event can carry (float32 sums of many such stay finite).
MAX_EVENT_WEIGHT = 1e6
# Ways to score content from a person's liked items, chosen per space on validation by the
# training stage: "mean" searches with one profile vector (:func:`profile_vector`); "powP" is a
# soft maximum, sum over liked items h of w_h * max(0, cos(h, item)) ** P, so an item very close
# to one liked item beats one vaguely near their average (a mean of mixed tastes points at
# nothing). The value is P (0: the mean). On MovieLens-100K validation chose pow8 for the
# pretrained MiniLM space (content alone: 0.0214 against the mean's 0.0158) and the mean for a
# fine-tuned one (docs/benchmarks.md).
PROFILE_WAYS: dict[str, int] = {"mean": 0, "pow3": 3, "pow8": 8}
# The cold place's bar (``cold_item_rank``): the training stage chooses it from COLD_RANKS on
# validation; DEFAULT_COLD_RANK serves where nothing chose one. A manifest's bar above
# MAX_COLD_RANK is not used (it could never be more than the content candidates gathered).
COLD_RANKS = (5, 10, 20, 50, 100)
DEFAULT_COLD_RANK = 20
MAX_COLD_RANK = 10_000


def event_weights(types: Sequence[str], values: Sequence[float | None], weights: Mapping[str, float],
                  rating_neutral: float) -> np.ndarray:
    """Weight of each event: its type's weight, ratings scaled by ``value - rating_neutral``.

    A rating without a value counts like any other event of weight ``weights["rating"]``;
    unknown (custom) types without a configured weight count 1.
    """
    # Vectorized over one code per distinct type: a Python loop per event was a second of a
    # worker's 1M-event start-up.
    codes: dict[str, int] = {}
    index = np.fromiter((codes.setdefault(t, len(codes)) for t in types), dtype=np.int64, count=len(types))
    out = np.array([float(weights.get(t, 1.0)) for t in codes], dtype=np.float64)[index]
    if "rating" in codes:
        rows = np.flatnonzero(index == codes["rating"])
        rated = [(int(i), float(values[i])) for i in rows if values[i] is not None]
        if rated:
            at, value = np.array([r for r, _ in rated]), np.array([v for _, v in rated], dtype=np.float64)
            out[at] = out[at] * (value - rating_neutral)
    # Values are bounded at the API, but rows stored before that (or written around it) must not
    # turn into inf/NaN in float32 arrays and poison every score: drop what is not finite and
    # keep the rest within float32's comfortable range.
    return np.clip(np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0), -MAX_EVENT_WEIGHT, MAX_EVENT_WEIGHT)


def decay(ages_seconds: np.ndarray, half_life_days: float) -> np.ndarray:
    """``2 ** (-age / half_life)``; negative ages (clock skew, future timestamps) count as now."""
    ages = np.maximum(np.asarray(ages_seconds, dtype=np.float64), 0.0)
    return np.exp2(-ages / (half_life_days * SECONDS_PER_DAY))


# The least a user's whole history is scaled by for its age: sixty half-lives (about 1e-18), far
# above where float32 (co-engagement sums in it) loses precision (2 ** -126) or gives up (2 ** -149).
MIN_HISTORY_DECAY = 2.0 ** -60


def history_decay(ages_seconds: np.ndarray, half_life_days: float, floor: float = MIN_HISTORY_DECAY) -> np.ndarray:
    """:func:`decay` of one person's events, never letting the whole history underflow to 0.0.

    Plain decay of an event a few hundred half-lives old is 0.0 in float32 (about 150 half-lives;
    co-engagement sums seed weights in float32) and in float64 (about 1075): a user whose every
    event is that old would keep their items as seeds weighing nothing, so nothing would count as
    liked and the page would be empty. A history's ranking depends only on the ratios of its
    weights (the profile is a weighted mean, co-engagement is scaled by its best score), so when
    even the newest event decays below ``floor``, the weights are taken relative to the newest
    event and scaled by ``floor`` instead: the same ratios, no underflow. Where the newest event
    is above the floor (every history younger than sixty half-lives) this is exactly
    :func:`decay`, bit for bit, so nothing changes for other users; the absolute scale only
    matters where a history meets examples (``POST /recommend`` with a user), and there an old
    history still weighs next to nothing.
    """
    ages = np.maximum(np.asarray(ages_seconds, dtype=np.float64), 0.0)
    out = decay(ages, half_life_days)
    if not len(ages) or out.max() >= floor:
        return out
    return decay(ages - ages.min(), half_life_days) * floor


def profile_vector(vectors: np.ndarray, weights: np.ndarray, negative_weight: float = 0.5) -> np.ndarray | None:
    """A user's taste as one unit vector: weighted mean of liked items minus disliked ones.

    Rocchio-style: the positive mean (weights > 0) minus ``negative_weight`` times the
    negative mean (weights < 0), L2-normalised. None when nothing positive is left.
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    weights = np.asarray(weights, dtype=np.float64)
    pos, neg = weights > 0, weights < 0
    if not pos.any():
        return None
    v = (weights[pos, None] * vectors[pos]).sum(axis=0) / weights[pos].sum()
    if neg.any():
        v = v - negative_weight * (-weights[neg, None] * vectors[neg]).sum(axis=0) / -weights[neg].sum()
    norm = float(np.linalg.norm(v))
    if norm < 1e-9:
        return None
    return (v / norm).astype(np.float32)


def soft_max_terms(sims: np.ndarray, weights: np.ndarray, power: int) -> np.ndarray:
    """What each liked item adds to an item's soft-maximum score (see ``PROFILE_WAYS``):
    weight * max(0, sim) ** power, elementwise (broadcasting); an item's score is their sum."""
    base = np.clip(np.asarray(sims, dtype=np.float32), 0.0, None)
    out = np.ones_like(base)
    while power:  # by squaring: numpy's float ** int is a general pow, several times slower
        if power & 1:
            out *= base
        power >>= 1
        if power:
            base = base * base
    return np.asarray(weights, dtype=np.float32) * out


def cold_rank_of(behaviour: Mapping | None) -> int | None:
    """The bar for the cold place the training stage chose into a version's ``behaviour``
    manifest section, or None (none chosen, or a value this code cannot use: a manifest is read
    as untrusted)."""
    place = behaviour.get("cold_place") if isinstance(behaviour, Mapping) else None
    rank = place.get("rank") if isinstance(place, Mapping) else None
    return rank if type(rank) is int and 1 <= rank <= MAX_COLD_RANK else None


def profile_power_of(behaviour: Mapping | None, space: str) -> int:
    """The power of the way a version's ``behaviour`` manifest section scores content in ``space``
    (``PROFILE_WAYS``): 0, the mean, for a section without the choice, another space's choice,
    or a way this code does not know (a manifest is read as untrusted)."""
    profile = behaviour.get("profile") if isinstance(behaviour, Mapping) else None
    if not isinstance(profile, Mapping) or profile.get("space") != space:
        return 0
    way = profile.get("way")
    return PROFILE_WAYS.get(way, 0) if isinstance(way, str) else 0


def scale(scores: Mapping[int, float]) -> dict[int, float]:
    """Scale one source's scores to [0, 1] by its best score (negative scores become 0).

    Sources score on different scales (cosine similarity, co-engagement sums, decayed counts);
    dividing by the maximum keeps each source's shape while making weights comparable.
    """
    if not scores:
        return {}
    top = max(scores.values())
    if top <= 0:
        return {i: 0.0 for i in scores}
    return {i: max(s, 0.0) / top for i, s in scores.items()}


def blend(sources: Mapping[str, Mapping[int, float]], weights: Mapping[str, float]) -> dict[int, tuple[float, tuple[str, ...]]]:
    """Weighted sum of scaled source scores; the signals of an item are the sources that found it.

    Sources missing from ``weights`` weigh 0 (they can still name an item's signal).
    Returns item id -> (score, signals ordered by contribution).
    """
    contributions: dict[int, dict[str, float]] = {}
    for name, scores in sources.items():
        w = float(weights.get(name, 0.0))
        for item, s in scale(scores).items():
            contributions.setdefault(item, {})[name] = w * s
    out = {}
    for item, parts in contributions.items():
        signals = tuple(sorted(parts, key=lambda n: -parts[n]))
        out[item] = (sum(parts.values()), signals)
    return out


def rows_in(sorted_ids: np.ndarray, item_ids: Iterable[int]) -> np.ndarray:
    """Position of each item id in the ascending array ``sorted_ids`` (-1 where it is absent)."""
    ids = np.asarray(list(item_ids), dtype=np.int64)
    if not len(sorted_ids) or not len(ids):
        return np.full(len(ids), -1, dtype=np.int64)
    pos = np.minimum(np.searchsorted(sorted_ids, ids), len(sorted_ids) - 1)
    return np.where(sorted_ids[pos] == ids, pos, -1)


def top_n(scores: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` largest scores, best first (ties by index)."""
    n = min(n, len(scores))
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    part = np.argpartition(-scores, n - 1)[:n] if n < len(scores) else np.arange(len(scores))
    return part[np.lexsort((part, -scores[part]))]


def mmr(relevance: np.ndarray, vectors: np.ndarray | None, k: int, diversity: float) -> list[int]:
    """Maximal marginal relevance (Carbonell & Goldstein 1998): pick ``k`` positions greedily.

    Each step takes ``argmax (1 - diversity) * rel - diversity * max_sim(selected)``, with
    relevance scaled to [0, 1] and similarity the dot product of unit vectors (rows of
    ``vectors``; an all-zero row means "no vector" and is similar to nothing). With
    ``diversity == 0`` or no vectors this is the relevance order.
    """
    rel = np.asarray(relevance, dtype=np.float64)
    n = len(rel)
    k = min(k, n)
    if diversity <= 0 or vectors is None or n == 0:
        return [int(i) for i in top_n(rel, k)]
    span = rel.max() - rel.min()
    rel = (rel - rel.min()) / span if span > 0 else np.ones_like(rel)
    vecs = np.asarray(vectors, dtype=np.float32)
    max_sim = np.full(n, -np.inf)
    chosen: list[int] = []
    available = np.ones(n, dtype=bool)
    for _ in range(k):
        penalty = np.where(np.isfinite(max_sim), max_sim, 0.0)
        score = (1 - diversity) * rel - diversity * penalty
        score[~available] = -np.inf
        best = int(np.argmax(score))
        chosen.append(best)
        available[best] = False
        max_sim = np.maximum(max_sim, vecs @ vecs[best])
    return chosen
