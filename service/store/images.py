"""The content-addressed image store: every image the service serves or embeds lives here.

A blob is named by the sha256 of its bytes (key ``sha256:<64 hex>``, file ``<root>/ab/abcd...``)
and is validated before it is written: Pillow must identify it as JPEG, PNG, WebP, GIF or BMP,
its pixel count (read from the header) must be within ``max_image_pixels`` and it must decode.
``items.image_location`` holds the key; anything else there is a legacy value that is never
read or served (``recsys images migrate`` converts it).

With ``image_url`` set (an fsspec URL: ``s3://bucket/images``), that store holds every blob and
the folder is this host's cache: a write goes to both, a read of a blob the folder lacks fetches
it and checks that its bytes hash to its key, so service replicas and indexer hosts share images.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Mapping

KEY_PREFIX = "sha256:"
_KEY_RE = re.compile(r"sha256:([0-9a-f]{64})")

# Pillow format name -> mimetype; nothing else is ever decoded (no EPS, PSD, TIFF, ... parsers).
# MPO is how Pillow names a JPEG with extra preview frames (many phone photos).
FORMATS = {"JPEG": "image/jpeg", "MPO": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif",
           "BMP": "image/bmp"}
# The Pillow openers tried (the JPEG one also yields MPO).
_OPENERS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")
FORMAT_NAMES = "JPEG, PNG, WebP, GIF, BMP"


class ImageRejected(ValueError):
    """The bytes are not an image this service accepts (the reason says why)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class ImageTooLarge(ImageRejected):
    """The bytes exceed the size limit."""


class InvalidKey(ValueError):
    """A string that is not a store key (``sha256:`` + 64 lowercase hex digits)."""


class ImageMissing(LookupError):
    """A well-formed key with no blob in the store."""


def is_key(value: str | None) -> bool:
    """Whether ``value`` is a store key (legacy paths and URLs are not)."""
    return isinstance(value, str) and _KEY_RE.fullmatch(value) is not None


def key_of(data: bytes) -> str:
    """The store key of some bytes."""
    return KEY_PREFIX + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class ImageInfo:
    format: str
    width: int
    height: int

    @property
    def mimetype(self) -> str:
        return FORMATS[self.format]


def inspect_image(data: bytes, *, max_pixels: int, max_bytes: int) -> ImageInfo:
    """Check that ``data`` is an acceptable image; decode it fully to be sure.

    Raises:
        ImageTooLarge: more than ``max_bytes`` bytes.
        ImageRejected: empty, not one of :data:`FORMATS`, too many pixels, or undecodable.
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ImageRejected("empty file")
    if len(data) > max_bytes:
        raise ImageTooLarge(f"{len(data)} bytes is more than the limit of {max_bytes}")
    try:
        # DecompressionBombError/Warning are not OSError subclasses: caught by name. Pillow's own
        # bomb check uses its global limit; ours (below) runs on the header before any decoding.
        with Image.open(io.BytesIO(data), formats=list(_OPENERS)) as img:
            fmt, (width, height) = img.format, img.size
            if fmt not in FORMATS:
                raise ImageRejected(f"{fmt} is not supported ({FORMAT_NAMES})")
            if width * height > max_pixels:
                raise ImageRejected(f"{width}x{height} pixels is more than the limit of {max_pixels}")
            img.load()
    except ImageRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected(f"too many pixels (limit {max_pixels})") from exc
    except UnidentifiedImageError as exc:
        raise ImageRejected(f"not a supported image type ({FORMAT_NAMES})") from exc
    except Exception as exc:  # noqa: BLE001
        # Decoders raise a zoo of types on corrupt input (OSError, SyntaxError, struct.error,
        # IndexError, ValueError, EOFError, ...): all of them mean "not a usable image".
        raise ImageRejected(f"cannot be decoded ({type(exc).__name__})") from exc
    return ImageInfo(fmt, width, height)


def sniff_mimetype(head: bytes) -> str:
    """Mimetype of a stored blob from its first bytes (the store keeps no metadata)."""
    if head.startswith(b"\xff\xd8\xff"):
        return FORMATS["JPEG"]
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return FORMATS["PNG"]
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return FORMATS["WEBP"]
    if head.startswith((b"GIF87a", b"GIF89a")):
        return FORMATS["GIF"]
    if head.startswith(b"BM"):
        return FORMATS["BMP"]
    return "application/octet-stream"


class ImageStore:
    """Validated image blobs under one folder, named by the sha256 of their bytes."""

    def __init__(self, root: Path, *, max_pixels: int, max_bytes: int, url: str = "",
                 options: Mapping[str, Any] | None = None):
        self.root = Path(root)
        self.max_pixels = max_pixels
        self.max_bytes = max_bytes
        self.url = url.rstrip("/")
        self._remote: tuple[Any, str] | None = None
        if self.url:
            import fsspec

            fs, path = fsspec.core.url_to_fs(self.url, **dict(options or {}))
            self._remote = (fs, path.rstrip("/"))

    @classmethod
    def from_settings(cls, settings) -> "ImageStore":
        """The store of ``settings.image_path`` (the cache of ``image_url`` when set); the byte
        limit is the larger of upload and fetch limits."""
        limit_mb = max(settings.max_upload_mb, settings.image_fetch_max_mb)
        return cls(settings.image_path, max_pixels=settings.max_image_pixels, max_bytes=int(limit_mb * 1024 * 1024),
                   url=settings.image_url, options=settings.artifact_options)

    def _remote_path(self, key: str) -> str:
        assert self._remote is not None
        digest = self.path_of(key).name
        return f"{self._remote[1]}/{digest[:2]}/{digest}"

    def path_of(self, key: str) -> Path:
        """Where the blob of ``key`` lives (whether or not it exists).

        Raises:
            InvalidKey: not ``sha256:`` + 64 lowercase hex digits (so no path can be smuggled in).
        """
        match = _KEY_RE.fullmatch(key) if isinstance(key, str) else None
        if match is None:
            raise InvalidKey("not an image store key (expected sha256:<64 hex digits>)")
        digest = match.group(1)
        return self.root / digest[:2] / digest

    def exists(self, key: str) -> bool:
        """Whether the store holds ``key`` (False for anything that is not a key); with a shared
        store, a blob this host lacks is fetched (so ``path_of`` then names a file)."""
        try:
            return self.path_of(key).is_file() or self._fetch(key)
        except InvalidKey:
            return False

    def _fetch(self, key: str) -> bool:
        """Copy ``key`` from the shared store into the folder; False when it is not there.

        The bytes must hash to the key and fit ``max_bytes``: the shared store is not trusted more
        than an upload. Raises OSError when the store cannot be reached.
        """
        if self._remote is None:
            return False
        fs, _ = self._remote
        path = self._remote_path(key)
        try:
            size = int(fs.info(path).get("size") or 0)
        except FileNotFoundError:
            return False
        if size > self.max_bytes:
            return False
        data = fs.cat_file(path)
        if key_of(data) != key:
            return False  # a damaged or foreign blob: as good as missing
        self._write_local(key, data)
        return True

    def put(self, data: bytes) -> str:
        """Validate and store ``data``; return its key. Storing the same bytes again is a no-op.

        Raises:
            ImageTooLarge, ImageRejected: see :func:`inspect_image`.
        """
        data = bytes(data)
        inspect_image(data, max_pixels=self.max_pixels, max_bytes=self.max_bytes)
        key = key_of(data)
        if self._remote is not None:  # the shared store first: no host may refer to a blob only it has
            fs, _ = self._remote
            remote = self._remote_path(key)
            if not fs.exists(remote):
                if "file" in (fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)):
                    fs.makedirs(remote.rsplit("/", 1)[0], exist_ok=True)
                fs.pipe_file(remote, data)
        if not self.path_of(key).is_file():
            self._write_local(key, data)
        return key

    def _write_local(self, key: str, data: bytes) -> None:
        path = self.path_of(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write beside the target, then rename: readers never see a partial blob, and two writers
        # of the same bytes race harmlessly (same content, last rename wins).
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def open(self, key: str) -> BinaryIO:
        """The blob of ``key``, opened for binary reading.

        Raises:
            InvalidKey: not a key.
            ImageMissing: no such blob.
        """
        path = self.path_of(key)
        try:
            if not path.is_file():
                self._fetch(key)
            return open(path, "rb")
        except FileNotFoundError as exc:
            raise ImageMissing(f"no image {key} in the store") from exc

    def read(self, key: str) -> bytes:
        """The bytes of ``key`` (same errors as :meth:`open`)."""
        with self.open(key) as fh:
            return fh.read()

    def mimetype(self, key: str) -> str:
        """The blob's mimetype, from its magic bytes (same errors as :meth:`open`)."""
        with self.open(key) as fh:
            return sniff_mimetype(fh.read(16))
