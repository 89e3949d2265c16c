"""The training stage of a rebuild: fit a collaborative model, choose it on held-out behaviour,
gate it against the published one, and write it into the version being built.

1. Every event is read from SQL and weighted as the service weighs it (event types, ratings,
   time decay from the settings); users' most recent positive interactions are held out
   (the last one for test, the one before for validation, on a seeded sample of users).
2. Each family of :mod:`service.recommend.collab` allowed by the settings and the memory budget
   is fitted per hyper-parameter setting on the validation world and scored directly (the
   user's seeds in, the same exclusions); the best family and setting wins.
3. The blend of the model with the other sources (content profile, co-engagement, trending) is
   fitted on validation through the pieces of the endpoint's own ``recommend``.
4. Test metrics come from :func:`service.recommend.recommender.for_user` end to end (the
   function ``GET /users/{id}/recommendations`` calls), with the clock of the training data.
   The published model's recipe (family, setting, blend) is refit on the same world and
   scored the same way: a new model worse than it by more than ``train_gate_tolerance`` is
   refused (the caller decides whether ``--force`` publishes it anyway).
5. The winner is refit on every event and saved under ``behaviour/`` of the version folder;
   its manifest section records the recipe, metrics, gate and training watermark.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from service.recommend import collab
from service.recommend.evaluation import ndcg_at_k, recall_at_k
from service.recommend.offline_eval import Blend, Evaluator, EventLog, load_event_log, sample_split, split_log
from service.recommend.recommender import user_seeds
from service.settings import Settings
from service.store.models import Event
from service.vectors import artifacts
from service.vectors.index_store import LoadedSpace

log = logging.getLogger("recsys.train")

K = 10
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


def _interactions(arrays: tuple[np.ndarray, ...], settings: Settings) -> collab.Interactions:
    users, items, weights, times = arrays
    return collab.interaction_matrix(users, items, weights, times, half_life_days=settings.event_half_life_days)


def _direct_scores(ev: Evaluator, model: collab.CollabModel, phase: str) -> dict[str, float]:
    """The model alone on ``phase``: each user's seeds in, consumed items out (fast: no SQL)."""
    truth, now = ev.truth(phase), ev.world(phase).now
    users = list(truth)
    recs = []
    for user in users:
        history, consumed = ev.history(user, phase)
        seeds = user_seeds(history, ev.settings, now=now)
        recs.append(list(model.recommend(seeds.items, K, exclude=consumed)))
    relevant = [truth[u] for u in users]
    return {"ndcg": ndcg_at_k(recs, relevant, K), "recall": recall_at_k(recs, relevant, K)}


def choose_model(ev: Evaluator, settings: Settings, fit: Callable[..., collab.CollabModel]) -> tuple[list[dict], dict]:
    """Fit every allowed (family, setting) on the validation world; returns (table, best row)."""
    data = _interactions(ev.world_arrays("valid"), settings)
    budget = int(settings.train_memory_budget_mb * 2**20)
    table: list[dict] = []
    for family in settings.train_families:
        for params in collab.param_grid(family, data, budget):
            started = time.perf_counter()
            model = fit(family, data, **params)
            row = {"family": family, "params": params, **_direct_scores(ev, model, "valid"),
                   "fit_seconds": round(time.perf_counter() - started, 3), "bytes": int(model.nbytes)}
            log.info("train: %s %s NDCG@%d %.4f", family, params, K, row["ndcg"])
            table.append(row)
    if not table:
        raise ValueError(f"no model family of {list(settings.train_families)} fits the memory budget "
                         f"({settings.train_memory_budget_mb:g} MB)")
    return table, max(table, key=lambda r: r["ndcg"])


def choose_blend(ev: Evaluator, model: collab.CollabModel, settings: Settings) -> tuple[dict[str, float], float]:
    """The blend weights with the best validation NDCG (ties: the simpler setting, listed first)."""
    names = [n for n in BLEND_GRID if n != "profile" or ev.space is not None]
    grid: list[dict[str, float]] = [{"model": 1.0}]
    for name in names:
        grid = [{**g, name: w} for g in grid for w in BLEND_GRID[name]]
    grid = [{n: w for n, w in g.items() if w > 0} for g in grid]
    scores = ev.rank_grid(grid, phase="valid", half_life_days=settings.event_half_life_days, model=model)
    best = max(range(len(grid)), key=lambda j: (scores[j]["ndcg"], -j))
    return grid[best], scores[best]["ndcg"]


def _test_metrics(ev: Evaluator, model: collab.CollabModel | None, weights: Mapping[str, float],
                  settings: Settings) -> dict[str, float]:
    """Test metrics through ``for_user`` end to end (fallbacks on, as the endpoint serves)."""
    blend = Blend(dict(weights), settings.co_engagement_popularity_damping, settings.event_half_life_days)
    out = ev.run(blend, phase="test", model=model)
    return {k: float(v) for k, v in out.items()}


def read_log(settings: Settings, session_factory: sessionmaker[Session]) -> tuple[EventLog, int]:
    """Every event, and the training watermark (the largest event id read)."""
    with session_factory() as session:
        watermark = int(session.scalar(select(func.max(Event.id))) or 0)
        return load_event_log(session, settings), watermark


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
    event_log, watermark = read_log(settings, session_factory)
    base = {"watermark_event_id": watermark, "events": len(event_log), "interactions": int(len(event_log.positive))}
    if len(event_log.positive) < settings.train_min_interactions:
        reason = (f"{len(event_log.positive)} positive interactions, fewer than train_min_interactions "
                  f"({settings.train_min_interactions}): co-engagement alone answers")
        log.info("train: skipped (%s)", reason)
        return TrainResult({"status": "skipped", "reason": reason, **base})
    split = split_log(event_log, n_test=1, n_valid=1, min_train=2)
    if not len(split.users):
        return TrainResult({"status": "skipped", "reason": "no user has the 4 positive interactions validation needs",
                            **base})
    split = sample_split(event_log, split, settings.train_eval_users)
    ev = Evaluator(event_log, split, space, settings, session_factory, k=K)

    table, best = choose_model(ev, settings, fit)
    # Refit rather than keep every candidate alive: one fit of the winner costs less than the grid.
    valid_model = fit(best["family"], _interactions(ev.world_arrays("valid"), settings), **best["params"])
    weights, valid_ndcg = choose_blend(ev, valid_model, settings)
    log.info("train: chose %s %s, blend %s (validation NDCG@%d %.4f)", best["family"], best["params"], weights, K,
             valid_ndcg)

    test_data = _interactions(ev.world_arrays("test"), settings)
    metrics = {"model": _test_metrics(ev, fit(best["family"], test_data, **best["params"]), weights, settings),
               "without_model": _test_metrics(ev, None, settings.blend_weights, settings)}
    recipe = {"family": best["family"], "params": best["params"], "blend": weights}
    gate = {"tolerance": settings.train_gate_tolerance, "reference": None, "passed": True}
    refused = None
    if published and published.get("status") == "trained":
        old = {"family": published["family"], "params": published["params"], "blend": published["blend"]}
        if old == recipe:
            reference = metrics["model"]
        else:
            # Always the real fitter: the reference is what the published recipe gives on this data.
            old_model = collab.fit(old["family"], test_data, **old["params"]) if old["family"] in collab.FAMILIES else None
            reference = _test_metrics(ev, old_model, old["blend"], settings)
        metrics["published_recipe"] = reference
        floor = reference["ndcg"] * (1.0 - settings.train_gate_tolerance)
        gate.update(reference={"recipe": old, "ndcg": reference["ndcg"]}, floor=floor,
                    passed=metrics["model"]["ndcg"] >= floor)
        if not gate["passed"]:
            refused = (f"the new model's test NDCG@{K} {metrics['model']['ndcg']:.4f} is below the published "
                       f"recipe's {reference['ndcg']:.4f} by more than {settings.train_gate_tolerance:.0%}")

    all_data = _interactions((event_log.users, event_log.items, event_log.weights, event_log.times), settings)
    final = fit(best["family"], all_data, **best["params"])
    folder = building / collab.MODEL_DIR
    names = final.save(folder)
    section = {
        "status": "trained", **recipe, **base,
        "users": int(all_data.matrix.shape[0]), "items": int(all_data.matrix.shape[1]),
        "model_items": int(len(final.item_ids)), "bytes": int(final.nbytes),
        "clock": float(event_log.times.max()) if len(event_log) else 0.0,
        "split": {"users": int(len(split.users)), "n_test": 1, "n_valid": 1, "k": K},
        "validation": {"candidates": table, "blend_ndcg": valid_ndcg},
        "metrics": metrics, "gate": gate,
        "seconds": round(time.perf_counter() - started, 3),
        "files": {name: artifacts.file_entry(folder / name) for name in names},
    }
    return TrainResult(section, refused)
