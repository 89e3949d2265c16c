"""What everyone did, in memory: co-engagement neighbours and trending items.

Each worker holds a :class:`BehaviourModel`. A background thread pulls events newer than the
last one seen (``events.id`` is the watermark) and the catalog's kind/category columns, and
publishes a new immutable :class:`Snapshot` by swapping one reference, as the index store does,
so requests never wait for a refresh. A user's *own* history is read from SQL on every request
(see ``service.store.events.user_history``): a new event changes that user's next recommendation at
once; other users' events reach co-engagement and trending within ``behaviour_refresh_seconds``.

Memory: about 24 bytes per stored event plus two sparse matrices of 12 bytes per distinct
(user, item) pair, per worker (1M events: roughly 50 MB). A worker keeps only the newest
``max_events`` events (``behaviour_max_events``): start-up reads that many (from the served
version's event window when it has one, see ``event_window``, then only newer ones from SQL), and
older ones are dropped as new ones arrive, so start-up time and memory do not grow with the whole
event log. What is older lives in the trained model of the published version
(``service.recommend.collab``), fitted by the rebuild on every event; co-engagement, trending and
the "popular" fallback are computed over the kept window.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import scipy.sparse as sp
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.background import lower_this_thread
from service.settings import Settings
from service.store.events import EventColumns, read_events
from service.store.models import Item
from service.recommend.event_window import Window
from service.recommend.ranking import SECONDS_PER_DAY, decay, event_weights, rows_in, top_n

log = logging.getLogger("recsys.behaviour")

# Events re-read below the watermark on each pull: on PostgreSQL an id can commit after a
# larger one was already read (concurrent transactions); seen ids are skipped.
ID_OVERLAP = 2000
# Event times later than this past the moment they are read are clamped (legacy rows only: the
# API refuses them beyond max_future_skew_seconds).
FUTURE_SLACK_SECONDS = 300.0
# Minimum time between snapshot rebuilds, in multiples of the last rebuild's duration.
REBUILD_SPACING = 10.0
# Seconds a trending ranking stays valid (see Snapshot.trending).
TRENDING_TTL = 60.0


@dataclass(frozen=True)
class Catalog:
    """Kind and category of each known item, for filtering trending and co-engagement."""

    kinds: Mapping[int, str] = field(default_factory=dict)
    categories: Mapping[int, str | None] = field(default_factory=dict)
    deleted: frozenset[int] = frozenset()

    def allows(self, item_id: int, kinds: Sequence[str] = (), category: str | None = None) -> bool:
        """False when the item is known to fail; items newer than the snapshot pass (SQL decides)."""
        if item_id in self.deleted:
            return False
        if item_id not in self.kinds:
            return True
        if kinds and self.kinds[item_id] not in kinds:
            return False
        return not category or self.categories.get(item_id) == category


def load_catalog(session: Session) -> Catalog:
    """Kind, category and deletion of every item, as the behaviour model keeps them."""
    kinds, categories, deleted = {}, {}, set()
    for item_id, kind, category, deleted_at in session.execute(
            select(Item.id, Item.kind, Item.category, Item.deleted_at)):
        kinds[item_id], categories[item_id] = kind, category
        if deleted_at is not None:
            deleted.add(item_id)
    return Catalog(kinds, categories, frozenset(deleted))


class Snapshot:
    """Immutable behaviour statistics built from arrays of events.

    Args:
        users, items: per event, any hashable user key and the item's primary key.
        weights: per event weight (see :func:`service.recommend.ranking.event_weights`); events with
            weight <= 0 (disliked) are kept out of co-engagement and trending.
        times: per event, Unix seconds.
        popularity_damping: co-engagement scores are divided by ``popularity ** damping``.
        user_damping: each user's engagements are divided by ``(items they touched) ** this``
            before the cosine (inverse user frequency: someone who rated everything says little
            about any two items being alike).
    """

    def __init__(self, users: np.ndarray, items: np.ndarray, weights: np.ndarray, times: np.ndarray,
                 catalog: Catalog | None = None, popularity_damping: float = 0.0, user_damping: float = 0.0):
        keep = np.asarray(weights) > 0
        self.catalog = catalog or Catalog()
        self.event_count = int(len(items))
        # Every item with an event, disliked ones included: the matrices keep positive events only,
        # and an item everyone who tried rated low is known, not new (``touched``). One sort of all
        # the events gives both: the liked items are those of the touched ones a kept event names.
        self.touched_ids, code = np.unique(np.asarray(items, dtype=np.int64), return_inverse=True)
        code = code.ravel()[keep]
        liked = np.bincount(code, minlength=len(self.touched_ids)) > 0
        self.item_ids = self.touched_ids[liked]
        item_idx = (np.cumsum(liked) - 1)[code]
        _, user_idx = np.unique(np.asarray(users)[keep], return_inverse=True)
        w = np.asarray(weights, dtype=np.float64)[keep]
        self.times = np.asarray(times, dtype=np.float64)[keep]
        self.event_items = item_idx.astype(np.int32)
        self.event_weights = w.astype(np.float32)
        n_items, n_users = len(self.item_ids), int(user_idx.max()) + 1 if len(user_idx) else 0
        # Repeated events of one user on one item add up, then log1p keeps a hundred views from
        # outweighing a handful of purchases by other people.
        counts = sp.csr_matrix((w, (item_idx, user_idx)), shape=(n_items, n_users))
        counts.sum_duplicates()
        counts.data = np.log1p(counts.data)
        if user_damping and n_users:
            per_user = np.maximum(np.bincount(counts.indices, minlength=n_users), 1)
            counts = sp.csr_matrix(counts @ sp.diags(np.power(per_user, -user_damping)))
        norms = np.sqrt(np.asarray(counts.multiply(counts).sum(axis=1)).ravel())
        self.popularity = np.asarray((counts > 0).sum(axis=1)).ravel().astype(np.float64)
        inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
        self.iu = sp.csr_matrix(sp.diags(inv) @ counts, dtype=np.float32)  # items x users, rows unit length
        self.ui = self.iu.T.tocsr()  # users x items
        self.damping = np.power(np.maximum(self.popularity, 1.0), -popularity_damping) if popularity_damping else None
        self.latest = float(self.times.max()) if len(self.times) else 0.0
        self._trending_cache: dict[tuple, tuple[float, np.ndarray, np.ndarray]] = {}

    # --- lookups ----------------------------------------------------------------------------
    def rows_of(self, item_ids: Iterable[int]) -> np.ndarray:
        """Row of each item id in the matrices (-1 when the item has no positive event)."""
        return rows_in(self.item_ids, item_ids)

    def touched(self, item_ids: Iterable[int]) -> np.ndarray:
        """True for each item with any event in the snapshot, liked or not."""
        return rows_in(self.touched_ids, item_ids) >= 0

    # --- co-engagement ------------------------------------------------------------------------
    def co_engaged(self, seeds: Mapping[int, float], n: int, exclude: Iterable[int] = ()) -> dict[int, float]:
        """Items engaged with by the people who engaged with the seeds (item-item cosine).

        ``score(y) = sum_x seed_weight(x) * cos(x, y)`` over the users-per-item vectors; only
        the users who touched a seed are visited. Seeds are candidates too (a seed is its own
        best neighbour): exclude them when they must not come back. Returns the best ``n``.
        """
        pos = {i: w for i, w in seeds.items() if w > 0}
        rows = self.rows_of(pos)
        known = rows >= 0
        if not known.any():
            return {}
        weights = np.fromiter(pos.values(), dtype=np.float32, count=len(pos))[known]
        user_weight = self.iu[rows[known]].T @ weights  # dense, one entry per user
        users = np.flatnonzero(user_weight)
        if len(users) * 4 > len(user_weight):
            # Most users are involved (long histories, popular seeds): one pass over every
            # engagement beats copying the rows of most users first.
            scores = np.asarray(self.iu @ user_weight).ravel()
        else:
            scores = np.asarray(self.ui[users].T @ user_weight[users]).ravel()
        if self.damping is not None:
            scores = scores * self.damping
        blocked = self.rows_of(set(exclude))
        scores[blocked[blocked >= 0]] = 0.0
        best = top_n(scores, n)
        best = best[scores[best] > 0]
        return dict(zip(self.item_ids[best].tolist(), scores[best].astype(float).tolist()))

    def best_seed(self, seeds: Mapping[int, float], item_ids: Sequence[int]) -> dict[int, int]:
        """For each item, the seed that contributed most to its co-engagement score."""
        seed_ids = [i for i, w in seeds.items() if w > 0]
        srows, irows = self.rows_of(seed_ids), self.rows_of(item_ids)
        ok_s, ok_i = srows >= 0, irows >= 0
        if not ok_s.any() or not ok_i.any():
            return {}
        sims = (self.iu[srows[ok_s]] @ self.iu[irows[ok_i]].T).toarray()
        sims *= np.array([seeds[s] for s, ok in zip(seed_ids, ok_s) if ok])[:, None]
        s_ids = np.asarray(seed_ids)[ok_s]
        out = {}
        for col, item in enumerate(np.asarray(item_ids)[ok_i].tolist()):
            if sims[:, col].max() > 0:
                out[item] = int(s_ids[int(np.argmax(sims[:, col]))])
        return out

    # --- trending -------------------------------------------------------------------------------
    def trending_computed_at(self, window_days: float, half_life_days: float) -> float | None:
        """When the cached ranking for (window, half-life) was computed (None: not cached)."""
        cached = self._trending_cache.get((window_days, half_life_days))
        return None if cached is None else cached[0]

    def rank_trending(self, now: float, window_days: float, half_life_days: float) -> tuple[float, np.ndarray, np.ndarray]:
        """Score every item and cache the order: (computed at, rows best first, scores)."""
        mask = self.times >= now - window_days * SECONDS_PER_DAY
        w = self.event_weights[mask] * decay(now - self.times[mask], half_life_days)
        scores = np.bincount(self.event_items[mask], weights=w, minlength=len(self.item_ids))
        ranked = (now, top_n(scores, int(np.count_nonzero(scores))), scores)
        self._trending_cache[(window_days, half_life_days)] = ranked  # one dict store: atomic for readers
        return ranked

    def trending(self, *, now: float, window_days: float, half_life_days: float, n: int,
                 kinds: Sequence[str] = (), category: str | None = None, exclude: Iterable[int] = ()) -> dict[int, float]:
        """Decayed event weight per item over the last ``window_days`` (best ``n``).

        The unfiltered ranking is cached per (window, half-life) for ``TRENDING_TTL`` seconds
        (the refresh thread renews the default one before it expires, so requests rarely pay
        for it): decay scales every item alike as time passes, only the window edge moves, and a
        new snapshot starts a new cache when events arrive. Filters apply to the cached order.
        """
        key = (window_days, half_life_days)
        cached = self._trending_cache.get(key)
        if cached is None or abs(cached[0] - now) > TRENDING_TTL:
            cached = self.rank_trending(now, window_days, half_life_days)
        _, order, scores = cached
        blocked = set(exclude)
        out: dict[int, float] = {}
        for row in order:
            item = int(self.item_ids[row])
            if item in blocked or not self.catalog.allows(item, kinds, category):
                continue
            out[item] = float(scores[row])
            if len(out) >= n:
                break
        return out


EMPTY = Snapshot(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), np.zeros(0))


class BehaviourModel:
    """A worker's snapshot of all events, refreshed from SQL on a background thread.

    ``window_source(session)``: the served version's event window (:mod:`event_window`), or None;
    when it holds the newest ``max_events`` events, the first load takes them from it and reads
    only newer ones from SQL. ``niceness``: added to the refresh thread's nice value (see
    :mod:`service.background`), so rebuilds yield the CPU to requests.
    """

    def __init__(self, *, event_weights: Mapping[str, float], rating_neutral: float,
                 popularity_damping: float = 0.0, user_damping: float = 0.0, refresh_seconds: float = 2.0,
                 trending_window_days: float = 7.0, trending_half_life_days: float = 3.0,
                 max_events: int = 1_000_000, window_source: Callable[[Session], Window | None] | None = None,
                 niceness: int = 0):
        self.weights = dict(event_weights)
        self.rating_neutral = rating_neutral
        self.popularity_damping = popularity_damping
        self.user_damping = user_damping
        self.trending_default = (trending_window_days, trending_half_life_days)
        self.refresh_seconds = refresh_seconds
        self.max_events = max_events
        self.niceness = niceness
        self._floor_id = 0  # ids at or below it were left out of the first load on purpose
        self._window_source = window_source
        self._first_load_done = False
        self.snapshot: Snapshot = EMPTY
        self._users: list[np.ndarray] = []
        self._items: list[np.ndarray] = []
        self._weights: list[np.ndarray] = []
        self._times: list[np.ndarray] = []
        self._watermark = 0
        self._recent_ids: set[int] = set()
        self._kinds: dict[int, str] = {}
        self._categories: dict[int, str | None] = {}
        self._deleted: set[int] = set()
        self._items_seen = dt.datetime.min
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._thread_pid: int | None = None
        self._stop = threading.Event()
        self._dirty = False
        self._built_at = 0.0
        self._build_seconds = 0.0
        self.last_refresh = 0.0

    @classmethod
    def from_settings(cls, settings: Settings, **overrides) -> "BehaviourModel":
        """The model as the service configures it (``overrides`` replace single arguments)."""
        args = dict(event_weights=settings.event_weights, rating_neutral=settings.rating_neutral,
                    popularity_damping=settings.co_engagement_popularity_damping,
                    user_damping=settings.co_engagement_user_damping,
                    trending_window_days=settings.trending_window_days,
                    trending_half_life_days=settings.trending_half_life_days,
                    refresh_seconds=settings.behaviour_refresh_seconds, max_events=settings.behaviour_max_events,
                    niceness=settings.background_niceness)
        return cls(**{**args, **overrides})

    def refresh(self, session: Session, *, force: bool = False) -> bool:
        """Pull new events and catalog changes; rebuild the snapshot if anything changed.

        Rebuilds are spaced by their cost (see ``REBUILD_SPACING``) unless ``force``.
        """
        with self._lock:
            changed = self._pull_events(session) | self._pull_items(session)
            self._dirty |= changed
            # Rebuilding costs about 1.7 s per million events: wait at least ten build times
            # between rebuilds, so a busy event stream takes at most a tenth of a core.
            due = time.monotonic() - self._built_at >= REBUILD_SPACING * self._build_seconds
            if (self._dirty and (due or force)) or self.snapshot is EMPTY:
                started = time.perf_counter()
                cat = lambda parts, dtype: np.concatenate(parts) if parts else np.zeros(0, dtype)  # noqa: E731
                self.snapshot = Snapshot(cat(self._users, np.int64), cat(self._items, np.int64),
                                         cat(self._weights, np.float64), cat(self._times, np.float64),
                                         Catalog(dict(self._kinds), dict(self._categories), frozenset(self._deleted)),
                                         self.popularity_damping, self.user_damping)
                self._build_seconds = time.perf_counter() - started
                self._built_at, self._dirty = time.monotonic(), False
                log.debug("behaviour snapshot rebuilt: %d events in %.3f s", self.snapshot.event_count,
                          self._build_seconds)
            self.last_refresh = time.monotonic()
        self._warm_trending()
        return changed

    def _warm_trending(self) -> None:
        """Renew the default trending ranking here (a background thread) before it goes stale."""
        snap, (window, half_life) = self.snapshot, self.trending_default
        computed, now = snap.trending_computed_at(window, half_life), time.time()
        if computed is None or now - computed > TRENDING_TTL / 2:
            snap.rank_trending(now, window, half_life)

    def _pull_events(self, session: Session) -> bool:
        if self._watermark == 0 and not self._first_load_done:
            self._first_load_done = True
            window = self._usable_window(session)
            if window is not None:
                # The published version's newest events, then SQL only above them (see event_window).
                loaded = self._take(window, first=True)
                newer = read_events(session=session, after_id=max(self._watermark - ID_OVERLAP, self._floor_id),
                                    newest=self.max_events)
                return self._take(newer, first=True) | loaded
        if self._watermark == 0:
            # First load: the newest max_events only (read newest first, kept in id order); what
            # lies below them is never read later either.
            return self._take(read_events(session=session, newest=self.max_events), first=True)
        return self._take(read_events(session=session, after_id=max(self._watermark - ID_OVERLAP, self._floor_id)))

    def _usable_window(self, session: Session) -> EventColumns | None:
        """The newest ``max_events`` of the served version's event window, when it holds them."""
        window = self._window_source(session) if self._window_source is not None else None
        if window is None:
            return None
        ev = window.events
        if len(ev) < self.max_events and not window.complete:
            log.info("behaviour: the version's event window holds %d events, fewer than behaviour_max_events "
                     "(%d): reading them from SQL", len(ev), self.max_events)
            return None
        return ev.tail(self.max_events)

    def _take(self, ev: EventColumns, *, first: bool = False) -> bool:
        """Add pulled events (skipping ids already held); ``first``: a first load of the newest
        ``max_events``, below which nothing is read later."""
        if first and len(ev) >= self.max_events:
            self._floor_id = int(ev.ids[0]) - 1
        keep = ~np.isin(ev.ids, np.fromiter(self._recent_ids, dtype=np.int64, count=len(self._recent_ids)))
        if not keep.any():
            return False
        rows = np.flatnonzero(keep)
        ids = ev.ids[rows]
        self._users.append(ev.users[rows])
        self._items.append(ev.items[rows])
        types, values = ((ev.types, ev.values) if len(rows) == len(ev)
                         else ([ev.types[i] for i in rows], [ev.values[i] for i in rows]))
        self._weights.append(event_weights(types, values, self.weights, self.rating_neutral))
        # A time far in the future (stored before timestamps were bounded) would count as "now"
        # for years: such events count from the moment they are read instead.
        self._times.append(np.minimum(ev.times[rows], time.time() + FUTURE_SLACK_SECONDS))
        self._watermark = max(self._watermark, int(ids.max()))
        self._recent_ids = {i for i in self._recent_ids if i > self._watermark - ID_OVERLAP}
        self._recent_ids.update(ids[ids > self._watermark - ID_OVERLAP].tolist())
        self._trim()
        return True

    @property
    def event_count(self) -> int:
        """Events held now (at most ``max_events`` after each pull)."""
        return sum(len(part) for part in self._items)

    def _trim(self) -> None:
        """Drop the oldest events beyond ``max_events`` (merging the pulled chunks first)."""
        excess = self.event_count - self.max_events
        if excess <= 0:
            return
        for name in ("_users", "_items", "_weights", "_times"):
            parts = getattr(self, name)
            setattr(self, name, [np.concatenate(parts)[excess:]])

    def _pull_items(self, session: Session) -> bool:
        # The newest change time first: an item changed between the two reads is read again next time.
        seen = session.scalar(select(func.max(Item.updated_at)))
        rows = session.execute(
            select(Item.id, Item.kind, Item.category, Item.deleted_at.is_not(None))
            .where(Item.updated_at >= self._items_seen)
        ).all()
        self._items_seen = max(self._items_seen, seen or self._items_seen)
        if not self._kinds:
            # First load (a whole catalog): dicts at once, not a comparison per item.
            self._kinds = {i: k for i, k, _c, _d in rows}
            self._categories = {i: c for i, _k, c, _d in rows}
            self._deleted = {i for i, _k, _c, d in rows if d}
            return bool(rows)
        changed = False
        for item_id, kind, category, deleted in rows:
            old = (self._kinds.get(item_id), self._categories.get(item_id), item_id in self._deleted)
            new = (kind, category, bool(deleted))
            if old != new:
                changed = True
                self._kinds[item_id], self._categories[item_id] = kind, category
                (self._deleted.add if deleted else self._deleted.discard)(item_id)
        return changed

    def ensure_refreshing(self, session_factory) -> None:
        """Load once now (first call in this process), then refresh on a daemon thread."""
        if self._thread is not None and self._thread_pid == os.getpid() and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is not None and self._thread_pid == os.getpid() and self._thread.is_alive():
                return
            self._thread_pid = os.getpid()
            self._thread = threading.Thread(target=self._loop, args=(session_factory,), name="behaviour-refresh", daemon=True)
        if self.snapshot is EMPTY:
            with session_factory() as session:
                self.refresh(session)
        self._thread.start()

    def stop(self) -> None:
        """End the refresh thread (tests, shutdown); the last snapshot stays readable."""
        self._stop.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout=10)

    def _loop(self, session_factory) -> None:
        # Rebuilds run below the request threads: under a stream of events they would otherwise
        # take a core's share from the requests they exist to serve.
        lower_this_thread(self.niceness)
        while not self._stop.wait(self.refresh_seconds):
            try:
                with session_factory() as session:
                    self.refresh(session)
            except Exception as exc:  # keep serving the last snapshot; the next round retries
                # One line per failed round (a database outage would otherwise print a full
                # traceback every refresh period); the traceback is kept for debug logging.
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                log.warning("behaviour refresh failed (serving the last snapshot): %s: %s",
                            type(exc).__name__, first[:300])
                log.debug("behaviour refresh failure", exc_info=exc)
