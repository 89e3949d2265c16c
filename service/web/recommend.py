"""Recommendation endpoints: for a user, like an item, also-engaged, from examples or a session, trending."""

from __future__ import annotations

import re
import time
from typing import Any

import numpy as np
from flask_smorest import Blueprint
from sqlalchemy import select

from service.web.security import require_admin, require_personal, require_read
from service.web.schemas import ItemRecommendArgs, RecommendArgs, RecommendBody, RecommendOut, TrendingArgs, UsersArgs, UsersOut
from service.web.runtime import Runtime, db_session, runtime
from service.web.errors import APIError, invalid
from service.store.events import active_users
from service.vectors.index_store import LoadedVersion
from service.store.items import item_ids_by_external
from service.store.models import Item
from service.recommend.ranking import cold_rank_of, profile_power_of
from service.recommend.recommender import (
    Answer, Engine, also_engaged, for_user, from_examples, new_recommendation_id, similar_items, trending_items,
)
from service.web.schemas import item_json

blp = Blueprint("recommend", __name__, description="Recommendations blending embeddings with behaviour")

MAX_EXAMPLES = 100


@blp.before_request
def _auth() -> None:
    require_read()


def _engine(rt: Runtime, space_name: str = "text") -> tuple[Engine, LoadedVersion | None]:
    """The content space (None without a published index: behaviour alone still answers)."""
    rt.store.ensure_polling()
    version = rt.store.current
    space = None
    if version is not None and space_name in version.spaces:
        space = rt.served_space(version, space_name)
        rt.deltas.sync(db_session())
    s = rt.settings
    learned = rt.learned(version)
    # How the training stage chose to score content in this space (the mean where it chose nothing).
    power = profile_power_of(version.manifest.get("behaviour"), space_name) if space is not None else 0
    engine = Engine(space, rt.deltas.get(space_name) if space is not None else None, rt.behaviour_snapshot(),
                    trending_window_days=s.trending_window_days, trending_half_life_days=s.trending_half_life_days,
                    candidates_per_source=s.candidates_per_source, model=learned.model, blend=learned.blend,
                    ranker=learned.ranker, touched=learned.touched, profile_power=power, profile_max_seeds=s.profile_max_seeds,
                    cold_rank=cold_rank_of(version.manifest.get("behaviour")) if version is not None else None)
    return engine, version


def _k(rt: Runtime, args: dict[str, Any]) -> int:
    if args["k"] > rt.settings.max_k:
        raise invalid("k", f"at most {rt.settings.max_k}")
    return args["k"]


def _common(rt: Runtime, args: dict[str, Any]) -> dict[str, Any]:
    """The knobs every recommendation request shares: page size, filters, the clock."""
    return {"session": db_session(), "settings": rt.settings, "now": rt.now(), "k": _k(rt, args),
            "kinds": args.get("kind") or (), "category": args.get("category")}


def _respond(rt: Runtime, answer: Answer, *, version: LoadedVersion | None, started: float,
             explain: bool, **ids) -> dict[str, Any]:
    strategy = answer.strategy
    rt.metrics.recommendations.labels(strategy).inc()
    hits = []
    for rec in answer.recs:
        hit = item_json(rec.item, score=rec.score, signals=rec.signals)
        if explain:
            hit["reasons"] = rec.reasons
        hits.append(hit)
    return {"user_id": None, "item_id": None, **ids, "recommendation_id": new_recommendation_id(), "strategy": strategy,
            "index_version": version.name if version else None,
            "took_ms": round((time.perf_counter() - started) * 1000, 2), "hits": hits}


def _item_pk(external_id: str) -> int:
    pk = db_session().scalar(select(Item.id).where(Item.external_id == external_id, Item.deleted_at.is_(None)))
    if pk is None:
        raise APIError(404, f"no item {external_id!r}")
    return pk


@blp.route("/users")
@blp.arguments(UsersArgs, location="query")
@blp.response(200, UsersOut)
@blp.doc(security=[{"ApiKey": []}])
def users(args):
    """The most recently active users (for demos and debugging; admin key)."""
    require_admin()  # lists everyone who has a history: never public once keys are configured
    found = active_users(session=db_session(), limit=args["k"])
    return {"users": [{"id": u, "events": n, "last_event_at": t} for u, n, t in found]}


@blp.route("/users/<string:user_id>/recommendations")
@blp.arguments(RecommendArgs, location="query")
@blp.response(200, RecommendOut)
@blp.alt_response(400, description="invalid parameter")
def user_recommendations(args, user_id: str):
    """What this user should see next: profile similarity, co-engagement and trending, blended.

    An unknown user, or one without history, gets trending items (cold start), not an error.
    Needs a read key whenever any key is configured (``personal_reads_require_key``).
    """
    require_personal()
    started = time.perf_counter()
    rt = runtime()
    engine, version = _engine(rt)
    with rt.metrics.stage("recommend"):
        answer = for_user(engine, user_id=user_id, exclude_seen=args["exclude_seen"], diversity=args.get("diversity"),
                          explain=args["explain"], **_common(rt, args))
    return _respond(rt, answer, version=version, started=started, explain=args["explain"], user_id=user_id)


@blp.route("/items/<string:item_id>/similar")
@blp.arguments(ItemRecommendArgs, location="query")
@blp.response(200, RecommendOut)
@blp.alt_response(404, description="unknown item, or it has no vector in the space")
def similar(args, item_id: str):
    """Items like this one by content (embedding similarity only)."""
    started = time.perf_counter()
    rt = runtime()
    version = rt.version()
    engine, _ = _engine(rt, args["space"])
    if engine.space is None:
        rt.served_space(version, args["space"])
    pk = _item_pk(item_id)
    if not engine.vectors([pk])[1][0]:
        raise APIError(404, f"item {item_id!r} has no vector in the {args['space']} space (no image, or not embedded yet)")
    with rt.metrics.stage("recommend"):
        answer = similar_items(engine, item_id=pk, explain=args["explain"], **_common(rt, args))
    return _respond(rt, answer, version=version, started=started, explain=args["explain"], item_id=item_id)


@blp.route("/items/<string:item_id>/also")
@blp.arguments(ItemRecommendArgs, location="query")
@blp.response(200, RecommendOut)
@blp.alt_response(404, description="unknown item")
def also(args, item_id: str):
    """People who engaged with this item also engaged with ... (content similarity fills the rest)."""
    started = time.perf_counter()
    rt = runtime()
    engine, version = _engine(rt, args["space"])
    pk = _item_pk(item_id)
    with rt.metrics.stage("recommend"):
        answer = also_engaged(engine, item_id=pk, explain=args["explain"], **_common(rt, args))
    return _respond(rt, answer, version=version, started=started, explain=args["explain"], item_id=item_id)


def _vectors(name: str, raw: list[list[float]], dim: int | None) -> list[np.ndarray]:
    out = []
    for pos, values in enumerate(raw):
        v = np.asarray(values, dtype=np.float32)
        if dim is None:
            raise APIError(503, "raw vectors need the text space, and no index is published yet")
        if v.shape != (dim,) or not np.isfinite(v).all():
            raise invalid(f"{name}[{pos}]", f"must be {dim} finite numbers (the text space's dimension)")
        norm = float(np.linalg.norm(v))
        if norm == 0:
            raise invalid(f"{name}[{pos}]", "must not be all zeros")
        out.append(v / norm)
    return out


@blp.route("/recommend", methods=["POST"])
@blp.arguments(RecommendBody)
@blp.response(200, RecommendOut)
@blp.alt_response(400, description="invalid body")
@blp.alt_response(404, description="an example item does not exist")
def recommend_post(body):
    """Recommend from positive/negative examples (ids or raw vectors), an anonymous session, or a user.

    ``strategy=average`` searches with the mean of the positives minus the negatives;
    ``best_score`` scores each candidate by its closest positive against its closest negative.
    """
    if body.get("user_id"):
        require_personal()  # seeded from that user's history
    started = time.perf_counter()
    rt = runtime()
    session = db_session()
    given = [n for n in ("positive", "positive_vectors", "session", "user_id") if body.get(n)]
    if len(given) == 0:
        raise invalid("body", "give positive examples (ids or vectors), a session, or a user_id")
    if body.get("session") and (body["positive"] or body["negative"] or body["positive_vectors"]
                                or body["negative_vectors"] or body.get("user_id")):
        raise invalid("session", "use a session on its own, not with examples or a user_id")
    examples = body["positive"] + body["negative"] + body["session"]
    if len(examples) + len(body["positive_vectors"]) + len(body["negative_vectors"]) > MAX_EXAMPLES:
        raise invalid("body", f"at most {MAX_EXAMPLES} examples")
    known = item_ids_by_external(session=session, external_ids=examples, include_deleted=False)
    missing = [e for e in examples if e not in known]
    if missing:
        raise APIError(404, f"unknown item(s): {', '.join(missing[:10])}", details={"unknown": missing})
    engine, version = _engine(rt)
    dim = engine.space.dim if engine.space is not None else None
    pos_vecs = _vectors("positive_vectors", body["positive_vectors"], dim)
    neg_vecs = _vectors("negative_vectors", body["negative_vectors"], dim)
    if (body["positive"] or pos_vecs) and engine.space is None and body["strategy"] == "best_score":
        raise APIError(503, "best_score needs the text space, and no index is published yet")
    with rt.metrics.stage("recommend"):
        answer = from_examples(
            engine, positive=[known[e] for e in body["positive"]], negative=[known[e] for e in body["negative"]],
            positive_vectors=pos_vecs, negative_vectors=neg_vecs, session_items=[known[e] for e in body["session"]],
            user_id=body.get("user_id"), exclude_seen=body["exclude_seen"], strategy=body["strategy"],
            diversity=body.get("diversity"), explain=body["explain"], **_common(rt, body))
    return _respond(rt, answer, version=version, started=started, explain=body["explain"],
                    user_id=body.get("user_id"))


_WINDOW = re.compile(r"^(\d+(?:\.\d+)?)([hdw]?)$")


@blp.route("/trending")
@blp.arguments(TrendingArgs, location="query")
@blp.response(200, RecommendOut)
def trending(args):
    """Items with the most (decayed) engagement in a recent window, overall or per category/kind."""
    started = time.perf_counter()
    rt = runtime()
    engine, version = _engine(rt)
    if args.get("window"):
        number, unit = _WINDOW.match(args["window"]).groups()
        days = float(number) * {"h": 1 / 24, "d": 1.0, "w": 7.0, "": 1.0}[unit]
        if not 0 < days <= 3660:
            raise invalid("window", "must be more than 0 and at most 10 years")
        engine.trending_window_days = days
    with rt.metrics.stage("recommend"):
        answer = trending_items(engine, **_common(rt, args))
    return _respond(rt, answer, version=version, started=started, explain=True)
