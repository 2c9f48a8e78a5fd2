"""Cross-origin requests from browser apps (WHATWG Fetch standard, the CORS protocol,
fetch.spec.whatwg.org/#http-cors-protocol; SMART App Launch 2.x, app-launch.html:
browser apps are public clients that call discovery, the token endpoint and the
FHIR API from their own origin).

Which responses are shared: discovery (``/.well-known/*-configuration``,
``/metadata``), the token endpoint with introspection, revocation and JWKS, and the
whole FHIR API. Not shared: the login and approval pages (a person's browser
navigates to them; no script of another origin may read them), EHR launch and the
API docs. Which origins: ``FHIR_CORS_ORIGINS`` (a comma-separated list, or ``*``),
by default the origins of the redirect URIs of the registered OAuth clients, re-read
every few seconds because ``fhirserver clients add`` runs beside a live server.

Credentials never take part: access tokens are bearer tokens in ``Authorization``,
so no ``Access-Control-Allow-Credentials`` is sent, and a script that asks its
browser to send cookies along cannot read the answer.

A preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``)
carries no token by design, so it is answered here, in front of the application,
before authentication, content negotiation and the audit log, none of which it
concerns. A preflight the server will not share gets 403 without CORS headers, as
the Fetch standard suggests for denoting refusal explicitly (#http-responses: "the
403 status can be used, coupled with omitting the relevant headers"); the browser
then blocks the request. Every other response on a shared path, errors included (a
401 with ``WWW-Authenticate``, a 4xx OperationOutcome), carries the headers, so a
browser app can read why it failed.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson
from flask import Flask
from pymongo.errors import PyMongoError

from .. import errors
from ..auth.clients import CLIENTS

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

log = logging.getLogger(__name__)

WILDCARD = "*"
CACHE_SECONDS = 5.0  # how long a newly registered client's origin may wait
MAX_AGE = 600  # seconds a browser may reuse a preflight answer
FHIR_METHODS = "GET, HEAD, POST, PUT, PATCH, DELETE"
# What FHIR clients send beyond the CORS-safelisted headers (R4 http.html: If-Match,
# If-None-Match, If-None-Exist, If-Modified-Since, Prefer, X-Request-Id).
ALLOW_HEADERS = ("Authorization, Content-Type, Accept, If-Match, If-None-Match, If-None-Exist, "
                 "If-Modified-Since, Prefer, X-Requested-With, X-Request-Id")
# What a browser app may read of a response, beyond the CORS-safelisted ones.
# Retry-After, X-Progress and Expires: a browser client polls a Bulk Data export
# (export.html#bulk-data-status-request) and must be able to read them.
EXPOSE_HEADERS = ("Location, ETag, Content-Location, Last-Modified, WWW-Authenticate, "
                  "Retry-After, X-Progress, Expires")
# Shared paths outside the FHIR API, and the methods they answer.
OAUTH_METHODS = {
    "/.well-known/smart-configuration": "GET",
    "/.well-known/openid-configuration": "GET",
    "/oauth/jwks": "GET",
    "/oauth/token": "POST",
    "/oauth/introspect": "POST",
    "/oauth/revoke": "POST",
    "/oauth/launch": "POST",  # a browser EHR creates launches with its user's token
}
NOT_FHIR = ("/oauth/", "/.well-known/", "/openapi.json", "/docs")


# -- pure decisions --------------------------------------------------------------


@dataclass(frozen=True)
class Allowed:
    """The origins whose scripts may read shared responses."""

    origins: frozenset[str] = frozenset()
    any: bool = False


def origin_of(uri: str) -> str | None:
    """The serialization of a URL's origin as browsers send it in ``Origin`` (RFC 6454
    section 6.2): lowercase scheme and host, no default port, no path. None for a URL
    without a web origin (a native app's ``com.example.app:/callback``)."""
    try:
        parts = urlsplit(uri.strip())
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), parts.hostname
    if scheme not in ("http", "https") or not host:
        return None
    if ":" in host:
        host = f"[{host}]"
    default = 80 if scheme == "http" else 443
    return f"{scheme}://{host}" + (f":{port}" if port is not None and port != default else "")


def parse_origins(setting: str) -> Allowed | None:
    """``FHIR_CORS_ORIGINS``: ``*``, or comma-separated origins (a trailing slash or
    path is ignored); None when empty, meaning the registered clients decide."""
    items = [item.strip() for item in setting.split(",") if item.strip()]
    if not items:
        return None
    if WILDCARD in items:
        return Allowed(any=True)
    return Allowed(frozenset(o for o in map(origin_of, items) if o))


def client_origins(redirect_uris: Iterable[str]) -> Allowed:
    """The default: the origins the registered clients' redirect URIs live on."""
    return Allowed(frozenset(o for o in map(origin_of, redirect_uris) if o))


def allow_origin(origin: str | None, allowed: Allowed) -> str | None:
    """The ``Access-Control-Allow-Origin`` value for a request from ``origin``, or None
    to share nothing. ``*`` when every origin is allowed: without credentials it is
    the standard's answer for a public resource. An opaque origin (``null``) is only
    ever allowed by ``*``."""
    if not origin:
        return None
    if allowed.any:
        return WILDCARD
    return origin if origin in allowed.origins else None


def shared(path: str) -> bool:
    """Whether responses at ``path`` may be shared with other origins at all. The
    path is judged as the router will read it: repeated slashes collapse
    (``//oauth/authorize`` is the authorization page)."""
    path = re.sub(r"/{2,}", "/", path)
    return path in OAUTH_METHODS or not path.startswith(NOT_FHIR)


def preflight_headers(allow: str, path: str) -> list[tuple[str, str]]:
    """The answer to a preflight the server shares (Fetch #http-responses)."""
    return [("Access-Control-Allow-Origin", allow),
            ("Access-Control-Allow-Methods", OAUTH_METHODS.get(path, FHIR_METHODS)),
            ("Access-Control-Allow-Headers", ALLOW_HEADERS),
            ("Access-Control-Max-Age", str(MAX_AGE)),
            ("Vary", "Origin")]


def response_headers(allow: str | None) -> list[tuple[str, str]]:
    """Headers for any other response on a shared path. ``Vary: Origin`` goes on every
    one of them, with or without ``Origin``, so a cache never serves one origin's
    answer to another (Fetch #cors-protocol-and-http-caches)."""
    if allow is None:
        return [("Vary", "Origin")]
    return [("Access-Control-Allow-Origin", allow),
            ("Access-Control-Expose-Headers", EXPOSE_HEADERS), ("Vary", "Origin")]


def merge_headers(headers: list[tuple[str, str]], extra: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``headers`` with ``extra`` added; ``Vary`` values are merged into one header."""
    vary: list[str] = []
    out: list[tuple[str, str]] = []
    for name, value in [*headers, *extra]:
        if name.lower() == "vary":
            vary += [v.strip() for v in value.split(",") if v.strip()]
        else:
            out.append((name, value))
    if vary:
        unique: dict[str, str] = {}
        for v in vary:
            unique.setdefault(v.lower(), v)
        out.append(("Vary", ", ".join(unique.values())))
    return out


# -- the origins, from settings or the registered clients ------------------------------


class Origins:
    """The allowed origins: fixed by the setting, or read from ``_oauth_clients`` at
    most every ``CACHE_SECONDS`` per process (clients are registered while servers
    run). When the database cannot be read, the last set read stays in force."""

    def __init__(self, setting: str, db: Any, clock: Callable[[], float] = time.monotonic) -> None:
        self.fixed = parse_origins(setting)
        self.db = db
        self.clock = clock
        self._read_at: float | None = None
        self._allowed = Allowed()
        self._lock = threading.Lock()

    def current(self) -> Allowed:
        if self.fixed is not None:
            return self.fixed
        with self._lock:
            now = self.clock()
            if self._read_at is None or now - self._read_at >= CACHE_SECONDS:
                try:
                    docs = self.db[CLIENTS].find({}, {"redirect_uris": 1})
                    self._allowed = client_origins(u for d in docs for u in d.get("redirect_uris") or ())
                except PyMongoError:
                    log.warning("registered clients could not be read for CORS; keeping the "
                                "origins read before", exc_info=True)
                self._read_at = now
            return self._allowed


# -- WSGI glue -------------------------------------------------------------------------


class CorsMiddleware:
    """Answers preflights and adds the CORS headers to every shared response."""

    def __init__(self, app: WSGIApplication, origins: Origins) -> None:
        self.app = app
        self.origins = origins

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        origin = environ.get("HTTP_ORIGIN")
        preflight = (environ.get("REQUEST_METHOD") == "OPTIONS" and origin is not None
                     and "HTTP_ACCESS_CONTROL_REQUEST_METHOD" in environ)
        allow = allow_origin(origin, self.origins.current()) if origin and shared(path) else None
        if preflight:
            if allow is None:
                return _refused(start_response)
            start_response("204 No Content", preflight_headers(allow, path))
            return []
        if not shared(path):
            return self.app(environ, start_response)
        extra = response_headers(allow)

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            return start_response(status, merge_headers(headers, extra), exc_info)

        return self.app(environ, start)


def _refused(start_response: StartResponse) -> list[bytes]:
    body = orjson.dumps(errors.Forbidden(
        "Cross-origin requests from this origin are not allowed here").outcome())
    start_response("403 Forbidden", [("Content-Type", "application/fhir+json; charset=utf-8"),
                                     ("Content-Length", str(len(body))), ("Vary", "Origin")])
    return [body]


def register(app: Flask) -> None:
    st = app.extensions["fhirserver"]
    app.wsgi_app = CorsMiddleware(app.wsgi_app, Origins(st.settings.cors_origins,  # type: ignore[method-assign]
                                                        st.repo.db))
