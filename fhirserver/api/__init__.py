"""The HTTP layer: Flask / flask-smorest blueprints around the interactions."""

from __future__ import annotations

from flask import Flask, request
from flask_smorest import Api

from . import (
    audit_log,
    auditing,
    authorize,
    cards,
    cors,
    definitions,
    docs,
    export,
    guard,
    handlers,
    naming,
    oauth,
    operations,
    resources,
    system,
    webapp,
)
from .negotiation import NOT_FHIR, response_mimetype


def init_api(app: Flask) -> Api:
    app.config.setdefault("API_TITLE", "fhirserver")
    app.config.setdefault("API_VERSION", "4.0.1")
    app.config.setdefault("OPENAPI_VERSION", "3.1.0")
    # /openapi.json and /docs are the server's own (docs.py): generated from the routes
    # and the operation table, with Swagger UI served from the installed package.
    app.config.setdefault("OPENAPI_URL_PREFIX", None)
    api = Api(app)
    app.register_blueprint(docs.blp)
    app.register_blueprint(webapp.blp)
    webapp.register_client(app)
    # System routes first: "/metadata" and "/_history" must win over "/<rtype>".
    api.register_blueprint(system.blp)
    api.register_blueprint(oauth.blp)
    api.register_blueprint(authorize.blp)
    api.register_blueprint(naming.blp)
    api.register_blueprint(audit_log.blp)
    app.register_blueprint(definitions.blp)
    api.register_blueprint(resources.blp)
    api.register_blueprint(operations.blp)
    api.register_blueprint(export.blp)
    api.register_blueprint(cards.blp)
    handlers.register(app)
    guard.register(app)
    cors.register(app)  # answers preflights before the guard asks for a token
    auditing.register(app)

    @app.before_request
    def negotiate() -> None:
        if request.path.endswith("/$card-qr") and request.accept_mimetypes.best_match(cards.IMAGE_TYPES):
            return  # the QR image itself
        if not request.path.startswith(NOT_FHIR):  # OAuth and OpenAPI speak JSON
            response_mimetype(request)  # 406 before any work is done

    return api
