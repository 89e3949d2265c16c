"""Prometheus metrics: request latency per endpoint, stage timings, index version and size.

Each app gets its own registry (tests build many apps). Under gunicorn with several workers, set
``PROMETHEUS_MULTIPROC_DIR`` to a writable folder and the workers' metrics are aggregated at
``/metrics`` (prometheus_client's multiprocess mode); otherwise each worker reports its own.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess

# Search-bar latencies live between 1 ms and 100 ms; keep buckets dense there.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Histogram("recsys_request_seconds", "Request latency by endpoint and status class",
                                  ["endpoint", "method", "status"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.stages = Histogram("recsys_stage_seconds", "Time spent in request stages (encode, search, sql, ...)",
                                ["stage"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.errors = Counter("recsys_errors_total", "Error responses by code", ["code"], registry=self.registry)
        self.index_info = Gauge("recsys_index_info", "Published index version being served (value 1)",
                                ["version"], registry=self.registry, multiprocess_mode="liveall")
        self.index_size = Gauge("recsys_index_vectors", "Vectors per space in the served version",
                                ["space"], registry=self.registry, multiprocess_mode="liveall")
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
