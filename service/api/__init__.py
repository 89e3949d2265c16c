"""HTTP API: blueprints, OpenAPI document (``/openapi.json``) and docs page (``/docs``)."""

from __future__ import annotations

from pathlib import Path

from flask import Flask, request, send_from_directory
from flask_smorest import Api

from service.app import runtime
from service.security import require_key


def require_read() -> None:
    """Reads are public unless ``read_requires_key``; then any write or admin key will do."""
    s = runtime().settings
    if s.read_requires_key:
        require_key(request, s.api_keys + s.admin_keys, "this endpoint")


def require_write() -> None:
    s = runtime().settings
    require_key(request, s.api_keys + s.admin_keys, "writes")


def require_admin() -> None:
    s = runtime().settings
    require_key(request, s.admin_keys, "admin endpoints")


def register_api(app: Flask) -> None:
    """Attach the OpenAPI machinery and every blueprint."""
    import swagger_ui_bundle

    app.config.update(
        API_TITLE="recsys-search",
        API_VERSION="v1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="/docs",
        # Served from the swagger-ui-bundle package: the docs page works offline.
        OPENAPI_SWAGGER_UI_URL="/docs/assets/",
    )
    api = Api(app, spec_kwargs={"components": {"securitySchemes": {
        "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}}})
    assets = Path(swagger_ui_bundle.swagger_ui_path)

    @app.route("/docs/assets/<path:name>")
    def _docs_assets(name: str):
        return send_from_directory(assets, name)

    from service.api.items import blp as items_blp
    from service.api.ops import blp as ops_blp
    from service.api.recommend import blp as recommend_blp
    from service.api.search import blp as search_blp

    for blp in (search_blp, recommend_blp, items_blp, ops_blp):
        api.register_blueprint(blp)
    from service.web import bp as web_bp  # the web pages: plain Flask, outside the OpenAPI doc
    app.register_blueprint(web_bp)
