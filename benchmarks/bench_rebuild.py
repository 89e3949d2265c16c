"""Incremental rebuilds: first build vs rebuilds with nothing (or 1%) changed.

For each catalog (the shipped demo, and a generated catalog of ``--items`` realistic items) in a
fresh data directory: import, then time with ``indexer.pipeline.Pipeline`` (the code path of
``recsys-indexer build``):

* first build (empty vector cache: every item embedded);
* rebuild, nothing changed (the default run: detects it and publishes nothing);
* forced rebuild, nothing changed (``--force``: new version from cached vectors, models loaded);
* rebuild after changing 1% of the items (only those are embedded).

For the generated catalog it also alternates the pipeline's embed stage (SQL read, encode,
cache write) with a bare ``SentenceTransformer.encode`` of the same texts: the pipeline's overhead.

    .venv/bin/python -m benchmarks.bench_rebuild --items 20000 --out benchmarks/results/rebuild.json
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.catalog import make_catalog
from benchmarks.common import command_line
from indexer.pipeline import Pipeline
from service.store.db import make_engine, make_session_factory, upgrade
from service.demo import ITEMS_FILE
from service.store.importing import import_items
from service.settings import load_settings


def timed_run(pipeline: Pipeline, **kw) -> dict:
    t0 = time.perf_counter()
    report = pipeline.run(**kw)
    seconds = time.perf_counter() - t0
    text = (report.manifest or {}).get("spaces", {}).get("text", {})
    return {"status": report.status, "seconds": round(seconds, 3), "embedded": text.get("embedded"),
            "cached": text.get("cached"), "index_key": text.get("index_key"), "timings": report.timings}


def embed_vs_bare(settings, factory, items_file: Path, rounds: int) -> dict:
    """The pipeline's embed stage (SQL read, encode, cache write; ``full`` so nothing is cached)
    against a bare ``SentenceTransformer.encode`` of the same texts, alternated for ``rounds``.

    Wall and CPU time both: CPU time is what to trust on a machine shared with other jobs.
    """
    from indexer.pipeline import embed_space, read_items
    from service.store.db import session_scope
    from service.vectors.text_encoder import load_text_encoder

    encoder = load_text_encoder(settings)
    with session_scope(factory) as session:
        rows = read_items(session)
    texts = [f"{r['title']}\n{r.get('text') or ''}".strip()
             for r in (json.loads(line) for line in items_file.read_text().splitlines() if line.strip())]
    runs = []
    for _ in range(rounds):
        w0, c0 = time.perf_counter(), time.process_time()
        with session_scope(factory) as session:
            embed_space("text", rows, encoder, session=session, cache_root=settings.index_path / "cache",
                        full=True, progress=False)
        w1, c1 = time.perf_counter(), time.process_time()
        encoder.model.encode(texts, batch_size=settings.encode_batch_size, normalize_embeddings=True,
                             convert_to_numpy=True)
        w2, c2 = time.perf_counter(), time.process_time()
        runs.append({"pipeline_wall_s": w1 - w0, "pipeline_cpu_s": c1 - c0, "bare_wall_s": w2 - w1, "bare_cpu_s": c2 - c1})
        print(f"  embed round: pipeline {w1 - w0:.1f} s ({c1 - c0:.1f} CPU-s), bare {w2 - w1:.1f} s ({c2 - c1:.1f} CPU-s)", flush=True)

    def med(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    return {"texts": len(texts), "rounds": runs,
            "throughput_ratio_wall": round(med("bare_wall_s") / med("pipeline_wall_s"), 4),
            "throughput_ratio_cpu": round(med("bare_cpu_s") / med("pipeline_cpu_s"), 4)}


def bench_catalog(name: str, items_file: Path, folder: Path, change_fraction: float, embed_rounds: int = 0) -> dict:
    settings = load_settings({"data_dir": folder / "data", "clip_enabled": False}, environ={})
    engine = make_engine(settings)
    upgrade(engine)
    factory = make_session_factory(engine)
    n = import_items(items_file, session_factory=factory, settings=settings, progress=False).inserted
    out: dict = {"catalog": name, "items": n}
    out["first"] = timed_run(Pipeline(settings, factory, progress=True))
    if embed_rounds:
        out["embed_vs_bare"] = embed_vs_bare(settings, factory, items_file, embed_rounds)
    out["unchanged"] = timed_run(Pipeline(settings, factory))
    out["forced"] = timed_run(Pipeline(settings, factory), force=True)
    rows = [json.loads(line) for line in items_file.read_text().splitlines() if line.strip()]
    rng = random.Random(5)
    changed = rng.sample(rows, max(1, int(len(rows) * change_fraction)))
    for row in changed:
        row["text"] = (row.get("text") or "") + " Updated description."
        if row.get("image") and "://" not in row["image"]:
            row["image"] = str((items_file.parent / row["image"]).resolve())  # the change file lives elsewhere
    change_file = folder / "changed.jsonl"
    change_file.write_text("".join(json.dumps(r) + "\n" for r in changed))
    # Its image paths point beside the original file: that folder is the import root.
    import_items(change_file, session_factory=factory, settings=settings, import_root=items_file.parent, progress=False)
    out["changed"] = timed_run(Pipeline(settings, factory))
    out["changed"]["items_changed"] = len(changed)
    first = out["first"]["seconds"]
    for key in ("unchanged", "forced", "changed"):
        out[key]["ratio_to_first"] = round(out[key]["seconds"] / first, 4)
    engine.dispose()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=20_000, help="size of the generated catalog (0: demo only)")
    ap.add_argument("--change", type=float, default=0.01, help="fraction of items changed for the last rebuild")
    ap.add_argument("--embed-rounds", type=int, default=2, help="pipeline embed stage vs bare encode rounds (0: skip)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "demo").mkdir()
        results.append(bench_catalog("demo", ITEMS_FILE, tmp / "demo", args.change))
        if args.items:
            big = tmp / "big"
            big.mkdir()
            catalog = big / "items.jsonl"
            catalog.write_text("".join(json.dumps(r) + "\n" for r in make_catalog(args.items)))
            results.append(bench_catalog(f"generated-{args.items}", catalog, big, args.change, args.embed_rounds))
    print(f"\n{'catalog':18} {'items':>7} {'first s':>9} {'unchanged s':>12} {'ratio':>7} {'forced s':>9} {'ratio':>7} "
          f"{'1% changed s':>13} {'ratio':>7} {'embedded':>9}")
    for r in results:
        print(f"{r['catalog']:18} {r['items']:>7} {r['first']['seconds']:>9.2f} {r['unchanged']['seconds']:>12.3f} "
              f"{r['unchanged']['ratio_to_first']:>7.3f} {r['forced']['seconds']:>9.2f} {r['forced']['ratio_to_first']:>7.3f} "
              f"{r['changed']['seconds']:>13.2f} {r['changed']['ratio_to_first']:>7.3f} {r['changed']['embedded']:>9}")
    for r in results:
        if "embed_vs_bare" in r:
            e = r["embed_vs_bare"]
            print(f"pipeline embed stage vs bare SentenceTransformer.encode on the same {e['texts']} texts: "
                  f"throughput ratio {e['throughput_ratio_wall']:.3f} (wall medians), {e['throughput_ratio_cpu']:.3f} (CPU time)")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"command": command_line(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
