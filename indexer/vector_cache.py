"""Embedding cache keyed by (item content hash, encoder name + revision).

One folder per space and encoder holds two arrays, ``keys.npy`` (content hashes) and
``vectors.npy`` (float32 rows), plus ``meta.json`` tying them together. A rebuild looks every
live item's content hash up here and embeds only the misses. The cache is rewritten after each
build with exactly the live items' vectors, so it never grows past the catalog. It is only a
cache: if its files disagree (a crash between two writes), it is dropped with a warning and
everything is re-embedded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def cache_key(space: str, encoder_name: str, encoder_revision: str) -> str:
    digest = hashlib.sha256(f"{encoder_name}\x1f{encoder_revision}".encode()).hexdigest()[:16]
    return f"{space}-{digest}"


class VectorCache:
    """Vectors of one space and encoder, looked up by content hash."""

    def __init__(self, root: Path, space: str, encoder_name: str, encoder_revision: str, dim: int):
        self.folder = Path(root) / cache_key(space, encoder_name, encoder_revision)
        self.dim = dim
        self.meta = {"space": space, "encoder": encoder_name, "revision": encoder_revision, "dim": dim}
        self._index: dict[bytes, int] = {}
        self._vectors = np.zeros((0, dim), dtype=np.float32)
        self._load()

    def _load(self) -> None:
        meta_path = self.folder / "meta.json"
        if not meta_path.exists():
            return
        try:
            meta = json.loads(meta_path.read_text())
            keys = np.load(self.folder / "keys.npy")
            vectors = np.load(self.folder / "vectors.npy", mmap_mode="r")
            if meta.get("count") != len(keys) or vectors.shape != (len(keys), self.dim):
                raise ValueError(f"count {meta.get('count')} vs keys {len(keys)} vs vectors {vectors.shape}")
            if {k: meta.get(k) for k in self.meta} != self.meta:
                raise ValueError("metadata of another encoder")
        except (OSError, ValueError, json.JSONDecodeError) as exc:
            log.warning("vector cache %s is inconsistent (%s): ignoring it, items will be re-embedded", self.folder, exc)
            return
        self._vectors = vectors
        self._index = {k: i for i, k in enumerate(keys.tolist())}

    def __len__(self) -> int:
        return len(self._index)

    def lookup(self, hashes: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Return (positions found, their vectors) for the given content hashes."""
        rows = [self._index.get(h.encode("ascii"), -1) for h in hashes]
        found = np.array([i for i, r in enumerate(rows) if r >= 0], dtype=np.int64)
        if not len(found):
            return found, np.zeros((0, self.dim), dtype=np.float32)
        take = np.array([rows[i] for i in found], dtype=np.int64)
        order = np.argsort(take)  # sequential reads from the memory map, then back to input order
        vectors = np.empty((len(take), self.dim), dtype=np.float32)
        vectors[order] = np.asarray(self._vectors[take[order]], dtype=np.float32)
        return found, vectors

    def replace(self, hashes: list[str], vectors: np.ndarray) -> None:
        """Rewrite the cache with exactly these entries (the live items of this build)."""
        if len(hashes) != len(vectors):
            raise ValueError(f"{len(hashes)} hashes for {len(vectors)} vectors")
        tmp = self.folder.with_name(self.folder.name + f".tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        keys = np.array([h.encode("ascii") for h in hashes], dtype="S64")
        np.save(tmp / "keys.npy", keys)
        np.save(tmp / "vectors.npy", np.ascontiguousarray(vectors, dtype=np.float32))
        (tmp / "meta.json").write_text(json.dumps({**self.meta, "count": len(hashes)}))
        # Swap folders: drop the memory map of the old file before deleting it.
        self._vectors = np.zeros((0, self.dim), dtype=np.float32)
        old = self.folder.with_name(self.folder.name + f".old-{os.getpid()}")
        if self.folder.exists():
            os.replace(self.folder, old)
        os.replace(tmp, self.folder)
        shutil.rmtree(old, ignore_errors=True)
        self._index = {}
        self._load()
