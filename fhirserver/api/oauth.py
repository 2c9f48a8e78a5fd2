"""The authorization server's endpoints (SMART App Launch 2.x, SMART Backend
Services, RFC 6749, RFC 7523, RFC 7662, RFC 7009): discovery, JWKS, token,
introspection and revocation. Public, like /metadata: they are how a client gets a
token in the first place.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson
from flask import Response, g, request
from flask_smorest import Blueprint

from .. import errors
from ..auth import clients as clients_
from ..auth import grants, launches, users
from ..auth.bindings import family_reach
from ..auth.callers import caller_from_claims
from ..auth.clients import ASSERTION_TYPE, Client, OAuthError
from ..auth.policy import Caller
from ..auth.scopes import grant
from ..auth.tokens import ALGORITHM, challenge
from ..interactions import read as read_
from .guard import tokens
from .state import context, state

blp = Blueprint("oauth", __name__, url_prefix="/",
                description="SMART on FHIR authorization server: discovery, JWKS, token, "
                            "introspection, revocation")

GRANT_TYPES = ["authorization_code", "refresh_token", "client_credentials"]
CAPABILITIES = [
    "launch-ehr", "launch-standalone", "authorize-post",
    "client-public", "client-confidential-symmetric", "client-confidential-asymmetric",
    "context-ehr-patient", "context-standalone-patient",
    "sso-openid-connect", "permission-offline", "permission-online",
    "permission-v1", "permission-v2", "permission-patient", "permission-user",
]
SCOPES = ["system/*.cruds", "system/*.rs", "user/*.cruds", "user/*.rs", "patient/*.rs",
          "patient/*.read", "user/*.read", "system/*.read"]


def endpoints() -> dict[str, str]:
    base = state().settings.issuer
    return {
        "authorization_endpoint": f"{base}/oauth/authorize",
        "token_endpoint": f"{base}/oauth/token",
        "introspection_endpoint": f"{base}/oauth/introspect",
        "revocation_endpoint": f"{base}/oauth/revoke",
        "jwks_uri": f"{base}/oauth/jwks",
    }


def _json(body: dict[str, Any], status: int = 200, mimetype: str = "application/json") -> Response:
    return Response(orjson.dumps(body), status=status, mimetype=mimetype,
                    headers={"Cache-Control": "no-store", "Pragma": "no-cache"})


def _oauth_error(exc: OAuthError) -> Response:
    resp = _json({"error": exc.error, "error_description": exc.description}, exc.status)
    if exc.status == 401:
        resp.headers["WWW-Authenticate"] = 'Basic realm="fhirserver"'
    return resp


@blp.route("/.well-known/smart-configuration", methods=["GET"])
def smart_configuration() -> Response:
    """SMART App Launch discovery (conformance.html#using-well-known)"""
    return _json({
        "issuer": state().settings.issuer,
        **endpoints(),
        "grant_types_supported": GRANT_TYPES,
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": clients_.ASSERTION_ALGORITHMS,
        "scopes_supported": SCOPES_SUPPORTED,
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "capabilities": CAPABILITIES,
    })


SCOPES_SUPPORTED = [*SCOPES, "openid", "fhirUser", "launch", "launch/patient", "offline_access",
                    "online_access"]
# What the ID tokens carry (auth/grants.py id_token_claims): OpenID Connect Core
# section 2, plus SMART's fhirUser (app-launch.html#scopes-for-requesting-identity-data).
ID_TOKEN_CLAIMS = ["iss", "sub", "aud", "exp", "iat", "nonce", "fhirUser"]


@blp.route("/.well-known/openid-configuration", methods=["GET"])
def openid_configuration() -> Response:
    """OpenID Connect Discovery 1.0 (section 3) for the ``sso-openid-connect`` capability:
    the issuer is exactly the ``iss`` of the ID tokens, signed RS256 with the keys at
    ``jwks_uri``; subjects are the user names, the same for every client (public)"""
    return _json({
        "issuer": state().settings.issuer,
        **endpoints(),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": GRANT_TYPES,
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [ALGORITHM],
        "scopes_supported": SCOPES_SUPPORTED,
        # "none": public clients prove themselves with PKCE (RFC 8414 section 2).
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "private_key_jwt", "none"],
        "token_endpoint_auth_signing_alg_values_supported": clients_.ASSERTION_ALGORITHMS,
        "claims_supported": ID_TOKEN_CLAIMS,
        "claims_parameter_supported": False,
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,
        "code_challenge_methods_supported": ["S256"],
    })


@blp.route("/oauth/jwks", methods=["GET"])
def jwks() -> Response:
    """The public keys that verify this server's tokens (RFC 7517)"""
    return _json(tokens().jwks(), mimetype="application/jwk-set+json")


def _client(form: dict[str, str]) -> Client:
    """Client authentication (RFC 6749 section 2.3): Basic or a JWT assertion."""
    st = state()
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("basic "):
        return clients_.authenticate_basic(st.repo.db, header)
    if form.get("client_assertion_type") == ASSERTION_TYPE and form.get("client_assertion"):
        return clients_.authenticate_assertion(st.repo.db, form["client_assertion"],
                                               endpoints()["token_endpoint"], st.clock())
    public = clients_.find(st.repo.db, form.get("client_id", ""))
    if public is not None and public.kind == "public":
        return clients_.enabled(public)  # public clients prove themselves with PKCE
    raise OAuthError("invalid_client", "Client authentication is required "
                     "(client_secret_basic or private_key_jwt)", 401)


def _form() -> dict[str, str]:
    if request.mimetype != "application/x-www-form-urlencoded":
        raise OAuthError("invalid_request", "Use application/x-www-form-urlencoded")
    form: dict[str, str] = {}
    for key, value in request.form.items(multi=True):
        if key in form:
            raise OAuthError("invalid_request", f"Parameter '{key}' given more than once")
        form[key] = value
    return form


@blp.route("/oauth/token", methods=["POST"])
def token() -> Response:
    """Token endpoint: client_credentials for backend services (SMART Backend Services)"""
    try:
        form = _form()
        grant_type = form.get("grant_type")
        if grant_type not in GRANT_TYPES:
            raise OAuthError("unsupported_grant_type", f"grant_type '{grant_type}' is not supported")
        client = _client(form)
        g.oauth_client = client.client_id
        if grant_type == "client_credentials":
            return _json(_client_credentials(client, form))
        st = state()
        if grant_type == "authorization_code":
            issued = grants.redeem_code(st.repo.db, form.get("code", ""), client.client_id,
                                        form.get("redirect_uri", ""), form.get("code_verifier"),
                                        st.clock())
            family = grants.new_family(st.repo.db, client.client_id, st.clock())
        else:
            try:
                issued, family = grants.redeem_refresh(st.repo.db, form.get("refresh_token", ""),
                                                       client.client_id, st.clock())
            except grants.Replayed as exc:
                for stolen in exc.tokens:
                    tokens().revoke(stolen)
                g.audit_detail = "refresh token replayed: its token family was revoked"
                raise
            _family_context_holds(issued, family)
            narrower = form.get("scope")
            if narrower:
                kept = [s for s in narrower.split() if s in issued.scope.split()]
                issued = dataclasses.replace(issued, scope=" ".join(kept))
        return _json(_user_tokens(issued, family))
    except OAuthError as exc:
        return _oauth_error(exc)


def _family_context_holds(issued: grants.Grant, family: str) -> None:
    """A patient's app opened on a family member keeps refreshing only while that
    member's card is still bound to the patient."""
    own = issued.fhir_user.removeprefix("Patient/")
    if issued.kind != "patient" or not issued.patient or issued.patient == own:
        return
    if issued.patient not in family_reach(state().repo.db, own)["m"]:
        for stale in grants.revoke_family(state().repo.db, family):
            tokens().revoke(stale)
        raise OAuthError("invalid_grant", "The family binding this authorization rests on has "
                         "ended; sign in again")


def _user_tokens(issued: grants.Grant, family: str) -> dict[str, Any]:
    """Access token (and refresh and ID tokens) for what a user approved; every token
    is recorded in the authorization's family, to be revoked together."""
    st = state()
    now = st.clock()
    scopes = issued.scope.split()
    value, claims = tokens().mint(
        subject=issued.username, scope=issued.scope, kind=issued.kind,
        lifetime=st.settings.token_seconds, now=now, client_id=issued.client_id,
        fhirUser=issued.fhir_user, patient=issued.patient, organization=issued.organization)
    grants.record_access_token(st.repo.db, family, claims["jti"], claims["exp"])
    g.audit_detail = f"token issued to {issued.client_id} for {issued.fhir_user}"
    out: dict[str, Any] = {"access_token": value, "token_type": "bearer",
                           "expires_in": claims["exp"] - claims["iat"], "scope": issued.scope}
    if issued.patient:
        out["patient"] = issued.patient
        out["need_patient_banner"] = True
    if "openid" in scopes:
        out["id_token"] = tokens().sign(grants.id_token_claims(issued, st.settings.issuer, now,
                                                               st.settings.token_seconds))
    if "offline_access" in scopes or "online_access" in scopes:
        out["refresh_token"] = grants.issue_refresh(st.repo.db, issued, now,
                                                    online="offline_access" not in scopes,
                                                    family=family)
    ended = _holder_ended(issued)
    if ended or grants.family_revoked(st.repo.db, family):
        # A replay revoked the family, or an operator disabled the account or the client,
        # while these were being issued: take them back.
        for stale in grants.revoke_family(st.repo.db, family):
            tokens().revoke(stale)
        raise OAuthError("invalid_grant", ended or "This authorization has been revoked; "
                         "sign in again")
    return out


def _holder_ended(issued: grants.Grant) -> str | None:
    """Why the account or client an authorization was given to holds nothing any
    more (disabled or removed since), or None. Read after the tokens are minted: an
    operator's disable that came earlier is seen here, one that comes later revokes
    what was minted (auth/revocation.py)."""
    db = state().repo.db
    if users.active(db, issued.username, issued.fhir_user) is None:
        return "The account that gave this authorization is disabled or removed"
    client = clients_.find(db, issued.client_id)
    if client is None or client.disabled:
        return "The client this authorization was given to is disabled or removed"
    return None


@blp.route("/oauth/launch", methods=["POST"])
def launch() -> Response:
    """EHR launch: an EHR user (a clinician's token) or EHR system names the
    ``patient`` an app opens on, the app (``client_id``) and, for a system, the
    ``user`` (fhirUser) who will approve; the single-use ``launch`` value lasts five
    minutes. A patient the caller may not see answers 404, like one that does not exist"""
    try:
        caller = _bearer_caller()
        if caller.kind not in ("user", "system", "operator"):
            raise errors.Forbidden("Launch contexts are created by EHR users and EHR systems")
        values = _launch_values()
        client = clients_.find(state().repo.db, values.get("client_id", ""))
        if client is None or client.disabled:
            raise errors.Invalid("'client_id' must name a registered application",
                                 expression="client_id")
        user = values.get("user", "")
        if caller.kind == "user":
            if user and user != caller.practitioner:
                raise errors.Forbidden("A clinician creates launches for themself")
            user = caller.practitioner or ""
        if not user.startswith(("Practitioner/", "Patient/")) or user.count("/") != 1:
            raise errors.Invalid("'user' must be the fhirUser who will approve the launch "
                                 "(Practitioner/<id> or Patient/<id>)", expression="user")
        g.caller = caller
        stored = read_.read(context(), "Patient", values.get("patient", "").removeprefix("Patient/"))
    except errors.FhirError as exc:
        return _json(exc.outcome(), exc.status)
    value = launches.create(state().repo.db, launches.Launch(stored.id, client.client_id, user),
                            state().clock())
    g.audit_detail = f"launch of {client.client_id} for {user}"
    g.audit_patients = [stored.id]
    return _json({"launch": value, "expires_in": launches.LAUNCH_SECONDS})


def _bearer_caller() -> Caller:
    header = request.headers.get("Authorization", "")
    if not header.lower().startswith("bearer "):
        raise errors.Unauthorized("An EHR's access token is required", headers=challenge())
    return caller_from_claims(tokens().verify(header.split(" ", 1)[1].strip(), state().clock()))


def _launch_values() -> dict[str, str]:
    if request.mimetype == "application/x-www-form-urlencoded":
        return {k: v for k, v in request.form.items()}
    try:  # orjson: bounded nesting, where the json module recurses until it fails
        body = orjson.loads(request.get_data(cache=False)) if request.is_json else None
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        raise errors.Invalid("Send the launch as form fields or a JSON object "
                             "(patient, client_id, user)")
    return {k: v for k, v in body.items() if isinstance(v, str)}


def _client_credentials(client: Client, form: dict[str, str]) -> dict[str, Any]:
    if client.kind not in ("backend", "confidential"):
        raise OAuthError("unauthorized_client", "This client may not use client_credentials")
    from ..auth.scopes import CARD_NUMBER, IDENTITY, REGISTRATION

    requested = form.get("scope", "")
    # SMART Backend Services: system/ scopes; and this server's own scopes, which a
    # backend client holds only when registered with them (scopes.py).
    wanted = [s for s in requested.split()
              if s.startswith("system/") or s in (REGISTRATION, CARD_NUMBER, IDENTITY)]
    granted = grant(" ".join(wanted), client.scopes)
    if not granted:
        raise OAuthError("invalid_scope", "None of the requested system/ scopes is allowed "
                         f"for this client (allowed: {client.scopes})")
    st = state()
    value, claims = tokens().mint(subject=client.client_id, scope=granted, kind="system",
                                  lifetime=min(st.settings.token_seconds, 3600), now=st.clock(),
                                  client_id=client.client_id, organization=client.organization)
    current = clients_.find(st.repo.db, client.client_id)
    if current is None or current.disabled:  # disabled while this was minted (auth/revocation.py)
        raise OAuthError("invalid_client", "This client has been disabled", 401)
    return {"access_token": value, "token_type": "bearer", "expires_in": claims["exp"] - claims["iat"],
            "scope": granted}


@blp.route("/oauth/introspect", methods=["POST"])
def introspect() -> Response:
    """Token introspection (RFC 7662), for authenticated clients"""
    try:
        form = _form()
        if _client(form).kind == "public":
            # RFC 7662 section 2.1: the caller must be authorized; a public client's
            # id is no credential.
            raise OAuthError("invalid_client", "Introspection needs client authentication "
                             "(client_secret_basic or private_key_jwt)", 401)
        try:
            claims = tokens().verify(form.get("token", ""), state().clock())
        except errors.Unauthorized:
            return _json({"active": False})
        keep = ("scope", "client_id", "sub", "exp", "iat", "iss", "aud", "patient", "fhirUser",
                "organization", "jti")
        return _json({"active": True, "token_type": "Bearer",
                      **{k: claims[k] for k in keep if k in claims}})
    except OAuthError as exc:
        return _oauth_error(exc)


@blp.route("/oauth/revoke", methods=["POST"])
def revoke() -> Response:
    """Token revocation (RFC 7009): 200 whether or not the token was valid"""
    try:
        form = _form()
        client = _client(form)
        value = form.get("token", "")
        family = grants.family_of_refresh(state().repo.db, value) if value else None
        if family is not None:  # a refresh token: the authorization ends, all its tokens
            if grants.family_client(state().repo.db, family) == client.client_id:
                for issued in grants.revoke_family(state().repo.db, family):
                    tokens().revoke(issued)
            return _json({})
        try:
            claims = tokens().decode_unverified_time(value)
        except errors.Unauthorized:
            return _json({})
        if claims.get("client_id") == client.client_id:
            tokens().revoke(claims)
        return _json({})
    except OAuthError as exc:
        return _oauth_error(exc)
