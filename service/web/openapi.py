"""HTTP API: blueprints, OpenAPI document (``/openapi.json``) and docs page (``/docs``)."""

from __future__ import annotations

from http import HTTPStatus
from pathlib import Path
from typing import Any

from apispec import BasePlugin
from flask import Flask, send_from_directory
from flask_smorest import Api

from service.web.schemas import ErrorOut


# Error statuses (with the envelope of service/errors.py) any operation can answer besides its
# own: 400 for bad input (every path, query and body string is checked), 401/403 once keys are
# configured, 429 under a rate limit, 503 while the database or the disk is unavailable.
_ANY_OPERATION = (400, 401, 403, 429, 503)
_LIMIT_KEYWORD = {"integer": "maximum", "number": "maximum", "string": "maxLength", "array": "maxItems"}


class _Api(Api):
    """flask-smorest's Api, documenting our error envelope instead of its own ``Error`` schema."""

    ERROR_SCHEMA = ErrorOut

    def _register_responses(self):
        # Under the plain name first: every error response, the default included, refers to "Error".
        self.spec.components.schema("Error", schema=self.ERROR_SCHEMA)
        super()._register_responses()


class _ServedDoc(BasePlugin):
    """Makes ``/openapi.json`` say what this app does; runs after the marshmallow plugin.

    Limits marked ``x-setting`` (schemas.setting) state this app's setting, not the schema's hard
    cap; request validation errors are documented as the 400 service/errors.py sends, never
    flask-smorest's 422; every error response has the real envelope.
    """

    def __init__(self, settings: Any):
        super().__init__()
        self.settings = settings

    def schema_helper(self, name, definition, **kwargs):
        self._limits(definition)

    def operation_helper(self, path=None, operations=None, **kwargs):
        for operation in (operations or {}).values():
            self._limits(operation)
            self._errors(path or "", operation)

    def _limits(self, node: Any) -> None:
        if isinstance(node, dict):
            name = node.get("x-setting")
            if name and node.get("type") in _LIMIT_KEYWORD:
                keyword, value = _LIMIT_KEYWORD[node["type"]], getattr(self.settings, name)
                # The schema's hard cap still applies above the setting.
                node[keyword] = min(node[keyword], value) if keyword in node else value
            for value in node.values():
                self._limits(value)
        elif isinstance(node, list):
            for value in node:
                self._limits(value)

    def _errors(self, path: str, operation: dict) -> None:
        responses = {str(code): response for code, response in operation.get("responses", {}).items()}
        responses.pop("422", None)  # webargs' status; the handlers answer 400
        if path.startswith("/health/"):
            # Probes are never rate limited nor behind a key.
            statuses = {400, 503} if path == "/health/ready" else {400}
        else:
            statuses = set(_ANY_OPERATION)
        if "{item_id}" in path:
            statuses.add(404)
        if "requestBody" in operation:
            statuses.add(413)
        for status in statuses:
            responses.setdefault(str(status), HTTPStatus(status).name)  # flask-smorest's components
        for code, response in responses.items():
            if code[0] in "45" and isinstance(response, dict) and "content" not in response:
                response["content"] = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
        operation["responses"] = responses


def register_api(app: Flask) -> None:
    """Attach the OpenAPI machinery and every blueprint.

    The document is built for this app: limits are its settings (max_k, max_offset, ...).
    """
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
    api = _Api(app, spec_kwargs={
        "extra_plugins": [_ServedDoc(app.extensions["recsys"].settings)],
        "components": {"securitySchemes": {"ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}},
    })
    assets = Path(swagger_ui_bundle.swagger_ui_path)

    @app.route("/docs/assets/<path:name>")
    def _docs_assets(name: str):
        return send_from_directory(assets, name)

    from service.web.items import blp as items_blp
    from service.web.ops import blp as ops_blp
    from service.web.recommend import blp as recommend_blp
    from service.web.search import blp as search_blp

    for blp in (search_blp, recommend_blp, items_blp, ops_blp):
        api.register_blueprint(blp)
    from service.web.pages import bp as web_bp  # the web pages: plain Flask, outside the OpenAPI doc
    app.register_blueprint(web_bp)
