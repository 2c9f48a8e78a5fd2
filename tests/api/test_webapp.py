"""The web app at /app/: public static files under a strict Content-Security-Policy
(CSP Level 3: script-src 'self', no inline script, no eval), and the built-in SMART
client it signs in with (SMART App Launch 2.x app-launch.html#register-app-with-ehr:
a public client, its redirect URI fixed to this server's own /app/, RFC 6749
section 3.1.2.2), which cannot be used to get scopes beyond the app's."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from flask.testing import FlaskClient

from fhirserver import create_app
from fhirserver.api.webapp import CLIENT_ID, HERE, SCOPES
from fhirserver.auth import clients
from fhirserver.auth.grants import s256
from fhirserver.auth.scopes import grant

BASE = "http://fhir.test/fhir"  # the settings fixture's base URL


@pytest.fixture
def anonymous(app) -> FlaskClient:  # type: ignore[no-untyped-def]
    """Requests with no Authorization header at all."""
    return FlaskClient(app, use_cookies=False)


def test_the_page_answers_without_a_token_under_a_strict_csp(anonymous):
    r = anonymous.get("/app/", base_url=BASE)
    assert r.status_code == 200 and r.mimetype == "text/html"
    csp = r.headers["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
    assert directives["default-src"] == "'none'" and directives["frame-ancestors"] == "'none'"
    assert "unsafe" not in csp
    assert r.headers["X-Frame-Options"] == "DENY" and r.headers["Referrer-Policy"] == "no-referrer"
    html = r.get_data(as_text=True)
    assert f'data-client-id="{CLIENT_ID}"' in html and f'data-redirect-uri="{BASE}/app/"' in html
    assert f'data-iss="{BASE}"' in html
    # No inline script, style or event handler for the CSP to refuse.
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html)
    assert not re.search(r"<style|\sstyle=|\son[a-z]+=", html)
    js = anonymous.get("/app/js/main.js", base_url=BASE)
    assert js.status_code == 200 and js.mimetype == "text/javascript"
    assert anonymous.get("/app/app.css", base_url=BASE).mimetype == "text/css"
    assert anonymous.get("/app", base_url=BASE).status_code == 308


def test_the_page_redirects_to_the_registered_address(anonymous):
    """The sign-in returns only to the registered /app/: a page opened under another
    host name would lose its sign-in state, so it goes there first."""
    r = anonymous.get("/app/", base_url="http://other.example")
    assert r.status_code == 302 and r.headers["Location"] == f"{BASE}/app/"


@pytest.mark.parametrize("path", ["/app/../pyproject.toml", "/app/node_modules/jsqr/package.json",
                                  "/app/js/../../api/webapp.py", "/app/vendor/other.js",
                                  "/app/package-lock.json", "/app/index.html"])
def test_only_the_apps_files_are_served(anonymous, path):
    r = anonymous.get(path, base_url=BASE)
    assert r.status_code == 404 and r.get_json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize("path", ["/app/nope", "/app/js/%3Cscript%3E.js", "/app/vendor/x.js.map", "/app"])
def test_errors_and_redirects_under_app_carry_the_same_security_headers(anonymous, path):
    """An error under /app/ echoes the name asked for: it is served like the page,
    under the CSP (CSP Level 3; frame-ancestors against clickjacking), never sniffed
    as HTML (X-Content-Type-Options: nosniff), never framed, and sends no Referer
    (RFC 9700 section 4.2.4: a code in the address must not leak)."""
    r = anonymous.get(path, base_url=BASE)
    assert r.status_code in (308, 404)
    assert "frame-ancestors 'none'" in r.headers.get("Content-Security-Policy", "")
    assert r.headers.get("X-Content-Type-Options") == "nosniff"
    assert r.headers.get("X-Frame-Options") == "DENY"
    assert r.headers.get("Referrer-Policy") == "no-referrer"


def test_the_apps_code_never_inserts_html_or_evaluates_text():
    """Everything from FHIR data is set as text (textContent), so a patient's name
    cannot run as script (the browser test shows one that tries)."""
    for path in (HERE / "js").glob("*.js"):
        code = path.read_text(encoding="utf-8")
        for forbidden in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write",
                          "eval(", "new Function", "localStorage"):
            assert forbidden not in code, f"{path.name} uses {forbidden}"


def test_the_builtin_client_is_public_with_only_its_own_redirect_uri(app):
    client = clients.find(app.extensions["fhirserver"].repo.db, CLIENT_ID)
    assert client is not None and client.kind == "public" and not client.secret_hash
    assert client.redirect_uris == (f"{BASE}/app/",)
    assert not re.search(r"\bsystem/|registration|identity|card-number|offline_access", client.scopes)
    # No writes to clinical data: a patient changes their own settings (Patient.u) only.
    assert not re.search(r"(Observation|DiagnosticReport|\*)\.[rs]*[cud]", client.scopes)


def test_a_disabled_builtin_client_stays_disabled_after_a_restart(app, settings):
    db = app.extensions["fhirserver"].repo.db
    clients.set_disabled(db, CLIENT_ID, True)
    again = create_app(settings)
    try:
        found = clients.find(db, CLIENT_ID)
        assert found is not None and found.disabled
    finally:
        again.extensions["fhirserver"].repo.close()


def _authorize(anonymous: FlaskClient, **extra: str):  # type: ignore[no-untyped-def]
    params = {"response_type": "code", "client_id": CLIENT_ID, "redirect_uri": f"{BASE}/app/",
              "scope": "openid fhirUser user/*.rs", "state": "s", "aud": BASE,
              "code_challenge": s256("v" * 50), "code_challenge_method": "S256", **extra}
    return anonymous.get(f"/oauth/authorize?{urlencode(params)}", base_url=BASE)


def test_the_builtin_client_returns_only_to_the_servers_own_app(anonymous):
    for uri in ("http://evil.example/app/", f"{BASE}/app/x", f"{BASE}/docs/oauth2-redirect.html"):
        r = _authorize(anonymous, redirect_uri=uri)
        assert r.status_code == 400 and "Location" not in r.headers, uri


def test_the_builtin_client_cannot_ask_for_more_than_the_apps_scopes(anonymous):
    r = _authorize(anonymous, scope="system/*.cruds registration identity card-number user/*.cruds")
    assert r.status_code == 302
    assert parse_qs(urlsplit(r.headers["Location"]).query)["error"] == ["invalid_scope"]
    # Of a mixed request only what the client allows is granted.
    asked = "openid fhirUser user/Patient.rs user/Observation.cruds patient/*.cruds registration"
    assert grant(asked, SCOPES) == "openid fhirUser user/Patient.rs"
