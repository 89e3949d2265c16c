"""The newest events as a file of an index version: a worker's first behaviour load from disk.

A worker's behaviour model starts from the newest ``behaviour_max_events`` events. Read from SQL
that is most of a worker's start-up (1M events: seconds, row by row through the driver). The
training stage reads the event log anyway, so it also writes its newest events into the version
(:data:`WINDOW_FILE`, columns of one ``.npz``); a worker loads them in a fraction of a second and
reads from SQL only the events newer than the file's last id. Events are never updated or
deleted in place, so the file stays true for the ids it holds; before using it, a worker checks
a few of its rows against the database (a version copied to another database must not lend it
someone else's behaviour).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.store.events import EventColumns
from service.store.models import Event

WINDOW_FILE = "event_window.npz"
_COLUMNS = ("ids", "users", "items", "type_codes", "type_names", "values", "has_value", "times")
# Rows compared with the database before a window is used: first, last and a few between.
CHECKED_ROWS = 5


@dataclass(frozen=True)
class Window:
    """The newest events up to some id; ``complete``: they are every event up to that id."""

    events: EventColumns
    complete: bool


def record(ev: EventColumns, *, complete: bool) -> dict[str, Any]:
    """The manifest's description of a window (what :func:`load` checks the file against)."""
    return {"file": WINDOW_FILE, "events": int(len(ev)), "complete": bool(complete),
            "first_event_id": int(ev.ids[0]) if len(ev) else 0, "max_event_id": int(ev.ids[-1]) if len(ev) else 0}


def save(folder: Path, ev: EventColumns) -> str:
    """Write ``ev`` (in id order) as :data:`WINDOW_FILE` in ``folder``; its name."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = sorted(set(ev.types))
    code_of = {t: i for i, t in enumerate(names)}
    codes = np.fromiter((code_of[t] for t in ev.types), dtype=np.int32, count=len(ev))
    has_value = np.fromiter((v is not None for v in ev.values), dtype=bool, count=len(ev))
    values = np.fromiter((np.nan if v is None else float(v) for v in ev.values), dtype=np.float64, count=len(ev))
    with open(folder / WINDOW_FILE, "wb") as fh:
        np.savez(fh, ids=ev.ids, users=ev.users, items=ev.items, type_codes=codes,
                 type_names=np.array(names, dtype=str), values=values, has_value=has_value, times=ev.times)
    return WINDOW_FILE


def load(folder: Path, meta: Mapping[str, Any]) -> Window:
    """The window a version's manifest describes (``meta``: its ``window`` record).

    Raises:
        ValueError: the file does not hold what ``meta`` says, or is malformed.
    """
    if meta.get("file") != WINDOW_FILE:  # never a path taken from the manifest
        raise ValueError(f"window file {str(meta.get('file'))[:80]!r}: expected {WINDOW_FILE}")
    with np.load(Path(folder) / WINDOW_FILE, allow_pickle=False) as data:
        if set(data.files) != set(_COLUMNS):
            raise ValueError(f"{WINDOW_FILE}: columns {sorted(data.files)}, expected {sorted(_COLUMNS)}")
        cols = {name: data[name] for name in _COLUMNS}
    n = len(cols["ids"])
    if any(cols[c].shape != (n,) for c in _COLUMNS if c != "type_names") or n != int(meta["events"]):
        raise ValueError(f"{WINDOW_FILE}: columns of unequal length, or not the {meta['events']} events recorded")
    ids, names, codes = cols["ids"], cols["type_names"], cols["type_codes"]
    if n and (np.any(np.diff(ids) <= 0) or int(ids[-1]) != int(meta["max_event_id"])
              or codes.min() < 0 or codes.max() >= len(names)):
        raise ValueError(f"{WINDOW_FILE}: ids not ascending up to {meta['max_event_id']}, or unknown type codes")
    # Back to what the SQL reader gives: one string object per type, None for a missing value.
    types = np.array([str(t) for t in names], dtype=object)[codes].tolist()
    values = cols["values"].astype(object)
    values[~cols["has_value"]] = None
    ev = EventColumns(ids.astype(np.int64), cols["users"].astype(np.int64), cols["items"].astype(np.int64),
                      types, values.tolist(), cols["times"].astype(np.float64))
    return Window(ev, bool(meta["complete"]))


def matches_database(session: Session, ev: EventColumns) -> bool:
    """Whether a few of the window's rows (first, last and between) are stored with the same user and item."""
    if not len(ev):
        return True
    rows = np.unique(np.linspace(0, len(ev) - 1, CHECKED_ROWS).round().astype(np.int64))
    want = {int(ev.ids[r]): (int(ev.users[r]), int(ev.items[r])) for r in rows}
    found = {int(i): (int(u), int(it)) for i, u, it in session.execute(
        select(Event.id, Event.user_id, Event.item_id).where(Event.id.in_(list(want)))).all()}
    return found == want
