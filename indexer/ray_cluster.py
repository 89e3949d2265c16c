"""The Ray cluster a rebuild runs on (``settings.ray_address``), connected only while it is needed.

Ray is an optional dependency (extras ``scale`` and ``dev``): it is imported here, lazily, and
nowhere at module import. The cluster's nodes must have this project installed (the same image as
the indexer): nothing is shipped to them but the work itself.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from dataclasses import dataclass
from typing import Any, Iterator

log = logging.getLogger("recsys.indexer")

# Seconds to wait for a TCP answer from a remote address before ray.init: ray.init itself retries
# a dead GCS address for minutes before it gives up.
CONNECT_TIMEOUT_S = 5.0


class RayUnavailable(RuntimeError):
    """Ray is not installed, or nothing answers at the configured address."""


@dataclass(frozen=True)
class ClusterInfo:
    address: str
    cpus: float
    gpus: float
    started: bool  # this process started the cluster (it goes away with the connection)


def import_ray() -> Any:
    """The ``ray`` module.

    Raises:
        RayUnavailable: ray (with ray.data) is not installed.
    """
    try:
        import ray
        import ray.data  # noqa: F401 - the embedding needs Ray Data, not only Ray Core
    except ImportError as exc:
        raise RayUnavailable(f"ray_address is set but Ray is not installed ({exc}): "
                             "install the `scale` extra (pip install 'recsys-search[scale]')") from exc
    return ray


def _host_port(address: str) -> tuple[str, int] | None:
    """Host and port of ``ray://host:port`` or ``host:port`` (None: no port to probe)."""
    rest = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def _check_reachable(address: str) -> None:
    target = _host_port(address)
    if target is None:
        return
    try:
        socket.create_connection(target, timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise RayUnavailable(f"no Ray cluster answers at {address} ({exc})") from exc


def _info(ray: Any, address: str, started: bool) -> ClusterInfo:
    resources = ray.cluster_resources()
    return ClusterInfo(address, float(resources.get("CPU", 0)), float(resources.get("GPU", 0)), started)


@contextlib.contextmanager
def connect(address: str) -> Iterator[ClusterInfo]:
    """Connect this process to the cluster at ``address`` for the ``with`` block.

    ``"auto"``: the local cluster when one runs, else a new one started here (and stopped on
    exit). A connection made elsewhere (a test's cluster, an outer ``connect``) is reused and
    left open. Leaving the block disconnects; a remote cluster keeps running.

    Raises:
        RayUnavailable: Ray is not installed, or the address does not answer.
    """
    ray = import_ray()
    if ray.is_initialized():
        yield _info(ray, address, started=False)
        return
    started = False
    try:
        if address == "auto":
            try:
                ray.init(address="auto")
            except ConnectionError:  # no local cluster runs: start one for this process
                ray.init(include_dashboard=False)
                started = True
        else:
            _check_reachable(address)
            ray.init(address=address)
    except RayUnavailable:
        raise
    except (ConnectionError, ValueError, RuntimeError) as exc:  # ValueError: ray:// without ray[client]
        raise RayUnavailable(f"could not connect to the Ray cluster at {address}: {exc}") from exc
    try:
        info = _info(ray, address, started)
        log.info("Ray cluster %s%s: %g CPUs, %g GPUs", address, " (started here)" if started else "",
                 info.cpus, info.gpus)
        yield info
    finally:
        ray.shutdown()


class LazyCluster:
    """A connection made on first use and ended by :meth:`close`: a rebuild with nothing to embed
    or fit never pays for a connection (or, with ``"auto"``, for starting a cluster)."""

    def __init__(self, address: str):
        self.address = address
        self._stack: contextlib.ExitStack | None = None
        self._info: ClusterInfo | None = None

    @property
    def connected(self) -> bool:
        return self._stack is not None

    def ensure(self) -> ClusterInfo:
        """Connect unless connected; the cluster's resources.

        Raises:
            RayUnavailable: as :func:`connect`.
        """
        if self._stack is None or self._info is None:
            stack = contextlib.ExitStack()
            self._info = stack.enter_context(connect(self.address))
            self._stack = stack
        return self._info

    def close(self) -> None:
        """Disconnect (and stop a cluster started here); a no-op when never connected."""
        stack, self._stack, self._info = self._stack, None, None
        if stack is not None:
            stack.close()


__all__ = ["ClusterInfo", "LazyCluster", "RayUnavailable", "connect", "import_ray"]
