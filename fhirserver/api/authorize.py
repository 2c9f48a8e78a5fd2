"""The authorization endpoint and its pages (SMART App Launch 2.x,
app-launch.html#obtain-authorization-code; RFC 6749 section 4.1; RFC 7636).

GET /oauth/authorize checks the request (client, exact redirect URI, S256 PKCE,
``aud``); errors that concern the redirect URI itself are shown, never redirected.
Then a login page (CSRF-protected, lockout after repeated failures) and an approval
page that lists the scopes in plain words and, for ``launch/patient``, lets the
user pick the patient: a patient themself or a bound family member, a clinician
one of the patients they treat. The code goes back to the redirect URI.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any
from urllib.parse import urlencode

from flask import Flask, Response, g, redirect, render_template_string, request, session
from flask_smorest import Blueprint

from ..auth import clients as clients_
from ..auth import grants, users
from ..auth.access import Access
from ..auth.policy import Caller
from ..auth.scopes import describe, grant, parse_scopes
from .state import state

blp = Blueprint("authorize", __name__, url_prefix="/",
                description="SMART authorization: login, approval, patient choice")

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }} · fhirserver</title>
<style>body{font-family:system-ui,sans-serif;max-width:34rem;margin:3rem auto;padding:0 1rem}
label{display:block;margin:.6rem 0}input[type=text],input[type=password]{width:100%;padding:.4rem}
button{padding:.5rem 1.2rem;margin-right:.5rem}.error{color:#a00}</style></head><body>
<h1>{{ title }}</h1>
{% if error %}<p class="error" role="alert">{{ error }}</p>{% endif %}
{% if form == "login" %}
<p><strong>{{ client }}</strong> asks to use your health record.</p>
<form method="post" action="login">
<input type="hidden" name="csrf" value="{{ csrf }}">
<label>User name <input type="text" name="username" autocomplete="username" required></label>
<label>Password <input type="password" name="password" autocomplete="current-password" required></label>
<button type="submit">Sign in</button></form>
{% elif form == "approve" %}
<p><strong>{{ client }}</strong> would like to:</p>
<ul>{% for line in scopes %}<li>{{ line }}</li>{% endfor %}</ul>
<form method="post" action="approve">
<input type="hidden" name="csrf" value="{{ csrf }}">
{% if patients %}<fieldset><legend>Which patient?</legend>
{% for pid, label in patients %}<label><input type="radio" name="patient" value="{{ pid }}"
{% if loop.first %}checked{% endif %}> {{ label }}</label>{% endfor %}</fieldset>{% endif %}
<button type="submit" name="decision" value="approve">Allow</button>
<button type="submit" name="decision" value="deny">Deny</button></form>
{% endif %}
</body></html>"""


def _page(status: int, title: str, **values: Any) -> Response:
    html = render_template_string(PAGE, title=title, **values)
    return Response(html, status=status, mimetype="text/html",
                    headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY",
                             "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'"})


def _csrf() -> str:
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(24)
    return str(session["csrf"])


def _check_csrf() -> bool:
    sent = request.form.get("csrf", "")
    return bool(sent) and hmac.compare_digest(sent, str(session.get("csrf", "")))


def _redirect(uri: str, **params: str | None) -> Response:
    query = urlencode({k: v for k, v in params.items() if v is not None})
    return redirect(f"{uri}{'&' if '?' in uri else '?'}{query}", code=302)


@blp.route("/oauth/authorize", methods=["GET", "POST"])
def authorize() -> Response:
    """Authorization endpoint (GET, or POST as authorize-post)"""
    args = request.values
    st = state()
    client = clients_.find(st.repo.db, args.get("client_id", ""))
    redirect_uri = args.get("redirect_uri", "")
    if client is None:
        return _page(400, "Unknown application", error="This application is not registered here.")
    if redirect_uri not in client.redirect_uris:
        return _page(400, "Wrong return address",
                     error="The application's return address is not the one it registered.")
    state_ = args.get("state")

    def fail(error: str, description: str) -> Response:
        return _redirect(redirect_uri, error=error, error_description=description, state=state_)

    if args.get("response_type") != "code":
        return fail("unsupported_response_type", "Only response_type=code is supported")
    if args.get("code_challenge_method") != "S256" or not args.get("code_challenge"):
        return fail("invalid_request", "PKCE with code_challenge_method=S256 is required "
                    "(plain is refused)")
    if args.get("aud", "").rstrip("/") != st.settings.issuer:
        return fail("invalid_request", f"aud must be this server's base URL, {st.settings.issuer}")
    scope = grant(args.get("scope", ""), client.scopes)
    if not scope:
        return fail("invalid_scope", "None of the requested scopes is allowed for this application")
    launch_patient = None
    if args.get("launch"):
        launch_patient = grants.launch_patient(st.repo.db, args["launch"], st.clock())
        if launch_patient is None:
            return fail("invalid_request", "Unknown or expired launch")
    session["request"] = {
        "client_id": client.client_id, "redirect_uri": redirect_uri, "state": state_,
        "scope": scope, "challenge": args["code_challenge"], "nonce": args.get("nonce"),
        "launch_patient": launch_patient,
    }
    if session.get("user"):
        return _approval_page()
    return _page(200, "Sign in", form="login", client=client.name or client.client_id, csrf=_csrf())


@blp.route("/oauth/login", methods=["POST"])
def login() -> Response:
    """Login form post"""
    pending = session.get("request")
    if not pending:
        return _page(400, "Start again", error="No authorization request is in progress.")
    client = clients_.find(state().repo.db, pending["client_id"])
    name = (client.name or client.client_id) if client else pending["client_id"]
    if not _check_csrf():
        return _page(400, "Sign in", form="login", client=name, csrf=_csrf(),
                     error="The form expired; please sign in again.")
    username = request.form.get("username", "")
    try:
        user = users.login(state().repo.db, username, request.form.get("password", ""), state().clock())
    except users.LoginFailed as exc:
        g.audit_detail = f"login failed for {username!r}"
        return _page(401 if not exc.locked else 429, "Sign in", form="login", client=name,
                     csrf=_csrf(), error=str(exc))
    session.clear()
    session["request"] = pending
    session["user"] = user.username
    g.audit_detail = f"login of {user.username} ({user.fhir_user})"
    return _approval_page()


def _choices(user: users.User, pending: dict[str, Any]) -> list[tuple[str, str]]:
    """Patients the user may pick for launch/patient."""
    st = state()
    if pending.get("launch_patient"):
        return []
    if "launch/patient" not in pending["scope"].split():
        return []
    if user.kind == "patient":
        caller = Caller("patient", (), user.username, patient=user.patient)
    else:
        caller = Caller("user", (), user.username, practitioner=user.fhir_user)
    reach = Access(caller, st.repo.db, st.clock()).reachable() or frozenset()
    out = []
    for pid in sorted(reach):
        stored = st.repo.get("Patient", pid)
        if stored is None or stored.deleted:
            continue
        names = (stored.resource or {}).get("name") or [{}]
        label = " ".join([*names[0].get("given", []), names[0].get("family", "")]).strip() or pid
        out.append((pid, label + (" (you)" if pid == user.patient else "")))
    if user.patient:
        out.sort(key=lambda c: c[0] != user.patient)
    return out


def _approval_page(error: str | None = None) -> Response:
    pending = session["request"]
    user = users.find(state().repo.db, session["user"])
    if user is None:
        session.clear()
        return _page(400, "Start again", error="Your session ended.")
    client = clients_.find(state().repo.db, pending["client_id"])
    lines = [describe(s) for s in pending["scope"].split()]
    return _page(200, "Allow access?", form="approve", client=(client.name or client.client_id)
                 if client else pending["client_id"], scopes=list(dict.fromkeys(lines)),
                 patients=_choices(user, pending), csrf=_csrf(), error=error)


@blp.route("/oauth/approve", methods=["POST"])
def approve() -> Response:
    """Approval form post: the code goes back to the application"""
    pending = session.get("request")
    username = session.get("user")
    if not pending or not username or not _check_csrf():
        return _page(400, "Start again", error="The form expired; please start again.")
    st = state()
    user = users.find(st.repo.db, username)
    assert user is not None
    session.pop("request", None)
    if request.form.get("decision") != "approve":
        return _redirect(pending["redirect_uri"], error="access_denied",
                         error_description="The user denied access", state=pending["state"])
    patient = pending.get("launch_patient")
    choices = _choices(user, pending)
    if choices:
        picked = request.form.get("patient", "")
        if picked not in {pid for pid, _ in choices}:
            session["request"] = pending
            return _approval_page("Choose one of the listed patients.")
        patient = picked
    elif user.kind == "patient":
        patient = patient or user.patient
    scope = pending["scope"]
    clinical, _ = parse_scopes(scope)
    kind = "patient" if user.kind == "patient" else "user"
    code = grants.issue_code(st.repo.db, grants.Grant(
        pending["client_id"], user.username, kind, user.fhir_user, scope, patient,
        user.organization, pending.get("nonce")), pending["redirect_uri"], pending["challenge"],
        st.clock())
    return _redirect(pending["redirect_uri"], code=code, state=pending["state"])


def register(app: Flask) -> None:
    """The session cookie (holding only the pending request, the user name and the
    CSRF token) is signed with a key kept in the database, shared by every worker."""
    from ..mpi.cards import SECRETS

    db = app.extensions["fhirserver"].repo.db
    doc = db[SECRETS].find_one({"_id": "session-key"})
    if doc is None:
        try:
            db[SECRETS].insert_one({"_id": "session-key", "value": secrets.token_urlsafe(32)})
        except Exception:  # noqa: BLE001 - another worker created it
            pass
        doc = db[SECRETS].find_one({"_id": "session-key"})
    app.secret_key = doc["value"]  # type: ignore[index]
    app.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax",
                      SESSION_COOKIE_NAME="fhirserver_auth")
