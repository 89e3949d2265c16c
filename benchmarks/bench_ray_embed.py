"""Text embedding throughput: this process against Ray actors (issue 14), side by side in one run.

A generated catalog of ``--items`` items is imported into a fresh SQLite database; then, for
``--repeats`` rounds, the rebuild's text embedder embeds every item in each configuration:

* ``local``: :func:`indexer.pipeline.embed_texts` (what a rebuild without ``ray_address`` runs),
  the encoder already loaded (its load time is reported once, beside);
* ``ray-N``: :class:`indexer.ray_embed.RayTextEmbedder` with N actors on a Ray cluster started
  by this benchmark (``--cpus``): each run starts its actors, and each actor loads the model and
  opens its own database engine, so that cost is in every figure, as in a rebuild.

Both cut the items into partitions of ``--partition`` (the rebuild's is 1,024) and the vectors
are compared bit for bit. Throughput is texts/s of the median run.

    .venv/bin/python -m benchmarks.bench_ray_embed --items 2048 --partition 256 --repeats 3 \
        --out benchmarks/results/ray_embed.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.catalog import make_catalog
from benchmarks.common import command_line, load_snapshot, machine_info, write_result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=2048)
    ap.add_argument("--partition", type=int, default=256, help="items per partition (both paths)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Ray actor counts to run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cpus", type=int, default=None, help="CPUs of the local Ray cluster (default: all)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    import numpy as np
    import ray

    import indexer.pipeline as pipeline_module
    from indexer.ray_cluster import LazyCluster
    from indexer.ray_embed import RayTextEmbedder
    from service.store.db import make_engine, make_session_factory, session_scope, upgrade
    from service.store.importing import import_items
    from service.settings import load_settings
    from service.vectors.text_encoder import load_text_encoder

    pipeline_module.EMBED_PARTITION = args.partition
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        catalog = folder / "items.jsonl"
        catalog.write_text("".join(json.dumps(r) + "\n" for r in make_catalog(args.items)))
        settings = load_settings({"data_dir": folder / "data", "clip_enabled": False}, environ={})
        engine = make_engine(settings)
        upgrade(engine)
        factory = make_session_factory(engine)
        import_items(catalog, session_factory=factory, settings=settings, progress=False)
        with session_scope(factory) as session:
            ids = [row.id for row in pipeline_module.read_items(session)]
        started = time.perf_counter()
        encoder = load_text_encoder(settings)
        load_s = time.perf_counter() - started
        # A private cluster, not "auto": another job's cluster on this machine must not be borrowed.
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        cluster = LazyCluster("auto")  # reuses the connection just made
        configs = {"local": pipeline_module.embed_texts}
        configs.update({f"ray-{w}": RayTextEmbedder(settings, cluster, workers=w) for w in args.workers})
        runs: dict[str, list[float]] = {name: [] for name in configs}
        reference, equal = None, {}
        try:
            for round_ in range(args.repeats):
                for name, embed in configs.items():
                    t0 = time.perf_counter()
                    with session_scope(factory) as session:
                        vectors = embed(ids, encoder, session=session)
                    runs[name].append(time.perf_counter() - t0)
                    if reference is None:
                        reference = vectors
                    equal[name] = equal.get(name, True) and bool(np.array_equal(vectors, reference))
                    print(f"round {round_ + 1} {name}: {runs[name][-1]:.1f} s", flush=True)
            cluster_cpus = ray.cluster_resources().get("CPU")
        finally:
            ray.shutdown()
            engine.dispose()

    rows = []
    for name, seconds in runs.items():
        median = statistics.median(seconds)
        rows.append({"config": name, "median_s": round(median, 2), "texts_per_s": round(len(ids) / median, 1),
                     "runs_s": [round(s, 2) for s in seconds], "bit_equal_to_local": equal[name]})
    result = {"command": command_line(), "machine": machine_info(), "load": load_snapshot(), "texts": len(ids),
              "partition": args.partition, "partitions": -(-len(ids) // args.partition), "cluster_cpus": cluster_cpus,
              "model_load_s_local": round(load_s, 2), "results": rows}
    print(f"\n{len(ids)} texts, partitions of {args.partition}, model load here {load_s:.1f} s")
    print(f"{'config':<10} {'median s':>9} {'texts/s':>9}  bit-equal")
    for r in rows:
        print(f"{r['config']:<10} {r['median_s']:>9.2f} {r['texts_per_s']:>9.1f}  {r['bit_equal_to_local']}")
    if args.out:
        write_result(args.out, result)


if __name__ == "__main__":
    main()
