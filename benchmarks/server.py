"""The service under gunicorn for the HTTP benchmarks, and a lean keep-alive client for it.

* :class:`Server`: ``gunicorn -k gthread`` on 127.0.0.1:<free port> in its own process group,
  ready only once every worker has answered ``/health/ready``; finds which worker holds a
  connection (through /proc), reads RSS and the Prometheus histograms (``/metrics``, every worker
  when ``PROMETHEUS_MULTIPROC_DIR`` is set). Subclass it to change the command line or the
  environment (``bench_recommend.RecServer``);
* :class:`Client`: one ``http.client`` keep-alive connection (TCP_NODELAY), lean enough to time a
  10 ms request; never raises on a failed request (status 0);
* :func:`http_floor`: ``/health/live`` latency, the floor under every request;
* :func:`settle`: wait for workers to go idle (they load torch in the background after start).

All traffic goes to 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections import defaultdict
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, stats_ms


# =============================================================================================
# HTTP client (http.client: one keep-alive connection, lean enough to time a 10 ms request)
# =============================================================================================


class Client:
    """One keep-alive connection to 127.0.0.1:``port``; every call returns (status, headers, body, seconds)."""

    def __init__(self, port: int, timeout: float = 30.0):
        self.port, self.timeout = port, timeout
        self.conn: http.client.HTTPConnection | None = None

    def _connect(self) -> http.client.HTTPConnection:
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            self.conn.connect()
            self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self.conn

    @property
    def local_port(self) -> int | None:
        if self.conn is None or self.conn.sock is None:
            return None
        return self.conn.sock.getsockname()[1]

    def get(self, path: str) -> tuple[int, dict[str, str], bytes, float]:
        """(status, headers, body, seconds); status 0 and the error text as body on a failure."""
        return self.request("GET", path)

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, dict[str, str], bytes, float]:
        """Any method; a body is sent as JSON. Same return shape as :meth:`get`."""
        t0 = time.perf_counter()
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            conn = self._connect()
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            body = resp.read()
            dt = time.perf_counter() - t0
            headers = {k.lower(): v for k, v in resp.getheaders()}
            if resp.getheader("connection", "").lower() == "close":
                self.close()
            return resp.status, headers, body, dt
        except (OSError, http.client.HTTPException) as exc:
            dt = time.perf_counter() - t0
            self.close()
            return 0, {}, f"{type(exc).__name__}: {exc}".encode(), dt

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
        self.conn = None


def search_path(q: str, mode: str, k: int = 10) -> str:
    return "/search?" + urllib.parse.urlencode({"q": q, "mode": mode, "k": k})


# =============================================================================================
# gunicorn server
# =============================================================================================


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tcp_inode(server_port: int, client_port: int) -> str | None:
    """Inode of the server-side socket of the connection from ``client_port`` (via /proc/net/tcp)."""
    local, remote = f"0100007F:{server_port:04X}", f"0100007F:{client_port:04X}"
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            parts = line.split()
            if parts[1] == local and parts[2] == remote:
                return parts[9]
    return None


class Server:
    """``gunicorn -k gthread`` on 127.0.0.1:<free port>, in its own process group."""

    def __init__(self, data_dir: Path, workers: int, threads: int, torch_threads: int, log_dir: Path,
                 poll_seconds: float | None = None, metrics_dir: bool = True, extra_env: dict[str, str] | None = None):
        self.data_dir, self.workers, self.threads, self.torch_threads = data_dir, workers, threads, torch_threads
        self.extra_env = dict(extra_env or {})  # RECSYS_* settings of this run (e.g. the query backend)
        self.poll_seconds = poll_seconds
        self.port = free_port()
        self.log_path = log_dir / f"gunicorn-{workers}x{threads}-t{torch_threads}-{self.port}.log"
        self.metrics_dir = Path(tempfile.mkdtemp(prefix="bench-prom-")) if metrics_dir else None
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0
        self.ready_s: float | None = None

    @property
    def label(self) -> str:
        return f"-w {self.workers} --threads {self.threads}, torch threads {self.torch_threads or 'default'}"

    def command(self) -> list[str]:
        gunicorn = Path(sys.executable).parent / "gunicorn"
        if not gunicorn.exists():
            gunicorn = Path(shutil.which("gunicorn") or "gunicorn")
        return [str(gunicorn), "-w", str(self.workers), "-k", "gthread", "--threads", str(self.threads),
                "-b", f"127.0.0.1:{self.port}", "--keep-alive", "30", "--timeout", "120",
                "--graceful-timeout", "10", "--log-level", "warning", "service.web.app:create_app()"]

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RECSYS_") and k != "PROMETHEUS_MULTIPROC_DIR"}
        env.update({"RECSYS_DATA_DIR": str(self.data_dir), "RECSYS_CLIP_ENABLED": "false", "HF_HUB_OFFLINE": "1",
                    "PYTHONPATH": str(REPO)})
        if self.torch_threads:
            env["RECSYS_TORCH_THREADS"] = str(self.torch_threads)
        if self.poll_seconds:
            env["RECSYS_INDEX_POLL_SECONDS"] = str(self.poll_seconds)
        env.update(self.extra_env)
        if self.metrics_dir:
            # prometheus_client's multiprocess mode: /metrics sums every worker's stage histograms.
            env["PROMETHEUS_MULTIPROC_DIR"] = str(self.metrics_dir)
        return env

    def start(self, ready_timeout: float = 300.0) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("wb")
        self.started_at = time.perf_counter()
        self.first_answer_s: float | None = None
        self.proc = subprocess.Popen(self.command(), cwd=str(REPO), env=self.env(), stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + ready_timeout
        client = Client(self.port, timeout=10)
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.proc.returncode}; see {self.log_path}:\n"
                                   + self.log_path.read_text()[-3000:])
            # Cold start to the first search answer (what a user waits for after a deploy).
            if self.first_answer_s is None and client.get(search_path("warm up", "semantic", 1))[0] == 200:
                self.first_answer_s = round(time.perf_counter() - self.started_at, 2)
            status, _h, _b, _dt = client.get("/health/ready")
            if status == 200:
                break
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"service not ready within {ready_timeout} s (last status {status})")
            client.close()
            time.sleep(0.25)
        if self.first_answer_s is None and client.get(search_path("warm up", "semantic", 1))[0] == 200:
            self.first_answer_s = round(time.perf_counter() - self.started_at, 2)
        client.close()
        self._wait_all_workers(deadline)
        self.ready_s = round(time.perf_counter() - self.started_at, 2)

    def worker_pids(self) -> list[int]:
        if self.proc is None:
            return []
        with contextlib.suppress(OSError):
            text = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
            return sorted(int(p) for p in text.split())
        return []

    def worker_of(self, client: Client) -> int | None:
        """The worker process holding ``client``'s connection (server-side socket inode in its fds)."""
        port = client.local_port
        if port is None:
            return None
        inode = _tcp_inode(self.port, port)
        if inode is None:
            return None
        target = f"socket:[{inode}]"
        for pid in self.worker_pids():
            with contextlib.suppress(OSError):
                for fd in os.listdir(f"/proc/{pid}/fd"):
                    with contextlib.suppress(OSError):
                        if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                            return pid
        return None

    def _wait_all_workers(self, deadline: float) -> None:
        """Until every worker has answered /health/ready (a worker accepts only once its app is loaded)."""
        seen: set[int] = set()
        while time.monotonic() < deadline:
            pids = set(self.worker_pids())
            if len(pids) >= self.workers and pids <= seen:
                return
            clients = [Client(self.port, timeout=10) for _ in range(2 * self.workers)]
            for c in clients:
                c._connect()
            time.sleep(0.05)
            for c in clients:
                pid = self.worker_of(c)
                status, *_ = c.get("/health/ready")
                if pid is not None and status == 200:
                    seen.add(pid)
                c.close()
            if not (len(pids) >= self.workers and pids <= seen):
                time.sleep(0.25)
        print(f"  [warn] could not confirm every worker is ready (saw {sorted(seen)} of {self.worker_pids()})",
              flush=True)

    def clients_per_worker(self, count: int = 24) -> dict[int, Client]:
        """One open connection per worker (opens up to ``count`` connections to find them all)."""
        found: dict[int, Client] = {}
        for _ in range(count):
            c = Client(self.port)
            c._connect()
            time.sleep(0.01)
            pid = self.worker_of(c)
            if pid is not None and pid not in found:
                found[pid] = c
            else:
                c.close()
            if len(found) >= self.workers:
                break
        return found

    def rss_mib(self) -> dict[int, float]:
        out = {}
        for pid in self.worker_pids():
            with contextlib.suppress(OSError, ValueError, IndexError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        out[pid] = round(int(line.split()[1]) / 1024, 1)
        return out

    def metrics(self) -> dict[str, tuple[float, float]]:
        """Prometheus histograms as {name{labels}: (sum, count)} for stages and /search requests."""
        c = Client(self.port)
        status, _h, body, _dt = c.get("/metrics")
        c.close()
        out: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
        if status != 200:
            return {}
        for line in body.decode().splitlines():
            m = re.match(r'^(recsys_stage_seconds|recsys_request_seconds)_(sum|count)\{([^}]*)\} ([0-9.eE+-]+)$', line)
            if not m:
                continue
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(3)))
            labels.pop("pid", None)
            key = m.group(1) + ":" + ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
            out[key][0 if m.group(2) == "sum" else 1] += float(m.group(4))
        return {k: (v[0], v[1]) for k, v in out.items()}

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        if self.metrics_dir is not None:
            shutil.rmtree(self.metrics_dir, ignore_errors=True)

def http_floor(server: Server, n: int = 300) -> dict[str, Any]:
    """Latency of /health/live: HTTP + gunicorn + Flask with no work (the floor under every request)."""
    c = Client(server.port)
    lat = []
    for _ in range(n):
        status, _h, _b, dt = c.get("/health/live")
        if status == 200:
            lat.append(dt)
    c.close()
    return stats_ms(lat)


def settle(pids: list[int], timeout: float = 90.0, cores: float = 0.02) -> float:
    """Wait until the processes ``pids`` use under ``cores`` of a core over a second (the service's
    workers load torch in the background after start, for item writes); the seconds waited."""
    def cpu() -> float:
        total = 0
        for pid in pids:
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime + stime, in clock ticks
        return total / os.sysconf("SC_CLK_TCK")

    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        before = cpu()
        time.sleep(1.0)
        if cpu() - before < cores:
            break
    return round(time.perf_counter() - t0, 1)
