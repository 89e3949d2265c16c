"""Offline evaluation of the recommendation code path on the service's own event log.

Holds out each user's most recent positive interactions (:func:`service.recommend.evaluation.holdout_split`),
builds the behaviour snapshot from the rest, and asks :func:`service.recommend.recommender.recommend` (the
function the endpoint calls) for each held-out user, with the history the endpoint would have
read at that moment. Reports Recall@k, NDCG@k, catalog coverage and popularity bias per blend
setting, and can search the blend weights on the validation split.

Tuning reuses each user's gathered candidates across weight settings (:func:`gather` once with
every source on, then :func:`rank` per setting); the reported figures call :func:`recommend` end
to end.
"""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.store.models import EPOCH, to_seconds
from service.recommend.behaviour import Snapshot
from service.recommend.evaluation import Split, catalog_coverage, evaluate, holdout_split, ndcg_at_k, popularity_bias, recall_at_k
from service.store.events import History
from service.vectors.index_store import LoadedSpace
from service.store.models import Event, Item
from service.recommend.ranking import event_weights
from service.recommend.recommender import Ask, Engine, gather, rank, recommend, seeds_from_history
from service.settings import Settings

# Blend settings always reported, besides the configured and the tuned one.
NAMED_BLENDS = {
    "content only": {"profile": 1.0},
    "co-engagement only": {"co_engagement": 1.0},
    "trending only": {"trending": 1.0},
}
# Grid searched by --tune: co-engagement is fixed at 1 (only ratios matter); sources are scaled
# to [0, 1] by their best item, so small weights already reorder close co-engagement scores.
TUNE_GRID = {
    "profile": (0.0, 0.01, 0.03, 0.1, 0.3),
    "trending": (0.0, 0.01, 0.03, 0.1),
    "damping": (0.0,),
    "half_life_days": (3.0, 7.0, 30.0),
}


@dataclass(frozen=True)
class Blend:
    """One setting under evaluation: source weights, popularity damping, history half-life."""

    weights: Mapping[str, float]
    damping: float = 0.0
    half_life_days: float = 30.0

    def describe(self) -> str:
        text = ", ".join(f"{k} {v:g}" for k, v in self.weights.items() if v)
        return text + (f", damping {self.damping:g}" if self.damping else "") + f", half-life {self.half_life_days:g} d"

    def settings(self) -> dict[str, Any]:
        """The settings this blend stands for (what --write-settings writes)."""
        return {"blend_weights": dict(self.weights), "co_engagement_popularity_damping": self.damping,
                "event_half_life_days": self.half_life_days}

    @classmethod
    def configured(cls, s: Settings) -> "Blend":
        return cls(dict(s.blend_weights), s.co_engagement_popularity_damping, s.event_half_life_days)


@dataclass
class EventLog:
    """Positive interactions, one per (user, item) (the earliest), in a fixed row order."""

    users: np.ndarray  # any hashable user keys
    items: np.ndarray  # item primary keys
    types: list[str]
    values: list[float | None]
    times: np.ndarray  # Unix seconds
    weights: np.ndarray

    def __len__(self) -> int:
        return len(self.items)


def load_event_log(session: Session, settings: Settings) -> EventLog:
    """Every stored event with a positive weight, first occurrence per (user, item), by id."""
    rows = session.execute(
        select(Event.user_id, Event.item_id, Event.type, Event.value, Event.occurred_at)
        .join(Item, Item.id == Event.item_id).where(Item.deleted_at.is_(None)).order_by(Event.id)
    ).all()
    return make_event_log([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows],
                          [to_seconds(r[4]) for r in rows], settings)


def make_event_log(users: Sequence, items: Sequence[int], types: Sequence[str], values: Sequence[float | None],
                   times: Sequence[float], settings: Settings) -> EventLog:
    """Keep positive events (weight > 0), the first per (user, item), in the given order."""
    w = event_weights(types, values, settings.event_weights, settings.rating_neutral)
    seen: set[tuple] = set()
    keep = []
    for i, (u, it) in enumerate(zip(users, items)):
        if w[i] > 0 and (u, it) not in seen:
            seen.add((u, it))
            keep.append(i)
    idx = np.asarray(keep, dtype=np.int64)
    return EventLog(np.asarray(users)[idx], np.asarray(items, dtype=np.int64)[idx], [types[i] for i in keep],
                    [values[i] for i in keep], np.asarray(times, dtype=np.float64)[idx], w[idx])


class Evaluator:
    """Scores blend settings on one split of one event log, through the real recommendation path."""

    def __init__(self, log: EventLog, split: Split, space: LoadedSpace | None, settings: Settings,
                 session_factory: Callable[[], Session], *, k: int = 10):
        self.log, self.split, self.space, self.settings, self.k = log, split, space, settings, k
        self.session_factory = session_factory
        self._snapshots: dict[tuple, Snapshot] = {}
        self._fit_sets: dict[str, set[int]] = {}
        self._users = {u: np.flatnonzero(log.users == u) for u in split.users.tolist()}
        with session_factory() as session:
            self.catalog_ids = list(session.scalars(select(Item.id).where(Item.deleted_at.is_(None)).order_by(Item.id)))

    # --- the pieces the endpoint would have had --------------------------------------------
    def fit_rows(self, phase: str) -> np.ndarray:
        return self.split.fit_idx(phase)

    def truth(self, phase: str) -> dict[Any, set[int]]:
        held = set((self.split.valid_idx if phase == "valid" else self.split.test_idx).tolist())
        return {u: {int(self.log.items[i]) for i in rows if i in held} for u, rows in self._users.items()}

    def snapshot(self, phase: str, damping: float) -> Snapshot:
        key = (phase, damping)
        if key not in self._snapshots:
            rows = self.fit_rows(phase)
            log = self.log
            self._snapshots[key] = Snapshot(log.users[rows], log.items[rows], log.weights[rows], log.times[rows],
                                            popularity_damping=damping,
                                            user_damping=self.settings.co_engagement_user_damping)
        return self._snapshots[key]

    def history(self, user, phase: str) -> tuple[History, float]:
        """The user's fitting rows as the endpoint's history (newest first) and "now"."""
        if phase not in self._fit_sets:
            self._fit_sets[phase] = set(self.fit_rows(phase).tolist())
        fit = self._fit_sets[phase]
        rows = [i for i in self._users[user] if i in fit]
        held = [i for i in self._users[user] if i not in fit]
        now = float(self.log.times[held].min()) if held else float(self.log.times[rows].max())
        rows.sort(key=lambda i: (self.log.times[i], i), reverse=True)
        rows = rows[: self.settings.history_limit]
        log = self.log
        h = History(user_id=None, item_ids=[int(log.items[i]) for i in rows], types=[log.types[i] for i in rows],
                    values=[log.values[i] for i in rows],
                    times=[EPOCH + dt.timedelta(seconds=float(log.times[i])) for i in rows])
        return h, now

    def _engine(self, phase: str, damping: float) -> Engine:
        s = self.settings
        return Engine(self.space, None, self.snapshot(phase, damping), trending_window_days=s.trending_window_days,
                      trending_half_life_days=s.trending_half_life_days, candidates_per_source=s.candidates_per_source)

    def _ask(self, history: History, now: float, weights: Mapping[str, float], half_life_days: float) -> tuple[Any, Ask]:
        s = self.settings
        seeds = seeds_from_history(history, weights=s.event_weights, rating_neutral=s.rating_neutral,
                                   half_life_days=half_life_days, now=now)
        return seeds, Ask(k=self.k, exclude=frozenset(history.item_ids), weights=dict(weights), now=now)

    # --- scoring ----------------------------------------------------------------------------
    def run(self, blend: Blend, *, phase: str = "test", progress: bool = False) -> dict[str, float]:
        """Metrics of one blend setting, calling :func:`recommend` per held-out user."""
        engine = self._engine(phase, blend.damping)
        with self.session_factory() as session:
            def recommend_fn(user):
                history, now = self.history(user, phase)
                seeds, ask = self._ask(history, now, blend.weights, blend.half_life_days)
                return [r.item.id for r in recommend(engine, seeds, ask, session=session)]

            return self._score(recommend_fn, phase, progress)

    def _score(self, recommend_fn, phase: str, progress: bool) -> dict[str, float]:
        """Recall and NDCG (service.recommend.evaluation), coverage of the live catalog, popularity bias."""
        users = list(self._users)
        truth = self.truth(phase)
        lists: dict[Any, list[int]] = {}

        def remember(user):
            lists[user] = list(recommend_fn(user))[: self.k]
            return lists[user]

        out = evaluate(remember, users, self.k, relevant=truth, progress=progress)
        # Dense item indices over the live catalog, so never-touched items count in percentiles.
        dense = {pk: i for i, pk in enumerate(self.catalog_ids)}
        fit = self.log.items[self.fit_rows(phase)]
        popularity = np.bincount([dense[i] for i in fit.tolist() if i in dense], minlength=len(dense))
        recs = [[dense[i] for i in lists[u] if i in dense] for u in users]
        out["coverage"] = catalog_coverage(recs, len(dense)) if dense else 0.0
        out.update(popularity_bias(recs, popularity))
        return out

    def tune(self, grid: Mapping[str, Iterable[float]] = TUNE_GRID, *, phase: str = "valid",
             progress: Callable[[Iterable], Iterable] | None = None) -> list[dict[str, Any]]:
        """NDCG of every grid point on ``phase`` (best first). Candidates are gathered once per
        user and damping with every source on, then ranked per weight setting."""
        results = []
        combos = list(itertools.product(grid["profile"], grid["trending"]))
        for damping, half_life in itertools.product(grid["damping"], grid["half_life_days"]):
            engine = self._engine(phase, damping)
            per_combo: dict[tuple, list[list[int]]] = {c: [] for c in combos}
            users = list(self._users)
            with self.session_factory() as session:
                for user in (progress(users) if progress else users):
                    history, now = self.history(user, phase)
                    seeds, ask = self._ask(history, now, {"profile": 1.0, "co_engagement": 1.0, "trending": 1.0}, half_life)
                    sources = gather(engine, seeds, ask)
                    for profile, trending in combos:
                        ask.weights = {"profile": profile, "co_engagement": 1.0, "trending": trending}
                        per_combo[(profile, trending)].append([r.item.id for r in rank(engine, seeds, ask, sources, session=session)])
            truth = self.truth(phase)
            relevant = [truth[u] for u in users]
            for (profile, trending), recs in per_combo.items():
                results.append({"profile": profile, "co_engagement": 1.0, "trending": trending, "damping": damping,
                                "half_life_days": half_life,
                                "ndcg": ndcg_at_k(recs, relevant, self.k), "recall": recall_at_k(recs, relevant, self.k)})
        results.sort(key=lambda r: -r["ndcg"])
        return results


def split_log(log: EventLog, *, n_test: int, n_valid: int, min_train: int = 1) -> Split:
    """The per-user temporal hold-out split of a log (ties broken by row order)."""
    return holdout_split(log.users, log.items, log.times, n_test=n_test, n_valid=n_valid, min_train=min_train)


def format_table(rows: Sequence[tuple[str, Mapping[str, float]]], k: int) -> str:
    """A plain-text table of named metric rows."""
    head = f"{'setting':58} {'Recall@' + str(k):>10} {'NDCG@' + str(k):>9} {'coverage':>9} {'pop.pct':>8} {'pop.lift':>8}"
    lines = [head, "-" * len(head)]
    for name, m in rows:
        lines.append(f"{name:58} {m['recall']:10.4f} {m['ndcg']:9.4f} {m.get('coverage', float('nan')):9.3f} "
                     f"{m.get('pop_percentile', float('nan')):8.3f} {m.get('pop_lift', float('nan')):8.2f}")
    return "\n".join(lines)


def best_blend(table: Sequence[Mapping[str, Any]]) -> Blend:
    """The best row of :meth:`Evaluator.tune` as a :class:`Blend`."""
    top = table[0]
    return Blend({n: top[n] for n in ("profile", "co_engagement", "trending")}, top["damping"], top["half_life_days"])


def run_cli_evaluation(settings: Settings, session_factory, *, n_test: int, n_valid: int, k: int, tune: bool,
                       write: bool, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """``recsys eval``: load, split, (tune), report; returns the results as a dict."""
    from tqdm.auto import tqdm

    from service.vectors import artifacts
    from service.vectors.index_store import load_version
    from service.settings import write_settings_file

    with session_factory() as session:
        log = load_event_log(session, settings)
    split = split_log(log, n_test=n_test, n_valid=n_valid)
    if not len(split.users):
        raise ValueError(f"no user has the {n_test + n_valid + 1} positive interactions a split needs")
    version = artifacts.current_version(settings.index_path)
    space = load_version(settings.index_path, version).spaces.get("text") if version else None
    echo(f"{len(log)} positive interactions, {len(split.users)} users evaluated "
         f"(last {n_test} held out, {n_valid} before them for validation); "
         f"content from index {version or 'none (no index published: content source off)'}")
    ev = Evaluator(log, split, space, settings, session_factory, k=k)
    report: dict[str, Any] = {"split": {"n_test": n_test, "n_valid": n_valid, "users": len(split.users),
                                        "interactions": len(log)}, "index_version": version, "k": k, "results": {}}
    configured = Blend.configured(settings)
    blends: list[tuple[str, Blend]] = [(f"configured ({configured.describe()})", configured)]
    blends += [(name, Blend(w, 0.0, settings.event_half_life_days)) for name, w in NAMED_BLENDS.items()]
    if tune:
        echo("tuning on the validation split ...")
        table = ev.tune(progress=lambda users: tqdm(users, desc="tune", unit="user", leave=False))
        best = best_blend(table)
        report["tuning"] = table
        blends.append((f"tuned ({best.describe()})", best))
        echo(f"best on validation: {best.describe()} (NDCG@{k} {table[0]['ndcg']:.4f})")
        if write:
            path = write_settings_file(settings, best.settings())
            echo(f"wrote the tuned blend to {path}")
    rows = []
    for name, blend in blends:
        metrics = ev.run(blend, phase="test", progress=True)
        report["results"][name] = {**blend.settings(), **metrics}
        rows.append((name, metrics))
    echo(format_table(rows, k))
    return report
