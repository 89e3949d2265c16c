"""Typeahead and keyword-search latency at catalog scale.

Generates deterministic product-like items (no network), writes them to a fresh, migrated
SQLite database (PostgreSQL too with ``--backends sqlite,postgresql``), builds a
``Suggester`` from it, then times ``suggest()`` for prefixes typed from real titles and
``keyword_search()`` for queries made from title words. Prints a table; ``--out`` writes JSON.

    .venv/bin/python -m benchmarks.bench_typeahead --items 100000 --out benchmarks/out/bench_typeahead.json
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from sqlalchemy import insert, text

from benchmarks.common import fresh_database  # throwaway SQLite file or PostgreSQL database
from service.store.db import make_engine, make_session_factory, upgrade
from service.search.suggest import Suggester
from service.search.keyword import keyword_search
from service.store.models import Item, utcnow


BRANDS = [
    "Kinetra", "Marlow Athletic", "Northbound", "Alpenglow", "Riverstone", "Élan Outdoor", "Søndre", "Hearth & Co",
    "Bramble", "Cedarline", "Fjordkit", "Ironbark", "Lumen", "Mistwood", "Pinecrest", "Quarry", "Redtail",
    "Saltmarsh", "Tidewater", "Upland", "Vantage", "Wildspring", "Yarrow", "Zephyr Works", "Café Atelier",
]
MODELS = [
    "Trailblaze", "Skyline", "Swiftcurrent", "Switchback", "Longhaul", "Mistral", "Stride", "Cairn", "Skerry",
    "Downpour", "Summit", "Ridgeline", "Talus", "Scree", "Cirrus", "Nimbus", "Boulder", "Granite", "Ember",
    "Glacier", "Harbor", "Juniper", "Kestrel", "Lynx", "Meridian", "Nomad", "Orbit", "Pioneer", "Quest",
    "Rambler", "Sierra", "Tundra", "Vista", "Wander", "Zenith", "Aspen", "Basalt", "Canyon", "Delta", "Echo",
]
ADJECTIVES = [
    "waterproof", "lightweight", "cushioned", "supportive", "breathable", "insulated", "packable", "ultralight",
    "stretch", "quick-dry", "merino", "recycled", "rugged", "compact", "adjustable", "convertible", "thermal",
    "windproof", "reflective", "hooded", "zip-off", "double-wall", "self-inflating", "collapsible", "ergonomic",
    "stainless", "enamel", "cast-iron", "non-stick", "insulated", "crème", "high-pile", "low-profile", "wide-fit",
]
COLORS = [
    "black", "navy", "teal", "lime", "cobalt blue", "sky blue", "forest green", "olive", "sand", "rust", "plum",
    "charcoal", "crimson", "amber", "ivory", "slate", "coral", "mustard", "burgundy", "café au lait",
]
PRODUCTS = {
    "running-shoes": ["trail running shoe", "road running shoe", "racing shoe", "stability running shoe"],
    "hiking-boots": ["hiking boot", "approach shoe", "mountaineering boot", "hiking sandal"],
    "jackets": ["rain jacket", "hardshell jacket", "down jacket", "fleece jacket", "softshell jacket", "wind shell"],
    "base-layers": ["base layer top", "crew-height running sock", "hiking sock", "thermal leggings", "sports bra"],
    "tents": ["backpacking tent", "dome tent", "tarp shelter", "bivy sack", "family tent", "hammock"],
    "sleeping": ["sleeping bag", "sleeping pad", "camp pillow", "quilt", "sleeping bag liner"],
    "packs": ["daypack", "backpacking pack", "running vest", "hip pack", "duffel bag", "dry bag"],
    "kitchen": ["espresso grinder", "pour-over kettle", "camp stove", "cook set", "coffee press", "enamel mug",
                "water bottle", "insulated tumbler", "chef knife", "cast-iron skillet"],
    "lighting": ["headlamp", "camp lantern", "bike light", "flashlight"],
    "accessories": ["trekking poles", "gaiters", "sunglasses", "sun hat", "gloves", "beanie", "watch strap"],
}
ACTIVITIES = ["trail running", "thru-hiking", "winter camping", "bikepacking", "fastpacking", "day hikes",
              "car camping", "ultramarathons", "rainy commutes", "alpine climbing", "home baristas"]
FILLER = ("the with for and a an on in of to from that keeps lets your when over under after every day "
          "mile trail road rain wind cold warm light fit feel grip upper sole zip pocket strap").split()


def make_items(n: int, seed: int = 0) -> list[dict]:
    """Deterministic catalog rows: ~80% products, ~15% articles, ~5% images."""
    rng = random.Random(seed)
    categories = list(PRODUCTS)
    rows = []
    for i in range(n):
        category = rng.choice(categories)
        noun = rng.choice(PRODUCTS[category])
        roll = rng.random()
        if roll < 0.80:
            kind = "product"
            pattern = rng.randrange(3)
            if pattern == 0:
                title = f"{rng.choice(MODELS)} {rng.randint(1, 9)} {rng.choice(ADJECTIVES)} {noun}"
            elif pattern == 1:
                title = f"{rng.choice(BRANDS)} {rng.choice(MODELS)} {rng.choice(ADJECTIVES)} {rng.choice(COLORS)} {noun}"
            else:
                title = f"{rng.choice(MODELS)} {rng.choice(ADJECTIVES)} {noun}, {rng.choice(COLORS)}"
        elif roll < 0.95:
            kind = "article"
            title = rng.choice([
                f"How to choose a {noun}",
                f"Best {noun}s for {rng.choice(ACTIVITIES)}",
                f"Is a {rng.choice(ADJECTIVES)} {noun} worth it?",
                f"{rng.choice(ADJECTIVES).capitalize()} or {rng.choice(ADJECTIVES)}? A {noun} buyer's guide",
                f"Caring for your {noun} after {rng.choice(ACTIVITIES)}",
            ])
        else:
            kind = "image"
            title = f"{rng.choice(COLORS).capitalize()} {noun} illustration"
        words = [rng.choice(FILLER) for _ in range(rng.randint(20, 45))]
        words[rng.randrange(len(words))] = rng.choice(ACTIVITIES)
        text_ = f"{title}. " + " ".join(words) + f". Made by {rng.choice(BRANDS)}."
        rows.append({
            "external_id": f"{kind[0]}-{i:06d}", "kind": kind, "title": title, "text": text_,
            "image_location": "https://example.com/i.png" if kind == "image" else None,
            "category": category, "tags": [noun.split()[-1], rng.choice(COLORS)], "attributes": {},
            "content_hash": f"{i:064x}",
        })
    return rows


def make_prefixes(titles: list[str], n: int, seed: int = 1) -> list[str]:
    """Prefixes of 1-8 characters as typed: from a title's start or from one of its words."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        title = rng.choice(titles)
        words = title.split()
        start = 0 if rng.random() < 0.5 else rng.randrange(len(words))
        typed = " ".join(words[start:])
        out.append(typed[: rng.randint(1, 8)])
    return out


def make_queries(titles: list[str], n: int, seed: int = 2) -> list[str]:
    """1-3 consecutive title words; half of them with the last word still being typed."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = rng.choice(titles).replace(",", "").split()
        k = rng.randint(1, min(3, len(words)))
        start = rng.randrange(len(words) - k + 1)
        chosen = words[start : start + k]
        if rng.random() < 0.5 and len(chosen[-1]) > 3:
            chosen[-1] = chosen[-1][: rng.randint(2, len(chosen[-1]) - 1)]
        out.append(" ".join(chosen))
    return out


def make_short_prefix_queries(titles: list[str], n: int, seed: int = 3) -> list[str]:
    """The first 2-3 letters of a title word as typed, alone or after one finished word."""
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        words = [w for w in rng.choice(titles).replace(",", "").split() if len(w) >= 4]
        if not words:
            continue
        i = rng.randrange(len(words))
        typed = words[i][: rng.randint(2, 3)]
        out.append(f"{words[i - 1]} {typed}" if i and rng.random() < 0.3 else typed)
    return out


def percentiles(samples_ns: list[int]) -> dict:
    ms = sorted(s / 1e6 for s in samples_ns)

    def pct(p: float) -> float:
        return ms[min(len(ms) - 1, int(round(p / 100 * (len(ms) - 1))))]

    return {"n": len(ms), "p50_ms": pct(50), "p90_ms": pct(90), "p99_ms": pct(99), "max_ms": ms[-1],
            "mean_ms": statistics.fmean(ms)}


def load(factory, rows: list[dict], batch: int = 5000) -> float:
    t0 = time.perf_counter()
    now = utcnow()
    with factory.begin() as s:
        for start in range(0, len(rows), batch):
            s.execute(insert(Item), [{**r, "created_at": now, "updated_at": now} for r in rows[start : start + batch]])
    return time.perf_counter() - t0


def bench_suggest(suggester: Suggester, prefixes: list[str], limit: int) -> dict:
    for p in prefixes[:500]:  # warm caches and the allocator
        suggester.suggest(p, limit)
    samples, by_len, empty = [], {}, 0
    clock = time.perf_counter_ns
    # The generated catalog (100k dicts) exists only in this script; freezing it keeps full
    # garbage collections from walking it inside the timed calls, as they would not in the service.
    gc.collect()
    gc.freeze()
    try:
        for p in prefixes:
            t0 = clock()
            got = suggester.suggest(p, limit)
            dt_ns = clock() - t0
            samples.append(dt_ns)
            by_len.setdefault(len(p), []).append(dt_ns)
            empty += not got
    finally:
        gc.unfreeze()
    res = percentiles(samples)
    res["empty_results"] = empty
    res["by_prefix_length"] = {k: percentiles(v) for k, v in sorted(by_len.items())}
    return res


def bench_keyword(factory, queries: list[str], limit: int) -> dict:
    samples, hits = [], []
    with factory() as s:
        for q in queries[:20]:
            keyword_search(session=s, query=q, limit=limit)
        clock = time.perf_counter_ns
        for q in queries:
            t0 = clock()
            got = keyword_search(session=s, query=q, limit=limit)
            samples.append(clock() - t0)
            hits.append(len(got))
    res = percentiles(samples)
    res["mean_results"] = statistics.fmean(hits)
    res["empty_results"] = sum(1 for h in hits if h == 0)
    # The tail is broad prefixes ("tr", "wa"): every match is ranked before LIMIT applies.
    res["slowest"] = [{"query": q, "ms": t / 1e6} for t, q in sorted(zip(samples, queries), reverse=True)[:5]]
    return res


def bench_short_prefixes(factory, queries: list[str], limit: int) -> dict:
    """Short prefixes ranked as served (newest PREFIX_CANDIDATES matches) and uncapped (every
    match), interleaved query by query; on PostgreSQL also without the prefix table (walk or
    bitmap, served before it) and with the GIN bitmap only (the plan before the walk), all with
    the same results (checked); and how many of the uncapped top results the served ranking
    keeps (the price of the cap)."""
    from service.search import keyword

    served_cap = keyword.SHORT_PREFIX_CHARS
    samples: dict[str, list[int]] = {"capped": [], "uncapped": []}
    plans = {"table": 0, "walk": 0, "bitmap": 0}  # PostgreSQL: how the served queries found their newest matches
    choose, from_table = keyword._pg_walk_is_cheaper, keyword._pg_prefix_table

    def counted(*args):
        walk = choose(*args)
        plans["walk" if walk else "bitmap"] += 1
        return walk

    def counted_table(*args):
        ranked = from_table(*args)
        plans["table"] += ranked is not None
        return ranked

    keyword._pg_walk_is_cheaper, keyword._pg_prefix_table = counted, counted_table
    overlap = []
    clock = time.perf_counter_ns
    with factory() as s:
        try:
            for q in queries[:20]:
                keyword_search(session=s, query=q, limit=limit)
            pg = s.get_bind().dialect.name == "postgresql"
            if pg:  # the plans served before the prefix table (walk or bitmap), and before the walk
                samples["capped_no_table"], samples["capped_bitmap_only"] = [], []
            for q in queries:
                got = {}
                # (mode, prefix chars ranked capped, prefix table used, walk: None = chosen)
                modes = [("capped", served_cap, True, None), ("uncapped", 0, False, None)]
                if pg:
                    modes += [("capped_no_table", served_cap, False, None), ("capped_bitmap_only", served_cap, False, False)]
                for mode, chars, table, walk in modes:
                    keyword.SHORT_PREFIX_CHARS = chars
                    keyword._pg_prefix_table = counted_table if table else (lambda *args: None)
                    keyword._pg_walk_is_cheaper = (counted if mode == "capped" else choose) if walk is None else (
                        lambda *args, w=walk: w)
                    t0 = clock()
                    got[mode] = keyword_search(session=s, query=q, limit=limit)
                    samples[mode].append(clock() - t0)
                keyword._pg_walk_is_cheaper, keyword._pg_prefix_table = counted, counted_table
                if pg:  # same rows by every plan
                    assert got["capped_bitmap_only"] == got["capped"] == got["capped_no_table"], q
                full = {i for i, _ in got["uncapped"]}
                if full:
                    overlap.append(len(full & {i for i, _ in got["capped"]}) / len(full))
        finally:
            keyword.SHORT_PREFIX_CHARS = served_cap
            keyword._pg_walk_is_cheaper, keyword._pg_prefix_table = choose, from_table
    # The served timings by query shape: the prefix table answers a prefix typed alone.
    one_word = [len(q.split()) == 1 for q in queries]
    samples["capped_one_word"] = [t for t, one in zip(samples["capped"], one_word) if one]
    samples["capped_after_a_word"] = [t for t, one in zip(samples["capped"], one_word) if not one]
    return {mode: percentiles(v) for mode, v in samples.items() if v} | {
        "top_overlap_mean": statistics.fmean(overlap) if overlap else None, "candidates": keyword.PREFIX_CANDIDATES,
        **({"postgresql_plans": plans} if sum(plans.values()) else {})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--prefixes", type=int, default=20_000)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--suggest-limit", type=int, default=8)
    ap.add_argument("--search-limit", type=int, default=20)
    ap.add_argument("--backends", default="sqlite", help="comma-separated: sqlite,postgresql")
    ap.add_argument("--out", type=Path, help="write results as JSON")
    args = ap.parse_args()

    rows = make_items(args.items)
    titles = [r["title"] for r in rows]
    prefixes = make_prefixes(titles, args.prefixes)
    queries = make_queries(titles, args.queries)
    short_queries = make_short_prefix_queries(titles, args.queries)
    result: dict = {
        "items": args.items, "python": platform.python_version(), "sqlite": sqlite3.sqlite_version,
        "cpus": os.cpu_count(), "machine": platform.machine(), "load_average_at_start": os.getloadavg(),
        "argv": sys.argv[1:],
        "keyword_search": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backends.split(","):
            url, drop = fresh_database(backend, Path(tmp))
            try:
                engine = make_engine(url)
                upgrade(engine)
                factory = make_session_factory(engine)
                insert_s = load(factory, rows)
                print(f"{backend}: inserted {len(rows):,} items (index kept by triggers/generated column) "
                      f"in {insert_s:.1f} s", flush=True)
                if backend == "postgresql":
                    # What autovacuum does within a minute of a bulk load (and would otherwise do
                    # in the middle of the timings): statistics for the planner, which the short
                    # prefix plan choice reads, and the GIN pending list merged into the index.
                    t0 = time.perf_counter()
                    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                        conn.execute(text("VACUUM ANALYZE items"))
                        # The prefix table (migration 0006): its visibility map lets the typeahead
                        # query read the index alone.
                        conn.execute(text("VACUUM ANALYZE items_fts_prefixes"))
                    print(f"postgresql: VACUUM ANALYZE items, items_fts_prefixes in {time.perf_counter() - t0:.1f} s",
                          flush=True)
                if "suggest" not in result:
                    gc.collect()
                    with factory() as s:
                        t0 = time.perf_counter()
                        suggester = Suggester.load(s)
                        build_s = time.perf_counter() - t0
                        checks = []
                        for _ in range(21):
                            t0 = time.perf_counter()
                            stale = suggester.needs_refresh(s)
                            checks.append((time.perf_counter() - t0) * 1e3)
                        check_ms = statistics.median(checks)
                        # Memory retained by one build, measured on a second build (tracing is slow).
                        tracemalloc.start()
                        before = tracemalloc.get_traced_memory()[0]
                        traced = Suggester.load(s)
                        retained_mb = (tracemalloc.get_traced_memory()[0] - before) / 2**20
                        tracemalloc.stop()
                        del traced
                    assert not stale
                    gc.collect()
                    result["suggest"] = bench_suggest(suggester, prefixes, args.suggest_limit)
                    result["suggest"].update(build_s=build_s, needs_refresh_ms=check_ms, retained_mb=retained_mb,
                                             backend_loaded_from=backend, titles=len(suggester))
                result["keyword_search"][backend] = bench_keyword(factory, queries, args.search_limit)
                result["keyword_search"][backend]["insert_s"] = insert_s
                result["keyword_search"][backend]["short_prefixes"] = bench_short_prefixes(
                    factory, short_queries, args.search_limit)
                engine.dispose()
            finally:
                drop()

    sg = result["suggest"]
    print(f"\nSuggester over {sg['titles']:,} titles: build {sg['build_s']:.2f} s, "
          f"~{sg['retained_mb']:.0f} MiB retained, needs_refresh {sg['needs_refresh_ms']:.1f} ms")
    print(f"\n{'operation':<34}{'n':>7}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    print(f"{'suggest(limit=%d)' % args.suggest_limit:<34}{sg['n']:>7}{sg['p50_ms']:>9.3f}{sg['p90_ms']:>9.3f}"
          f"{sg['p99_ms']:>9.3f}{sg['max_ms']:>9.3f}")
    for length, st in sg["by_prefix_length"].items():
        print(f"{'  prefix of %d char(s)' % length:<34}{st['n']:>7}{st['p50_ms']:>9.3f}{st['p90_ms']:>9.3f}"
              f"{st['p99_ms']:>9.3f}{st['max_ms']:>9.3f}")
    for backend, st in result["keyword_search"].items():
        label = f"keyword_search {backend} (limit={args.search_limit})"
        print(f"{label:<34}{st['n']:>7}{st['p50_ms']:>9.3f}{st['p90_ms']:>9.3f}{st['p99_ms']:>9.3f}{st['max_ms']:>9.3f}")
    for backend, st in result["keyword_search"].items():
        for mode in ("capped", "capped_one_word", "capped_after_a_word", "capped_no_table", "capped_bitmap_only",
                     "uncapped"):
            if mode not in st["short_prefixes"]:
                continue
            sp = st["short_prefixes"][mode]
            label = f"  2-3 letter prefixes, {mode}"
            print(f"{label:<34}{sp['n']:>7}{sp['p50_ms']:>9.3f}{sp['p90_ms']:>9.3f}{sp['p99_ms']:>9.3f}{sp['max_ms']:>9.3f}")
        print(f"  {backend}: capped results keep {st['short_prefixes']['top_overlap_mean']:.1%} of the uncapped top "
              f"{args.search_limit} on average")
        if "postgresql_plans" in st["short_prefixes"]:
            print(f"  {backend}: capped queries (warm-up included) from the prefix table / walked / via the bitmap: "
                  f"{st['short_prefixes']['postgresql_plans']}")
    for backend, st in result["keyword_search"].items():
        slowest = ", ".join(f"{x['query']!r} {x['ms']:.0f} ms" for x in st["slowest"])
        print(f"slowest keyword queries on {backend}: {slowest}")
    result["load_average_at_end"] = os.getloadavg()
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
