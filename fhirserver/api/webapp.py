"""The web app at ``/app/``: a SMART app for clinicians and patients, served by the
server but using only its public interfaces (SMART App Launch 2.x discovery,
authorization code with PKCE, the FHIR REST API and operations), as any third-party
app would.

The page and the app's own modules come from ``fhirserver/webapp/``; the browser
libraries it loads (fhirclient, jsQR, Chart.js) from that folder's ``node_modules``,
installed by ``scripts/setup.sh`` from the npm registry (``package-lock.json``), never
a CDN: a hospital network is often offline. Everything is public (a static page holds
no patient data) and served under a Content-Security-Policy that allows scripts and
styles from this server only: no inline script or style, no ``eval``.

The app signs in as the built-in public client :data:`CLIENT_ID`, registered at
start-up with this server's own ``/app/`` as its only redirect URI, and no more
scopes than the app's views use (:data:`SCOPES`): no ``system/`` scopes, no writes
to clinical data, none of the server's own role scopes (``registration``,
``identity``, ``card-number``). What a token carries is still bounded by the user's
own reach (policy), so the client gives a user nothing they could not do otherwise.
An operator may disable it (``fhirserver clients disable fhirserver-app``): a
disabled client stays disabled across restarts.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

from flask import Blueprint, Flask, Response, redirect, render_template_string, request
from werkzeug.wrappers import Response as BaseResponse

from .. import errors
from ..auth.clients import BUILT_IN_APP, Client, register
from ..config import Settings
from .state import public_base_url, state

blp = Blueprint("webapp", __name__)

HERE = Path(__file__).resolve().parent.parent / "webapp"
MODULES = HERE / "node_modules"
CLIENT_ID = BUILT_IN_APP
CLIENT_NAME = "fhirserver web app"
#: What the app's views use: a clinician's reads, scan and break-the-glass (user/
#: Patient reads), a patient's record, audit trail, consent and family binding
#: (patient/Patient.u: the operations that change a patient's own settings), and EHR
#: launch.
SCOPES = ("openid fhirUser launch launch/patient "
          "user/Patient.rs user/Observation.rs user/DiagnosticReport.rs "
          "patient/Patient.rus patient/Observation.rs patient/DiagnosticReport.rs "
          "patient/AuditEvent.rs")

#: The app's own files (from webapp/) by name, and the vendor builds (from node_modules).
OWN = re.compile(r"(?:js/[a-z][a-z0-9-]*\.js|app\.css)")
VENDOR = {
    "vendor/fhir-client.js": ("fhirclient/build/fhir-client.min.js", "text/javascript"),
    "vendor/jsQR.js": ("jsqr/dist/jsQR.js", "text/javascript"),
    "vendor/chart.umd.js": ("chart.js/dist/chart.umd.min.js", "text/javascript"),
}


def redirect_uris(settings: Settings) -> tuple[str, ...]:
    """The app's addresses: the server's public base and, on a loopback server with
    no public address, its other loopback names (``Settings.audiences``), each
    followed by ``/app/``."""
    bases = [(settings.base_url or settings.issuer).rstrip("/"), *settings.audiences]
    return tuple(f"{b}/app/" for b in dict.fromkeys(bases))


def builtin_client(settings: Settings) -> Client:
    return Client(CLIENT_ID, "public", SCOPES, redirect_uris(settings), name=CLIENT_NAME)


def register_client(app: Flask) -> None:
    """(Re)register the built-in client with this start's addresses."""
    st = app.extensions["fhirserver"]
    register(st.repo.db, builtin_client(st.settings))


def csp(base: str) -> str:
    """Scripts and styles from this server only; FHIR calls to it; images from it and
    from ``data:`` (the card's QR code as the server answers it). A photo of a card is
    read from its File and the camera's stream set as the video's ``srcObject``: no
    ``blob:`` URL is needed."""
    parts = urlsplit(base)
    api = f" {parts.scheme}://{parts.netloc}" if parts.scheme in ("http", "https") else ""
    return ("default-src 'none'; script-src 'self'; style-src 'self'; "
            f"img-src 'self' data:; connect-src 'self'{api}; "
            "form-action 'none'; frame-ancestors 'none'; base-uri 'none'")


def _headers(kind: str, cache: str) -> dict[str, str]:
    return {"Content-Type": kind, "Cache-Control": cache, "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": csp(public_base_url()), "X-Frame-Options": "DENY",
            "Referrer-Policy": "no-referrer", "Permissions-Policy": "camera=(self)"}


@blp.after_request
def _secure_every_answer(resp: BaseResponse) -> BaseResponse:
    """The same headers on every answer under /app/, its errors (an OperationOutcome
    echoing the asked name) and redirects too: not sniffed as HTML, not framed, no
    Referer. What a view already set (the file's own type and caching) is kept."""
    for key, value in _headers("", "no-store").items():
        if key != "Content-Type":
            resp.headers.setdefault(key, value)
    return resp


def _page_base() -> str | None:
    """The base the page was asked for, when it is one of the app's addresses."""
    here = request.host_url.rstrip("/") + request.script_root
    return here if f"{here}/app/" in redirect_uris(state().settings) else None


@blp.route("/app", methods=["GET"])
def app_root() -> BaseResponse:
    """The web app (redirects to /app/)"""
    return redirect(f"{request.script_root}/app/", code=308)


@blp.route("/app/", methods=["GET"])
def app_page() -> BaseResponse:
    """The web app for clinicians and patients (a SMART app of this server's)"""
    base = _page_base()
    if base is None:
        # Sign-in returns only to a registered address: go there first.
        return redirect(f"{public_base_url()}/app/", code=302)
    html = render_template_string((HERE / "index.html").read_text(encoding="utf-8"),
                                  iss=base, client_id=CLIENT_ID, redirect_uri=f"{base}/app/")
    return Response(html, headers=_headers("text/html; charset=utf-8", "no-store"))


@blp.route("/app/<path:name>", methods=["GET"])
def app_file(name: str) -> Response:
    """One file of the web app"""
    if OWN.fullmatch(name) and (HERE / name).is_file():
        path = HERE / name
        kind = "text/css" if name.endswith(".css") else "text/javascript"
    elif name in VENDOR:
        rel, kind = VENDOR[name]
        path = MODULES / rel
        if not path.is_file():
            raise errors.NotFound(f"The web app's library '{name}' is not installed "
                                  "(scripts/setup.sh runs npm ci in fhirserver/webapp)")
    else:
        raise errors.NotFound(f"No file '{name[:60]}' in the web app")
    return Response(path.read_bytes(), headers=_headers(f"{kind}; charset=utf-8", "no-cache"))
