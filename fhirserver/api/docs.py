"""``/openapi.json`` and the ``/docs`` page: public, like /metadata, and complete
offline. The page is Swagger UI from the assets installed with the package
(``flask-swagger-ui`` ships swagger-ui-dist), served from here, never a CDN: a
hospital network is often offline. The page runs no inline script, under a
Content-Security-Policy that lets it load only from this server."""

from __future__ import annotations

from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import orjson
from flask import Blueprint, Response, current_app, render_template_string, url_for

from .. import errors
from ..version import __version__
from . import openapi
from .guard import PUBLIC
from .oauth import SCOPES_SUPPORTED, endpoints
from .state import public_base_url, state

blp = Blueprint("docs", __name__)

#: The Swagger UI files the page uses, and their media types.
ASSETS = {
    "swagger-ui.css": "text/css",
    "swagger-ui-bundle.js": "text/javascript",
    "favicon-32x32.png": "image/png",
    "favicon-16x16.png": "image/png",
    "oauth2-redirect.js": "text/javascript",
    "init.js": "text/javascript",
}
CACHE = "fhirserver.openapi"

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>fhirserver API</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="{{ asset('swagger-ui.css') }}">
<link rel="icon" type="image/png" href="{{ asset('favicon-32x32.png') }}" sizes="32x32">
</head><body>
<div id="swagger-ui" data-spec="{{ spec }}" data-redirect="{{ redirect }}"></div>
<script src="{{ asset('swagger-ui-bundle.js') }}"></script>
<script src="{{ asset('init.js') }}"></script>
</body></html>"""

# The page's configuration comes from data- attributes: no inline script.
INIT = b"""window.addEventListener("load", function () {
  var el = document.getElementById("swagger-ui");
  var ui = SwaggerUIBundle({
    url: el.dataset.spec,
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    oauth2RedirectUrl: el.dataset.redirect
  });
  ui.initOAuth({ usePkceWithAuthorizationCodeGrant: true });
  window.ui = ui;
});
"""

REDIRECT_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Signed in</title></head><body>
<script src="{{ asset('oauth2-redirect.js') }}"></script>
</body></html>"""


def csp(base: str) -> str:
    """Scripts and styles from this server only; requests to this server and to the
    FHIR base it documents (the same server, perhaps under its public name)."""
    parts = urlsplit(base)
    api = f" {parts.scheme}://{parts.netloc}" if parts.scheme in ("http", "https") else ""
    return ("default-src 'none'; script-src 'self'; style-src 'self'; "
            f"img-src 'self' data:; connect-src 'self'{api}; form-action 'self'{api}; "
            "frame-ancestors 'none'; base-uri 'none'")


def _asset(name: str) -> str:
    return url_for("docs.asset", name=name)


def _html(page: str, **values: Any) -> Response:
    html = render_template_string(page, asset=_asset, **values)
    return Response(html, mimetype="text/html", headers={
        "Content-Security-Policy": csp(state().settings.issuer), "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff"})


def routes() -> list[openapi.Route]:
    """Every (rule, method) of the app, with the view's docstring for that method."""
    found = []
    for rule in current_app.url_map.iter_rules():
        if rule.endpoint in ("docs.asset", "docs.oauth2_redirect", "static",
                             "webapp.app_file", "webapp.app_root"):
            continue
        view = current_app.view_functions[rule.endpoint]
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            handler = getattr(getattr(view, "view_class", None), method.lower(), view)
            doc = (handler.__doc__ or "").strip().split("\n\n")[0]
            found.append(openapi.Route(rule.rule, method, " ".join(doc.split())))
    return found


def document() -> dict[str, Any]:
    """The document, made once per base URL and kept: routes do not change at run time."""
    base = public_base_url()
    cache: dict[str, dict[str, Any]] = current_app.extensions.setdefault(CACHE, {})
    if base not in cache:
        server = openapi.Server(base=base, oauth=endpoints(), scopes=tuple(SCOPES_SUPPORTED),
                                public=frozenset(PUBLIC), version=__version__)
        cache[base] = openapi.document(routes(), server)
    return cache[base]


@blp.route("/openapi.json", methods=["GET"])
def openapi_json() -> Response:
    """The OpenAPI 3.1 description of this server"""
    return Response(orjson.dumps(document()), mimetype="application/json",
                    headers={"Cache-Control": "no-cache"})


@blp.route("/docs", methods=["GET"])
def docs() -> Response:
    """The API documentation page (Swagger UI, served from this server)"""
    return _html(PAGE, spec=url_for("docs.openapi_json"),
                 redirect=url_for("docs.oauth2_redirect", _external=True))


@blp.route("/docs/oauth2-redirect.html", methods=["GET"])
def oauth2_redirect() -> Response:
    """Where the docs page's sign-in returns (register it as a client's redirect URI)"""
    return _html(REDIRECT_PAGE)


@blp.route("/docs/<name>", methods=["GET"])
def asset(name: str) -> Response:
    """One file of Swagger UI"""
    if name not in ASSETS:
        raise errors.NotFound(f"No file '{name[:60]}' in the docs")
    data = INIT if name == "init.js" else \
        resources.files("flask_swagger_ui").joinpath("dist", name).read_bytes()
    return Response(data, mimetype=ASSETS[name], headers={
        "Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"})
