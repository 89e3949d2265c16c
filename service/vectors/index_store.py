"""The published index version, loaded read-only and swapped in when a new one is published.

Each worker process holds one :class:`IndexStore`. A request takes ``store.current`` once and
uses that :class:`LoadedVersion` to the end, so a swap (which only replaces the reference) never
changes an index under a running request; the old version is freed when its last request ends.
Indexes are memory-mapped where FAISS allows it, so worker processes share the pages. A worker
that starts while ``CURRENT`` is unusable serves the newest good version instead (``fallback``).
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

from service.vectors import artifacts

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
    folder = artifacts.version_dir(index_dir, version)
    manifest = artifacts.verify_version(folder, checksums=checksums)
    spaces = {name: load_space(folder / name, name, info) for name, info in manifest["spaces"].items()}
    return LoadedVersion(version, manifest, spaces, _parse_time(manifest.get("read_at")))


def load_space(sub: Path, name: str, info: dict[str, Any]) -> LoadedSpace:
    """Open one space folder (a published version's, or a build's own before it is published).

    Raises:
        artifacts.ArtifactError: unreadable, or index, ids and vectors disagree.
    """
    from service.vectors.vector_index import read_index

    where = f"{sub.parent.name}/{name}"
    try:
        index = read_index(sub / artifacts.INDEX_FILE, mmap=True)
        ids = np.load(sub / artifacts.IDS_FILE, mmap_mode="r")
        vectors = np.load(sub / artifacts.VECTORS_FILE, mmap_mode="r")
    except (OSError, RuntimeError, ValueError) as exc:
        raise artifacts.ArtifactError(f"{where}: cannot open ({exc})") from exc
    if index.ntotal != len(ids) or vectors.shape != (len(ids), int(info["dim"])) or index.d != int(info["dim"]):
        raise artifacts.ArtifactError(f"{where}: index, ids and vectors disagree in size")
    return LoadedSpace(name, index, np.asarray(ids), vectors, dict(info.get("search_params") or {}), dict(info["encoder"]))


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:  # e.g. permission denied on a parent: as good as missing
        return False


class IndexStore:
    """Serves the published version and notices new ones (polling the pointer, or ``refresh()``).

    Args:
        index_dir: the index directory (``CURRENT`` and ``versions/``).
        poll_seconds: how often the background thread checks the pointer.
        check_compatible: returns a reason when this process cannot serve a manifest (e.g. its
            text encoder differs from the one that built the index), else None.
        on_swap: called with the new version after each swap (metrics, delta reset).
        sync: brings the index directory in step with an artifact store before each poll
            (:meth:`service.vectors.mirror.VersionMirror.sync`); None without a store.
    """

    def __init__(
        self,
        index_dir: Path,
        *,
        poll_seconds: float = 2.0,
        check_compatible: Callable[[dict[str, Any]], str | None] | None = None,
        on_swap: Callable[[LoadedVersion], None] | None = None,
        sync: Callable[[], Any] | None = None,
    ):
        self.index_dir = Path(index_dir)
        self.poll_seconds = poll_seconds
        self.check_compatible = check_compatible
        self.on_swap = on_swap
        self.sync = sync
        self._current: LoadedVersion | None = None
        self._refused: dict[str, str] = {}
        self._missing: set[str] = set()  # refused because the folder was absent: retried once it appears
        self._fallback: dict[str, Any] | None = None
        self._pointer_problem: str | None = None  # last pointer problem logged (log each one once)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._thread_pid: int | None = None
        self._stop = threading.Event()

    @property
    def current(self) -> LoadedVersion | None:
        """The version to serve (take it once per request)."""
        return self._current

    @property
    def fallback(self) -> dict[str, Any] | None:
        """Set while the served version is not the one ``CURRENT`` names (that one is unusable).

        ``{"wanted": <version or None for a garbage pointer>, "reason": ..., "serving": <version>}``;
        None when serving what ``CURRENT`` names, or nothing.
        """
        return dict(self._fallback) if self._fallback else None

    def refresh(self) -> bool:
        """Load and swap in the published version if it changed. Returns True when it swapped.

        A corrupt or incompatible version is refused with one log line (once per version) and
        the version already loaded keeps serving. A worker with nothing loaded yet whose pointer
        is unusable (garbage, or names a refused version) falls back to the newest other version
        that verifies (see ``_fall_back``), so a restart never serves nothing while a good version
        is on disk; it swaps to what ``CURRENT`` names as soon as that loads.
        Never raises for anything on disk (only ``check_compatible``/``on_swap`` errors propagate).
        """
        pointer = artifacts.read_pointer(self.index_dir)
        wanted = pointer.version
        current = self._current
        if current is not None and wanted == current.name and self._fallback is None:
            return False  # the common case, without the lock
        with self._lock:
            loaded = self._current.name if self._current else None
            if wanted is not None and wanted == loaded:
                if self._fallback is not None:
                    log.info("CURRENT names %s again: no longer a fallback", wanted)
                    self._fallback, self._pointer_problem = None, None
                return False
            if wanted in self._missing and _is_dir(artifacts.version_dir(self.index_dir, wanted)):
                self._missing.discard(wanted)  # the folder arrived after the pointer (e.g. a copy)
                self._refused.pop(wanted, None)
            if wanted is not None and wanted not in self._refused:
                result = self._try_load(wanted)
                if isinstance(result, LoadedVersion):
                    self._swap(result)
                    self._fallback, self._pointer_problem = None, None
                    log.info("serving index version %s (was %s)", wanted, loaded or "nothing")
                    return True
                log.error("refusing index version %s: %s; still serving %s", wanted, result, loaded or "nothing")
            if wanted is None and pointer.error is None:
                return False  # nothing published (no CURRENT): nothing to fall back from
            reason = pointer.error or self._refused[wanted]
            if self._current is not None:
                # Keep serving what is loaded; only say which version is served instead of which.
                if self._fallback is None or (self._fallback["wanted"], self._fallback["reason"]) != (wanted, reason):
                    self._fallback = {"wanted": wanted, "reason": reason, "serving": self._current.name}
                    if pointer.error and self._pointer_problem != reason:
                        log.error("index pointer unusable: %s; still serving %s", reason, self._current.name)
                    self._pointer_problem = reason
                return False
            return self._fall_back(wanted, reason)

    def update(self) -> bool:
        """:meth:`refresh` after syncing from the artifact store (a download may take a while:
        the poll thread, start-up and ``/admin/reload`` call this, requests only ``refresh``)."""
        if self.sync is not None:
            try:
                self.sync()
            except Exception:  # the sync logs its own problems; whatever escapes must not stop serving
                log.exception("artifact store sync failed")
        return self.refresh()

    def refused(self) -> dict[str, str]:
        return dict(self._refused)

    def _try_load(self, name: str) -> LoadedVersion | str:
        """The loaded version, or why it cannot be served (remembered in ``_refused``)."""
        folder = artifacts.version_dir(self.index_dir, name)
        if not _is_dir(folder):
            self._missing.add(name)
            reason = f"version folder {folder} is missing"
        else:
            try:
                version = load_version(self.index_dir, name)
                incompatible = self.check_compatible(version.manifest) if self.check_compatible else None
                if not incompatible:
                    return version
                reason = f"incompatible: {incompatible}"
            except artifacts.ArtifactError as exc:
                reason = str(exc)
            except OSError as exc:  # e.g. a file the service may not read
                reason = f"unreadable ({exc})"
            except (KeyError, TypeError, ValueError) as exc:  # a manifest that parses but lacks fields
                reason = f"malformed manifest ({type(exc).__name__}: {exc})"
        self._refused[name] = reason
        return reason

    def _fall_back(self, wanted: str | None, reason: str) -> bool:
        """Nothing loaded and ``CURRENT`` unusable: serve the best other version that verifies.

        Versions older than the wanted one come first (newest first): newer ones were never
        published or were rolled back from. Each candidate is verified once; refusals are kept.
        """
        try:
            names = [v.name for v in artifacts.list_versions(self.index_dir) if v.name != wanted]  # newest first
        except OSError as exc:  # e.g. versions/ unreadable: nothing to fall back to
            log.error("cannot list index versions: %s", exc)
            names = []
        if wanted is not None:
            names = [n for n in names if n < wanted] + [n for n in names if n > wanted]
        for name in names:
            if name in self._refused:
                continue
            result = self._try_load(name)
            if isinstance(result, LoadedVersion):
                self._swap(result)
                self._fallback = {"wanted": wanted, "reason": reason, "serving": name}
                self._pointer_problem = reason
                log.error("index version %s cannot be served (%s); falling back to %s",
                          wanted or artifacts.CURRENT, reason, name)
                return True
            log.error("fallback candidate %s refused: %s", name, result)
        if self._pointer_problem != reason:
            log.error("index version %s cannot be served (%s) and no other version verifies: serving nothing",
                      wanted or artifacts.CURRENT, reason)
            self._pointer_problem = reason
        return False

    def _swap(self, version: LoadedVersion) -> None:
        if self.on_swap is not None:
            self.on_swap(version)
        self._current = version

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
                self.update()
            except Exception:  # keep polling whatever happens; the error is logged once per attempt
                log.exception("index refresh failed")
