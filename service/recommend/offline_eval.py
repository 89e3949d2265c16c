"""Offline evaluation of the recommendations users get, on the service's own event log.

Holds out each user's most recent positive interactions (:func:`service.recommend.evaluation.holdout_split`
over the first positive event per user and item) and asks :func:`service.recommend.recommender.for_user`
(the function ``GET /users/{id}/recommendations`` calls) for each evaluated user, in the world the
endpoint would have seen with the held-out events not yet there:

- behaviour (co-engagement, trending) from every event except each evaluated user's events from
  their first held-out one on, weighted exactly as the service weighs them;
- the user's history: those same remaining events of the user (every type, not only positives),
  newest first, and the consumed items excluded by the same rule (``exclude_seen_types``);
- the clock: the time of the last remaining event, from training data only.

Passing that history, the consumed items and the clock is the one intended difference from the
endpoint; a test checks that the lists equal the endpoint's for a database holding exactly those
events. Tuning reuses each user's gathered candidates across weight settings (the pieces
``recommend`` is made of); the reported figures call ``for_user`` end to end.
"""

from __future__ import annotations

import json
import itertools
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.recommend.behaviour import Snapshot, load_catalog
from service.recommend import collab
from service.recommend.collab import CollabModel
from service.recommend.learned_rank import Ranker
from service.recommend.evaluation import (
    Split, catalog_coverage, evaluate, holdout_split, ndcg_at_k, ndcg_per_user, popularity_bias, recall_at_k,
)
from service.recommend.ranking import PROFILE_WAYS, cold_rank_of, event_weights, profile_power_of
from service.recommend.recommender import Engine, for_user, gather, make_ask, rank, user_seeds
from service.settings import Settings
from service.store.events import EventColumns, History, read_events
from service.store.models import Item, User
from service.vectors.index_store import LoadedSpace

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
    """One setting under evaluation: source weights, popularity damping, history half-life, and
    whether short pages are filled from the recommender's fallbacks as the endpoint fills them."""

    weights: Mapping[str, float]
    damping: float = 0.0
    half_life_days: float = 30.0
    # True for what the endpoint serves (the configured and the tuned blend); the single-source
    # ablations (NAMED_BLENDS) say False to score one source alone.
    fallbacks: bool = True
    # Blend as the endpoint does with a trained model: ``weights`` are the engine's fitted ones,
    # and a learned ranker given to :meth:`Evaluator.run` replaces them (``for_user`` gets no weights).
    served: bool = False

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

    @classmethod
    def served_with(cls, weights: Mapping[str, float], s: Settings) -> "Blend":
        """What the endpoint serves with a trained model whose fitted weights are ``weights``."""
        return cls(dict(weights), s.co_engagement_popularity_damping, s.event_half_life_days, served=True)


@dataclass
class EventLog:
    """Every event (any type), in id order, and the rows the hold-out split is made on.

    ``positive`` indexes the first positive event (weight > 0) per (user, item): the split and
    the ground truth use those; behaviour and histories use every row.
    """

    users: np.ndarray  # user primary keys (or any hashable keys)
    items: np.ndarray  # item primary keys
    types: list[str]
    values: list[float | None]
    times: np.ndarray  # Unix seconds
    weights: np.ndarray
    positive: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    user_names: Mapping[Any, str] = field(default_factory=dict)  # user key -> external id
    # The search query each event carries (``POST /events`` ``query``), when read with them.
    queries: list[str | None] | None = None

    def __len__(self) -> int:
        return len(self.items)


def load_event_log(session: Session, settings: Settings, *, queries: bool = False) -> EventLog:
    """Every stored event by id (what the service's behaviour model reads), with user names
    (and with each event's search query when ``queries``)."""
    return event_log_of(session, read_events(session=session, queries=queries), settings)


def event_log_of(session: Session, ev: EventColumns, settings: Settings) -> EventLog:
    """:func:`load_event_log` of events already read (``read_events``): adds the user names."""
    names = dict(session.execute(select(User.id, User.external_id)).all())
    return make_event_log(ev.users, ev.items, ev.types, ev.values, ev.times, settings, user_names=names,
                          queries=ev.queries)


def make_event_log(users: Sequence, items: Sequence[int], types: Sequence[str], values: Sequence[float | None],
                   times: Sequence[float], settings: Settings, *, user_names: Mapping[Any, str] | None = None,
                   queries: Sequence[str | None] | None = None) -> EventLog:
    """An event log in the given order; ``positive`` marks the first positive event per (user, item)."""
    w = event_weights(types, values, settings.event_weights, settings.rating_neutral)
    users, items = np.asarray(users), np.asarray(items, dtype=np.int64)
    return EventLog(users, items, list(types), list(values), np.asarray(times, dtype=np.float64), w,
                    first_positive(users, items, w), dict(user_names or {}), None if queries is None else list(queries))


def first_positive(users: np.ndarray, items: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Rows (ascending) of the first event with weight > 0 of each (user, item) pair."""
    rows = np.flatnonzero(weights > 0)
    if not len(rows):
        return rows.astype(np.int64)
    _, u = np.unique(users[rows], return_inverse=True)
    _, i = np.unique(items[rows], return_inverse=True)
    key = u.astype(np.int64).ravel() * (int(i.max()) + 1) + i.astype(np.int64).ravel()
    _, first = np.unique(key, return_index=True)  # the first occurrence of each pair
    return np.sort(rows[first]).astype(np.int64)


@dataclass
class World:
    """What the endpoint would have seen in one phase: the remaining rows, the clock, per-user rows."""

    rows: np.ndarray  # indices into the log: every event but the evaluated users' held-out period
    now: float
    by_user: dict[Any, np.ndarray]  # evaluated user -> their remaining rows


class Evaluator:
    """Scores blend settings on one split of one event log, through :func:`for_user`.

    Args:
        log: every event (see :class:`EventLog`).
        split: the hold-out split of ``log.positive`` rows (indices into that array).
    """

    def __init__(self, log: EventLog, split: Split, space: LoadedSpace | None, settings: Settings,
                 session_factory: Callable[[], Session], *, k: int = 10):
        self.log, self.split, self.space, self.settings, self.k = log, split, space, settings, k
        self.session_factory = session_factory
        # How the engine scores content (``Engine.profile_power``): the training stage sets the way it chose.
        self.profile_power = 0
        # The cold place's bar (``Engine.cold_rank``): the training stage sets the one it chose.
        self.cold_rank: int | None = None
        self._snapshots: dict[tuple, Snapshot] = {}
        self._worlds: dict[str, World] = {}
        with session_factory() as session:
            self.catalog_ids = list(session.scalars(select(Item.id).where(Item.deleted_at.is_(None)).order_by(Item.id)))
            self.catalog = load_catalog(session)

    # --- the world the endpoint would have seen ---------------------------------------------
    def held_rows(self, phase: str) -> np.ndarray:
        """Held-out rows of ``phase`` (test; valid also holds the test rows out), as log indices."""
        held = self.split.test_idx if phase == "test" else np.concatenate([self.split.valid_idx, self.split.test_idx])
        return self.log.positive[np.asarray(held, dtype=np.int64)]

    def world(self, phase: str) -> World:
        """Every event but each evaluated user's events from their first held-out one on."""
        if phase not in self._worlds:
            log, held = self.log, self.held_rows(phase)
            cutoff: dict[Any, float] = {}
            for i in held.tolist():
                u = log.users[i].item() if hasattr(log.users[i], "item") else log.users[i]
                cutoff[u] = min(cutoff.get(u, np.inf), float(log.times[i]))
            users = log.users.tolist()
            keep = np.fromiter((log.times[i] < cutoff.get(u, np.inf) for i, u in enumerate(users)),
                               dtype=bool, count=len(users))
            rows = np.flatnonzero(keep)
            by_user: dict[Any, list[int]] = {u: [] for u in cutoff}
            for i in rows.tolist():
                if users[i] in by_user:
                    by_user[users[i]].append(i)
            # The clock comes from the training data only: the last event left in the world.
            now = float(log.times[rows].max()) if len(rows) else 0.0
            self._worlds[phase] = World(rows, now, {u: np.asarray(r, dtype=np.int64) for u, r in by_user.items()})
        return self._worlds[phase]

    def truth(self, phase: str) -> dict[Any, set[int]]:
        """Held-out items per evaluated user (the phase's own rows only)."""
        rows = self.log.positive[np.asarray(self.split.valid_idx if phase == "valid" else self.split.test_idx,
                                            dtype=np.int64)]
        out: dict[Any, set[int]] = {u: set() for u in self.world(phase).by_user}
        for i in rows.tolist():
            out.setdefault(self.log.users[i].item() if hasattr(self.log.users[i], "item") else self.log.users[i],
                           set()).add(int(self.log.items[i]))
        return out

    def snapshot(self, phase: str, damping: float) -> Snapshot:
        """Behaviour as the service builds it (every event, the service's weights) from the world."""
        key = (phase, damping)
        if key not in self._snapshots:
            rows, log = self.world(phase).rows, self.log
            self._snapshots[key] = Snapshot(log.users[rows], log.items[rows], log.weights[rows], log.times[rows],
                                            self.catalog, popularity_damping=damping,
                                            user_damping=self.settings.co_engagement_user_damping)
        return self._snapshots[key]

    def history(self, user, phase: str) -> tuple[History, frozenset[int]]:
        """The user's remaining events as the endpoint reads them (newest first, limited) and
        the items it would exclude (every remaining event of an ``exclude_seen_types`` type)."""
        log = self.log
        rows = sorted(self.world(phase).by_user[user].tolist(), key=lambda i: (log.times[i], i), reverse=True)
        consumed = frozenset(int(log.items[i]) for i in rows if log.types[i] in self.settings.exclude_seen_types)
        limit = self.settings.history_limit
        top = rows[:limit]
        h = History(user_id=user if isinstance(user, (int, np.integer)) else None,
                    item_ids=[int(log.items[i]) for i in top], types=[log.types[i] for i in top],
                    values=[log.values[i] for i in top],
                    times=[float(log.times[i]) for i in top],
                    complete=len(rows) < limit)
        return h, consumed

    def engine(self, phase: str, damping: float, model: CollabModel | None = None,
               blend: Mapping[str, float] | None = None, ranker: Ranker | None = None) -> Engine:
        """The endpoint's engine in ``phase``'s world (``model``: a collaborative model fitted on
        it; ``blend``, ``ranker``: what the training stage fitted to blend it)."""
        s = self.settings
        return Engine(self.space, None, self.snapshot(phase, damping), trending_window_days=s.trending_window_days,
                      trending_half_life_days=s.trending_half_life_days, candidates_per_source=s.candidates_per_source,
                      model=model, blend=blend, ranker=ranker, profile_power=self.profile_power,
                      profile_max_seeds=s.profile_max_seeds, cold_rank=self.cold_rank)

    def world_arrays(self, phase: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(users, items, weights, times) of every event in ``phase``'s world: what a model is fitted on."""
        rows, log = self.world(phase).rows, self.log
        return log.users[rows], log.items[rows], log.weights[rows], log.times[rows]

    def recommend_for(self, user, blend: "Blend", phase: str, *, session: Session, engine: Engine | None = None) -> list[int]:
        """The endpoint's list for ``user`` (item primary keys), through :func:`for_user`."""
        history, consumed = self.history(user, phase)
        answer = for_user(engine or self.engine(phase, blend.damping), session=session, settings=self.settings,
                          user_id=self.log.user_names.get(user, str(user)), now=self.world(phase).now, k=self.k,
                          history=history, consumed=consumed, weights=None if blend.served else blend.weights,
                          half_life_days=blend.half_life_days, fallbacks=blend.fallbacks)
        return [r.item.id for r in answer.recs]

    # --- scoring ----------------------------------------------------------------------------
    def run(self, blend: "Blend", *, phase: str = "test", progress: bool = False,
            model: CollabModel | None = None, ranker: Ranker | None = None,
            lists: dict[Any, list[int]] | None = None) -> dict[str, float]:
        """Metrics of one blend setting, calling :func:`for_user` per evaluated user (``lists``,
        when given, receives each user's list: paired comparisons need them)."""
        engine = (self.engine(phase, blend.damping, model, blend.weights, ranker) if blend.served
                  else self.engine(phase, blend.damping, model))
        with self.session_factory() as session:
            return self._score(lambda user: self.recommend_for(user, blend, phase, session=session, engine=engine),
                               phase, progress, {} if lists is None else lists)

    def per_user_ndcg(self, lists: Mapping[Any, Sequence[int]], phase: str = "test") -> np.ndarray:
        """NDCG@k of each evaluated user's list (in :meth:`truth` order; NaN where nothing is held out)."""
        truth = self.truth(phase)
        return ndcg_per_user([list(lists.get(u, []))[: self.k] for u in truth], [truth[u] for u in truth], self.k)

    def _score(self, recommend_fn, phase: str, progress: bool, lists: dict[Any, list[int]]) -> dict[str, float]:
        """Recall and NDCG (service.recommend.evaluation), coverage of the live catalog, popularity bias."""
        truth = self.truth(phase)
        users = list(truth)

        def remember(user):
            lists[user] = list(recommend_fn(user))[: self.k]
            return lists[user]

        out = evaluate(remember, users, self.k, relevant=truth, progress=progress)
        # Dense item indices over the live catalog, so never-touched items count in percentiles.
        dense = {pk: i for i, pk in enumerate(self.catalog_ids)}
        world = self.world(phase).rows
        fit = self.log.items[world[self.log.weights[world] > 0]]
        popularity = np.bincount([dense[i] for i in fit.tolist() if i in dense], minlength=len(dense))
        recs = [[dense[i] for i in lists[u] if i in dense] for u in users]
        out["coverage"] = catalog_coverage(recs, len(dense)) if dense else 0.0
        out.update(popularity_bias(recs, popularity))
        return out

    def rank_grid(self, settings_list: Sequence[Mapping[str, float]], *, phase: str = "valid", half_life_days: float,
                  damping: float = 0.0, model: CollabModel | None = None,
                  progress: Callable[[Iterable], Iterable] | None = None) -> list[dict[str, float]]:
        """NDCG and recall of each blend-weight setting on ``phase``, in the given order.

        Candidates are gathered once per user with every source the settings use, then ranked
        per setting: the two steps ``for_user``'s ``recommend`` is made of, with the same
        seeds, exclusions and clock.
        """
        truth = self.truth(phase)
        users = list(truth)
        now = self.world(phase).now
        engine = self.engine(phase, damping, model)
        every = {name: 1.0 for weights in settings_list for name, w in weights.items() if w > 0}
        per_setting: list[list[list[int]]] = [[] for _ in settings_list]
        with self.session_factory() as session:
            for user in (progress(users) if progress else users):
                history, consumed = self.history(user, phase)
                seeds = user_seeds(history, self.settings, now=now, half_life_days=half_life_days)
                ask = make_ask(self.settings, k=self.k, now=now, exclude=consumed, weights=every)
                sources = gather(engine, seeds, ask)
                for j, weights in enumerate(settings_list):
                    ask.weights = dict(weights)
                    per_setting[j].append([r.item.id for r in rank(engine, seeds, ask, sources, session=session)])
        relevant = [truth[u] for u in users]
        return [{"ndcg": ndcg_at_k(recs, relevant, self.k), "recall": recall_at_k(recs, relevant, self.k)}
                for recs in per_setting]

    def tune(self, grid: Mapping[str, Iterable[float]] = TUNE_GRID, *, phase: str = "valid",
             progress: Callable[[Iterable], Iterable] | None = None) -> list[dict[str, Any]]:
        """NDCG of every grid point on ``phase`` (best first). Candidates are gathered once per
        user and damping with every source on, then ranked per weight setting (the two steps
        ``for_user``'s ``recommend`` is made of, with the same seeds, exclusions and clock)."""
        results = []
        combos = [{"profile": p, "co_engagement": 1.0, "trending": t}
                  for p, t in itertools.product(grid["profile"], grid["trending"])]
        for damping, half_life in itertools.product(grid["damping"], grid["half_life_days"]):
            scores = self.rank_grid(combos, phase=phase, half_life_days=half_life, damping=damping, progress=progress)
            for weights, metrics in zip(combos, scores):
                results.append({**weights, "damping": damping, "half_life_days": half_life, **metrics})
        results.sort(key=lambda r: -r["ndcg"])
        return results


def split_log(log: EventLog, *, n_test: int, n_valid: int, min_train: int = 1) -> Split:
    """The per-user temporal hold-out split of the log's positive rows (ties broken by row order)."""
    pos = log.positive
    return holdout_split(log.users[pos], log.items[pos], log.times[pos], n_test=n_test, n_valid=n_valid,
                         min_train=min_train)


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
    loaded = load_version(settings.index_path, version) if version else None
    space = loaded.spaces.get("text") if loaded else None
    echo(f"{len(log)} events ({len(log.positive)} positive interactions), {len(split.users)} users evaluated "
         f"(last {n_test} held out, {n_valid} before them for validation); "
         f"content from index {version or 'none (no index published: content source off)'}")
    ev = Evaluator(log, split, space, settings, session_factory, k=k)
    # Content scored as the published version serves it (the training stage's choice, else the mean).
    ev.profile_power = profile_power_of(loaded.manifest.get("behaviour") if loaded else None, "text")
    ev.cold_rank = cold_rank_of(loaded.manifest.get("behaviour") if loaded else None)
    scoring = next(way for way, power in PROFILE_WAYS.items() if power == ev.profile_power)
    report: dict[str, Any] = {"split": {"n_test": n_test, "n_valid": n_valid, "users": len(split.users),
                                        "events": len(log), "interactions": len(log.positive)}, "index_version": version, "k": k,
                              "content_scoring": scoring, "results": {}}
    configured = Blend.configured(settings)
    blends: list[tuple[str, Blend]] = [(f"configured ({configured.describe()})", configured)]
    blends += [(name, Blend(w, 0.0, settings.event_half_life_days, fallbacks=False)) for name, w in NAMED_BLENDS.items()]
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
    models: dict[str, CollabModel] = {}
    section = (loaded.manifest.get("behaviour") or {}) if loaded else {}
    if section.get("status") == "trained":
        # The published model saw the held-out events: its recipe is refit on this split's world.
        data = collab.model_input(*ev.world_arrays("test"), section["params"],
                                  half_life_days=settings.event_half_life_days)
        name = f"published model, refit ({section['family']} {json.dumps(section['params'])})"
        models[name] = collab.fit(section["family"], data, **section["params"])
        blends.insert(0, (name, Blend(dict(section["blend"]), settings.co_engagement_popularity_damping,
                                      settings.event_half_life_days)))
    rows = []
    for name, blend in blends:
        metrics = ev.run(blend, phase="test", progress=True, model=models.get(name))
        report["results"][name] = {**blend.settings(), **metrics}
        rows.append((name, metrics))
    echo(format_table(rows, k))
    return report


def sample_split(log: EventLog, split: Split, max_users: int, *, seed: int = 0) -> Split:
    """The split restricted to at most ``max_users`` evaluated users (a seeded sample; all when fewer)."""
    if len(split.users) <= max_users:
        return split
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(split.users), size=max_users, replace=False))
    keep_users = set(split.users[chosen].tolist())
    owners = log.users[log.positive]

    def keep(idx: np.ndarray) -> np.ndarray:
        return idx[np.fromiter((owners[i].item() in keep_users for i in idx.tolist()), dtype=bool, count=len(idx))]

    valid, test = keep(split.valid_idx), keep(split.test_idx)
    held = set(valid.tolist()) | set(test.tolist())
    train = np.asarray(sorted(set(range(len(owners))) - held), dtype=np.int64)
    return Split(train, valid, test, split.users[chosen],
                 {u: t for u, t in split.valid_truth.items() if u in keep_users},
                 {u: t for u, t in split.test_truth.items() if u in keep_users},
                 split.n_test, split.n_valid, split.min_train)
