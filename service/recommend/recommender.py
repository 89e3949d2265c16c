"""Recommendations: seeds in, ranked items with reasons out.

Every recommendation endpoint, and the offline evaluation, goes through the same two steps:

1. :func:`gather` draws candidates from each source: ``profile`` (FAISS search with the
   weighted, time-decayed mean of the seed items' embeddings, plus raw vectors),
   ``co_engagement`` (people who engaged with a seed also engaged with ...), ``model`` (the
   collaborative model the rebuild trained, when the published version has one) and
   ``trending``;
2. :func:`rank` blends them with weights, checks the page's items against SQL (live, filters),
   diversifies with maximal marginal relevance and explains each item.

*Seeds* are what is known about the person: a user's recent history, an anonymous session's
items, or positive and negative examples. No seeds means cold start: trending items (in the
requested category), then the newest items when nothing is trending.

A person's page (:func:`personal_answer`, behind :func:`for_user` and :func:`from_examples`) is
never left short while anything is recommendable: what their likes leave unfilled comes from
the fallbacks, in order: co-engagement, trending, all-time popularity, newest items.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field, replace
from typing import Iterable, Mapping, Sequence

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.recommend.behaviour import Snapshot
from service.recommend.collab import CollabModel
from service.recommend.learned_rank import SOURCES as RANKER_SOURCES, Ranker
from service.recommend.ranking import (DEFAULT_COLD_RANK, blend, event_weights, history_decay, mmr, profile_vector,
                                      rows_in, soft_max_terms)
from service.settings import Settings, forced_cold_rank
from service.store.events import History, consumed_items, user_history
from service.store.items import Filters, load_items
from service.store.models import Item
from service.vectors.delta import Delta
from service.vectors.index_store import LoadedSpace
from service.vectors.nearest import nearest_many, similarities_to_all, vector_candidates, vectors_of
from service.vectors.vector_index import is_exhaustive

# Past tense of event types, for explanations ("because you viewed X").
VERBS = {"view": "viewed", "click": "clicked", "cart": "added to cart", "purchase": "bought", "rating": "rated",
         "session": "looked at", "example": "liked"}
# Session items lose this much weight per step back in time (the latest item counts most).
SESSION_DECAY = 0.85
# Hydrated candidates per page item: enough for filters and diversity to choose from.
POOL_FACTOR = 5
# "All time" for popularity: a window and half-life longer than any catalog's history.
ALL_TIME_DAYS = 100 * 365.0
# What fills a page that a person's likes left short, in order (see :func:`personal_answer`):
# co-engagement with whatever they liked, trending in the window, all-time popularity, newest.
FALLBACKS = ("co_engagement", "trending", "popular", "newest")
# The source behind each fallback: the signal its items carry (popularity explains as trending).
FALLBACK_SOURCE = {"co_engagement": "co_engagement", "trending": "trending", "popular": "trending", "newest": "new"}


def new_recommendation_id() -> str:
    """An id for one response, so clicks can be attributed (events take it as recommendation_id)."""
    return "r-" + secrets.token_hex(8)


@dataclass
class Seeds:
    """Weighted items (negative = disliked) and raw vectors describing what someone likes."""

    items: dict[int, float] = field(default_factory=dict)
    via: dict[int, str] = field(default_factory=dict)  # item -> event type, for explanations
    vectors: list[tuple[np.ndarray, float]] = field(default_factory=list)

    def __bool__(self) -> bool:
        """Anything known, liked or not (no seeds at all is cold start)."""
        return bool(self.items) or bool(self.vectors)

    @property
    def liked(self) -> bool:
        """Anything with a positive weight: what the positive sources (profile, co-engagement) need.

        A user whose only events are low ratings has seeds but likes nothing: the profile and
        co-engagement would find nothing, so :func:`personal_answer` goes to the fallbacks.
        """
        return any(w > 0 for w in self.items.values()) or any(w > 0 for _v, w in self.vectors)


def seeds_from_history(history: History, *, weights: Mapping[str, float], rating_neutral: float,
                       half_life_days: float, now: float) -> Seeds:
    """A user's events as seeds: type weight (ratings by value) times time decay, summed per item."""
    seeds = Seeds()
    if not history.item_ids:
        return seeds
    w = event_weights(history.types, history.values, weights, rating_neutral)
    ages = now - np.asarray(history.times, dtype=np.float64)
    # Decay relative to the newest event once the whole history is older than sixty half-lives,
    # so very old events keep their (tiny, positive) weights instead of underflowing to 0.0.
    w = w * history_decay(ages, half_life_days)
    strongest: dict[int, float] = {}
    for item, t, wi in zip(history.item_ids, history.types, w.tolist()):
        seeds.items[item] = seeds.items.get(item, 0.0) + wi
        if abs(wi) > strongest.get(item, -1.0):  # explain with the event that weighed most
            strongest[item], seeds.via[item] = abs(wi), t
    return seeds


def seeds_from_session(item_ids: Sequence[int]) -> Seeds:
    """An anonymous session (oldest first): the latest item weighs 1, earlier ones less."""
    seeds = Seeds()
    for back, item in enumerate(reversed(list(item_ids))):
        seeds.items[item] = seeds.items.get(item, 0.0) + SESSION_DECAY ** back
        seeds.via.setdefault(item, "session")
    return seeds


def seeds_from_examples(positive: Sequence[int], negative: Sequence[int] = (),
                        positive_vectors: Sequence[np.ndarray] = (), negative_vectors: Sequence[np.ndarray] = ()) -> Seeds:
    seeds = Seeds()
    for item in positive:
        seeds.items[item], seeds.via[item] = 1.0, "example"
    for item in negative:
        seeds.items[item] = -1.0
    seeds.vectors = [(np.asarray(v, np.float32), 1.0) for v in positive_vectors]
    seeds.vectors += [(np.asarray(v, np.float32), -1.0) for v in negative_vectors]
    return seeds


@dataclass
class Engine:
    """What recommendations read: the content space (with its fresh delta) and behaviour."""

    space: LoadedSpace | None
    delta: Delta | None
    behaviour: Snapshot
    trending_window_days: float = 7.0
    trending_half_life_days: float = 3.0
    candidates_per_source: int = 200
    # The trained collaborative model of the published version, and what the training stage
    # fitted to blend it with the other sources: weights (None: the settings' blend_weights) or
    # a learned ranker (used instead of the weights when present).
    model: CollabModel | None = None
    blend: Mapping[str, float] | None = None
    ranker: Ranker | None = None
    # How content is scored from liked items: 0 one mean profile vector, P > 0 the soft maximum
    # with power P (``ranking.PROFILE_WAYS``; the training stage chooses it on validation) over
    # the heaviest ``profile_max_seeds`` liked items.
    profile_power: int = 0
    profile_max_seeds: int = 32
    # The cold place's bar the training stage chose (None: the setting's, else DEFAULT_COLD_RANK).
    cold_rank: int | None = None
    # Every item with an event up to the model's training watermark (sorted ids; None: no model).
    # The behaviour window drops old events and the model lists only items someone liked, so
    # without it an item known only from old events would pass for new.
    touched: np.ndarray | None = None

    def served_blend(self, weights: Mapping[str, float] | None) -> tuple[Mapping[str, float] | None, Ranker | None]:
        """What a request without its own ``weights`` is blended with: the ranker (gathering from
        every source it knows), else the fitted weights; a request's own weights win."""
        if weights is not None:
            return weights, None
        if self.ranker is not None:
            return {s: 1.0 for s in RANKER_SOURCES if s != "model" or self.model is not None}, self.ranker
        return self.blend, None

    def vectors(self, item_ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        if self.space is None:
            return np.zeros((len(item_ids), 1), np.float32), np.zeros(len(item_ids), bool)
        return vectors_of(self.space, self.delta, item_ids)


@dataclass
class Ask:
    """One request: page size, filters, exclusions, diversity, blend weights and the clock."""

    k: int = 10
    kinds: tuple[str, ...] = ()
    category: str | None = None
    exclude: frozenset[int] = frozenset()
    diversity: float = 0.0
    weights: Mapping[str, float] = field(default_factory=lambda: {"profile": 0.1, "co_engagement": 1.0, "trending": 0.03})
    now: float = 0.0
    strategy: str = "average"  # examples: average vector, or best score per example
    # Cold start: fall back to all-time popularity when nothing is trending in the window, then
    # (in rank) to the newest items.
    widen_trending: bool = True
    # A learned ranker scores the candidates instead of the weights (which then only say which
    # sources to gather from).
    ranker: Ranker | None = None
    # Places at the end of a personal page kept for items nobody has engaged with yet, filled by
    # the content profile's best such matches, if among its own best ``cold_rank`` (:func:`with_cold_slots`).
    cold_slots: int = 0
    cold_rank: int = DEFAULT_COLD_RANK

    @property
    def filters(self) -> Filters:
        return Filters(kinds=self.kinds, category=self.category, exclude=self.exclude)


@dataclass
class Sources:
    """Candidates per source (item -> raw score); exhausted when no source could give more."""

    scores: dict[str, dict[int, float]]
    exhausted: bool
    # Content candidates gathered only to fill the cold place (:func:`with_cold_slots`) when the
    # blend gives content no weight: never blended, so they cannot pad a short page.
    cold_content: dict[int, float] | None = None


@dataclass
class Rec:
    item: Item
    score: float
    signals: tuple[str, ...]
    reasons: list[dict] = field(default_factory=list)


def _profile_scores(engine: Engine, seeds: Seeds, ask: Ask, n: int) -> tuple[dict[int, float], bool]:
    """Content candidates: FAISS search with the profile (or, for best_score, per example)."""
    if engine.space is None:
        return {}, True
    ids = list(seeds.items)
    vecs, found = engine.vectors(ids)
    weights = np.array([seeds.items[i] for i in ids], dtype=np.float64)
    all_vecs = [vecs[found]] + [v[None, :] for v, _ in seeds.vectors]
    all_w = np.concatenate([weights[found], np.array([w for _, w in seeds.vectors], dtype=np.float64)])
    matrix = np.concatenate(all_vecs) if len(all_w) else np.zeros((0, engine.space.dim), np.float32)
    blocked = set(ask.exclude)
    if ask.strategy == "best_score" and len(all_w):
        return _best_score(engine, matrix, all_w, blocked, n)
    if engine.profile_power > 0 and len(all_w):
        found, exhausted = _soft_max(engine, matrix, all_w, blocked, n)
        return _push_away(engine, seeds, found), exhausted
    profile = profile_vector(matrix, all_w) if len(all_w) else None
    if profile is None:
        return {}, True
    cands, exhausted = vector_candidates(engine.space, engine.delta, profile, n + len(blocked))
    out = {i: s for i, s, _ in cands if i not in blocked}
    return dict(list(out.items())[:n]), exhausted


def soft_max_seeds(weights: np.ndarray, cap: int) -> np.ndarray:
    """Positions of the liked items a soft maximum scores from: the ``cap`` heaviest positive
    weights, heaviest first (ties: the order given)."""
    pos = np.flatnonzero(np.asarray(weights) > 0)
    return pos[np.argsort(-np.asarray(weights)[pos], kind="stable")[:cap]]


def _soft_max(engine: Engine, matrix: np.ndarray, weights: np.ndarray, blocked: set[int], n: int):
    """Content candidates scored by the soft maximum (``ranking.PROFILE_WAYS``): each of the
    heaviest liked items finds its nearest items (one batched search), and an item sums what
    each liked item that found it adds; over an exhaustive index every item is scored by one
    matrix product instead (exact, and about twice as fast as the searches: docs/benchmarks.md).
    Dislikes push look-alikes down afterwards (the mean profile subtracts them instead)."""
    pos = soft_max_seeds(weights, engine.profile_max_seeds)
    if not len(pos):
        return {}, True
    if is_exhaustive(engine.space.index):
        items, sims = similarities_to_all(engine.space, engine.delta, matrix[pos])
        score, exhausted = soft_max_terms(sims, weights[pos, None], engine.profile_power).sum(axis=0), True
    else:
        # Each liked item's share of the excluded items on top of n: together they find enough
        # (a short page makes ``recommend`` ask again for more, as with the mean profile).
        ids, sims, exhausted = nearest_many(engine.space, engine.delta, matrix[pos], n + -(-len(blocked) // len(pos)))
        found = ids >= 0
        items, where = np.unique(ids[found], return_inverse=True)
        terms = soft_max_terms(sims, weights[pos, None], engine.profile_power)[found]
        score = np.bincount(where, terms, minlength=len(items))
    keep = (score > 0) & ~np.isin(items, np.fromiter(blocked, np.int64, len(blocked)))
    items, score = items[keep], score[keep]
    if len(score) > n:  # only the best n (and whatever ties the n-th) are worth sorting
        best = score >= np.partition(score, len(score) - n)[len(score) - n]
        items, score = items[best], score[best]
    top = np.lexsort((items, -score))[:n]
    return dict(zip(items[top].tolist(), score[top].tolist())), exhausted


def _best_score(engine: Engine, matrix: np.ndarray, weights: np.ndarray, blocked: set[int], n: int):
    """Qdrant's "best score": a candidate scores its best positive similarity when that beats
    its best negative one, else minus its best negative similarity (so it sinks)."""
    pos, neg = matrix[weights > 0], matrix[weights < 0]
    pool: set[int] = set()
    exhausted = True
    for v in pos:
        cands, done = vector_candidates(engine.space, engine.delta, v, n + len(blocked))
        pool.update(i for i, _s, _ in cands)
        exhausted &= done
    pool -= blocked
    ids = sorted(pool)
    if not ids:
        return {}, exhausted
    vecs, _found = engine.vectors(ids)
    best_pos = (vecs @ pos.T).max(axis=1)
    best_neg = (vecs @ neg.T).max(axis=1) if len(neg) else np.full(len(ids), -np.inf)
    # Shifted to stay positive for the blend's [0, 1] scaling: winners in (1, 2], losers in [0, 1).
    score = np.where(best_pos > best_neg, 1.0 + (best_pos + 1) / 2, (1 - best_neg) / 2)
    order = np.argsort(-score)[:n]
    return {ids[j]: float(score[j]) for j in order}, exhausted


def gather(engine: Engine, seeds: Seeds, ask: Ask, n: int | None = None) -> Sources:
    """Candidates from every source with a weight (co-engagement and trending filtered early)."""
    n = n or engine.candidates_per_source
    scores: dict[str, dict[int, float]] = {}
    exhausted = True
    snap = engine.behaviour
    allowed = lambda items: {i: s for i, s in items.items() if snap.catalog.allows(i, ask.kinds, ask.category)}  # noqa: E731
    cold_content = None
    blended_content = ask.weights.get("profile", 0) > 0 or ask.strategy == "best_score"
    if seeds and (blended_content or (ask.cold_slots and seeds.liked)):
        found, done = _profile_scores(engine, seeds, ask, n)
        if blended_content:
            scores["profile"] = allowed(found)
            exhausted &= done
        else:
            cold_content = allowed(found)
    if seeds.items and ask.weights.get("co_engagement", 0) > 0:
        found = snap.co_engaged(seeds.items, n, exclude=ask.exclude)
        exhausted &= len(found) < n
        scores["co_engagement"] = allowed(found)
    if seeds.items and engine.model is not None and ask.weights.get("model", 0) > 0:
        found = engine.model.recommend(seeds.items, n, exclude=ask.exclude)
        exhausted &= len(found) < n
        scores["model"] = allowed(found)
    if ask.weights.get("trending", 0) > 0 or not seeds:
        found = snap.trending(now=ask.now, window_days=engine.trending_window_days,
                              half_life_days=engine.trending_half_life_days, n=n,
                              kinds=ask.kinds, category=ask.category, exclude=ask.exclude)
        if not found and not seeds and ask.widen_trending:
            # Cold start in a quiet period: all-time popularity beats no answer.
            found = snap.trending(now=ask.now, window_days=ALL_TIME_DAYS, half_life_days=ALL_TIME_DAYS, n=n,
                                  kinds=ask.kinds, category=ask.category, exclude=ask.exclude)
        exhausted &= len(found) < n
        scores["trending"] = found
    return Sources(scores, exhausted, cold_content)


def _newest(session: Session, ask: Ask, n: int) -> dict[int, float]:
    """Cold start with nothing trending: the newest live items, newest first."""
    q = select(Item.id).where(Item.deleted_at.is_(None))
    if ask.kinds:
        q = q.where(Item.kind.in_(ask.kinds))
    if ask.category:
        q = q.where(Item.category == ask.category)
    ids = [i for i in session.scalars(q.order_by(Item.created_at.desc(), Item.id.desc()).limit(n + len(ask.exclude)))
           if i not in ask.exclude][:n]
    return {i: 1.0 - r / (len(ids) + 1) for r, i in enumerate(ids)}


def rank(engine: Engine, seeds: Seeds, ask: Ask, sources: Sources, *, session: Session, explain: bool = False) -> list[Rec]:
    """Blend, check against SQL, diversify and explain: the page of ``ask.k`` items."""
    weights = dict(ask.weights)
    if not seeds:
        weights = {"trending": 1.0, "new": 1.0}
    if seeds and ask.ranker is not None:
        blended = ask.ranker.blend(sources.scores, lambda ids: is_cold(engine, ids))
    else:
        blended = blend(sources.scores, weights)
    if not seeds and not blended and ask.widen_trending:
        blended = blend({"new": _newest(session, ask, ask.k * POOL_FACTOR)}, weights)
    order = sorted(blended, key=lambda i: (-blended[i][0], i))
    pool_size = max(ask.k * POOL_FACTOR, 50) if ask.diversity > 0 else ask.k
    filters = ask.filters
    pool: list[Item] = []
    start = 0
    while len(pool) < pool_size and start < len(order):
        chunk = order[start : start + max(pool_size * 2, 20)]
        start += len(chunk)
        items = load_items(session=session, ids=chunk)
        pool.extend(items[i] for i in chunk if i in items and filters.matches(items[i]))
    pool = pool[:pool_size]
    if not pool:
        return []
    relevance = np.array([blended[it.id][0] for it in pool])
    vecs = None
    if ask.diversity > 0 and engine.space is not None:
        vecs, _found = engine.vectors([it.id for it in pool])
    picked = mmr(relevance, vecs, ask.k, ask.diversity)
    recs = [Rec(pool[j], float(relevance[j]), blended[pool[j].id][1]) for j in picked]
    if ask.cold_slots and seeds.liked:
        recs = with_cold_slots(engine, ask, sources, recs, session=session)
    if explain:
        explain_recs(engine, seeds, sources, recs, session=session)
    return recs


def is_cold(engine: Engine, item_ids: Sequence[int]) -> np.ndarray:
    """True for items nobody has engaged with: no event in the behaviour snapshot (a disliked item
    is known, not new), none up to the model's watermark and unknown to the model."""
    cold = ~engine.behaviour.touched(item_ids)
    if engine.touched is not None:
        cold &= rows_in(engine.touched, item_ids) < 0
    if engine.model is not None:
        cold &= engine.model.rows_of(item_ids) < 0
    return cold


def with_cold_slots(engine: Engine, ask: Ask, sources: Sources, recs: list[Rec], *, session: Session) -> list[Rec]:
    """The page with its last ``ask.cold_slots`` places given to the content profile's best
    matches among items nobody has engaged with (cold items already on the page count), when
    the profile ranks them among its own best ``ask.cold_rank`` matches, warm items included:
    a strong match for this person, not any new item.

    A blend scales each source by its best score, so an item only content found can never beat
    what the behaviour sources agree on, however good the match; on MovieLens-100K not even the
    learned ranker let one in (docs/benchmarks.md, cold items). A reserved place is how a new
    item meets its first users; it costs the page its last places, where NDCG weighs least.
    The bar is the person's own content ranking, not the page's scores: content scores of the
    behaviour-chosen page say little (a sequel on the page outscores any new film), while a new
    item the profile ranks near its top is what a content-only page would have shown.
    """
    found = sources.scores.get("profile") or sources.cold_content or {}
    on_page = [r.item.id for r in recs]
    need = ask.cold_slots - int(is_cold(engine, on_page).sum()) if on_page else ask.cold_slots
    if need <= 0 or not found:
        return recs
    page = set(on_page)
    best = sorted(found, key=lambda i: (-found[i], i))[: ask.cold_rank]
    ids = [i for i in best if i not in page]
    ranked = [i for i, c in zip(ids, is_cold(engine, ids)) if c]
    items = load_items(session=session, ids=ranked)
    chosen = [items[i] for i in ranked if i in items and ask.filters.matches(items[i])][:need]
    if not chosen:
        return recs
    keep = recs[: max(0, min(len(recs), ask.k - len(chosen)))]
    last = keep[-1].score if keep else 1.0
    return keep + [Rec(item, last, ("profile", "new")) for item in chosen]


def _push_away(engine: Engine, seeds: Seeds, scores: dict[int, float]) -> dict[int, float]:
    """Scores times how unlike each candidate is to what the person disliked.

    Fallbacks rank by popularity or age and know nothing of taste; this is how dislikes (items
    with negative weight, negative vectors) still count there: each score is multiplied by
    ``1 - max cosine`` to the disliked vectors (clipped to [0, 1]), so look-alikes sink to the
    end of their fallback instead of leading it, and a disliked item itself is left out (being
    popular is no reason to offer back what someone rated low, even with ``exclude_seen=false``).
    """
    disliked = [i for i, w in seeds.items.items() if w < 0]
    negative = [v for v, w in seeds.vectors if w < 0]
    if not scores or not (disliked or negative):
        return scores
    ids = list(scores)
    factor = np.ones(len(ids))
    if engine.space is not None:
        vecs, found = engine.vectors(disliked)
        bad = np.concatenate([vecs[found]] + [np.asarray(v, np.float32)[None, :] for v in negative])
        if len(bad):
            cand, _found = engine.vectors(ids)  # missing vectors are zero rows: similar to nothing
            factor = 1.0 - np.clip((cand @ bad.T).max(axis=1), 0.0, 1.0)
    gone = set(disliked)
    return {i: scores[i] * float(f) for i, f in zip(ids, factor) if i not in gone}


def fallback_sources(engine: Engine, seeds: Seeds, ask: Ask, fallback: str, n: int, *, session: Session) -> Sources:
    """The candidates of one of :data:`FALLBACKS`, filtered early like :func:`gather`'s, dislikes pushed away."""
    snap = engine.behaviour
    if fallback == "co_engagement":
        found = snap.co_engaged(seeds.items, n, exclude=ask.exclude)  # positive seeds only
        exhausted = len(found) < n
        found = {i: s for i, s in found.items() if snap.catalog.allows(i, ask.kinds, ask.category)}
    elif fallback in ("trending", "popular"):
        window, half_life = ((engine.trending_window_days, engine.trending_half_life_days) if fallback == "trending"
                             else (ALL_TIME_DAYS, ALL_TIME_DAYS))
        found = snap.trending(now=ask.now, window_days=window, half_life_days=half_life, n=n,
                              kinds=ask.kinds, category=ask.category, exclude=ask.exclude)
        exhausted = len(found) < n
    elif fallback == "newest":
        found = _newest(session, ask, n)
        exhausted = len(found) < n
    else:
        raise ValueError(f"unknown fallback {fallback!r}")
    return Sources({FALLBACK_SOURCE[fallback]: _push_away(engine, seeds, found)}, exhausted)


def recommend(engine: Engine, seeds: Seeds, ask: Ask, *, session: Session, explain: bool = False,
              fallback: str | None = None) -> list[Rec]:
    """:func:`gather` (or one fallback's source) then :func:`rank`, asking the sources for more when
    filters thin them out."""
    n = engine.candidates_per_source * (4 if ask.kinds or ask.category else 1)
    while True:
        sources = (gather(engine, seeds, ask, n) if fallback is None
                   else fallback_sources(engine, seeds, ask, fallback, n, session=session))
        recs = rank(engine, seeds, ask, sources, session=session, explain=explain)
        if len(recs) >= ask.k or sources.exhausted or n >= 20_000:
            return recs
        n *= 4


def explain_recs(engine: Engine, seeds: Seeds, sources: Sources, recs: list[Rec], *, session: Session) -> None:
    """Attach reasons: the seed behind a co-engagement or profile match, or popularity."""
    ids = [r.item.id for r in recs]
    co_seed = engine.behaviour.best_seed(seeds.items, ids) if "co_engagement" in sources.scores else {}
    content_seed: dict[int, int] = {}
    liked = [i for i, w in seeds.items.items() if w > 0]
    if liked and "profile" in sources.scores:
        seed_vecs, seed_found = engine.vectors(liked)
        rec_vecs, rec_found = engine.vectors(ids)
        if seed_found.any():
            sims = rec_vecs @ seed_vecs[seed_found].T
            seed_ids = np.asarray(liked)[seed_found]
            content_seed = {i: int(seed_ids[int(np.argmax(sims[j]))]) for j, i in enumerate(ids) if rec_found[j]}
    named = session.execute(select(Item.id, Item.title, Item.external_id)
                            .where(Item.id.in_(set(co_seed.values()) | set(content_seed.values())))).all()
    titles = {i: title for i, title, _ in named}
    external = {i: ext for i, _, ext in named}
    for rec in recs:
        for signal in rec.signals:
            seed = co_seed.get(rec.item.id) if signal == "co_engagement" else content_seed.get(rec.item.id) if signal == "profile" else None
            if seed is not None and seed in titles:
                verb = VERBS.get(seeds.via.get(seed, ""), "engaged with")
                text = (f"people who {verb} {titles[seed]!r} also engaged with this" if signal == "co_engagement"
                        else f"because you {verb} {titles[seed]!r}")
                rec.reasons.append({"signal": signal, "item_id": external.get(seed), "text": text})
            elif signal == "trending":
                where = f"popular in {rec.item.category}" if rec.item.category else "popular right now"
                rec.reasons.append({"signal": signal, "text": where})
            elif signal == "new":
                rec.reasons.append({"signal": signal, "text": "new in the catalog"})
            elif signal == "model":
                rec.reasons.append({"signal": signal, "text": "people with tastes like yours engaged with this"})
            elif signal == "profile":
                rec.reasons.append({"signal": signal, "text": "close to what you like"})


# --- use cases: what each endpoint (and the offline evaluation) asks for ----------------------


@dataclass
class Answer:
    """Ranked items and the strategy that produced them (personalized, cold_start, similar, ...)."""

    recs: list[Rec]
    strategy: str


def personal_answer(engine: Engine, seeds: Seeds, ask: Ask, primary: str, *, session: Session,
                    explain: bool = False, fallbacks: bool = True) -> Answer:
    """One person's page: ``primary`` from what they like, then :data:`FALLBACKS` until it is full.

    ``primary`` (personalized, session, examples) is :func:`recommend` with the seeds, run when
    they hold something liked. A page shorter than ``ask.k`` is then filled from the fallbacks in
    order (co-engagement needs something liked; a fallback whose source the primary blend
    already drew on in full is skipped), each ranked on its own, never repeating an item and
    keeping the ask's filters and exclusions. The strategy names the steps that produced items,
    joined by "+" (``personalized+popular``), or the first step tried when none did (nothing
    recommendable: an empty page). No seeds at all is ``cold_start`` whatever filled it.

    Seeds without anything liked (only low ratings, negative examples) never name ``primary``
    with an empty page: the positive sources are skipped and the fallbacks answer, leaving the
    disliked items out and pushing their look-alikes down (:func:`_push_away`). Histories whose
    decay would underflow keep positive weights instead (``ranking.history_decay``).

    ``fallbacks=False`` is :func:`recommend` alone (the offline evaluation scoring one source).
    """
    if not fallbacks:
        return Answer(recommend(engine, seeds, ask, session=session, explain=explain), primary if seeds else "cold_start")
    recs: list[Rec] = []
    steps: list[tuple[str, int]] = []  # (step, items it added)
    if seeds.liked:
        recs = recommend(engine, seeds, ask, session=session, explain=explain)
        steps.append((primary, len(recs)))
    # A short primary page means recommend() exhausted its sources: these add nothing new.
    covered = {s for s in ("co_engagement", "trending") if seeds.liked and ask.weights.get(s, 0) > 0}
    for fallback in FALLBACKS:
        if len(recs) >= ask.k:
            break
        if fallback in covered or (fallback == "co_engagement" and not seeds.liked):
            continue
        fill = replace(ask, k=ask.k - len(recs), exclude=ask.exclude | {r.item.id for r in recs},
                       weights={FALLBACK_SOURCE[fallback]: 1.0}, widen_trending=False, ranker=None, cold_slots=0)
        more = recommend(engine, seeds, fill, session=session, explain=explain, fallback=fallback)
        recs += more
        steps.append((fallback, len(more)))
    if not seeds:
        return Answer(recs, "cold_start")
    answered = [step for step, added in steps if added]
    return Answer(recs, "+".join(answered) if answered else steps[0][0] if steps else primary)


def make_ask(settings: Settings, *, k: int, now: float, kinds: Sequence[str] = (), category: str | None = None,
             diversity: float | None = None, exclude: Iterable[int] = (), weights: Mapping[str, float] | None = None,
             **extra) -> Ask:
    """A request with the configured defaults (blend weights, diversity) where the caller gives none."""
    return Ask(k=k, kinds=tuple(dict.fromkeys(kinds or ())), category=category, exclude=frozenset(exclude),
               diversity=settings.default_diversity if diversity is None else diversity,
               weights=dict(settings.blend_weights if weights is None else weights), now=now, **extra)


def served_cold_rank(engine: Engine, settings: Settings) -> int:
    """The cold place's bar: what ``cold_item_rank`` forces, else what the published version's
    training stage chose, else :data:`DEFAULT_COLD_RANK`."""
    return forced_cold_rank(settings) or engine.cold_rank or DEFAULT_COLD_RANK


def user_seeds(history: History, settings: Settings, *, now: float, half_life_days: float | None = None) -> Seeds:
    """A user's history as seeds, weighted and decayed as the settings say."""
    return seeds_from_history(history, weights=settings.event_weights, rating_neutral=settings.rating_neutral,
                              half_life_days=settings.event_half_life_days if half_life_days is None else half_life_days,
                              now=now)


def for_user(engine: Engine, *, session: Session, settings: Settings, user_id: str, now: float, k: int = 10,
             kinds: Sequence[str] = (), category: str | None = None, exclude_seen: bool = True,
             diversity: float | None = None, explain: bool = False, history: History | None = None,
             consumed: Iterable[int] | None = None, weights: Mapping[str, float] | None = None,
             half_life_days: float | None = None, fallbacks: bool = True) -> Answer:
    """What ``user_id`` should see next: ``GET /users/{id}/recommendations`` and ``recsys eval`` both call this.

    The user's last ``history_limit`` events (read from SQL) become seeds; items of the
    ``exclude_seen_types`` they already consumed are left out; no history means cold start, and
    a page the history leaves short is filled by the fallbacks (:func:`personal_answer`).

    Args:
        now: the clock (Unix seconds): decay, trending windows. The endpoint passes the time of
            the request; the evaluator the time of the last training event.
        history, consumed: the offline evaluation's one intended difference: the user's events
            before the held-out ones, and the items to exclude, instead of reading SQL (which
            holds the held-out events too). None reads them as the endpoint does.
        weights, half_life_days: blend weights and history half-life other than the served ones
            (tuning); None blends as served (``Engine.served_blend``: the trained ranker, else
            the fitted weights, else the settings').
        fallbacks: fill a short page from the fallbacks (:func:`personal_answer`), as the endpoint
            does; the offline evaluation turns it off to score a single source alone, and then
            keeps no cold place either (the page is that source's own ranking; likewise for
            ``weights`` that give content no weight).
    """
    if history is None:
        history = user_history(session=session, external_id=user_id, limit=settings.history_limit)
    seeds = user_seeds(history, settings, now=now, half_life_days=half_life_days)
    exclude: Iterable[int] = ()
    if exclude_seen:
        exclude = consumed if consumed is not None else consumed_items(
            session=session, history=history, types=settings.exclude_seen_types)
    # The cold place belongs to the served blend (which may give content no weight and still keep
    # it); weights of the caller's own without content ask for no content at all.
    place = fallbacks and (weights is None or weights.get("profile", 0) > 0)
    weights, ranker = engine.served_blend(weights)
    ask = make_ask(settings, k=k, now=now, kinds=kinds, category=category, diversity=diversity, exclude=exclude,
                   weights=weights, ranker=ranker, cold_slots=settings.cold_item_slots if place else 0,
                   cold_rank=served_cold_rank(engine, settings))
    return personal_answer(engine, seeds, ask, "personalized", session=session, explain=explain, fallbacks=fallbacks)


def similar_items(engine: Engine, *, session: Session, settings: Settings, item_id: int, now: float, k: int = 10,
                  kinds: Sequence[str] = (), category: str | None = None, explain: bool = False) -> Answer:
    """Items like ``item_id`` by content alone (``GET /items/{id}/similar``)."""
    ask = make_ask(settings, k=k, now=now, kinds=kinds, category=category, exclude={item_id},
                   weights={"profile": 1.0})
    return Answer(recommend(engine, seeds_from_examples([item_id]), ask, session=session, explain=explain), "similar")


def also_engaged(engine: Engine, *, session: Session, settings: Settings, item_id: int, now: float, k: int = 10,
                 kinds: Sequence[str] = (), category: str | None = None, explain: bool = False) -> Answer:
    """People who engaged with ``item_id`` also engaged with ... (``GET /items/{id}/also``).

    Too few co-engaged items (a new or niche item): content neighbours fill the page.
    """
    seeds = seeds_from_examples([item_id])
    ask = make_ask(settings, k=k, now=now, kinds=kinds, category=category, exclude={item_id},
                   weights={"co_engagement": 1.0})
    recs = recommend(engine, seeds, ask, session=session, explain=explain)
    strategy = "also"
    if len(recs) < k and engine.space is not None and engine.vectors([item_id])[1][0]:
        fill = make_ask(settings, k=k, now=now, kinds=kinds, category=category,
                        exclude={item_id, *(r.item.id for r in recs)}, weights={"profile": 1.0})
        more = recommend(engine, seeds, fill, session=session, explain=explain)
        recs += more[: k - len(recs)]
        strategy = "also+similar" if recs and more else strategy
    return Answer(recs, strategy)


def from_examples(engine: Engine, *, session: Session, settings: Settings, now: float, k: int = 10,
                  positive: Sequence[int] = (), negative: Sequence[int] = (),
                  positive_vectors: Sequence[np.ndarray] = (), negative_vectors: Sequence[np.ndarray] = (),
                  session_items: Sequence[int] = (), user_id: str | None = None, exclude_seen: bool = True,
                  strategy: str = "average", kinds: Sequence[str] = (), category: str | None = None,
                  diversity: float | None = None, explain: bool = False) -> Answer:
    """``POST /recommend``: examples (ids or unit vectors), an anonymous session, and/or a user.

    A session is used on its own; examples may be combined with a user's history, whose
    consumed items are then excluded like in :func:`for_user`. Short pages are filled like
    :func:`for_user`'s (:func:`personal_answer`).
    """
    if session_items:
        seeds, name = seeds_from_session(session_items), "session"
    else:
        seeds, name = seeds_from_examples(positive, negative, positive_vectors, negative_vectors), "examples"
    exclude = set(seeds.items)
    if user_id:
        history = user_history(session=session, external_id=user_id, limit=settings.history_limit)
        mine = user_seeds(history, settings, now=now)
        for item, w in mine.items.items():
            seeds.items[item] = seeds.items.get(item, 0.0) + w
            seeds.via.setdefault(item, mine.via[item])
        if exclude_seen:
            exclude |= consumed_items(session=session, history=history, types=settings.exclude_seen_types)
        if name == "examples" and not (positive or positive_vectors):
            name = "personalized"
    weights, ranker = engine.served_blend(None)
    if strategy == "best_score":  # the ranker knows the average profile's cosine, not best-score's shifted one
        weights, ranker = engine.blend, None
    ask = make_ask(settings, k=k, now=now, kinds=kinds, category=category, diversity=diversity, exclude=exclude,
                   strategy=strategy, weights=weights, ranker=ranker, cold_slots=settings.cold_item_slots,
                   cold_rank=served_cold_rank(engine, settings))
    return personal_answer(engine, seeds, ask, name, session=session, explain=explain)


def trending_items(engine: Engine, *, session: Session, settings: Settings, now: float, k: int = 10,
                   kinds: Sequence[str] = (), category: str | None = None) -> Answer:
    """The most (decayed) engagement in ``engine.trending_window_days`` (``GET /trending``)."""
    ask = make_ask(settings, k=k, now=now, kinds=kinds, category=category, weights={"trending": 1.0},
                   widen_trending=False)
    recs = recommend(engine, Seeds(), ask, session=session, explain=True)
    return Answer([r for r in recs if "trending" in r.signals], "trending")
