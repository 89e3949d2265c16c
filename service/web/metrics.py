"""Prometheus metrics: request latency per endpoint, stage timings, index version and size.

Each app gets its own registry (tests build many apps). Under gunicorn with several workers, set
``PROMETHEUS_MULTIPROC_DIR`` to a writable folder and the workers' metrics are aggregated at
``/metrics`` (prometheus_client's multiprocess mode); otherwise each worker reports its own.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from collections import deque
from typing import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess

# Search-bar latencies live between 1 ms and 100 ms; keep buckets dense there.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5)
# Requests kept per route for the status page's recent-latency percentiles (per worker).
RECENT_REQUESTS = 1000
# Routes are Flask rules (bounded), but methods come from clients: cap the keys too.
MAX_RECENT_ROUTES = 200


class RecentLatency:
    """Bounded ring buffer of recent request durations per route ("GET /search"), this process only."""

    def __init__(self, size: int = RECENT_REQUESTS) -> None:
        self.size = size
        self._routes: dict[str, deque[tuple[float, bool]]] = {}
        self._lock = threading.Lock()

    def add(self, route: str, seconds: float, error: bool = False) -> None:
        with self._lock:
            buf = self._routes.get(route)
            if buf is None:
                if len(self._routes) >= MAX_RECENT_ROUTES:
                    return
                buf = self._routes[route] = deque(maxlen=self.size)
            buf.append((seconds, error))

    def summary(self) -> dict[str, dict[str, float | int]]:
        """Per route over its last ``size`` requests: count, 5xx count, p50/p95/p99/max in ms."""
        with self._lock:
            snapshot = {route: list(buf) for route, buf in self._routes.items()}
        out: dict[str, dict[str, float | int]] = {}
        for route, rows in sorted(snapshot.items(), key=lambda kv: -len(kv[1])):
            times = sorted(t for t, _ in rows)
            n = len(times)

            def pct(q: float) -> float:  # nearest rank
                return round(times[min(n - 1, max(0, math.ceil(q * n) - 1))] * 1000, 2)

            out[route] = {"count": n, "errors": sum(1 for _, e in rows if e), "p50_ms": pct(0.50),
                          "p95_ms": pct(0.95), "p99_ms": pct(0.99), "max_ms": round(times[-1] * 1000, 2)}
        return out


class _RecordingHistogram:
    """The request histogram, also feeding :class:`RecentLatency` on every ``labels(...).observe``."""

    def __init__(self, histogram: Histogram, recent: RecentLatency) -> None:
        self._histogram = histogram
        self._recent = recent

    def labels(self, *values: str, **named: str) -> "_RecordingChild":
        named = {**dict(zip(("endpoint", "method", "status"), values)), **named}
        return _RecordingChild(self._histogram.labels(**named), self._recent,
                               f"{named['method']} {named['endpoint']}", named["status"] == "5xx")

    def __getattr__(self, name: str):
        return getattr(self._histogram, name)


class _RecordingChild:
    def __init__(self, child, recent: RecentLatency, route: str, error: bool) -> None:
        self._child, self._recent, self._route, self._error = child, recent, route, error

    def observe(self, amount: float) -> None:
        self._child.observe(amount)
        self._recent.add(self._route, amount, self._error)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.recent = RecentLatency()
        self.requests = _RecordingHistogram(
            Histogram("recsys_request_seconds", "Request latency by endpoint and status class",
                      ["endpoint", "method", "status"], buckets=LATENCY_BUCKETS, registry=self.registry),
            self.recent)
        self.stages = Histogram("recsys_stage_seconds", "Time spent in request stages (encode, search, sql, ...)",
                                ["stage"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.errors = Counter("recsys_errors_total", "Error responses by code", ["code"], registry=self.registry)
        self.index_info = Gauge("recsys_index_info", "Published index version being served (value 1)",
                                ["version"], registry=self.registry, multiprocess_mode="liveall")
        self.index_size = Gauge("recsys_index_vectors", "Vectors per space in the served version",
                                ["space"], registry=self.registry, multiprocess_mode="liveall")
        self.recommendations = Counter("recsys_recommendations_total", "Recommendation responses by strategy",
                                       ["strategy"], registry=self.registry)
        self.attributed_events = Counter("recsys_attributed_events_total",
                                         "Stored events that carry a recommendation_id, by type",
                                         ["type"], registry=self.registry)
        self.behaviour_events = Gauge("recsys_behaviour_events", "Events in this worker's behaviour snapshot",
                                      registry=self.registry, multiprocess_mode="liveall")
        self.delta_size = Gauge("recsys_fresh_vectors", "Fresh (not yet indexed) vectors per space",
                                ["space"], registry=self.registry, multiprocess_mode="liveall")

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.stages.labels(name).observe(time.perf_counter() - start)

    def set_version(self, version: str, sizes: dict[str, int]) -> None:
        self.index_info.clear()
        self.index_info.labels(version).set(1)
        for space, n in sizes.items():
            self.index_size.labels(space).set(n)

    def render(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)
