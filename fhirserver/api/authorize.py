"""The authorization endpoint and its pages (SMART App Launch 2.x,
app-launch.html#obtain-authorization-code; RFC 6749 section 4.1; RFC 7636).

GET /oauth/authorize checks the request (client, exact redirect URI, S256 PKCE,
``aud``, an EHR ``launch`` made for this client); errors that concern the redirect
URI itself are shown, never redirected. Then a login page (CSRF-protected, failures
slowed per user name and address) and an approval page that lists the scopes in
plain words and, for ``launch/patient``, lets the user pick the patient: a patient
themself or a family member bound with their consent, a clinician one of the
patients they treat. The code goes back to the redirect URI.

The state between the pages lives on the server (:mod:`..auth.signin`); the cookie
carries only its random identifier: ``HttpOnly``, ``SameSite=Lax``, ``Secure`` when
the issuer is https, limited to ``/oauth/``.
"""

from __future__ import annotations

import hmac
from typing import Any
from urllib.parse import urlencode, urlsplit

from flask import Response, g, render_template_string, request
from flask_smorest import Blueprint

from ..auth import clients as clients_
from ..auth import grants, launches, signin, throttle, users
from ..auth.access import Access
from ..auth.policy import Caller
from ..auth.scopes import CARD_NUMBER, IDENTITY, REGISTRATION, describe, grant
from ..auth.sweep import sweep
from .state import state

blp = Blueprint("authorize", __name__, url_prefix="/",
                description="SMART authorization: login, approval, patient choice")

COOKIE = "fhirserver_auth"
#: Scopes of this server's own that a user's token carries only with the same role.
ROLE_SCOPES = {REGISTRATION: users.REGISTRATION, CARD_NUMBER: users.REGISTRATION,
               IDENTITY: users.REGISTRATION}

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
<input type="hidden" name="request" value="{{ request_id }}">
{% if patients %}<fieldset><legend>Which patient?</legend>
{% for pid, label in patients %}<label><input type="radio" name="patient" value="{{ pid }}"
{% if loop.first %}checked{% endif %}> {{ label }}</label>{% endfor %}</fieldset>{% endif %}
<button type="submit" name="decision" value="approve">Allow</button>
<button type="submit" name="decision" value="deny">Deny</button></form>
{% endif %}
</body></html>"""


def _page(status: int, title: str, *, returns_to: str | None = None, **values: Any) -> Response:
    """An HTML page that no other site may frame. Its forms post only here, and the
    approval form's answer redirects to the application (``returns_to``): browsers
    apply ``form-action`` to that redirect too, so exactly that origin is added."""
    html = render_template_string(PAGE, title=title, **values)
    targets = "'self'" + (f" {origin_of(returns_to)}" if returns_to else "")
    csp = f"default-src 'none'; style-src 'unsafe-inline'; form-action {targets}; frame-ancestors 'none'"
    return Response(html, status=status, mimetype="text/html",
                    headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY",
                             "Content-Security-Policy": csp, "Referrer-Policy": "no-referrer"})


def origin_of(uri: str) -> str:
    """The CSP source expression (CSP Level 3 section 2.3.1) that allows a registered
    redirect URI: its origin ``scheme://host[:port]`` (RFC 6454) for http(s), a
    scheme-source ``com.example.app:`` for a native app's private-use scheme."""
    parts = urlsplit(uri)
    if parts.scheme in ("http", "https"):
        return f"{parts.scheme}://{parts.netloc}"
    return f"{parts.scheme}:"


def _db() -> Any:
    return state().repo.db


def _current() -> signin.SignIn | None:
    return signin.load(_db(), request.cookies.get(COOKIE), state().clock())


def _with_cookie(resp: Response, value: str | None) -> Response:
    """Set a new sign-in identifier (only when it changed)."""
    if value is not None:
        resp.set_cookie(COOKIE, value, path="/oauth/", httponly=True, samesite="Lax",
                        secure=state().settings.issuer.startswith("https://"),
                        max_age=signin.IDLE_MINUTES * 60)
    return resp


def _redirect(uri: str, **params: str | None) -> Response:
    query = urlencode({k: v for k, v in params.items() if v is not None})
    return Response(status=302, headers={"Location": f"{uri}{'&' if '?' in uri else '?'}{query}"})


def _client_name(client_id: str) -> str:
    client = clients_.find(_db(), client_id)
    return (client.name or client.client_id) if client else client_id


@blp.route("/oauth/authorize", methods=["GET", "POST"])
def authorize() -> Response:
    """Authorization endpoint (GET, or POST as authorize-post)"""
    args = request.values
    st = state()
    client = clients_.find(_db(), args.get("client_id", ""))
    redirect_uri = args.get("redirect_uri", "")
    if client is None:
        return _page(400, "Unknown application", error="This application is not registered here.")
    if client.disabled:
        return _page(400, "Application disabled", error="This application has been disabled here.")
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
    if args.get("aud", "").rstrip("/") not in st.settings.audiences:
        return fail("invalid_request", f"aud must be this server's base URL, {st.settings.issuer}")
    scope = grant(args.get("scope", ""), client.scopes)
    if not scope:
        return fail("invalid_scope", "None of the requested scopes is allowed for this application")
    launch = args.get("launch") or None
    if launch and launches.peek(_db(), launch, client.client_id, st.clock()) is None:
        return fail("invalid_request", "Unknown, expired or used launch, or one made for "
                    "another application")
    pending = {
        "client_id": client.client_id, "redirect_uri": redirect_uri, "state": state_,
        "scope": scope, "challenge": args["code_challenge"], "nonce": args.get("nonce"),
        "launch": launch,
    }
    sweep(_db(), st.clock())
    request_id = signin.hold(_db(), pending, st.clock())
    current, value = _current(), None
    if current is None:
        value, current = signin.start(_db(), st.clock(), request_id=request_id)
    else:
        current.request_id = request_id  # an approval page still open elsewhere goes stale
        signin.save(_db(), current, st.clock())
    if current.user:
        return _with_cookie(_approval_page(current), value)
    return _with_cookie(_page(200, "Sign in", form="login", client=_client_name(client.client_id),
                              csrf=current.csrf), value)


def _csrf_ok(current: signin.SignIn) -> bool:
    sent = request.form.get("csrf", "")
    return bool(sent) and hmac.compare_digest(sent, current.csrf)


@blp.route("/oauth/login", methods=["POST"])
def login() -> Response:
    """Login form post"""
    st = state()
    current = _current()
    pending = signin.pending(_db(), current.request_id, st.clock()) if current else None
    if current is None or pending is None:
        return _page(400, "Start again", error="No authorization request is in progress.")
    name = _client_name(pending["client_id"])
    if not _csrf_ok(current):
        return _page(400, "Sign in", form="login", client=name, csrf=current.csrf,
                     error="The form expired; please sign in again.")
    username = request.form.get("username", "")
    address = request.remote_addr or ""
    now = st.clock()
    wait = throttle.begin(_db(), username, address, now)
    if wait:
        g.audit_detail = "sign-in refused: too many failed attempts (throttled)"
        resp = _page(429, "Sign in", form="login", client=name, csrf=current.csrf,
                     error=f"Too many failed attempts: try again in {wait} seconds.")
        resp.headers["Retry-After"] = str(wait)
        return resp
    try:
        user = users.login(_db(), username, request.form.get("password", ""))
    except users.LoginFailed as exc:
        later = throttle.end(_db(), username, address, now, success=False)
        g.audit_detail = "sign-in failed"
        hint = f" Wait {later} seconds before the next attempt." if later else ""
        return _page(401, "Sign in", form="login", client=name, csrf=current.csrf,
                     error=f"{exc}.{hint}")
    except BaseException:
        throttle.end(_db(), username, address, now, success=False)
        raise
    throttle.end(_db(), username, address, now, success=True)
    # A new identifier once signed in: one planted before the login is worth nothing.
    signin.drop(_db(), current)
    value, current = signin.start(_db(), now, request_id=current.request_id, user=user.username)
    g.audit_detail = f"sign-in of {user.username} ({user.fhir_user})"
    return _with_cookie(_approval_page(current), value)


def _family_and_self(user: users.User) -> frozenset[str]:
    caller = Caller("patient", (), user.username, patient=user.patient)
    return Access(caller, _db(), state().clock()).reachable() or frozenset()


def _choices(user: users.User, pending: dict[str, Any]) -> list[tuple[str, str]]:
    """Patients the user may pick for launch/patient."""
    st = state()
    if pending.get("launch") or "launch/patient" not in pending["scope"].split():
        return []
    if user.kind == "patient":
        reach = _family_and_self(user)
    else:
        caller = Caller("user", (), user.username, practitioner=user.fhir_user)
        reach = Access(caller, _db(), st.clock()).reachable() or frozenset()
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


def _user_scope(user: users.User, scope: str) -> str:
    """What of the approved scopes this user's token may carry: this server's own
    scopes need the matching role, which patients never have."""
    return " ".join(s for s in scope.split()
                    if s not in ROLE_SCOPES or ROLE_SCOPES[s] in user.roles)


def _approval_page(current: signin.SignIn, error: str | None = None) -> Response:
    pending = signin.pending(_db(), current.request_id, state().clock()) or {}
    user = users.active(_db(), current.user or "")
    if user is None or not pending:
        return _page(400, "Start again", error="Your session ended.")
    lines = [describe(s) for s in _user_scope(user, pending["scope"]).split()]
    return _page(200, "Allow access?", returns_to=pending["redirect_uri"], form="approve",
                 client=_client_name(pending["client_id"]), scopes=list(dict.fromkeys(lines)),
                 patients=_choices(user, pending), csrf=current.csrf, error=error,
                 request_id=current.request_id)


@blp.route("/oauth/approve", methods=["POST"])
def approve() -> Response:
    """Approval form post: the code goes back to the application"""
    st = state()
    current = _current()
    if current is None or not current.user or not _csrf_ok(current):
        return _page(400, "Start again", error="The form expired; please start again.")
    shown = request.form.get("request", "")
    if not current.request_id or not hmac.compare_digest(shown, current.request_id):
        return _page(400, "Start again", error="Another authorization request was started in "
                     "this browser since this page was shown: this one can no longer be answered.")
    pending = signin.pending(_db(), current.request_id, st.clock())
    user = users.active(_db(), current.user)  # disabled since signing in: no code
    if pending is None or user is None:
        signin.drop(_db(), current)
        return _page(400, "Start again", error="The request has expired or was answered already.")

    approving = request.form.get("decision") == "approve"
    patient: str | None = None
    if approving and not pending.get("launch"):
        choices = _choices(user, pending)
        if choices:
            picked = request.form.get("patient", "")
            if picked not in {pid for pid, _ in choices}:
                return _approval_page(current, "Choose one of the listed patients.")
            patient = picked
        elif user.kind == "patient":
            patient = user.patient
    # One answer per request, however often the form is sent; the sign-in ends with it.
    if not signin.answer(_db(), shown):
        return _page(400, "Start again", error="This request was answered already.")
    signin.drop(_db(), current)

    def back(**params: str | None) -> Response:
        return _redirect(pending["redirect_uri"], state=pending["state"], **params)

    if not approving:
        return back(error="access_denied", error_description="The user denied access")
    if pending.get("launch"):
        found = launches.use(_db(), pending["launch"], pending["client_id"], user.fhir_user,
                             st.clock())
        if found is None:
            return back(error="access_denied", error_description="The launch has expired, was "
                        "used, or was made for another user")
        patient = found.patient
    if user.kind == "patient" and patient not in _family_and_self(user):
        # A patient's token never opens on someone who has not bound their card to them.
        return back(error="access_denied", error_description="That patient's record is not "
                    "yours to open")
    kind = "patient" if user.kind == "patient" else "user"
    code = grants.issue_code(_db(), grants.Grant(
        pending["client_id"], user.username, kind, user.fhir_user,
        _user_scope(user, pending["scope"]), patient, user.organization, pending.get("nonce")),
        pending["redirect_uri"], pending["challenge"], st.clock())
    return back(code=code)
