"""Operations: health, readiness, Prometheus metrics, index status, admin reload."""

from __future__ import annotations

import os

from flask import Response
from flask_smorest import Blueprint
from sqlalchemy import text

from service.vectors import artifacts
from service.web.security import require_admin, require_read
from service.web.schemas import HealthOut, ReloadOut, StatusOut
from service.web.runtime import db_session, runtime
from service.web.errors import APIError
from service.web.security import is_open

blp = Blueprint("ops", __name__, description="Health, metrics, index status and admin")


def json_doc(schema) -> dict:
    """Document a 200 JSON body without serializing through ``schema`` (it would drop unlisted keys)."""
    return {"responses": {200: {"content": {"application/json": {"schema": schema}}}}}


@blp.route("/health/live")
@blp.response(200, description="the process is up")
@blp.doc(**json_doc(HealthOut))
def live():
    """Liveness: the process answers."""
    return {"status": "ok"}


@blp.route("/health/ready")
@blp.response(200, description="database reachable and an index loaded")
@blp.doc(**json_doc(HealthOut))
@blp.alt_response(503, description="not ready (details say why)")
def ready():
    """Readiness: database reachable and an index version loaded."""
    rt = runtime()
    checks = {}
    try:
        db_session().execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # any driver error means not ready; the reason goes to the caller
        checks["database"] = f"unreachable: {type(exc).__name__}"
    version = rt.store.current
    checks["index"] = f"version {version.name}" if version else "no index loaded"
    if checks["database"] != "ok" or version is None:
        raise APIError(503, "not ready", details=checks)
    return {"status": "ok", "checks": checks}


@blp.route("/metrics")
@blp.response(200, description="Prometheus text format")
@blp.doc(responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}})
def metrics():
    """Prometheus metrics."""
    require_read()
    rt = runtime()
    rt.metrics.behaviour_events.set(rt.behaviour.snapshot.event_count)
    for name, size in rt.deltas.size().items():
        rt.metrics.delta_size.labels(name).set(size)
    return Response(rt.metrics.render(), mimetype="text/plain; version=0.0.4")


def query_encoder_status(rt, version) -> dict:
    """Which encoder turns text queries into vectors here, and the export's measured agreement."""
    section = version.manifest.get("query_encoder") or {}
    onnx = rt.onnx_query_encoder(version)
    out: dict = {"configured": rt.settings.query_backend, "serving": onnx.backend if onnx else "torch"}
    if section:
        out["exported"] = section.get("backend")
        out["agreement"] = section.get("agreement")
    if not onnx and rt.settings.query_backend != "torch":
        out["reason"] = (rt.query_encoder_error or version.manifest.get("query_encoder_skipped")
                         or ("the version carries no export for this backend: rebuild" if section.get("backend")
                             != rt.settings.query_backend else "the export is of another encoder"))
    return out


def status_payload() -> dict:
    rt = runtime()
    version = rt.store.current
    out: dict = {"index_version": version.name if version else None, "spaces": {}, "refused": rt.store.refused()}
    out["index_fallback"] = rt.store.fallback  # set while serving another version than CURRENT names
    if rt.mirror is not None:  # the artifact store this host serves from (what it publishes, what was refused)
        out["artifact_store"] = rt.mirror.status()
    if version is not None:
        manifest = version.manifest
        out["built_at"] = manifest.get("created_at")
        out["build_seconds"] = manifest.get("timings", {}).get("total") or sum(
            v for k, v in manifest.get("timings", {}).items() if ":" in k or k == "read")
        for name, sp in version.spaces.items():
            info = manifest["spaces"][name]
            out["spaces"][name] = {"count": sp.count, "dim": sp.dim, "index_key": info.get("index_key"),
                                   "recall_at_10": info.get("recall_at_10"), "search_params": sp.params,
                                   "recall_probes": info.get("probes"),
                                   "encoder": sp.encoder.get("name"), "fresh": len(rt.deltas.get(name).vectors) if rt.deltas.get(name) else 0}
        out["skipped_spaces"] = manifest.get("skipped_spaces", {})
        section = manifest.get("behaviour")
        if section is not None:
            out["model"] = {k: v for k, v in section.items() if k not in ("files", "validation")}
            learned = rt.learned(version)
            out["model"]["served"] = learned.model is not None
            out["model"]["ranker_served"] = learned.ranker is not None
        out["query_encoder"] = query_encoder_status(rt, version)
        for key in artifacts.ENCODER_SECTIONS.values():  # the fine-tuned text and CLIP encoders
            if isinstance(manifest.get(key), dict):
                out[key] = {k: v for k, v in manifest[key].items() if k != "files"}
        if rt.clip_error:
            out["clip_error"] = rt.clip_error
    # Recent request latency per route, from this worker's ring buffer (each gunicorn worker has its own).
    out["auth"] = "open" if is_open(rt.settings) else "keys"  # open: no key configured (development)
    out["latency"] = {"scope": "this worker", "worker_pid": os.getpid(), "window": rt.metrics.recent.size,
                      "routes": rt.metrics.recent.summary()}
    return out


@blp.route("/status")
@blp.response(200, description="index version, counts, recall, build time")
@blp.doc(**json_doc(StatusOut))
def status():
    """The served index version: counts per space, measured recall, build time."""
    require_read()
    return status_payload()


@blp.route("/admin/reload", methods=["POST"])
@blp.response(200, description="the version now served")
@blp.doc(security=[{"ApiKey": []}], **json_doc(ReloadOut))
def reload():
    """Check for a newly published index version now (instead of waiting for the poll)."""
    require_admin()
    rt = runtime()
    swapped = rt.store.update()
    return {"swapped": swapped, **status_payload()}
