"""The demo catalog: search before and after ``recsys-indexer finetune``, on held-out clicks and hand-written queries.

The demo's behaviour has no search log, so one is generated from it (seeded): every product
click becomes the click of a search whose query a shopper would type for it: the category's
words with one tag the item shares with what the same user clicked before (their style,
e.g. "trail running shoes"), or, for a first click, one of the item's own tags. Those clicks
are stored as events with their ``query`` (what ``POST /events`` accepts), so the fine-tune
sees exactly what a deployment would.

Then, in a fresh data directory: ``recsys demo`` import, a pretrained build, and
``Pipeline.finetune`` (what ``recsys-indexer finetune`` runs), whose gate scores the pretrained
and the fine-tuned encoder on held-out behaviour: search MRR@10 on the held-out queries' clicks
(a fifth of the distinct queries, never trained on), content-only NDCG@10 on each user's last
positive, cold-item Recall@10. Last, the hand-written queries of ``tests/search/hand_queries.json``
through ``GET /search?mode=semantic`` on each version: precision@5 (share of results in a
category the query names) and MRR@10 of the first such result.

    .venv/bin/python -m benchmarks.bench_finetune_search
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import defaultdict

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import service  # noqa: E402,F401  (installs the torchvision hook first)
import numpy as np  # noqa: E402

from benchmarks.common import REPO  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "finetune_search_demo.json"
HAND = REPO / "tests" / "search" / "hand_queries.json"
SEED = 0


def make_search_clicks(items: dict[str, dict], events: list[dict], seed: int) -> list[dict]:
    """One search click (with its query) per product click of the demo, one second after it."""
    rng = np.random.default_rng(seed)
    clicked: dict[str, list[str]] = defaultdict(list)
    out = []
    for e in events:
        item = items.get(e["item_id"])
        if e["type"] != "click" or item is None or item["kind"] != "product":
            continue
        words = item["category"].replace("-", " ")
        tags = [t for t in item.get("tags", []) if t not in words.split()]
        mine = [t for t in tags if any(t in items[p].get("tags", []) for p in clicked[e["user_id"]])]
        pool = mine or tags
        query = f"{pool[int(rng.integers(len(pool)))]} {words}" if pool else words
        clicked[e["user_id"]].append(e["item_id"])
        at = dt.datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")) + dt.timedelta(seconds=1)
        out.append({"event_id": f"s-{e['event_id']}", "user_id": e["user_id"], "item_id": e["item_id"],
                    "type": "click", "query": query, "timestamp": at.isoformat().replace("+00:00", "Z")})
    return out


def hand_queries(client) -> dict:
    """Precision@5 and MRR@10 of the hand-written queries through the search endpoint."""
    spec = json.loads(HAND.read_text())["queries"]
    p5, rr = [], []
    for q in spec:
        got = client.get("/search", query_string={"q": q["q"], "mode": "semantic", "k": 10})
        assert got.status_code == 200, got.get_json()
        cats = [hit["category"] for hit in got.get_json()["hits"]]
        good = [c in q["categories"] for c in cats]
        p5.append(float(np.mean(good[:5])))
        rr.append(next((1.0 / (i + 1) for i, g in enumerate(good) if g), 0.0))
    return {"queries": len(spec), "precision_at_5": float(np.mean(p5)), "mrr_at_10": float(np.mean(rr)),
            "per_query_p5": p5, "per_query_rr": rr}


def main() -> None:
    from indexer.pipeline import Pipeline, publish_version
    from service.demo import EVENTS_FILE, ITEMS_FILE
    from service.settings import load_settings
    from service.store.db import make_engine, make_session_factory
    from service.store.events import record_events
    from service.store.records import EventRecord
    from service.web.app import create_app

    started = time.perf_counter()
    items = {json.loads(line)["id"]: json.loads(line) for line in ITEMS_FILE.read_text().splitlines() if line.strip()}
    import csv

    with open(EVENTS_FILE, newline="") as fh:
        events = [{"event_id": r["event_id"], "user_id": r["user_id"], "item_id": r["item_id"], "type": r["type"],
                   "timestamp": r["timestamp"]} for r in csv.DictReader(fh)]
    searches = make_search_clicks(items, events, SEED)
    print(f"{len(searches)} search clicks generated from the demo's product clicks "
          f"({len({s['query'] for s in searches})} distinct queries)", file=sys.stderr)

    with tempfile.TemporaryDirectory() as root:
        env = {**os.environ, "RECSYS_DATA_DIR": root, "RECSYS_CLIP_ENABLED": "false", "HF_HUB_OFFLINE": "1"}
        subprocess.run([sys.executable, "-m", "service.cli", "demo"], env=env, check=True, capture_output=True)
        settings = load_settings({"data_dir": root, "clip_enabled": False}, environ={})
        factory = make_session_factory(make_engine(settings))
        with factory() as session:
            record_events(session=session, records=[
                EventRecord(s["event_id"], s["user_id"], s["item_id"], "click", None,
                            dt.datetime.fromisoformat(s["timestamp"].replace("Z", "")), query=s["query"])
                for s in searches])
            session.commit()
        t0 = time.perf_counter()
        first = Pipeline(settings, factory).run(force=True)
        build_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        tuned = Pipeline(settings, factory).finetune(publish=True, force=True)
        finetune_s = time.perf_counter() - t0
        section = tuned.manifest["encoder"]
        print(f"fine-tune: {tuned.status}; gate {section['gate']['refused'] or 'passed'}", file=sys.stderr)

        app = create_app({"data_dir": root, "clip_enabled": False})
        rt = app.extensions["recsys"]
        hand = {}
        with app.test_client() as client:
            for label, version in (("pretrained", first.version), ("fine-tuned", tuned.version)):
                publish_version(settings, factory, version)
                rt.store.refresh()
                assert rt.store.current.name == version
                hand[label] = hand_queries(client)
    diff = np.array(hand["fine-tuned"]["per_query_p5"]) - np.array(hand["pretrained"]["per_query_p5"])
    result = {
        "benchmark": "bench_finetune_search", "command": "python -m benchmarks.bench_finetune_search",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "search_clicks": len(searches), "distinct_queries": len({s["query"] for s in searches}),
        "gate": section["gate"], "metrics": section["metrics"], "held_out": section["held_out"],
        "pairs": section["pairs"], "fit": section["fit"], "status": tuned.status,
        "hand_written": hand, "hand_p5_diff": {"mean": float(diff.mean()),
                                               "se": float(diff.std(ddof=1) / np.sqrt(len(diff)))},
        "seconds": {"build": round(build_s, 1), "finetune_and_build": round(finetune_s, 1),
                    "total": round(time.perf_counter() - started, 1)},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2, default=float))
    pre, ft = section["metrics"]["published"], section["metrics"]["candidate"]
    print(f"{'held-out behaviour':30} {'pretrained':>11} {'fine-tuned':>11}")
    for name in pre:
        if pre[name] is not None:
            row = section["gate"]["comparison"].get(name, {})
            print(f"{name:30} {pre[name]:11.4f} {ft[name]:11.4f}  {row.get('diff', 0):+.4f} ± {row.get('se', 0):.4f}")
    for m in ("precision_at_5", "mrr_at_10"):
        print(f"{'hand-written ' + m:30} {hand['pretrained'][m]:11.4f} {hand['fine-tuned'][m]:11.4f}")
    print(f"fine-tune {section['fit']['seconds']:.0f} s ({section['fit']['pairs_per_second']:.1f} pairs/s), "
          f"finetune + build {finetune_s:.0f} s, wrote {RESULTS}", file=sys.stderr)


if __name__ == "__main__":
    main()
