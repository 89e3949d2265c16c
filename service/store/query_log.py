"""A bounded log of recent search-bar texts: the probes the rebuild checks its index's recall on.

Recall measured with the catalog's own vectors flatters an approximate index (they sit inside
their clusters; short queries land between them), so the rebuild tunes on what users actually
type (:func:`indexer.pipeline.recall_probe_texts`). Kept deliberately little:

* the text only: no user, key, address or time of day (``last_seen`` is a date);
* texts that look like personal data are never stored (an e-mail address, a run of 6 or more
  digits: phone, card, account or order numbers);
* at most ``query_log_size`` distinct texts, the most recently seen (0 turns the log off).

Workers buffer texts in memory and write them in one statement at most every ``FLUSH_SECONDS``,
from a background thread: a search never waits for this write.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import threading
import time
from collections import Counter
from typing import Callable

from sqlalchemy import delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from service.store.db import session_scope
from service.store.models import SearchQuery

log = logging.getLogger(__name__)

FLUSH_SECONDS = 10.0
# Distinct texts a worker holds between flushes; more in one interval are dropped (a sample).
PENDING_MAX = 2000
_PERSONAL = re.compile(r"[^\s@]+@[^\s@]+\.[^\s@]+|\d[\d\s().-]{4,}\d")
_DIGITS = re.compile(r"\d")
_SURROGATE = re.compile("[\ud800-\udfff]")


def loggable(text: str, max_chars: int = 512) -> str | None:
    """``text`` as it would be logged (whitespace collapsed), or None when it must not be."""
    text = " ".join(text.split())
    if not 2 <= len(text) <= max_chars or not text.isprintable() or _SURROGATE.search(text):
        return None  # the boundary refuses these already; a log must not store what SQL cannot
    for match in _PERSONAL.finditer(text):
        if "@" in match.group() or len(_DIGITS.findall(match.group())) >= 6:
            return None
    return text


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()  # loggable() let no surrogate through


def record_queries(session: Session, counts: dict[str, int], *, keep: int, today: dt.date | None = None) -> None:
    """Add ``counts`` (text -> times asked) to the log and trim it to the ``keep`` most recent."""
    if not counts or keep <= 0:
        return
    day = today or dt.datetime.now(dt.timezone.utc).date()
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    rows = [{"digest": _digest(t), "text": t, "count": n, "last_seen": day} for t, n in counts.items()]
    stmt = insert(SearchQuery).values(rows)
    stmt = stmt.on_conflict_do_update(
        index_elements=["digest"],
        set_={"count": SearchQuery.count + stmt.excluded["count"], "last_seen": stmt.excluded["last_seen"]},
    )
    session.execute(stmt)
    total = session.scalar(select(func.count()).select_from(SearchQuery)) or 0
    if total > keep:
        kept = select(SearchQuery.digest).order_by(SearchQuery.last_seen.desc(), SearchQuery.count.desc(),
                                                   SearchQuery.digest).limit(keep)
        session.execute(delete(SearchQuery).where(SearchQuery.digest.not_in(kept.scalar_subquery())))


def recent_queries(session: Session, limit: int) -> list[str]:
    """Up to ``limit`` logged texts, most recently seen (then most asked) first."""
    stmt = (select(SearchQuery.text)
            .order_by(SearchQuery.last_seen.desc(), SearchQuery.count.desc(), SearchQuery.digest).limit(limit))
    return list(session.scalars(stmt))


class QueryLogBuffer:
    """One worker's texts since its last flush; :meth:`add` is cheap and never touches SQL."""

    def __init__(self, session_factory: sessionmaker[Session], *, keep: int, max_chars: int = 512,
                 clock: Callable[[], float] = time.monotonic):
        self.keep = keep
        self._session_factory = session_factory
        self._max_chars = max_chars
        self._clock = clock
        self._pending: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._flushing = False
        self._last_flush = clock()

    def add(self, text: str) -> None:
        """Remember one search text (if loggable); start a background flush when one is due."""
        if self.keep <= 0:
            return
        kept = loggable(text, self._max_chars)
        if kept is None:
            return
        with self._lock:
            if kept in self._pending or len(self._pending) < PENDING_MAX:
                self._pending[kept] += 1
            due = not self._flushing and self._clock() - self._last_flush >= FLUSH_SECONDS
            if due:
                self._flushing = True
        if due:
            self._start_flush()

    def _start_flush(self) -> None:
        threading.Thread(target=self._flush_quietly, name="query-log-flush", daemon=True).start()

    def flush(self) -> int:
        """Write what is pending now (in the caller's thread); the number of distinct texts."""
        with self._lock:
            pending, self._pending = self._pending, Counter()
            self._last_flush = self._clock()
        if pending:
            with session_scope(self._session_factory) as session:
                record_queries(session, dict(pending), keep=self.keep)
        return len(pending)

    def _flush_quietly(self) -> None:
        try:
            self.flush()
        except Exception as exc:  # noqa: BLE001 - a busy or absent database costs the log a batch, nothing else
            log.warning("query log: a batch was not written: %s", str(exc).splitlines()[0] if str(exc) else exc)
        finally:
            with self._lock:
                self._flushing = False


__all__ = ["QueryLogBuffer", "loggable", "record_queries", "recent_queries"]
