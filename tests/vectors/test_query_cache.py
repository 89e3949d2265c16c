"""The LRU cache of query vectors, with fake encoders (no model loads: fast)."""

from __future__ import annotations

import threading
import zlib

import numpy as np
import pytest

from service.vectors.query_cache import QueryCache

DIM = 8


class FakeEncoder:
    """Deterministic unit vectors per (revision, text); counts its calls."""

    def __init__(self, name: str = "fake", revision: str = "r1"):
        self.name, self.revision = name, revision
        self.calls: list[str] = []
        self._lock = threading.Lock()

    def encode(self, text: str) -> np.ndarray:
        with self._lock:
            self.calls.append(text)
        rng = np.random.default_rng(zlib.crc32(f"{self.name}|{self.revision}|{text}".encode()))
        v = rng.standard_normal(DIM).astype(np.float32)
        return v / np.linalg.norm(v)


def test_a_hit_returns_the_same_vector_without_encoding():
    cache, enc = QueryCache(4), FakeEncoder()
    encode = cache.wrap("text", enc, enc.encode)
    first = encode("red shoes")
    second = encode("red shoes")
    assert second is first and enc.calls == ["red shoes"]
    assert (cache.hits, cache.misses) == (1, 1)
    np.testing.assert_array_equal(first, enc.encode("red shoes"))


def test_cached_vectors_are_read_only():
    cache, enc = QueryCache(4), FakeEncoder()
    vector = cache.wrap("text", enc, enc.encode)("kettle")
    assert not vector.flags.writeable
    with pytest.raises(ValueError):
        vector[0] = 0.0


def test_least_recently_used_is_evicted_at_the_bound():
    cache, enc = QueryCache(2), FakeEncoder()
    encode = cache.wrap("text", enc, enc.encode)
    encode("a")
    encode("b")
    encode("a")  # a is now the most recent
    encode("c")  # evicts b
    assert len(cache) == 2
    enc.calls.clear()
    encode("a")
    encode("c")
    assert enc.calls == []
    encode("b")
    assert enc.calls == ["b"] and len(cache) == 2


def test_never_serves_another_encoders_or_revisions_vector():
    cache = QueryCache(16)
    old, new, other = FakeEncoder("m", "r1"), FakeEncoder("m", "r2"), FakeEncoder("other", "r1")
    v_old = cache.wrap("text", old, old.encode)("same text")
    v_new = cache.wrap("text", new, new.encode)("same text")
    v_other = cache.wrap("text", other, other.encode)("same text")
    assert old.calls == new.calls == other.calls == ["same text"]
    assert not np.array_equal(v_old, v_new) and not np.array_equal(v_old, v_other)
    np.testing.assert_array_equal(v_new, new.encode("same text"))
    # Each still hits its own entry.
    assert cache.wrap("text", old, old.encode)("same text") is v_old
    assert cache.wrap("text", new, new.encode)("same text") is v_new


def test_text_and_clip_spaces_never_share_entries():
    cache = QueryCache(16)
    # Even an encoder reporting the same name and revision in both spaces gets its own entries.
    text, clip = FakeEncoder("same", "r"), FakeEncoder("same", "r")
    v_text = cache.wrap("text", text, text.encode)("sunset")
    v_clip = cache.wrap("clip", clip, lambda t: -clip.encode(t))("sunset")
    assert text.calls == clip.calls == ["sunset"]
    assert not np.array_equal(v_text, v_clip)
    assert cache.wrap("text", text, text.encode)("sunset") is v_text
    assert cache.wrap("clip", clip, clip.encode)("sunset") is v_clip


def test_exact_text_is_the_key():
    cache, enc = QueryCache(16), FakeEncoder()
    encode = cache.wrap("text", enc, enc.encode)
    for q in ("Shoes", "shoes", "shoes ", "shoes"):
        encode(q)
    assert enc.calls == ["Shoes", "shoes", "shoes "]


def test_size_zero_disables_the_cache():
    cache, enc = QueryCache(0), FakeEncoder()
    encode = cache.wrap("text", enc, enc.encode)
    encode("q")
    encode("q")
    assert enc.calls == ["q", "q"] and len(cache) == 0
    cache.encode("text", enc, enc.encode, "q")
    assert enc.calls == ["q", "q", "q"] and len(cache) == 0


def test_negative_size_is_refused():
    with pytest.raises(ValueError):
        QueryCache(-1)


def test_concurrent_use_is_consistent():
    cache = QueryCache(32)
    encoders = [FakeEncoder("m", "r1"), FakeEncoder("m", "r2")]
    queries = [f"query {i}" for i in range(48)]  # more than the bound: evictions under contention
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def work(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            start.wait()
            for _ in range(400):
                enc = encoders[int(rng.integers(2))]
                q = queries[int(rng.integers(len(queries)))]
                space = "text" if rng.integers(2) else "clip"
                got = cache.encode(space, enc, enc.encode, q)
                np.testing.assert_array_equal(got, enc.encode(q))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert len(cache) <= 32
    assert cache.hits + cache.misses == 8 * 400 and cache.hits > 0
