"""The web page: a search page at ``/`` and a status page at ``/ui/status``.

Plain HTML/CSS/JS from ``service/web/static/`` (no build step, no CDN: it works offline), calling the
JSON API the same way any client does. A plain Flask blueprint, not a flask-smorest one, so the
pages stay out of ``/openapi.json``. The one JSON route here, ``/ui/facets``, feeds the filters.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, send_from_directory
from sqlalchemy import func, select

from service.store.models import ITEM_KINDS, Item

STATIC_DIR = Path(__file__).parent / "static"

bp = Blueprint("web", __name__)


def _page(name: str) -> Response:
    response = send_from_directory(STATIC_DIR, name, max_age=0)
    # The pages are tiny; always revalidate so a deploy is picked up at once.
    response.headers["Cache-Control"] = "no-cache"
    return response


@bp.route("/")
def search_page() -> Response:
    """The search page: search bar with typeahead, results grid, filters, image search, recommendations."""
    return _page("index.html")


@bp.route("/ui/status")
@bp.route("/status/page")
def status_page() -> Response:
    """Index version, counts per space, recall, build time and recent latency (auto-refreshing)."""
    return _page("status.html")


@bp.route("/ui/facets")
def facets() -> dict:
    """Kinds and categories of the live catalog, for the filters.

    ``{"kinds": [...], "categories": [...], "counts": {"kinds": {kind: n}, "categories": {cat: n}},
    "by_kind": {kind: {category: n}}}``
    """
    from service.web.security import require_read
    from service.web.runtime import db_session

    require_read()
    rows = db_session().execute(
        select(Item.kind, Item.category, func.count())
        .where(Item.deleted_at.is_(None))
        .group_by(Item.kind, Item.category)
    ).all()
    kinds: dict[str, int] = {}
    categories: dict[str, int] = {}
    by_kind: dict[str, dict[str, int]] = {}
    for kind, category, n in rows:
        kinds[kind] = kinds.get(kind, 0) + n
        if category:
            categories[category] = categories.get(category, 0) + n
            by_kind.setdefault(kind, {})[category] = n
    ordered_kinds = [k for k in ITEM_KINDS if k in kinds]
    return {
        "kinds": ordered_kinds,
        "categories": sorted(categories),
        "counts": {"kinds": {k: kinds[k] for k in ordered_kinds}, "categories": dict(sorted(categories.items()))},
        "by_kind": {k: dict(sorted(by_kind.get(k, {}).items())) for k in ordered_kinds},
    }
