"""Image ingestion: turn what a client or a catalog gave as an item's image into a store key.

Sources: uploaded bytes and http(s) URLs (fetched through :mod:`service.store.fetch`) from the API and
the import; store keys naming a blob already stored; local files from the import CLI only,
confined to the import root. Everything passes :meth:`ImageStore.put` validation.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from service.store.fetch import FetchError, FetchPolicy, FetchTooLarge, fetch
from service.store.images import ImageRejected, ImageStore, ImageTooLarge
from service.store.records import FieldError, ImageRef, resolve_image_location


class ImageSourceError(Exception):
    """A file or store key that cannot be used as an image; ``reason`` is safe to show."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# Everything ingestion raises for bad input; each carries a ``reason``.
INGEST_ERRORS = (ImageRejected, FetchError, ImageSourceError)


def too_large(exc: BaseException) -> bool:
    """Whether an ingestion error means "over the size limit" (HTTP 413)."""
    return isinstance(exc, (ImageTooLarge, FetchTooLarge))


class ImageSources:
    """Ingestion into one store with one fetch policy."""

    def __init__(self, store: ImageStore, policy: FetchPolicy):
        self.store = store
        self.policy = policy

    @classmethod
    def from_settings(cls, settings) -> "ImageSources":
        return cls(ImageStore.from_settings(settings), FetchPolicy.from_settings(settings))

    def from_bytes(self, data: bytes) -> str:
        """Store uploaded bytes (raises ImageRejected / ImageTooLarge)."""
        return self.store.put(data)

    def from_url(self, url: str) -> str:
        """Fetch ``url`` through the guard and store the body (raises FetchError, ImageRejected)."""
        return self.store.put(fetch(url, self.policy))

    def from_key(self, key: str) -> str:
        """A key is usable only when the store holds its blob (raises ImageSourceError)."""
        if not self.store.exists(key):
            raise ImageSourceError(f"no image {key} in the image store: upload it first")
        return key

    def from_path(self, value: str, *, base_dir: Path, root: Path) -> str:
        """Store a local file that lies inside ``root`` (import CLI only; raises ImageSourceError)."""
        try:
            real = resolve_image_location(value, base_dir=base_dir, root=root)
        except FieldError as exc:
            raise ImageSourceError(exc.reason) from exc
        return self.store.put(read_file(real, self.store.max_bytes))

    def ingest(self, ref: ImageRef, *, base_dir: Path | None = None, root: Path | None = None) -> str:
        """The store key for ``ref``; paths need ``base_dir`` and ``root`` (the import CLI's).

        Raises:
            ImageRejected, FetchError, ImageSourceError: see the ``from_*`` methods.
        """
        if ref.kind == "key":
            return self.from_key(ref.value)
        if ref.kind == "url":
            return self.from_url(ref.value)
        if ref.kind == "path" and base_dir is not None and root is not None:
            return self.from_path(ref.value, base_dir=base_dir, root=root)
        raise ImageSourceError("file paths are accepted only by the import CLI")


def read_file(path: Path, max_bytes: int) -> bytes:
    """Read a regular file, at most ``max_bytes`` (raises ImageSourceError, ImageTooLarge).

    The last component is opened without following symlinks: ``path`` is already the real path,
    so a symlink there now was swapped in after the check.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise ImageSourceError("cannot open the file") from exc
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise ImageSourceError("not a regular file")
        try:
            data = fh.read(max_bytes + 1)
        except OSError as exc:
            raise ImageSourceError("cannot read the file") from exc
    if len(data) > max_bytes:
        raise ImageTooLarge(f"larger than the limit of {max_bytes} bytes")
    return data
