"""Cold items in the offline evaluation: items held out of all training, ranked over the catalog.

A seeded share of the items with enough positive interactions is made **cold**: no event of
theirs reaches the training world (behaviour snapshot, models, fine-tuning pairs, histories),
while they stay in the catalog and the vector spaces (their content is known). The ``"cold"``
phase of :class:`ColdEvaluator` then asks :func:`~service.recommend.recommender.for_user` (through
:class:`~service.recommend.offline_eval.Evaluator`) for every user with a positive interaction on
a cold item, in the whole training world, and scores those cold items as the truth.

Used by the fine-tuning gate (:mod:`indexer.finetune_eval`) and ``benchmarks/bench_cold_items``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from service.recommend.offline_eval import EventLog, Evaluator, World, make_event_log
from service.settings import Settings

COLD = "cold"


class ColdEvaluator(Evaluator):
    """The training world's :class:`Evaluator` with one more phase, ``"cold"``: every
    training-world event stays in the world (nobody's events are held out, the clock is the last
    training-world event) and the truth is each user's positive cold items, which the world
    never saw. ``valid``/``test`` are the usual warm phases of the training-world split."""

    def __init__(self, *args, cold_truth: dict[Any, set[int]], **kwargs):
        super().__init__(*args, **kwargs)
        self.cold_truth = cold_truth

    def world(self, phase: str) -> World:
        if phase != COLD:
            return super().world(phase)
        if COLD not in self._worlds:
            log = self.log
            rows = np.arange(len(log), dtype=np.int64)
            users = log.users.tolist()
            by_user: dict[Any, list[int]] = {u: [] for u in self.cold_truth}
            for i, u in enumerate(users):
                if u in by_user:
                    by_user[u].append(i)
            now = float(log.times.max()) if len(log) else 0.0
            self._worlds[COLD] = World(rows, now, {u: np.asarray(r, dtype=np.int64) for u, r in by_user.items()})
        return self._worlds[COLD]

    def truth(self, phase: str) -> dict[Any, set[int]]:
        if phase != COLD:
            return super().truth(phase)
        return {u: set(items) for u, items in self.cold_truth.items()}


def pick_cold_items(log: EventLog, *, fraction: float, min_positives: int, seed: int) -> tuple[np.ndarray, int]:
    """(sorted cold item keys, how many items were eligible): a seeded ``fraction`` of the items
    with at least ``min_positives`` positive interactions (``log.positive``: first per user and item)."""
    items, counts = np.unique(log.items[log.positive], return_counts=True)
    eligible = items[counts >= min_positives]
    n = int(round(fraction * len(eligible)))
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(eligible, size=n, replace=False)), len(eligible)


def subset_log(log: EventLog, keep: np.ndarray, settings: Settings) -> EventLog:
    """The events at ``keep`` (in order) as a fresh log (``positive`` recomputed on them)."""
    idx = np.flatnonzero(keep)
    queries = None if log.queries is None else [log.queries[i] for i in idx.tolist()]
    return make_event_log(log.users[idx].tolist(), log.items[idx].tolist(), [log.types[i] for i in idx.tolist()],
                          [log.values[i] for i in idx.tolist()], log.times[idx].tolist(), settings,
                          user_names=log.user_names, queries=queries)


@dataclass(frozen=True)
class ColdSplit:
    """Cold items, the training world without them, and each user's positive cold items."""

    cold_items: np.ndarray
    eligible: int
    on_cold: np.ndarray  # per event of the full log: on a cold item
    world: EventLog  # every event not on a cold item
    world_rows: np.ndarray  # where each ``world`` event sits in the full log
    truth: dict[Any, set[int]]  # user -> positive cold items (users with a training-world event only)


def cold_split(log: EventLog, settings: Settings, *, fraction: float, min_positives: int, seed: int) -> ColdSplit:
    """Pick the cold items and cut the log into the training world and the cold truth."""
    cold_items, eligible = pick_cold_items(log, fraction=fraction, min_positives=min_positives, seed=seed)
    on_cold = np.isin(log.items, cold_items)
    truth: dict[Any, set[int]] = {}
    for i in log.positive[on_cold[log.positive]].tolist():
        user = log.users[i].item() if hasattr(log.users[i], "item") else log.users[i]
        truth.setdefault(user, set()).add(int(log.items[i]))
    world = subset_log(log, ~on_cold, settings)
    # A user whose only events are on cold items would be a cold-start user: not this metric.
    world_users = set(np.unique(world.users).tolist()) if len(world) else set()
    truth = {u: t for u, t in truth.items() if u in world_users}
    return ColdSplit(cold_items, eligible, on_cold, world, np.flatnonzero(~on_cold), truth)


__all__ = ["COLD", "ColdEvaluator", "ColdSplit", "cold_split", "pick_cold_items", "subset_log"]
