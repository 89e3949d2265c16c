"""A host's local copy of what the object store publishes: the index directory as a verified cache.

:meth:`VersionMirror.sync` reads the store's ``CURRENT``; when it names a version this host has
not got, the version is downloaded and every checksum verified (``RemoteStore.download``), then
the local ``CURRENT`` is pointed at it. The :class:`~service.vectors.index_store.IndexStore` goes
on reading the local directory exactly as without a store, so swaps, refusals and fallbacks work
the same. A version whose objects fail verification is refused (logged once) and the version
already served keeps serving; a store that cannot be reached is retried at the next poll.
Gunicorn workers of one host share the directory: one of them syncs at a time (``flock``).
"""

from __future__ import annotations

import fcntl
import logging
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Callable

from service.vectors import artifacts
from service.vectors.object_store import FETCHING_PREFIX, RemoteStore

log = logging.getLogger("recsys.store")

MIRROR_LOCK = ".mirror.lock"


class VersionMirror:
    """Keeps ``index_dir`` in step with ``remote``'s published version.

    Args:
        remote: the artifact store.
        index_dir: this host's cache of versions (the service's index directory).
        keep: versions kept locally besides the one published and the one being served.
        serving: returns the version this process serves now (never pruned).
    """

    def __init__(self, remote: RemoteStore, index_dir: Path, *, keep: int = 2,
                 serving: Callable[[], str | None] | None = None):
        self.remote = remote
        self.index_dir = Path(index_dir)
        self.keep = keep
        self.serving = serving or (lambda: None)
        self._refused: dict[str, str] = {}
        self._error: str | None = None
        self._synced_at: float | None = None
        self._published: str | None = None
        self._lock = threading.Lock()

    def status(self) -> dict[str, Any]:
        """For /status: the store, what it publishes, when it was last read, and what went wrong."""
        return {"url": self.remote.url, "published": self._published, "synced_at": self._synced_at,
                "error": self._error, "refused": dict(self._refused)}

    def sync(self) -> bool:
        """Fetch and point to the store's published version if this host lacks it; True when the
        local ``CURRENT`` changed. Never raises for the store or its contents (they are logged)."""
        if not self._lock.acquire(blocking=False):
            return False  # this process is syncing already (the poll thread, or /admin/reload)
        try:
            self.index_dir.mkdir(parents=True, exist_ok=True)
            with open(self.index_dir / MIRROR_LOCK, "a+b") as fh:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return False  # another worker of this host is syncing: it sets CURRENT for all
                try:
                    return self._sync_locked()
                finally:
                    fcntl.flock(fh, fcntl.LOCK_UN)
        finally:
            self._lock.release()

    def _sync_locked(self) -> bool:
        try:
            pointer = self.remote.read_pointer()
        except Exception as exc:  # noqa: BLE001 - any client error: the store is unreachable for now
            self._note_error(f"artifact store {self.remote.url} unreachable: {type(exc).__name__}: {exc}")
            return False
        self._synced_at = time.time()
        wanted = pointer.version
        if pointer.pointer.error:
            self._note_error(f"{self.remote.url}: {pointer.pointer.error}")
            return False
        self._published = wanted
        if wanted is None or wanted in self._refused:
            self._error = None if wanted is None else self._error
            return False
        local = artifacts.current_version(self.index_dir)
        folder = artifacts.version_dir(self.index_dir, wanted)
        if local == wanted and folder.is_dir():
            self._error = None
            return False
        try:
            if not folder.is_dir():
                self.remote.download(wanted, self.index_dir)
            artifacts.set_current(self.index_dir, wanted)
        except artifacts.ArtifactError as exc:
            self._refused[wanted] = str(exc)
            self._note_error(f"refusing version {wanted} from {self.remote.url}: {exc}")
            return False
        except Exception as exc:  # noqa: BLE001 - a network or disk failure: retried at the next poll
            self._note_error(f"fetching version {wanted} from {self.remote.url} failed: {type(exc).__name__}: {exc}")
            return False
        self._error = None
        log.info("version %s from %s is now this host's CURRENT (was %s)", wanted, self.remote.url, local or "nothing")
        self._prune(wanted)
        return True

    def _note_error(self, message: str) -> None:
        if message != self._error:  # once per distinct problem, not once per poll
            log.error("%s; still serving what is loaded", message)
        self._error = message

    def _prune(self, published: str) -> None:
        """Drop local versions beyond the newest ``keep`` (never the published or the served one),
        and downloads left behind by a killed process."""
        spare = {published, self.serving()}
        others = [v.name for v in artifacts.list_versions(self.index_dir) if v.name not in spare]
        for name in others[self.keep:]:
            try:
                artifacts.remove_tree(artifacts.version_dir(self.index_dir, name))
            except OSError as exc:
                log.warning("could not remove cached version %s: %s", name, exc)
        for path in self.index_dir.glob(f"{FETCHING_PREFIX}*"):
            if path.is_dir() and time.time() - path.stat().st_mtime > 3600:
                shutil.rmtree(path, ignore_errors=True)

