"""The published index version, loaded read-only and swapped in when a new one is published.

Each worker process holds one :class:`IndexStore`. A request takes ``store.current`` once and
uses that :class:`LoadedVersion` to the end, so a swap (which only replaces the reference) never
changes an index under a running request; the old version is freed when its last request ends.
Indexes are memory-mapped where FAISS allows it, so worker processes share the pages.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from service import artifacts

log = logging.getLogger("recsys.index")


@dataclass
class LoadedSpace:
    """One embedding space of a version: FAISS index, row -> item id map, exact vectors."""

    name: str
    index: Any
    ids: np.ndarray
    vectors: np.ndarray
    params: dict[str, Any]
    encoder: dict[str, Any]

    @property
    def dim(self) -> int:
        return int(self.encoder["dim"])

    @property
    def count(self) -> int:
        return int(len(self.ids))

    def rows_of(self, item_ids: np.ndarray) -> np.ndarray:
        """Rows of the given item ids (-1 where absent); ids are stored ascending."""
        item_ids = np.asarray(item_ids, dtype=np.int64)
        if not len(self.ids):
            return np.full(len(item_ids), -1, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self.ids, item_ids), len(self.ids) - 1)
        return np.where(self.ids[pos] == item_ids, pos, -1)


@dataclass
class LoadedVersion:
    name: str
    manifest: dict[str, Any]
    spaces: dict[str, LoadedSpace]
    read_at: dt.datetime
    loaded_at: float = field(default_factory=time.time)


def _parse_time(text: str | None) -> dt.datetime:
    if not text:
        return dt.datetime.min
    return dt.datetime.fromisoformat(text.rstrip("Z"))


def load_version(index_dir: Path, version: str, *, checksums: bool = True) -> LoadedVersion:
    """Verify and open a version (indexes memory-mapped, arrays memory-mapped).

    Raises:
        artifacts.ArtifactError: missing, corrupt or unreadable.
    """
    from service.vector_index import read_index

    folder = artifacts.version_dir(index_dir, version)
    manifest = artifacts.verify_version(folder, checksums=checksums)
    spaces = {}
    for name, info in manifest["spaces"].items():
        sub = folder / name
        try:
            index = read_index(sub / artifacts.INDEX_FILE, mmap=True)
            ids = np.load(sub / artifacts.IDS_FILE, mmap_mode="r")
            vectors = np.load(sub / artifacts.VECTORS_FILE, mmap_mode="r")
        except (OSError, RuntimeError, ValueError) as exc:
            raise artifacts.ArtifactError(f"{version}/{name}: cannot open ({exc})") from exc
        if index.ntotal != len(ids) or vectors.shape != (len(ids), int(info["dim"])) or index.d != int(info["dim"]):
            raise artifacts.ArtifactError(f"{version}/{name}: index, ids and vectors disagree in size")
        spaces[name] = LoadedSpace(name, index, np.asarray(ids), vectors, dict(info.get("search_params") or {}), dict(info["encoder"]))
    return LoadedVersion(version, manifest, spaces, _parse_time(manifest.get("read_at")))


class IndexStore:
    """Serves the published version and notices new ones (polling the pointer, or ``refresh()``).

    Args:
        index_dir: the index directory (``CURRENT`` and ``versions/``).
        poll_seconds: how often the background thread checks the pointer.
        check_compatible: returns a reason when this process cannot serve a manifest (e.g. its
            text encoder differs from the one that built the index), else None.
        on_swap: called with the new version after each swap (metrics, delta reset).
    """

    def __init__(
        self,
        index_dir: Path,
        *,
        poll_seconds: float = 2.0,
        check_compatible: Callable[[dict[str, Any]], str | None] | None = None,
        on_swap: Callable[[LoadedVersion], None] | None = None,
    ):
        self.index_dir = Path(index_dir)
        self.poll_seconds = poll_seconds
        self.check_compatible = check_compatible
        self.on_swap = on_swap
        self._current: LoadedVersion | None = None
        self._refused: dict[str, str] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._thread_pid: int | None = None
        self._stop = threading.Event()

    @property
    def current(self) -> LoadedVersion | None:
        """The version to serve (take it once per request)."""
        return self._current

    def refresh(self) -> bool:
        """Load and swap in the published version if it changed. Returns True when it swapped.

        A corrupt or incompatible version is refused with one log line (once per version) and
        the version already loaded keeps serving.
        """
        wanted = artifacts.current_version(self.index_dir)
        loaded = self._current.name if self._current else None
        if wanted is None or wanted == loaded or wanted in self._refused:
            return False
        with self._lock:
            if self._current is not None and self._current.name == wanted:
                return False
            try:
                version = load_version(self.index_dir, wanted)
                reason = self.check_compatible(version.manifest) if self.check_compatible else None
                if reason:
                    raise artifacts.ArtifactError(f"incompatible: {reason}")
            except artifacts.ArtifactError as exc:
                self._refused[wanted] = str(exc)
                log.error("refusing index version %s: %s; still serving %s", wanted, exc, loaded or "nothing")
                return False
            if self.on_swap is not None:
                self.on_swap(version)
            self._current = version
        log.info("serving index version %s (was %s)", wanted, loaded or "nothing")
        return True

    def refused(self) -> dict[str, str]:
        return dict(self._refused)

    def ensure_polling(self) -> None:
        """Start the polling thread in this process (after a fork the parent's thread is gone)."""
        if self._thread is not None and self._thread_pid == os.getpid() and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is not None and self._thread_pid == os.getpid() and self._thread.is_alive():
                return
            self._stop.clear()
            self._thread = threading.Thread(target=self._poll, name="index-poll", daemon=True)
            self._thread_pid = os.getpid()
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.refresh()
            except Exception:  # keep polling whatever happens; the error is logged once per attempt
                log.exception("index refresh failed")
