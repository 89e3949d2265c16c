"""A bounded LRU cache of recent query vectors: search bars repeat queries.

Keyed by (space, encoder name, encoder revision, exact query text), so a vector is only ever
served for the space and the weights that produced it: the text and CLIP spaces never share
entries, and a new model revision (or a different model) misses instead of serving stale
vectors. Cached arrays are read-only (``flags.writeable = False``): every hit hands out the same
array, so nobody may change it in place.

``functools.lru_cache`` would key on the text alone; this one also takes the encoder identity
and is shared by a worker's threads (one lock; encoding runs outside it, so a slow miss never
blocks hits).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Callable

import numpy as np

Key = tuple[str, str, str, str]


class QueryCache:
    """LRU of query vectors holding at most ``maxsize`` entries; ``maxsize=0`` disables it."""

    def __init__(self, maxsize: int):
        if maxsize < 0:
            raise ValueError(f"maxsize must be >= 0, got {maxsize}")
        self.maxsize = maxsize
        self._entries: OrderedDict[Key, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Key) -> np.ndarray | None:
        """The cached vector for ``key`` (now the most recently used), or None."""
        with self._lock:
            vector = self._entries.get(key)
            if vector is None:
                self.misses += 1
            else:
                self._entries.move_to_end(key)
                self.hits += 1
            return vector

    def put(self, key: Key, vector: np.ndarray) -> np.ndarray:
        """Store ``vector`` (made read-only) and return it; evicts the least recently used."""
        vector.flags.writeable = False
        if self.maxsize == 0:
            return vector
        with self._lock:
            self._entries[key] = vector
            self._entries.move_to_end(key)
            while len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)
        return vector

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def encode(self, space: str, encoder: Any, encode: Callable[[str], np.ndarray], text: str) -> np.ndarray:
        """``encode(text)`` through the cache; ``encoder`` names the weights (``name``, ``revision``)."""
        if self.maxsize == 0:
            return encode(text)
        key = (space, encoder.name, encoder.revision, text)
        vector = self.get(key)
        if vector is None:
            # Two threads missing the same text both encode it; the vectors are equal.
            vector = self.put(key, encode(text))
        return vector

    def wrap(self, space: str, encoder: Any, encode: Callable[[str], np.ndarray]) -> Callable[[str], np.ndarray]:
        """``encode`` as a one-argument function going through the cache."""
        if self.maxsize == 0:
            return encode

        def cached(text: str) -> np.ndarray:
            return self.encode(space, encoder, encode, text)

        return cached


__all__ = ["QueryCache"]
