"""Flask app factory: ``create_app(overrides=None)``.

Serve with gunicorn (see README)::

    gunicorn -w 2 -k service.web.gunicorn_worker.JsonErrorThreadWorker --threads 2 -b 127.0.0.1:8000 'service.web.app:create_app()'

Nothing heavy happens at import. The factory opens the database engine, the index store (which
loads the published version and, with it, the query encoder) and registers the blueprints; each
worker process polls for newly published versions on its own thread.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from pathlib import Path
from typing import Any, Mapping

from flask import Flask, g, request

from service.heap import collection_paused, freeze_startup_objects, watch_full_collections
from service.settings import Settings, load_settings
from service.web.boundary import register_boundary
from service.web.errors import register_error_handlers
from service.web.runtime import Runtime
from service.web.security import build_limiter, install as install_security

log = logging.getLogger("recsys.service")


def _load_quietly(load, freeze: bool = False) -> None:
    # torch's import adds objects that all stay: with collection on, full collections walk them
    # again and again while it grows (about six per worker, 0.1-0.5 s each, in a worker already
    # serving: docs/benchmarks.md). Paused instead, then frozen like the app's.
    with collection_paused() if freeze else contextlib.nullcontext():
        try:
            load()
        except Exception:  # noqa: BLE001 - item writes report an unavailable encoder themselves
            log.exception("could not load the text encoder for item writes")
        if freeze:
            freeze_startup_objects("text encoder loaded")


def create_app(overrides: Mapping[str, Any] | None = None) -> Flask:
    """Build the service: settings (defaults, RECSYS_* env, overrides), database, index, routes."""
    settings = load_settings(overrides)
    watch_full_collections()
    if not settings.freeze_startup_heap:
        return _build_app(settings)
    # What start-up loads stays alive: each collection while it grows walks all of it again for
    # nothing (0.04-0.6 s each on a 2-core VM), then one freeze keeps it out for good.
    with collection_paused():
        app = _build_app(settings)
        freeze_startup_objects("app created")
    return app


def _build_app(settings: Settings) -> Flask:
    app = Flask(__name__, static_folder=str(Path(__file__).parent / "static"), static_url_path="/static")
    app.config["MAX_CONTENT_LENGTH"] = int(settings.max_upload_mb * 1024 * 1024)
    app.config["JSON_SORT_KEYS"] = False
    rt = Runtime(settings)
    app.extensions["recsys"] = rt
    if settings.faiss_threads:
        import faiss

        faiss.omp_set_num_threads(settings.faiss_threads)

    from service.web.openapi import register_api

    register_api(app)
    register_error_handlers(app)
    register_boundary(app)

    @app.before_request
    def _start() -> None:
        g.started = time.perf_counter()
        # Any request (health checks included) starts this worker's index poll: a replica that only
        # ever answers probes still follows new versions. Started lazily: a thread does not survive fork.
        rt.store.ensure_polling()

    # After _start, so rate-limited answers are timed too: proxies, rate limit, docs gating.
    # The factory owns the limiter (runtime must not import security: security reads runtime()).
    install_security(app, build_limiter(settings), settings)

    @app.after_request
    def _observe(response):
        rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
        elapsed = time.perf_counter() - g.get("started", time.perf_counter())
        rt.metrics.requests.labels(rule, request.method, f"{response.status_code // 100}xx").observe(elapsed)
        if "error_code" in g:
            rt.metrics.errors.labels(g.error_code).inc()
        response.headers["X-Response-Time-ms"] = f"{elapsed * 1000:.2f}"
        return response

    @app.teardown_appcontext
    def _close(_exc) -> None:
        session = g.pop("db_session", None)
        if session is not None:
            session.close()

    # Load the published version and run the encoder once now, so the first request does not
    # pay for loading (seconds) or for torch's first-call setup (about a second on CPU).
    onnx = None
    try:
        rt.store.update()  # with an artifact store, a new host fetches the published version first
        if rt.store.current is not None:
            # The search path (not cached): the version's ONNX export when it serves, else torch.
            onnx = rt.onnx_query_encoder()
            (onnx or rt.text_encoder()).encode_query("warm up")
    except Exception:  # a broken index must not stop the service from starting (writes still work)
        log.exception("could not load the published index at startup")
    try:
        with rt.session_factory() as session:
            rt.behaviour.refresh(session)
    except Exception:  # e.g. the database is not migrated yet: recommendations load on first use
        log.exception("could not load behaviour at startup")
    if onnx is not None:
        # torch only embeds written items: loaded off the query path, and only after the behaviour
        # load, which its import (seconds of GIL-bound work) would otherwise slow down.
        threading.Thread(target=_load_quietly, args=(rt.text_encoder, settings.freeze_startup_heap),
                         name="torch-encoder-load", daemon=True).start()
    return app
