"""Collaborative fits with their heavy products on a Ray cluster; a drop-in for ``collab.fit``.

* ``ease``: X'X summed from partial Grams of user-row partitions, one Ray task each (the
  partitions go through the object store); the N x N solve stays on the driver, in
  :mod:`service.recommend.collab`'s own code.
* ``item_knn``: the row blocks of the item-item similarity (each block's top neighbours), in
  groups, one Ray task per group; concatenated in block order, so the arrays are the local fit's.
* ``factor``: fitted here. ARPACK's Lanczos iteration is a chain of dependent sparse products
  (hundreds of round trips for O(nnz) work each): the cluster would add latency, not speed.

Memory: the fit's budget (``train_memory_budget_mb``) counts one process; here every task
holds its own working set (a partial Gram is N x N float64; a kNN group one block's products).
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import numpy as np
import scipy.sparse as sp

from indexer.ray_cluster import LazyCluster, RayUnavailable
from service.recommend import collab

log = logging.getLogger("recsys.train")

# kNN row blocks per task group, per worker: a few groups each keeps the workers busy when
# blocks differ in cost, without a task per (possibly tiny) block.
KNN_GROUPS_PER_WORKER = 4


def _partial_gram(part: sp.csr_matrix) -> np.ndarray:
    return collab.ease_gram(part)


def _knn_group(xt: sp.csr_matrix, x: sp.csr_matrix, bounds: list[tuple[int, int]], k: int) -> list[tuple]:
    return collab.knn_blocks(xt, x, bounds, k)


@functools.cache
def _remote(fn: Any) -> Any:
    """The Ray remote function of ``fn``, made once per process."""
    import ray

    return ray.remote(fn)


class RayFit:
    """``fit(family, data, **params)`` as :func:`service.recommend.collab.fit`, on ``cluster``.

    ``workers``: parallel tasks per product (0: the cluster's CPUs).
    """

    def __init__(self, cluster: LazyCluster, workers: int = 0):
        self.cluster, self.workers = cluster, workers

    def __call__(self, family: str, data: collab.Interactions, **params: Any) -> collab.CollabModel:
        from indexer.pipeline import BuildError  # the pipeline imports this module lazily

        if family not in ("ease", "item_knn"):
            return collab.fit(family, data, **params)
        try:
            info = self.cluster.ensure()
        except RayUnavailable as exc:
            raise BuildError(f"training on Ray: {exc}") from exc
        import ray

        workers = self.workers or max(1, int(info.cpus))
        try:
            if family == "ease":
                return collab.fit(family, data, gram=functools.partial(self._gram, workers=workers), **params)
            return collab.fit(family, data, blocks=functools.partial(self._knn_blocks, workers=workers), **params)
        except ray.exceptions.RayError as exc:  # a task failed past its retries (Ray retries a killed worker's)
            raise BuildError(f"training on Ray: {family} fit failed: {str(exc).splitlines()[0]}") from exc

    @staticmethod
    def _gram(xs: sp.csr_matrix, *, workers: int) -> np.ndarray:
        """X'X as the sum of the user-row partitions' partial Grams, added up as they arrive."""
        import ray

        n_users, n = xs.shape
        bounds = np.linspace(0, n_users, min(workers, max(n_users, 1)) + 1).astype(np.int64)
        pending = [_remote(_partial_gram).remote(ray.put(xs[u0:u1])) for u0, u1 in zip(bounds[:-1], bounds[1:])]
        g = np.zeros((n, n), dtype=np.float64)
        while pending:  # one partial at a time on the driver: N x N float64 each
            done, pending = ray.wait(pending, num_returns=1)
            g += ray.get(done[0])
        return g

    @staticmethod
    def _knn_blocks(xt: sp.csr_matrix, x: sp.csr_matrix, bounds: list[tuple[int, int]], k: int, *,
                    workers: int) -> list[tuple]:
        """Every block's neighbours, groups of blocks as tasks; results in block order."""
        import ray

        if not bounds:
            return []
        xt_ref, x_ref = ray.put(xt), ray.put(x)
        groups = np.array_split(np.arange(len(bounds)), min(len(bounds), workers * KNN_GROUPS_PER_WORKER))
        refs = [_remote(_knn_group).remote(xt_ref, x_ref, [bounds[i] for i in g], k) for g in groups]
        return [block for group in ray.get(refs) for block in group]


__all__ = ["RayFit"]
