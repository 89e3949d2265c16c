"""Training pairs for fine-tuning the text encoder, from behaviour (issue 13, step 1).

Two kinds, both from positive behaviour only (event weight > 0 under the service's own event
weights, so low ratings never pair):

- **item → item**: two different items the same user engaged with positively within
  ``window_seconds`` of each other (co-engagement, the signal the encoder should learn: "people
  who engage with this also engage with that");
- **query → item**: a positive event that carries the search query that led to it (a click on a
  search result; ``POST /events`` ``query``).

Held-out events must never leak into training: ``keep`` masks the events a caller may use (the
evaluation's world), and pairs are only made from kept events. Each pair's weight is the smaller
of its two events' weights (item pairs) or the event's weight (query pairs), summed over repeats.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from service.recommend.offline_eval import EventLog


@dataclass(frozen=True)
class Pairs:
    """Anchor → positive pairs with weights: item ids (item pairs) or query texts (query pairs)."""

    item_pairs: dict[tuple[int, int], float]
    query_pairs: dict[tuple[str, int], float]


@dataclass(frozen=True)
class EventRows:
    """Events in id order, as the pair builder reads them."""

    users: np.ndarray
    items: np.ndarray
    weights: np.ndarray
    times: np.ndarray
    queries: list[str | None]

    @classmethod
    def from_log(cls, log: EventLog) -> "EventRows":
        """The rows of an event log read with its queries (``load_event_log(..., queries=True)``)."""
        if log.queries is None:
            raise ValueError("the event log was read without its queries")
        return cls(log.users, log.items, log.weights, log.times, list(log.queries))


def build_pairs(events: EventRows, *, window_seconds: float, keep: Sequence[bool] | np.ndarray | None = None,
                max_pairs_per_user: int = 1000) -> Pairs:
    """Item and query pairs from the kept, positive events (see the module docstring).

    Args:
        window_seconds: how close in time two engagements must be to pair their items.
        keep: which events may be used (None: all); held-out events must be False here.
        max_pairs_per_user: item pairs taken from one user at most (the nearest in time first),
            so one heavy user cannot dominate the training set.
    """
    n = len(events.items)
    mask = np.ones(n, dtype=bool) if keep is None else np.asarray(keep, dtype=bool)
    if len(mask) != n:
        raise ValueError(f"keep has {len(mask)} entries for {n} events")
    use = np.flatnonzero(mask & (events.weights > 0))
    item_pairs: dict[tuple[int, int], float] = {}
    query_pairs: dict[tuple[str, int], float] = {}
    for i in use.tolist():
        query = events.queries[i]
        if query and query.strip():
            key = (query.strip(), int(events.items[i]))
            query_pairs[key] = query_pairs.get(key, 0.0) + float(events.weights[i])
    # Per user, positive events in time order; pair each with the later ones inside the window.
    order = use[np.lexsort((events.times[use], events.users[use]))]
    users = events.users[order]
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]]) if len(order) else np.zeros(0, np.int64)
    for start, end in zip(starts.tolist(), np.r_[starts[1:], len(order)].tolist()):
        rows = order[start:end]
        times, items, weights = events.times[rows], events.items[rows], events.weights[rows]
        candidates = []
        for a in range(len(rows)):
            b = a + 1
            while b < len(rows) and times[b] - times[a] <= window_seconds:
                if items[a] != items[b]:
                    candidates.append((times[b] - times[a], a, b))
                b += 1
        candidates.sort()
        for _gap, a, b in candidates[:max_pairs_per_user]:
            key = (int(min(items[a], items[b])), int(max(items[a], items[b])))
            item_pairs[key] = item_pairs.get(key, 0.0) + float(min(weights[a], weights[b]))
    return Pairs(item_pairs, query_pairs)
