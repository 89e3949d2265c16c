"""The on-disk format of index versions, shared by the indexer (writes) and the service (reads).

Layout under the index directory::

    versions/<version>/manifest.json           counts, encoders, index keys, params, recall, checksums
    versions/<version>/<space>/index.faiss     one FAISS index per embedding space
    versions/<version>/<space>/ids.npy         row -> item primary key (int64, ascending)
    versions/<version>/<space>/vectors.npy     row -> exact float32 vector (more-like-this, profiles)
    versions/<version>/behaviour/*.npy         the collaborative model of the training stage (optional)
    versions/<version>/behaviour/event_window.npz  the newest events, where workers' behaviour starts
    versions/<version>/encoder/                 the fine-tuned text encoder its text space was built with
                                                (a sentence-transformers folder; optional)
    .building-<version>/                        a build in progress (never read; removed by gc)
    CURRENT                                     name of the published version

A version folder only appears under ``versions/`` once every file in it is written and synced
(``os.replace`` of the whole folder), and ``CURRENT`` is swapped with ``os.replace`` too, so a
reader sees either the old version or the new one, never half of one.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
CURRENT = "CURRENT"
VERSIONS = "versions"
BUILDING_PREFIX = ".building-"
INDEX_FILE = "index.faiss"
IDS_FILE = "ids.npy"
VECTORS_FILE = "vectors.npy"
SPACE_FILES = (INDEX_FILE, IDS_FILE, VECTORS_FILE)
SPACES = ("text", "clip")
# Manifest sections besides the spaces whose "files" live in a folder of the same name: the
# collaborative model, the fine-tuned text encoder (a sentence-transformers folder), the text
# space's query encoder exported for ONNX Runtime, and the fine-tuned CLIP weights.
ENCODER_DIR = "encoder"
QUERY_ENCODER_DIR = "query_encoder"
CLIP_ENCODER_DIR = "clip_encoder"
CLIP_WEIGHTS = "weights.pt"  # the fine-tuned CLIP state dict inside CLIP_ENCODER_DIR
FILE_SECTIONS = ("behaviour", ENCODER_DIR, QUERY_ENCODER_DIR, CLIP_ENCODER_DIR)
# The section (and folder) of each space's fine-tuned encoder.
ENCODER_SECTIONS = {"text": ENCODER_DIR, "clip": CLIP_ENCODER_DIR}
_VERSION_RE = re.compile(r"^[0-9]{8}T[0-9]{9}Z-[0-9a-f]{6}$")


class ArtifactError(RuntimeError):
    """A version is missing, incomplete, corrupt or of an unknown format."""


def new_version_name(now: dt.datetime | None = None) -> str:
    """Sortable, unique version name: UTC time to the millisecond plus a random suffix.

    Names sort in build order (``list_versions`` and ``gc`` rely on it), so two builds in the
    same second still order correctly.
    """
    now = now or dt.datetime.now(dt.timezone.utc)
    return now.strftime("%Y%m%dT%H%M%S") + f"{now.microsecond // 1000:03d}Z-" + secrets.token_hex(3)


def is_version_name(name: str) -> bool:
    return bool(_VERSION_RE.match(name))


def versions_dir(index_dir: Path) -> Path:
    return Path(index_dir) / VERSIONS


def version_dir(index_dir: Path, version: str) -> Path:
    if not is_version_name(version):
        raise ArtifactError(f"not a version name: {version!r}")
    return versions_dir(index_dir) / version


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable (POSIX; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    for folder, _dirs, files in os.walk(root):
        for name in files:
            with open(Path(folder) / name, "rb") as fh:
                os.fsync(fh.fileno())
        fsync_dir(Path(folder))


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=True, default=str)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_manifest(folder: Path) -> dict[str, Any]:
    """Read and sanity-check a version's manifest.

    Raises:
        ArtifactError: missing, unreadable, or of another format version.
    """
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ArtifactError(f"{folder}: no {MANIFEST}") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}: unreadable ({exc})") from exc
    return check_manifest(manifest, str(path))


def check_manifest(manifest: Any, where: str) -> dict[str, Any]:
    """``manifest`` (parsed JSON, from a file or an object store) if it is one this code reads.

    Raises:
        ArtifactError: not an object, of another format version, or without spaces.
    """
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{where}: not a manifest (a JSON {type(manifest).__name__})")
    if manifest.get("format") != FORMAT_VERSION:
        raise ArtifactError(f"{where}: format {manifest.get('format')!r}, this code reads {FORMAT_VERSION}")
    if not isinstance(manifest.get("spaces"), dict):
        raise ArtifactError(f"{where}: no spaces")
    return manifest


_SAFE_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+=@-]{0,199}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def manifest_files(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every file a manifest lists, keyed by its path inside the version folder (``text/ids.npy``).

    A manifest may come from an object store another host wrote: each path must be relative
    and plain (no ``..``, no absolute or hidden parts) and each entry a size and a sha256.

    Raises:
        ArtifactError: a path or an entry that could reach outside the folder or is malformed.
    """
    sections = [(space, info) for space, info in manifest["spaces"].items()]
    sections += [(name, manifest[name]) for name in FILE_SECTIONS if isinstance(manifest.get(name), dict)]
    out: dict[str, dict[str, Any]] = {}
    for section, info in sections:
        files = info.get("files", {}) if isinstance(info, dict) else None
        if not isinstance(files, dict):
            raise ArtifactError(f"section {str(section)[:40]!r}: files is not a mapping")
        for rel, meta in files.items():
            parts = [str(section), *str(rel).split("/")]
            if not all(_SAFE_PART.match(p) for p in parts):
                raise ArtifactError(f"unsafe file path in manifest: {'/'.join(parts)[:120]!r}")
            if not (isinstance(meta, dict) and isinstance(meta.get("bytes"), int) and meta["bytes"] >= 0
                    and isinstance(meta.get("sha256"), str) and _SHA256.match(meta["sha256"])):
                raise ArtifactError(f"malformed manifest entry for {'/'.join(parts)[:120]!r}")
            out["/".join(parts)] = meta
    return out


def verify_version(folder: Path, *, checksums: bool = True) -> dict[str, Any]:
    """Check that every file the manifest lists exists with its size (and sha256); return the manifest.

    Raises:
        ArtifactError: anything missing, different, or listed under an unsafe path.
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    for rel, meta in manifest_files(manifest).items():
        path = folder / rel
        if not path.is_file():
            raise ArtifactError(f"{folder.name}: {rel} is missing")
        if path.stat().st_size != meta["bytes"]:
            raise ArtifactError(f"{folder.name}: {rel} has {path.stat().st_size} bytes, manifest says {meta['bytes']}")
        if checksums and sha256_file(path) != meta["sha256"]:
            raise ArtifactError(f"{folder.name}: {rel} checksum mismatch")
    return manifest


def file_entry(path: Path) -> dict[str, Any]:
    return {"bytes": path.stat().st_size, "sha256": sha256_file(path)}


def tree_entries(folder: Path) -> dict[str, dict[str, Any]]:
    """:func:`file_entry` of every file under ``folder``, keyed by its path relative to it."""
    folder = Path(folder)
    return {path.relative_to(folder).as_posix(): file_entry(path)
            for path in sorted(folder.rglob("*")) if path.is_file()}


@dataclass(frozen=True)
class Pointer:
    """What ``CURRENT`` says: a usable version name, nothing (no file), or why it is unusable."""

    version: str | None
    error: str | None = None


# A pointer holds one version name; reading more than this means the file is not a pointer.
POINTER_MAX_BYTES = 4096


def read_pointer(index_dir: Path) -> Pointer:
    """Read ``CURRENT`` without ever raising: a damaged pointer is reported, not thrown.

    A missing file means nothing is published (``Pointer(None)``); an empty, oversized,
    non-UTF-8 or non-file pointer, or one that names no valid version, gives ``error``.
    """
    path = Path(index_dir) / CURRENT
    try:
        if not path.exists():
            return Pointer(None)
        if not path.is_file():  # a directory (or a FIFO, which would block a read)
            return Pointer(None, f"{CURRENT} is not a file")
        with open(path, "rb") as fh:
            raw = fh.read(POINTER_MAX_BYTES + 1)
    except OSError as exc:
        return Pointer(None, f"{CURRENT} is unreadable ({exc.strerror or exc})")
    return parse_pointer(raw)


def parse_pointer(raw: bytes) -> Pointer:
    """A pointer's bytes (from a file or an object store) as a :class:`Pointer`; never raises."""
    if len(raw) > POINTER_MAX_BYTES:
        return Pointer(None, f"{CURRENT} is over {POINTER_MAX_BYTES} bytes: not a version name")
    try:
        name = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        return Pointer(None, f"{CURRENT} is not UTF-8 text")
    if not name:
        return Pointer(None, f"{CURRENT} is empty")
    if not is_version_name(name):
        return Pointer(None, f"{CURRENT} names no valid version: {name[:80]!r}")
    return Pointer(name)


def current_version(index_dir: Path) -> str | None:
    """The published version's name, or None when nothing (usable) is published; never raises."""
    return read_pointer(index_dir).version


def set_current(index_dir: Path, version: str) -> None:
    """Publish ``version`` (must be a complete folder) by swapping the pointer atomically."""
    folder = version_dir(index_dir, version)
    verify_version(folder, checksums=False)
    pointer = Path(index_dir) / CURRENT
    tmp = pointer.with_name(f"{CURRENT}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(version + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, pointer)
    fsync_dir(Path(index_dir))


@dataclass(frozen=True)
class VersionInfo:
    name: str
    path: Path
    published: bool
    manifest: dict[str, Any] | None
    error: str | None


def list_versions(index_dir: Path) -> list[VersionInfo]:
    """Every complete-looking version folder, newest first, with its manifest or why it is bad."""
    root = versions_dir(index_dir)
    if not root.is_dir():
        return []
    current = current_version(index_dir)
    out = []
    for child in sorted(root.iterdir(), reverse=True):
        if not child.is_dir() or not is_version_name(child.name):
            continue
        try:
            manifest, error = read_manifest(child), None
        except ArtifactError as exc:
            manifest, error = None, str(exc)
        out.append(VersionInfo(child.name, child, child.name == current, manifest, error))
    return out


def start_version(index_dir: Path, version: str) -> Path:
    """Create the private folder a build writes into."""
    path = Path(index_dir) / f"{BUILDING_PREFIX}{version}"
    path.mkdir(parents=True, exist_ok=False)
    return path


def finish_version(index_dir: Path, building: Path, version: str) -> Path:
    """Sync a finished build folder and move it under ``versions/`` in one rename."""
    fsync_tree(building)
    target = version_dir(index_dir, version)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(building, target)
    fsync_dir(target.parent)
    return target


def stale_builds(index_dir: Path) -> list[Path]:
    """Leftover build folders (killed or failed builds)."""
    root = Path(index_dir)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(BUILDING_PREFIX))


def remove_tree(path: Path) -> None:
    """Delete a folder: rename it out of the way first so a crash never leaves half of a version."""
    doomed = path.with_name(f".deleting-{path.name}")
    os.replace(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)
