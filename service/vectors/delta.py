"""Fresh items without a rebuild: vectors embedded on write, searched beside the main index.

Writes go to the ``fresh_vectors`` table (so every worker process sees them) and touch a signal
file in the index directory. Each worker keeps an in-memory :class:`Delta` per space, synced
from SQL when the signal file changes or when ``fresh_vectors`` holds a row newer than the last
one it applied (one ``stat`` and one indexed ``max(written_at)`` per search: a replica with an
index directory of its own never sees another replica's signal file), and rebuilt from scratch
when a new index version is loaded: rows written before that version read the catalog are in it
already and are dropped.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
from pathlib import Path

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from service.store.db import database_utcnow
from service.store.models import FreshVector

log = logging.getLogger("recsys.delta")

SIGNAL_FILE = "fresh.signal"
# A row is stamped when its statement runs (the database's clock) but seen when its transaction
# commits: rows up to this long behind the newest one applied are read again, at least every
# REREAD_SECONDS, so a slow commit from another replica is not skipped for good.
COMMIT_LAG = dt.timedelta(seconds=5)
REREAD_SECONDS = 1.0


def write_fresh(*, session: Session, item_id: int, space: str, encoder_revision: str, vector: np.ndarray | None) -> None:
    """Record an item's new vector (or a tombstone when ``vector`` is None) for one space."""
    values = {
        "item_id": item_id,
        "space": space,
        "encoder_revision": encoder_revision,
        "vector": None if vector is None else np.asarray(vector, dtype=np.float32).tobytes(),
        "written_at": database_utcnow(session),
    }
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(FreshVector).values(**values)
    stmt = stmt.on_conflict_do_update(
        index_elements=["item_id", "space"],
        set_={k: stmt.excluded[k] for k in ("encoder_revision", "vector", "written_at")},
    )
    session.execute(stmt)


def _before(t: dt.datetime) -> dt.datetime:
    """``t`` less COMMIT_LAG (``datetime.min`` stays itself)."""
    return t - COMMIT_LAG if t - dt.datetime.min > COMMIT_LAG else dt.datetime.min


def touch_signal(index_dir: Path) -> None:
    """Tell every worker that fresh vectors changed (after the write committed)."""
    path = Path(index_dir) / SIGNAL_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    # Append a byte rather than only touching: file times can be coarser than two writes apart,
    # the size never is. (One byte per write; the file is tiny next to the index.)
    with open(path, "ab") as fh:
        fh.write(b".")


def signal_stamp(index_dir: Path) -> tuple[int, int]:
    try:
        st = os.stat(Path(index_dir) / SIGNAL_FILE)
    except FileNotFoundError:
        return (0, 0)
    return (st.st_size, st.st_mtime_ns)


class Delta:
    """In-memory fresh vectors of one space: item id -> vector, plus tombstones."""

    def __init__(self, space: str, dim: int, encoder_revision: str):
        self.space, self.dim, self.encoder_revision = space, dim, encoder_revision
        self.vectors: dict[int, np.ndarray] = {}
        self.tombstones: set[int] = set()
        self._matrix: np.ndarray | None = None
        self._matrix_ids: np.ndarray | None = None

    def apply(self, item_id: int, revision: str, blob: bytes | None) -> None:
        if blob is None:
            self.vectors.pop(item_id, None)
            self.tombstones.add(item_id)
        elif revision != self.encoder_revision:
            # Embedded by another model than the one that built the index: unusable here.
            log.warning("%s: fresh vector of item %d from encoder %s ignored (index uses %s)",
                        self.space, item_id, revision, self.encoder_revision)
            self.vectors.pop(item_id, None)
            self.tombstones.add(item_id)
        else:
            vec = np.frombuffer(blob, dtype=np.float32)
            if vec.shape != (self.dim,):
                log.warning("%s: fresh vector of item %d has %d dims, expected %d", self.space, item_id, vec.size, self.dim)
                return
            self.vectors[item_id] = vec
            self.tombstones.discard(item_id)
        self._matrix = None

    @property
    def shadowed(self) -> set[int]:
        """Item ids whose main-index vector must not be used (replaced or deleted)."""
        return self.tombstones | set(self.vectors)

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact inner-product search over the fresh vectors: (scores, item ids), best first."""
        scores, ids = self.search_many(np.asarray(query).reshape(1, -1), k)
        return scores[0], ids[0]

    def search_many(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`search` for each row of ``queries``: (scores, item ids), each (rows, <= k)."""
        if not self.vectors:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        if self._matrix is None:
            ids = np.fromiter(self.vectors.keys(), dtype=np.int64, count=len(self.vectors))
            self._matrix = np.stack([self.vectors[i] for i in ids])
            self._matrix_ids = ids
        scores = np.asarray(queries, dtype=np.float32) @ self._matrix.T
        top = np.argsort(-scores, axis=1)[:, :k]
        return np.take_along_axis(scores, top, axis=1), self._matrix_ids[top]


class DeltaSet:
    """A worker's deltas for the version it serves, kept in step with ``fresh_vectors``."""

    def __init__(self, index_dir: Path):
        self.index_dir = Path(index_dir)
        self._lock = threading.Lock()
        self.version: str | None = None
        self.floor = dt.datetime.min
        self.deltas: dict[str, Delta] = {}
        self._seen_stamp: tuple[int, int] = (-1, -1)
        self._synced_until = dt.datetime.min
        self._reread_at = 0.0  # monotonic time of the last read of the commit-lag window

    def reset(self, version: str, read_at: dt.datetime, spaces: dict[str, tuple[int, str]]) -> None:
        """Start over for a newly loaded version: ``spaces`` maps name -> (dim, encoder revision)."""
        with self._lock:
            self.version, self.floor = version, read_at
            self.deltas = {name: Delta(name, dim, rev) for name, (dim, rev) in spaces.items()}
            self._seen_stamp = (-1, -1)
            self._synced_until = read_at
            self._reread_at = 0.0

    def sync(self, session: Session, *, force: bool = False) -> None:
        """Pull rows written since the last sync, if the signal or SQL says something changed.

        The signal file only carries writes made through this index directory; a write through
        another replica (an index directory of its own, the same database) shows as a newer
        ``written_at`` in SQL.
        """
        stamp = signal_stamp(self.index_dir)
        latest = None
        due = time.monotonic() - self._reread_at >= REREAD_SECONDS
        if not force and stamp == self._seen_stamp and not due:
            latest = session.scalar(select(func.max(FreshVector.written_at)))
            if latest is None or latest <= self._synced_until:
                return
        with self._lock:
            if not force and stamp == self._seen_stamp and not due and (latest is None or latest <= self._synced_until):
                return
            # From COMMIT_LAG before the newest row applied: a row stamped earlier but committed
            # later is not missed; applying a row twice is harmless (one row per item and space).
            # Rows stamped before the version's read time are in it (a write whose commit straddles
            # that instant waits for the next rebuild: the stamp is taken at its statement).
            rows = session.execute(
                select(FreshVector.item_id, FreshVector.space, FreshVector.encoder_revision, FreshVector.vector,
                       FreshVector.written_at)
                .where(FreshVector.written_at >= _before(self._synced_until), FreshVector.written_at > self.floor)
                .order_by(FreshVector.written_at)
            ).all()
            for item_id, space, revision, blob, written_at in rows:
                delta = self.deltas.get(space)
                if delta is not None:
                    delta.apply(item_id, revision, blob)
                self._synced_until = max(self._synced_until, written_at)
            self._seen_stamp = stamp
            self._reread_at = time.monotonic()

    def get(self, space: str) -> Delta | None:
        return self.deltas.get(space)

    def size(self) -> dict[str, int]:
        return {name: len(d.vectors) for name, d in self.deltas.items()}
