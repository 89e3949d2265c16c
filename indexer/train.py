"""The training stage of a rebuild: fit a collaborative model, choose it on held-out behaviour,
gate it against the published one, and write it into the version being built.

1. Every event is read from SQL and weighted as the service weighs it (event types, ratings,
   time decay from the settings); users' most recent positive interactions are held out
   (the last one for test, the one before for validation, on a seeded sample of users).
2. Each family of :mod:`service.recommend.collab` allowed by the settings and the memory budget
   is fitted per hyper-parameter setting, and per way of making its input (the service's
   weights and decay, or binary positives: :func:`input_variants`), on the validation world and
   scored directly (the user's seeds in, the same exclusions), once per online seed weighting
   (``collab.SEED_DECAYS``: recency of the seeds, no refit). Then the families' best fits (on
   the input of the best row) are tried together as ensembles (``collab.ENSEMBLE``): every
   pair, then the best pair with a third part, the last part weighted
   ``collab.ENSEMBLE_WEIGHTS``; the best row wins.
3. The way content is scored from a person's liked items (``ranking.PROFILE_WAYS``: one mean
   profile vector, or a soft maximum over the liked items) is chosen on validation by the
   content source's own NDCG@10 (alone, through ``for_user``), and the rest is chosen with it.
   The blend of the model with the other sources (content profile, co-engagement, trending) is
   fitted on validation through the pieces of the endpoint's own ``recommend``: fixed weights
   from a grid, and a LambdaRank ranker over the candidates' features
   (:mod:`service.recommend.learned_rank`); the ranker is kept only when it beats the weights
   on the half of the validation users it was not trained on by more than two standard errors
   of the paired difference. Last, the bar for the cold place (``cold_item_rank``: how high a
   person's content ranking must place a new item for it to take the page's reserved place) is
   the largest of ``ranking.COLD_RANKS`` whose validation NDCG@10, served as chosen, stays within
   ``cold_item_warm_tolerance`` of the same recipe without the place.
4. Test metrics come from :func:`service.recommend.recommender.for_user` end to end (the
   function ``GET /users/{id}/recommendations`` calls), with the clock of the training data.
   The published model's recipe (family, setting, blend weights) is refit on the same world and
   scored the same way: a new model is refused when its NDCG@10 is below that reference by
   more than ``train_gate_tolerance`` *and* the paired per-user difference is more than two
   standard errors below zero (small catalogs are noisy; a gate that flaps on noise is ignored).
   The caller decides whether ``--force`` publishes a refused model anyway.
5. The winner is refit on every event and saved under ``behaviour/`` of the version folder;
   its manifest section records the recipe, metrics, gate and training watermark. The newest
   ``behaviour_max_events`` events go there too, fitted or not (``service.recommend.event_window``):
   workers start their behaviour model from them instead of reading them from SQL.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from service.recommend import collab, event_window
from service.recommend.evaluation import ndcg_at_k, ndcg_per_user, paired_difference, recall_at_k
from service.recommend import learned_rank
from service.recommend.offline_eval import Blend, Evaluator, EventLog, event_log_of, sample_split, split_log
from service.recommend.ranking import COLD_RANKS, PROFILE_WAYS, blend as weighted_blend, cold_rank_of, profile_power_of
from service.recommend.recommender import gather, is_cold, make_ask, user_seeds
from service.settings import Settings, forced_cold_rank
from service.store.events import read_events
from service.store.models import Event
from service.vectors import artifacts
from service.vectors.index_store import LoadedSpace

log = logging.getLogger("recsys.train")

K = 10
# The space whose content scoring the stage chooses (the one it is given: the text space).
PROFILE_SPACE = "text"
# Blend weights tried with the model (its own weight fixed at 1: only ratios matter). Every
# source is scaled to [0, 1] by its best item, so small weights reorder close model scores.
BLEND_GRID = {
    "co_engagement": (0.0, 0.1, 0.3),
    "profile": (0.0, 0.03, 0.1),
    "trending": (0.0, 0.03),
}


@dataclass
class TrainResult:
    """The manifest section, and why the gate refused the model (None: it passed or was skipped)."""

    section: dict[str, Any]
    refused: str | None = None


def input_variants(settings: Settings) -> list[dict[str, Any]]:
    """How the users x items matrix is made, tried like any hyper-parameter: the service's own
    weighting and decay, and binary positives without decay (EASE's paper; on MovieLens-100K
    it scored clearly better on validation: NDCG@10 0.125 against 0.118)."""
    return [{"half_life_days": settings.event_half_life_days, "binary": False}, {"half_life_days": 0.0, "binary": True}]


def _interactions(arrays: tuple[np.ndarray, ...], settings: Settings,
                  params: Mapping[str, Any] | None = None) -> collab.Interactions:
    """The model's input from event arrays, made as ``params`` say (default: the service's weighting)."""
    return collab.model_input(*arrays, params or {}, half_life_days=settings.event_half_life_days)


@dataclass(frozen=True)
class Asked:
    """What one evaluated user brings to a direct model score: seeds, exclusions, held-out items."""

    seeds: Mapping[int, float]
    consumed: frozenset[int]
    truth: set[int]


def asked_users(ev: Evaluator, phase: str) -> list[Asked]:
    """Each evaluated user's seeds (as ``for_user`` weighs them), consumed and held-out items,
    computed once for every candidate model of the grid."""
    truth, now = ev.truth(phase), ev.world(phase).now
    out = []
    for user in truth:
        history, consumed = ev.history(user, phase)
        out.append(Asked(user_seeds(history, ev.settings, now=now).items, consumed, truth[user]))
    return out


def _direct_scores(model: collab.CollabModel, asked: list[Asked]) -> dict[str, float]:
    """The model alone: each user's seeds in, consumed items out (fast: no SQL)."""
    recs = [list(model.recommend(a.seeds, K, exclude=a.consumed)) for a in asked]
    relevant = [a.truth for a in asked]
    return {"ndcg": ndcg_at_k(recs, relevant, K), "recall": recall_at_k(recs, relevant, K)}


def choose_model(ev: Evaluator, settings: Settings, fit: Callable[..., collab.CollabModel]) -> tuple[list[dict], dict]:
    """Fit every allowed (family, setting) on the validation world; returns (table, best row)."""
    budget = int(settings.train_memory_budget_mb * 2**20)
    asked = asked_users(ev, "valid")
    table: list[dict] = []
    for inputs in input_variants(settings):
        data = _interactions(ev.world_arrays("valid"), settings, inputs)  # once per input, for every family
        for family in settings.train_families:
            for params in (dict(p, **inputs) for p in collab.param_grid(family, data, budget)):
                started = time.perf_counter()
                model = fit(family, data, **params)
                fit_seconds = round(time.perf_counter() - started, 3)
                for decay in collab.SEED_DECAYS:  # how seeds are weighed online: the same fit
                    model.params["seed_decay"] = decay
                    row = {"family": family, "params": dict(params, seed_decay=decay), **_direct_scores(model, asked),
                           "fit_seconds": fit_seconds, "bytes": int(model.nbytes)}
                    log.info("train: %s %s NDCG@%d %.4f", family, row["params"], K, row["ndcg"])
                    table.append(row)
    if not table:
        raise ValueError(f"no model family of {list(settings.train_families)} fits the memory budget "
                         f"({settings.train_memory_budget_mb:g} MB)")
    table += ensemble_rows(ev, settings, fit, table, asked, budget)
    return table, max(table, key=lambda r: r["ndcg"])


def ensemble_rows(ev: Evaluator, settings: Settings, fit: Callable[..., collab.CollabModel], table: list[dict],
                  asked: list[Asked], budget: int) -> list[dict]:
    """Ensembles of the families' best fits (seed weighting included), on the input of the best
    row, each family fitted once: every pair (the stronger alone first), then the best pair with
    each other family as a third part; each scored once per ``collab.ENSEMBLE_WEIGHTS`` (the
    last part's weight). Every pair, not only the two best alone: a family weak alone may add
    most (on MovieLens-100K the sequence model came fourth alone and added most). [] with fewer
    than two families; a combination over the budget is skipped."""
    best = max(table, key=lambda r: r["ndcg"])
    inputs = {k: best["params"][k] for k in collab.INPUT_PARAMS if k in best["params"]}
    per_family: dict[str, dict] = {}
    for row in table:
        same_input = all(row["params"].get(k) == v for k, v in inputs.items())
        if same_input and row["ndcg"] > per_family.get(row["family"], {"ndcg": -1.0})["ndcg"]:
            per_family[row["family"]] = row
    if len(per_family) < 2:
        return []
    ranked = sorted(per_family.values(), key=lambda r: -r["ndcg"])
    data = _interactions(ev.world_arrays("valid"), settings, inputs)
    fitted: dict[str, tuple[collab.CollabModel, float]] = {}

    def part(row: dict, keep: set[str]) -> tuple[collab.CollabModel, float]:
        if row["family"] not in fitted:
            # Fits are kept for the next combination, but never more than the budget: those of
            # families outside ``keep`` go first (and are fitted again if needed later).
            need = collab.estimate_bytes(row["family"], data, row["params"])
            for family in [f for f in fitted if f not in keep]:
                if sum(m.nbytes for m, _ in fitted.values()) + need <= budget:
                    break
                del fitted[family]
            started = time.perf_counter()
            model = fit(row["family"], data, **row["params"])
            fitted[row["family"]] = model, time.perf_counter() - started
        return fitted[row["family"]]

    def rows_of(members: list[dict], weights: list[float]) -> list[dict]:
        spec = {"parts": [{"family": r["family"], "params": r["params"]} for r in members],
                "weights": [1.0] * len(members)}
        if collab.estimate_bytes(collab.ENSEMBLE, data, spec) > budget:
            return []
        parts = [part(r, {m["family"] for m in members}) for r in members]
        out = []
        for weight in collab.ENSEMBLE_WEIGHTS:
            model = collab.ensemble([m for m, _ in parts], [*weights, weight])
            row = {"family": collab.ENSEMBLE, "params": model.params, **_direct_scores(model, asked),
                   "fit_seconds": round(sum(s for _, s in parts), 3), "bytes": int(model.nbytes)}
            log.info("train: %s %s NDCG@%d %.4f", collab.ENSEMBLE, row["params"], K, row["ndcg"])
            out.append(row)
        return out

    out = [row for a, b in itertools.combinations(ranked, 2) for row in rows_of([a, b], [1.0])]
    if not out or len(ranked) < 3:
        return out
    pair = max(out, key=lambda r: r["ndcg"])
    members = [per_family[p["family"]] for p in pair["params"]["parts"]]
    for third in (r for r in ranked if r not in members):
        out += rows_of([*members, third], pair["params"]["weights"])
    return out


@contextlib.contextmanager
def _served_as(ev: Evaluator, power: int, cold_rank: int | None = None):
    """``ev`` scores content with ``power`` (``Engine.profile_power``) and fills the cold place
    with the bar ``cold_rank`` (None: the default) inside the block only."""
    before = ev.profile_power, ev.cold_rank
    ev.profile_power, ev.cold_rank = power, cold_rank
    try:
        yield
    finally:
        ev.profile_power, ev.cold_rank = before


def choose_profile(ev: Evaluator, settings: Settings) -> tuple[str, dict[str, float]]:
    """The way of scoring content (``PROFILE_WAYS``) with the best validation NDCG@K of the
    content source alone (ties: the first listed, the mean), or the one ``content_scoring``
    forces, set on ``ev`` for what follows; returns (way, each way's NDCG: none scored when
    forced or without a text space, which means the mean)."""
    if ev.space is None or settings.content_scoring != "auto":
        way = "mean" if ev.space is None else settings.content_scoring
        ev.profile_power = PROFILE_WAYS[way]
        return way, {}
    content = Blend({"profile": 1.0}, 0.0, settings.event_half_life_days, fallbacks=False)
    scores = {}
    for way, power in PROFILE_WAYS.items():
        ev.profile_power = power
        scores[way] = float(ev.run(content, phase="valid")["ndcg"])
    best = max(scores, key=scores.__getitem__)
    ev.profile_power = PROFILE_WAYS[best]
    log.info("train: content scored by %s (validation NDCG@%d %s)", best, K,
             ", ".join(f"{w} {v:.4f}" for w, v in scores.items()))
    return best, scores


def choose_blend(ev: Evaluator, model: collab.CollabModel, settings: Settings) -> tuple[dict[str, float], float]:
    """The blend weights with the best validation NDCG (ties: the setting listed first).

    Settings without the model compete too (co-engagement at 1, and the configured
    ``blend_weights``): where validation says the model does not help, it is not blended in.
    """
    names = [n for n in BLEND_GRID if n != "profile" or ev.space is not None]
    with_model: list[dict[str, float]] = [{"model": 1.0}]
    without: list[dict[str, float]] = [{"co_engagement": 1.0}]
    for name in names:
        with_model = [{**g, name: w} for g in with_model for w in BLEND_GRID[name]]
        if name != "co_engagement":
            without = [{**g, name: w} for g in without for w in BLEND_GRID[name]]
    grid = [{n: w for n, w in g.items() if w > 0} for g in with_model + without + [dict(settings.blend_weights)]]
    grid = [g for j, g in enumerate(grid) if g and g not in grid[:j]]
    scores = ev.rank_grid(grid, phase="valid", half_life_days=settings.event_half_life_days, model=model)
    best = max(range(len(grid)), key=lambda j: (scores[j]["ndcg"], -j))
    return grid[best], scores[best]["ndcg"]


def choose_cold_rank(ev: Evaluator, settings: Settings, model: collab.CollabModel, weights: Mapping[str, float],
                     ranker: learned_rank.Ranker | None) -> tuple[int | None, dict]:
    """The cold place's bar (see the module docstring, step 3), set on ``ev`` for what follows;
    returns (the bar, what was measured). None, with nothing measured, where the setting forces
    a bar or there is no place to fill (the setting or the default then serves)."""
    forced = forced_cold_rank(settings)
    if forced is not None or settings.cold_item_slots == 0 or ev.space is None:
        ev.cold_rank = None
        return None, {"forced": forced} if forced is not None else {}
    served = Blend.served_with(weights, settings)
    before = ev.settings
    try:
        ev.settings = dataclasses.replace(settings, cold_item_slots=0)
        without = float(ev.run(served, phase="valid", model=model, ranker=ranker)["ndcg"])
        ev.settings = settings
        scores = {}
        for rank in COLD_RANKS:
            ev.cold_rank = rank
            scores[rank] = float(ev.run(served, phase="valid", model=model, ranker=ranker)["ndcg"])
    finally:
        ev.settings = before
    floor = without * (1.0 - settings.cold_item_warm_tolerance)
    # Each larger bar fills the place for more people, which costs warm accuracy: the largest
    # within the tolerance, else the smallest (the place is kept; `cold_item_slots` 0 removes it).
    chosen = max((r for r in COLD_RANKS if scores[r] >= floor), default=COLD_RANKS[0])
    ev.cold_rank = chosen
    log.info("train: cold place bar %d (validation NDCG@%d without the place %.4f; %s)", chosen, K, without,
             ", ".join(f"{r}: {v:.4f}" for r, v in scores.items()))
    return chosen, {"validation_ndcg": {str(r): v for r, v in scores.items()}, "without_place": without,
                    "tolerance": settings.cold_item_warm_tolerance}


@dataclass
class Group:
    """One validation user's candidates (every source on), their features and which were held out."""

    scores: dict[str, dict[int, float]]
    items: list[int]
    x: np.ndarray
    y: np.ndarray


def candidate_groups(ev: Evaluator, model: collab.CollabModel, settings: Settings, phase: str = "valid") -> list[Group]:
    """Per evaluated user, what ``gather`` finds with every source on (the ranker's training data)."""
    truth, now = ev.truth(phase), ev.world(phase).now
    engine = ev.engine(phase, settings.co_engagement_popularity_damping, model)
    every = {s: 1.0 for s in learned_rank.SOURCES if s != "profile" or ev.space is not None}
    groups = []
    for user in truth:
        history, consumed = ev.history(user, phase)
        seeds = user_seeds(history, settings, now=now)
        if not seeds.liked:
            continue
        ask = make_ask(settings, k=K, now=now, exclude=consumed, weights=every)
        scores = gather(engine, seeds, ask).scores
        items, x = learned_rank.candidate_features(scores, lambda ids, e=engine: is_cold(e, ids))
        groups.append(Group(scores, items, x, np.array([i in truth[user] for i in items], dtype=np.int32)))
    return groups


def _ndcg_of(order_fn, groups: list[Group]) -> np.ndarray:
    """Per group, NDCG@K of its candidates ordered by ``order_fn(group) -> scores``."""
    recs, relevant = [], []
    for g in groups:
        scores = order_fn(g)
        recs.append([g.items[j] for j in np.argsort(-scores, kind="stable")[:K]])
        relevant.append({i for i, y in zip(g.items, g.y) if y})
    return ndcg_per_user(recs, relevant, K)


def choose_ranker(groups: list[Group], weights: Mapping[str, float], *, seed: int = 0) -> tuple[learned_rank.Ranker | None, dict]:
    """Fit the ranker on half the users, compare it with the weights on the other half, keep the
    better (refit on every user when it is the ranker). Returns (ranker or None, the record)."""
    order = np.random.default_rng(seed).permutation(len(groups))
    fit_half = [groups[j] for j in order[: len(order) // 2]]
    held_half = [groups[j] for j in order[len(order) // 2:]]
    record: dict[str, Any] = {"used": False, "users": len(groups)}
    trial = learned_rank.fit_ranker([(g.x, g.y) for g in fit_half])
    if trial is None or not held_half:
        record["reason"] = "too few validation users with a held-out item among the candidates"
        return None, record

    def by_weights(g: Group) -> np.ndarray:
        blended = weighted_blend(g.scores, weights)
        return np.array([blended.get(i, (0.0, ()))[0] for i in g.items])

    ranked, weighted = _ndcg_of(lambda g: trial.predict(g.x), held_half), _ndcg_of(by_weights, held_half)
    diff = paired_difference(ranked, weighted)
    record["held_half"] = {"ranker_ndcg": float(np.nanmean(ranked)), "weights_ndcg": float(np.nanmean(weighted)),
                           "difference": diff}
    if not diff["mean"] > 2 * diff["se"]:
        record["reason"] = "not better than the fixed weights on the held-out half by more than 2 standard errors"
        return None, record
    ranker = learned_rank.fit_ranker([(g.x, g.y) for g in groups])
    record.update(used=ranker is not None, **(ranker.info if ranker else {}))
    return ranker, record


def _test_metrics(ev: Evaluator, model: collab.CollabModel | None, weights: Mapping[str, float],
                  settings: Settings, ranker: learned_rank.Ranker | None = None) -> tuple[dict[str, float], np.ndarray]:
    """Test metrics through ``for_user`` end to end, blended as the endpoint would serve it
    (the ranker, else the weights; fallbacks on), and each user's NDCG@10 for paired comparisons."""
    blend = Blend.served_with(weights, settings)
    lists: dict[Any, list[int]] = {}
    out = ev.run(blend, phase="test", model=model, ranker=ranker, lists=lists)
    return {k: float(v) for k, v in out.items()}, ev.per_user_ndcg(lists)


@dataclass
class Recipe:
    """What validation chose: the family and setting (``best``, a row of ``table``), the blend
    weights, and the ranker (None: the weights serve)."""

    table: list[dict]
    best: dict
    weights: dict[str, float]
    valid_ndcg: float
    ranker: learned_rank.Ranker | None
    ranker_record: dict
    profile: str = "mean"  # how content is scored (``PROFILE_WAYS``), with each way's validation NDCG:
    profile_scores: dict[str, float] = field(default_factory=dict)
    cold_rank: int | None = None  # the cold place's bar (None: none chosen), and what chose it
    cold_record: dict = field(default_factory=dict)


def choose_recipe(ev: Evaluator, settings: Settings, fit: Callable[..., collab.CollabModel] = collab.fit) -> Recipe:
    """Steps 2 and 3 of the module docstring, on ``ev``'s validation phase (``ev`` keeps the
    chosen way of scoring content)."""
    table, best = choose_model(ev, settings, fit)
    profile, profile_scores = choose_profile(ev, settings)
    # Refit rather than keep every candidate alive: one fit of the winner costs less than the grid.
    valid_model = fit(best["family"], _interactions(ev.world_arrays("valid"), settings, best["params"]), **best["params"])
    weights, valid_ndcg = choose_blend(ev, valid_model, settings)
    log.info("train: chose %s %s, blend %s (validation NDCG@%d %.4f)", best["family"], best["params"], weights, K,
             valid_ndcg)
    ranker, ranker_record = choose_ranker(candidate_groups(ev, valid_model, settings), weights)
    log.info("train: learned ranker %s (%s)", "kept" if ranker else "not used", ranker_record)
    cold_rank, cold_record = choose_cold_rank(ev, settings, valid_model, weights, ranker)
    return Recipe(table, best, weights, valid_ndcg, ranker, ranker_record, profile, profile_scores, cold_rank,
                  cold_record)


def score_recipe(ev: Evaluator, recipe: Recipe, settings: Settings,
                 fit: Callable[..., collab.CollabModel]) -> tuple[dict, dict, dict[str, np.ndarray]]:
    """Test metrics of the recipe (refit on the test world) as served, and without any model;
    returns (metrics, paired comparisons, per-user NDCG)."""
    params = recipe.best["params"]
    test_model = fit(recipe.best["family"], _interactions(ev.world_arrays("test"), settings, params), **params)
    metrics, per_user = {}, {}
    metrics["model"], per_user["model"] = _test_metrics(ev, test_model, recipe.weights, settings, recipe.ranker)
    with _served_as(ev, 0):  # what serves without a trained model: the mean profile, the default bar
        metrics["without_model"], per_user["without_model"] = _test_metrics(ev, None, settings.blend_weights, settings)
    if recipe.ranker is not None:
        metrics["model_fixed_weights"], per_user["model_fixed_weights"] = _test_metrics(
            ev, test_model, recipe.weights, settings)
    comparisons = {"model_vs_without_model": paired_difference(per_user["model"], per_user["without_model"])}
    return metrics, comparisons, per_user


def read_log(settings: Settings, session_factory: sessionmaker[Session]) -> tuple[EventLog, int, event_window.Window]:
    """Every event, the training watermark (the largest event id before the read), and the newest
    ``behaviour_max_events`` of the same read, for workers to start from (``event_window``)."""
    with session_factory() as session:
        watermark = int(session.scalar(select(func.max(Event.id))) or 0)
        ev = read_events(session=session)
        newest = ev.tail(settings.behaviour_max_events)
        return event_log_of(session, ev, settings), watermark, event_window.Window(newest, len(newest) == len(ev))


def write_event_window(folder: Path, window: event_window.Window) -> dict[str, Any]:
    """``window`` into ``folder``; the manifest's record of it."""
    event_window.save(folder, window.events)
    return event_window.record(window.events, complete=window.complete)


def train_model(settings: Settings, session_factory: sessionmaker[Session], building: Path, *,
                space: LoadedSpace | None, published: Mapping[str, Any] | None,
                fit: Callable[..., collab.CollabModel] = collab.fit) -> TrainResult:
    """Fit, choose, gate and save a model into ``building/behaviour``; see the module docstring.

    Args:
        space: the text space of the version being built (the content source), or None.
        published: the published version's ``behaviour`` manifest section (None: nothing).
        fit: fits the new model (tests inject a deliberately bad one); the published recipe is
            always refit with ``collab.fit``.
    """
    started = time.perf_counter()
    event_log, watermark, newest = read_log(settings, session_factory)
    folder = building / collab.MODEL_DIR
    # Written whether or not a model is fitted: workers start from it either way.
    window = write_event_window(folder, newest)
    del newest
    base = {"watermark_event_id": watermark, "events": len(event_log), "interactions": int(len(event_log.positive)),
            "window": window}
    names = [window["file"]]
    files = lambda: {name: artifacts.file_entry(folder / name) for name in names}  # noqa: E731
    if len(event_log.positive) < settings.train_min_interactions:
        reason = (f"{len(event_log.positive)} positive interactions, fewer than train_min_interactions "
                  f"({settings.train_min_interactions}): co-engagement alone answers")
        log.info("train: skipped (%s)", reason)
        return TrainResult({"status": "skipped", "reason": reason, **base, "files": files()})
    split = split_log(event_log, n_test=1, n_valid=1, min_train=2)
    if not len(split.users):
        return TrainResult({"status": "skipped", "reason": "no user has the 4 positive interactions validation needs",
                            **base, "files": files()})
    split = sample_split(event_log, split, settings.train_eval_users)
    ev = Evaluator(event_log, split, space, settings, session_factory, k=K)

    chosen = choose_recipe(ev, settings, fit)
    best, weights, ranker = chosen.best, chosen.weights, chosen.ranker
    metrics, comparisons, per_user = score_recipe(ev, chosen, settings, fit)
    table, valid_ndcg, ranker_record = chosen.table, chosen.valid_ndcg, chosen.ranker_record
    recipe = {"family": best["family"], "params": best["params"], "blend": weights}
    gate = {"tolerance": settings.train_gate_tolerance, "reference": None, "passed": True}
    refused = None
    if published and published.get("status") == "trained":
        old = {"family": published["family"], "params": published["params"], "blend": published["blend"]}
        # Always the real fitter: the reference is what the published recipe gives on this data.
        old_model = (collab.fit(old["family"], _interactions(ev.world_arrays("test"), settings, old["params"]),
                                **old["params"]) if old["family"] in collab.FAMILIES + (collab.ENSEMBLE,) else None)
        with _served_as(ev, profile_power_of(published, PROFILE_SPACE), cold_rank_of(published)):
            reference, reference_per_user = _test_metrics(ev, old_model, old["blend"], settings)
        metrics["published_recipe"] = reference
        diff = paired_difference(per_user["model"], reference_per_user)
        comparisons["model_vs_published_recipe"] = diff
        floor = reference["ndcg"] * (1.0 - settings.train_gate_tolerance)
        worse = metrics["model"]["ndcg"] < floor and diff["mean"] + 2 * diff["se"] < 0
        gate.update(reference={"recipe": old, "ndcg": reference["ndcg"]}, floor=floor, difference=diff,
                    passed=not worse)
        if worse:
            refused = (f"the new model's test NDCG@{K} {metrics['model']['ndcg']:.4f} is below the published "
                       f"recipe's {reference['ndcg']:.4f} by more than {settings.train_gate_tolerance:.0%} "
                       f"(paired difference {diff['mean']:+.4f} ± {diff['se']:.4f} SE over {diff['users']} users)")

    all_data = _interactions((event_log.users, event_log.items, event_log.weights, event_log.times), settings,
                             best["params"])
    final = fit(best["family"], all_data, **best["params"])
    names += final.save(folder)
    touched = np.unique(event_log.items)
    names.append(collab.save_touched(folder, touched))
    if ranker is not None:
        names += ranker.save(folder)
    section = {
        "status": "trained", **recipe, "ranker": ranker_record, **base,
        "users": int(all_data.matrix.shape[0]), "items": int(all_data.matrix.shape[1]),
        "model_items": int(len(final.item_ids)), "bytes": int(final.nbytes),
        "touched_items": int(len(touched)),
        "clock": float(event_log.times.max()) if len(event_log) else 0.0,
        "split": {"users": int(len(split.users)), "n_test": 1, "n_valid": 1, "k": K},
        "profile": {"space": PROFILE_SPACE, "way": chosen.profile, "validation_ndcg": chosen.profile_scores},
        "cold_place": {"rank": chosen.cold_rank, **chosen.cold_record},
        "validation": {"candidates": table, "blend_ndcg": valid_ndcg},
        "metrics": metrics, "comparisons": comparisons, "gate": gate,
        "seconds": round(time.perf_counter() - started, 3),
        "files": files(),
    }
    return TrainResult(section, refused)
