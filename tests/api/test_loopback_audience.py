"""An app set up with ``http://localhost:PORT`` against a server that calls itself
``http://127.0.0.1:PORT`` (no FHIR_BASE_URL, listening on loopback): its ``aud``
(SMART App Launch 2.x, app-launch.html#obtain-authorization-code) is accepted, over
real HTTP, because ``Settings.audiences`` names the other loopback names too; a
foreign ``aud`` is still refused."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from werkzeug.serving import make_server

from fhirserver.auth.clients import Client, register
from fhirserver.auth.grants import s256
from fhirserver.storage.ferretdb import free_port
from tests.conftest import make_app

REDIRECT = "http://app.example/callback"


@pytest.fixture
def loopback(settings) -> Iterator[tuple[int, object]]:
    """The server as ``fhirserver serve`` runs it by default: no base URL, 127.0.0.1."""
    port = free_port()
    app = make_app(settings.with_(base_url="", host="127.0.0.1", port=port))
    server = make_server("127.0.0.1", port, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield port, app
    server.shutdown()
    app.extensions["fhirserver"].repo.close()


def authorize(port: int, aud: str) -> requests.Response:
    params = {"response_type": "code", "client_id": "app-1", "redirect_uri": REDIRECT,
              "scope": "patient/*.rs launch/patient", "state": "s-1", "aud": aud,
              "code_challenge": s256("v" * 50), "code_challenge_method": "S256"}
    return requests.get(f"http://127.0.0.1:{port}/oauth/authorize?{urlencode(params)}",
                        allow_redirects=False, timeout=10)


def test_localhost_aud_reaches_the_login_page_of_a_127_0_0_1_issuer(loopback):
    port, app = loopback
    register(app.extensions["fhirserver"].repo.db,  # type: ignore[attr-defined]
             Client("app-1", "public", "patient/*.rs launch/patient", (REDIRECT,)))
    conf = requests.get(f"http://127.0.0.1:{port}/.well-known/smart-configuration", timeout=10).json()
    assert conf["issuer"] == f"http://127.0.0.1:{port}"

    for aud in (f"http://localhost:{port}", f"http://localhost:{port}/", f"http://127.0.0.1:{port}"):
        page = authorize(port, aud)
        assert page.status_code == 200, (aud, page.headers.get("Location"))
        assert "Sign in" in page.text

    for aud in (f"http://localhost:{port + 1}", "https://fhir.example"):
        refused = authorize(port, aud)
        assert refused.status_code == 302 and refused.headers["Location"].startswith(REDIRECT)
        assert parse_qs(urlsplit(refused.headers["Location"]).query)["error"] == ["invalid_request"]
