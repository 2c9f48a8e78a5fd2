"""CORS for browser apps (WHATWG Fetch standard, #http-cors-protocol): the
origin decision as pure functions, then the protocol over real HTTP against a live
server whose allowed origins are those of its registered clients' redirect URIs."""

from __future__ import annotations

import pytest
import requests

from fhirserver.api import cors
from fhirserver.auth.clients import Client, register
from tests import factories as f
from tests.conftest import http_as, make_app

APP = "http://app.example:3000"
OTHER = "https://evil.example"


# -- pure decisions ----------------------------------------------------------------


@pytest.mark.parametrize(("uri", "origin"), [
    ("http://app.example:3000/callback?x=1", "http://app.example:3000"),
    ("HTTP://App.Example/cb", "http://app.example"),  # RFC 6454 6.2: lowercase
    ("http://app.example:80/cb", "http://app.example"),  # default port dropped
    ("https://app.example:443/", "https://app.example"),
    ("https://app.example:8443", "https://app.example:8443"),
    ("http://[::1]:8080/cb", "http://[::1]:8080"),
    ("com.example.app:/callback", None),  # a native app's redirect has no web origin
    ("http://app.example:99999/", None),
    ("", None),
])
def test_origin_of_serializes_as_browsers_send_origin(uri, origin):
    assert cors.origin_of(uri) == origin


def test_setting_wildcard_list_or_registered_clients():
    assert cors.parse_origins("") is None
    assert cors.parse_origins(" , ") is None
    assert cors.parse_origins("*") == cors.Allowed(any=True)
    listed = cors.parse_origins("https://a.example/, http://localhost:5173")
    assert listed == cors.Allowed(frozenset({"https://a.example", "http://localhost:5173"}))


@pytest.mark.parametrize(("origin", "allowed", "answer"), [
    (APP, cors.Allowed(frozenset({APP})), APP),  # reflected
    (OTHER, cors.Allowed(frozenset({APP})), None),
    ("http://app.example:3001", cors.Allowed(frozenset({APP})), None),  # the port is the origin
    ("null", cors.Allowed(frozenset({APP})), None),  # opaque origins only by "*"
    ("null", cors.Allowed(any=True), "*"),
    (OTHER, cors.Allowed(any=True), "*"),  # no credentials, so "*" is the answer
    (None, cors.Allowed(any=True), None),
])
def test_allow_origin(origin, allowed, answer):
    assert cors.allow_origin(origin, allowed) == answer


@pytest.mark.parametrize(("path", "shared"), [
    ("/metadata", True), ("/Patient", True), ("/Observation/1/_history/2", True), ("/", True),
    ("/Patient/$match", True), ("/AuditEvent", True),
    ("/.well-known/smart-configuration", True), ("/.well-known/openid-configuration", True),
    ("/oauth/token", True), ("/oauth/jwks", True), ("/oauth/introspect", True),
    ("/oauth/revoke", True), ("/oauth/launch", True),  # a browser EHR launches with its user's token
    # Pages a person's browser navigates to; the docs.
    ("/oauth/authorize", False), ("/oauth/login", False), ("/oauth/approve", False),
    ("/.well-known/other", False), ("/docs", False),
    ("/openapi.json", False),
])
def test_shared_paths(path, shared):
    assert cors.shared(path) is shared


def test_vary_values_merge_into_one_header():
    merged = cors.merge_headers([("Vary", "Cookie"), ("ETag", 'W/"1"')],
                                [("Vary", "Origin"), ("Vary", "cookie")])
    assert merged == [("ETag", 'W/"1"'), ("Vary", "Cookie, Origin")]


def test_registered_origins_are_reread_after_the_cache_expires(app):
    db = app.extensions["fhirserver"].repo.db
    now = [100.0]
    origins = cors.Origins("", db, clock=lambda: now[0])
    own = cors.Allowed(frozenset({"http://fhir.test"}))  # the built-in web app's (/app/)
    assert origins.current() == own
    register(db, Client("late", "public", "patient/*.rs", (f"{APP}/cb",)))
    assert origins.current() == own  # cached
    now[0] += cors.CACHE_SECONDS
    assert origins.current() == cors.Allowed(frozenset({APP, "http://fhir.test"}))
    assert cors.Origins("https://a.example", db).current().origins == {"https://a.example"}


# -- over real HTTP --------------------------------------------------------------


@pytest.fixture
def server(live):
    url, app = live
    register(app.extensions["fhirserver"].repo.db,
             Client("browser-app", "public", "patient/*.rs launch/patient openid fhirUser",
                    (f"{APP}/callback", "com.example.app:/callback")))
    return url, app


def preflight(url: str, path: str, origin: str, method: str = "GET",
              headers: str = "authorization") -> requests.Response:
    return requests.options(f"{url}{path}", timeout=10, headers={
        "Origin": origin, "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": headers})


def vary(r: requests.Response) -> list[str]:
    return [v.strip().lower() for v in r.headers.get("Vary", "").split(",")]


def test_preflight_from_a_registered_origin_needs_no_token(server):
    url, _ = server
    r = preflight(url, "/Observation", APP, "GET", "authorization,if-none-match")
    assert r.status_code == 204 and r.content == b""
    assert r.headers["Access-Control-Allow-Origin"] == APP
    assert "origin" in vary(r)
    methods = {m.strip() for m in r.headers["Access-Control-Allow-Methods"].split(",")}
    assert {"GET", "POST", "PUT", "PATCH", "DELETE"} <= methods
    allowed = {h.strip().lower() for h in r.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type", "accept", "if-match", "if-none-match",
            "if-none-exist", "if-modified-since", "prefer", "x-requested-with"} <= allowed
    assert int(r.headers["Access-Control-Max-Age"]) > 0
    assert "Access-Control-Allow-Credentials" not in r.headers  # bearer tokens, no cookies
    token = preflight(url, "/oauth/token", APP, "POST", "authorization,content-type")
    assert token.status_code == 204 and token.headers["Access-Control-Allow-Methods"] == "POST"


def test_preflight_refused_with_403_and_no_cors_headers(server):
    url, _ = server
    for path, origin in (("/Patient", OTHER), ("/Patient", "null"),
                         ("/oauth/authorize", APP), ("/oauth/login", APP), ("/docs", APP)):
        r = preflight(url, path, origin)
        assert r.status_code == 403, (path, origin)
        assert not [h for h in r.headers if h.lower().startswith("access-control-")]


def test_preflights_are_not_audited_but_other_options_requests_stay_closed(server):
    url, app = server
    audit = app.extensions["fhirserver"].repo.db["_audit"]
    before = audit.count_documents({})
    assert preflight(url, "/Patient", APP).status_code == 204
    assert preflight(url, "/Patient", OTHER).status_code == 403
    assert audit.count_documents({}) == before
    # An OPTIONS that is not a preflight is an ordinary request: a token is needed.
    plain = requests.options(f"{url}/Patient", headers={"Origin": APP}, timeout=10)
    assert plain.status_code == 401
    assert plain.headers["Access-Control-Allow-Origin"] == APP


@pytest.mark.parametrize("path", ["/.well-known/smart-configuration",
                                  "/.well-known/openid-configuration", "/metadata", "/oauth/jwks"])
def test_discovery_is_readable_cross_origin(server, path):
    url, _ = server
    r = requests.get(f"{url}{path}", headers={"Origin": APP}, timeout=10)
    assert r.status_code == 200
    assert r.headers["Access-Control-Allow-Origin"] == APP and "origin" in vary(r)
    assert "Access-Control-Allow-Credentials" not in r.headers


def test_errors_carry_the_cors_headers(server):
    url, app = server
    anonymous = requests.get(f"{url}/Patient", headers={"Origin": APP}, timeout=10)
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")
    assert anonymous.headers["Access-Control-Allow-Origin"] == APP
    exposed = {h.strip().lower() for h in anonymous.headers["Access-Control-Expose-Headers"].split(",")}
    assert {"www-authenticate", "location", "etag", "content-location", "last-modified"} <= exposed
    # A browser polling a Bulk Data export reads its progress (export.html#bulk-data-status-request)
    assert {"retry-after", "x-progress", "expires"} <= exposed
    assert anonymous.json()["resourceType"] == "OperationOutcome"

    operator = http_as((url, app))
    missing = operator.get("Patient/nope", headers={"Origin": APP})
    assert missing.status_code == 404 and missing.headers["Access-Control-Allow-Origin"] == APP
    assert missing.json()["resourceType"] == "OperationOutcome"
    token = requests.post(f"{url}/oauth/token", data={"grant_type": "password"},
                          headers={"Origin": APP}, timeout=10)
    assert token.status_code == 400 and token.json()["error"] == "unsupported_grant_type"
    assert token.headers["Access-Control-Allow-Origin"] == APP


def test_writes_expose_location_and_etag(server):
    url, app = server
    operator = http_as((url, app))
    created = operator.post("Patient", f.patient("Cors"), headers={"Origin": APP})
    assert created.status_code == 201
    assert created.headers["Access-Control-Allow-Origin"] == APP
    assert created.headers["Location"] and created.headers["ETag"]


def test_other_origins_and_pages_get_no_cors_headers(server):
    url, _ = server
    r = requests.get(f"{url}/metadata", headers={"Origin": OTHER}, timeout=10)
    assert r.status_code == 200 and "Access-Control-Allow-Origin" not in r.headers
    assert "origin" in vary(r)  # the answer depends on Origin, whatever it was
    plain = requests.get(f"{url}/metadata", timeout=10)
    assert "Access-Control-Allow-Origin" not in plain.headers and "origin" in vary(plain)
    page = requests.get(f"{url}/oauth/authorize", headers={"Origin": APP}, timeout=10)
    assert "Access-Control-Allow-Origin" not in page.headers


def test_a_client_registered_while_the_server_runs_is_allowed_soon(server):
    url, app = server
    late = "http://late.example:8000"
    assert preflight(url, "/Patient", late).status_code == 403
    register(app.extensions["fhirserver"].repo.db,
             Client("late-app", "public", "patient/*.rs", (f"{late}/cb",)))
    origins = app.wsgi_app.origins
    later = origins.clock() + cors.CACHE_SECONDS
    origins.clock = lambda: later
    r = preflight(url, "/Patient", late)
    assert r.status_code == 204 and r.headers["Access-Control-Allow-Origin"] == late


@pytest.mark.parametrize(("setting", "origin", "answer"), [
    ("*", OTHER, "*"),
    ("https://portal.example, http://localhost:5173", "http://localhost:5173",
     "http://localhost:5173"),
    ("https://portal.example", APP, None),  # the setting replaces the registered clients
])
def test_configured_origins(settings, setting, origin, answer):
    app = make_app(settings.with_(cors_origins=setting))
    try:
        register(app.extensions["fhirserver"].repo.db,
                 Client("browser-app", "public", "patient/*.rs", (f"{APP}/callback",)))
        client = app.test_client()
        r = client.get("/metadata", headers={"Origin": origin})
        assert r.headers.get("Access-Control-Allow-Origin") == answer
        pre = client.options("/Patient", headers={"Origin": origin,
                                                  "Access-Control-Request-Method": "GET"})
        assert pre.status_code == (204 if answer else 403)
    finally:
        app.extensions["fhirserver"].repo.close()
