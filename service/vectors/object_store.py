"""Index versions in an object store (``artifact_url``), shared by every indexer and service host.

The layout is the index directory's, reached through fsspec (``s3://``, ``gs://``, ``file://``...)::

    <url>/versions/<version>/...   a version's files; manifest.json is written last
    <url>/CURRENT                  the published version's name

Publishing uploads a version, checks every object's size against the manifest, then swaps
``CURRENT`` with a compare-and-swap against what the publisher read before:

* S3 (s3fs): a conditional PUT, ``If-Match`` the ETag read before (``If-None-Match: *`` when
  there was none). AWS S3 has honoured both since 2024-11; MinIO and moto do too.
* A file system (``file://``, e.g. a shared mount): an exclusive ``flock`` on ``CURRENT.lock``,
  compare, write a temporary file and rename it over ``CURRENT``.
* Any other store: compare, then write. That narrows the race but cannot close it: run one
  publisher at a time there (the indexer's build lock is per host).

A publisher that lost the race gets :class:`PointerConflict` and changes nothing. Service hosts
never read versions from the store directly: :mod:`service.vectors.mirror` downloads a version
into the host's index directory and verifies every checksum before pointing ``CURRENT`` at it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from service.vectors import artifacts

if TYPE_CHECKING:  # pragma: no cover - typing only
    from service.settings import Settings

log = logging.getLogger("recsys.store")

FETCHING_PREFIX = ".fetching-"  # a download in progress under the local index directory
# A manifest is a few hundred KB at most (per-item errors are capped); more is not a manifest.
MANIFEST_MAX_BYTES = 64 << 20


class PointerConflict(artifacts.ArtifactError):
    """``CURRENT`` changed between reading it and swapping it: another publisher got there first."""


@dataclass(frozen=True)
class RemotePointer:
    """What the store's ``CURRENT`` says, and the token a compare-and-swap compares against."""

    pointer: artifacts.Pointer
    token: Any  # the ETag on S3, else the pointer's bytes; None when there is no CURRENT

    @property
    def version(self) -> str | None:
        return self.pointer.version


def _precondition_failed(exc: BaseException) -> bool:
    """True for S3's 412 however s3fs wraps it (FileExistsError for If-None-Match, OSError else)."""
    seen: BaseException | None = exc
    while seen is not None:
        response = getattr(seen, "response", None)
        if isinstance(response, dict) and response.get("Error", {}).get("Code") in ("PreconditionFailed", "412"):
            return True
        seen = seen.__cause__ or seen.__context__
    return isinstance(exc, FileExistsError)


class RemoteStore:
    """The artifact store at ``url`` (any fsspec URL), with ``options`` passed to its file system."""

    def __init__(self, url: str, options: Mapping[str, Any] | None = None):
        import fsspec

        self.url = url.rstrip("/")
        self.fs, root = fsspec.core.url_to_fs(self.url, **dict(options or {}))
        self.root = root.rstrip("/")
        protocols = self.fs.protocol if isinstance(self.fs.protocol, (tuple, list)) else (self.fs.protocol,)
        self.kind = "s3" if "s3" in protocols else "file" if "file" in protocols else "other"

    @classmethod
    def from_settings(cls, settings: "Settings") -> "RemoteStore | None":
        """The configured store, or None when ``artifact_url`` is empty (the index directory alone)."""
        return cls(settings.artifact_url, settings.artifact_options) if settings.artifact_url else None

    def __repr__(self) -> str:
        return f"RemoteStore({self.url!r})"

    def _path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def _version_path(self, version: str, *parts: str) -> str:
        if not artifacts.is_version_name(version):
            raise artifacts.ArtifactError(f"not a version name: {version!r}")
        return self._path(artifacts.VERSIONS, version, *parts)

    # --- the pointer ----------------------------------------------------------------------
    def read_pointer(self) -> RemotePointer:
        """Read ``CURRENT``: a missing object means nothing is published; a damaged one is reported.

        Raises:
            OSError (or the store client's error): the store cannot be reached.
        """
        path = self._path(artifacts.CURRENT)
        try:
            info = self.fs.info(path)
        except FileNotFoundError:
            return RemotePointer(artifacts.Pointer(None), None)
        if info.get("type") == "directory":
            return RemotePointer(artifacts.Pointer(None, f"{artifacts.CURRENT} is not an object"), None)
        if int(info.get("size") or 0) > artifacts.POINTER_MAX_BYTES:  # never read a huge object whole
            error = f"{artifacts.CURRENT} is over {artifacts.POINTER_MAX_BYTES} bytes: not a version name"
            return RemotePointer(artifacts.Pointer(None, error), info.get("ETag") if self.kind == "s3" else None)
        raw = self.fs.cat_file(path)
        token = info.get("ETag") if self.kind == "s3" else raw
        return RemotePointer(artifacts.parse_pointer(raw), token)

    def swap_pointer(self, version: str, expected: RemotePointer) -> None:
        """Point ``CURRENT`` at ``version`` if it still says what ``expected`` read (see the module doc).

        Raises:
            PointerConflict: it changed since; nothing was written.
        """
        data = (version + "\n").encode()
        path = self._path(artifacts.CURRENT)
        if self.kind == "s3":
            condition = {"IfMatch": expected.token} if expected.token is not None else {"mode": "create"}
            try:
                self.fs.pipe_file(path, data, **condition)
            except OSError as exc:
                if _precondition_failed(exc):
                    raise PointerConflict(f"{self.url}/{artifacts.CURRENT} changed while publishing {version}") from exc
                raise
            return
        with self._pointer_lock():
            now = self.read_pointer()
            if now.token != expected.token:
                raise PointerConflict(f"{self.url}/{artifacts.CURRENT} changed while publishing {version}")
            if self.kind == "file":
                local = Path(path)
                tmp = local.with_name(f"{artifacts.CURRENT}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
                with open(tmp, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, local)
                artifacts.fsync_dir(local.parent)
            else:
                self.fs.pipe_file(path, data)

    @contextlib.contextmanager
    def _pointer_lock(self) -> Iterator[None]:
        if self.kind != "file":
            yield
            return
        Path(self.root).mkdir(parents=True, exist_ok=True)
        with open(Path(self.root) / f"{artifacts.CURRENT}.lock", "a+b") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # --- versions -------------------------------------------------------------------------
    def list_versions(self) -> list[str]:
        """Names of the versions in the store, newest first (complete or not)."""
        try:
            entries = self.fs.ls(self._path(artifacts.VERSIONS), detail=False)
        except FileNotFoundError:
            return []
        names = {str(e).rstrip("/").rsplit("/", 1)[-1] for e in entries}
        return sorted((n for n in names if artifacts.is_version_name(n)), reverse=True)

    def read_manifest(self, version: str) -> dict[str, Any]:
        """The version's manifest from the store (parsed and checked like a local one).

        Raises:
            artifacts.ArtifactError: missing (an incomplete upload has none), oversized or malformed.
        """
        path = self._version_path(version, artifacts.MANIFEST)
        try:
            size = int(self.fs.info(path).get("size") or 0)
        except FileNotFoundError as exc:
            raise artifacts.ArtifactError(f"{self.url}: version {version} has no {artifacts.MANIFEST}") from exc
        if size > MANIFEST_MAX_BYTES:
            raise artifacts.ArtifactError(f"{self.url}: {version}/{artifacts.MANIFEST} is {size} bytes: not a manifest")
        where = f"{self.url}/{artifacts.VERSIONS}/{version}/{artifacts.MANIFEST}"
        try:
            manifest = artifacts.check_manifest(json.loads(self.fs.cat_file(path)), where)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise artifacts.ArtifactError(f"{where}: unreadable ({exc})") from exc
        artifacts.manifest_files(manifest)  # paths and entries checked before anything uses them
        return manifest

    def upload(self, folder: Path, version: str, *, manifest: dict[str, Any] | None = None) -> dict[str, Any]:
        """Copy a local version into the store (manifest last), then check every object's size.
        ``manifest``: the version's, already verified by the caller (default: verified here).

        Raises:
            artifacts.ArtifactError: the local version does not verify, or an object came out wrong.
        """
        manifest = manifest or artifacts.verify_version(folder, checksums=True)
        files = artifacts.manifest_files(manifest)
        for rel in files:
            self._put(Path(folder) / rel, self._version_path(version, rel))
        # The manifest marks the version complete: a reader never sees one without its files.
        self._put(Path(folder) / artifacts.MANIFEST, self._version_path(version, artifacts.MANIFEST))
        self.verify(version, expected=manifest)
        log.info("uploaded version %s to %s (%d files)", version, self.url, len(files) + 1)
        return manifest

    def _put(self, local: Path, remote: str) -> None:
        if self.kind != "s3":  # object stores have no folders; file systems need them made
            self.fs.makedirs(remote.rsplit("/", 1)[0], exist_ok=True)
        self.fs.put_file(str(local), remote)

    def verify(self, version: str, *, expected: dict[str, Any] | None = None) -> dict[str, Any]:
        """Check that the store holds every object of ``version`` with its manifest's size.

        Sizes only (one listing): checksums are taken by every host that downloads it.

        Raises:
            artifacts.ArtifactError: a missing or resized object, or a manifest other than ``expected``.
        """
        manifest = self.read_manifest(version)
        if expected is not None and manifest != json.loads(json.dumps(expected, default=str)):
            raise artifacts.ArtifactError(f"{self.url}: {version}/{artifacts.MANIFEST} differs from the local one")
        prefix = self._version_path(version)
        sizes = {str(p)[len(prefix) + 1:]: int(info.get("size") or 0)
                 for p, info in self.fs.find(prefix, detail=True).items()}
        for rel, meta in artifacts.manifest_files(manifest).items():
            if rel not in sizes:
                raise artifacts.ArtifactError(f"{self.url}: {version}/{rel} is missing")
            if sizes[rel] != meta["bytes"]:
                raise artifacts.ArtifactError(
                    f"{self.url}: {version}/{rel} has {sizes[rel]} bytes, manifest says {meta['bytes']}")
        return manifest

    def download(self, version: str, index_dir: Path) -> Path:
        """Fetch ``version`` into ``index_dir/versions/`` through a private folder, every checksum
        verified before it appears there (another process may have fetched it first: then theirs stays).

        Raises:
            artifacts.ArtifactError: incomplete in the store, or an object does not match its checksum.
            OSError: the store or the local disk failed (nothing is left behind).
        """
        target = artifacts.version_dir(index_dir, version)
        manifest = self.verify(version)  # sizes first: an oversized object is never downloaded
        staging = Path(index_dir) / f"{FETCHING_PREFIX}{version}-{secrets.token_hex(4)}"
        staging.mkdir(parents=True)
        try:
            for rel in artifacts.manifest_files(manifest):
                local = staging / rel
                local.parent.mkdir(parents=True, exist_ok=True)
                self.fs.get_file(self._version_path(version, rel), str(local))
            artifacts.write_json_atomic(staging / artifacts.MANIFEST, manifest)
            artifacts.verify_version(staging, checksums=True)
            if not target.is_dir():
                try:
                    artifacts.finish_version(index_dir, staging, version)
                except OSError:
                    if not target.is_dir():
                        raise  # else another process of this host fetched it first: theirs stays
        finally:
            shutil.rmtree(staging, ignore_errors=True)  # already gone when the rename succeeded
        log.info("fetched version %s from %s", version, self.url)
        return target

    def delete_version(self, version: str) -> None:
        """Remove a version's objects (manifest first, so a half-deleted version reads as incomplete)."""
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._version_path(version, artifacts.MANIFEST))
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self._version_path(version), recursive=True)


def publish(store: RemoteStore, folder: Path, version: str, *, expected: RemotePointer | None = None,
            manifest: dict[str, Any] | None = None) -> None:
    """Upload ``version`` unless the store already has it, verify it, then swap the store's pointer.

    ``expected``: the pointer as the caller read it before deciding to publish (a build reads it
    when it starts, so a rollback made during the build is not overwritten); default: read now.
    ``manifest``: the local version's, already verified with checksums by the caller (hashing a
    large version twice is the slow part of a publish); default: verified here.

    Raises:
        PointerConflict: the store's pointer changed since ``expected`` was read.
        artifacts.ArtifactError: the version does not verify locally or in the store.
    """
    expected = expected if expected is not None else store.read_pointer()
    manifest = manifest or artifacts.verify_version(folder, checksums=True)
    try:
        store.verify(version, expected=manifest)
    except artifacts.ArtifactError:
        store.upload(folder, version, manifest=manifest)
    store.swap_pointer(version, expected)
    log.info("published version %s to %s", version, store.url)
