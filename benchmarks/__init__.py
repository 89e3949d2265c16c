"""Benchmarks of the service, each run from the repository root as ``python -m benchmarks.<name>``.

Benchmarks (each has ``--help``; commands and results: ``docs/benchmarks.md``):

* ``bench_service``: search latency/throughput under gunicorn vs a bare loop, typeahead, hot swap;
* ``bench_recommend``: recommendation latency and event-ingest throughput under gunicorn;
* ``bench_import``: event import throughput (SQLite, PostgreSQL);
* ``bench_index``: FAISS index choice, build, recall and latency at 1M vectors;
* ``bench_encoders``: text/CLIP encoder throughput against bare sentence-transformers;
* ``bench_rebuild``: first build vs incremental rebuilds of the index pipeline;
* ``bench_typeahead``: typeahead and keyword-search latency at catalog scale;
* ``bench_movielens``: MovieLens-100K, the service's recommendations against baselines.

Shared helpers (not benchmarks; benchmarks import these and never each other):

* ``common``: paths, statistics, machine/load records, CPU meter, load-for-a-duration threads,
  data-folder settings, throwaway databases, cProfile attribution, recorded command, result files;
* ``catalog``: realistic generated catalog items, search queries and typeahead prefixes;
* ``server``: the service under gunicorn and a keep-alive HTTP client;
* ``movielens``, ``baselines``: MovieLens-100K data/split and the CF baselines (``bench_movielens``;
  ``python -m benchmarks.baselines`` runs the baselines alone).

This file imports nothing, so ``python -m benchmarks.<name>`` loads only what that benchmark needs.
"""
