"""Authorization codes, PKCE, refresh tokens, launch contexts and ID tokens
(RFC 6749 section 4.1, RFC 7636, SMART App Launch 2.x, OpenID Connect Core).

* A code is single-use (deleting it by primary key is the use), lives
  ``CODE_SECONDS``, and is bound to its client, redirect URI and PKCE challenge;
  only ``S256`` is accepted.
* Refresh tokens are random strings stored as their SHA-256 (a database dump does
  not yield usable tokens) and rotate on every use.
* A launch context (EHR launch) is created by the EHR with a system token and names
  the patient the app opens on; the app passes its id as ``launch``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from .clients import OAuthError

CODES = "_oauth_codes"
REFRESH = "_oauth_refresh_tokens"
LAUNCHES = "_oauth_launches"
CODE_SECONDS = 60
REFRESH_DAYS = 30
LAUNCH_MINUTES = 10


def s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")


def check_pkce(challenge: str, verifier: str | None) -> None:
    """RFC 7636 section 4.6, S256 only."""
    if not verifier or not 43 <= len(verifier) <= 128:
        raise OAuthError("invalid_grant", "code_verifier is missing or not 43-128 characters")
    if not hmac.compare_digest(s256(verifier), challenge):
        raise OAuthError("invalid_grant", "code_verifier does not match the code_challenge (PKCE)")


@dataclass(frozen=True)
class Grant:
    """What the user approved: who, for which client, which scopes and patient."""

    client_id: str
    username: str
    kind: str  # "user" | "patient"
    fhir_user: str
    scope: str
    patient: str | None = None
    organization: str | None = None
    nonce: str | None = None


def issue_code(db: Any, grant: Grant, redirect_uri: str, challenge: str, now: datetime) -> str:
    code = secrets.token_urlsafe(32)
    db[CODES].insert_one({"_id": code, **grant.__dict__, "redirect_uri": redirect_uri,
                          "challenge": challenge, "exp": now + timedelta(seconds=CODE_SECONDS)})
    return code


def redeem_code(db: Any, code: str, client_id: str, redirect_uri: str, verifier: str | None,
                now: datetime) -> Grant:
    doc = db[CODES].find_one({"_id": code})
    if doc is None or db[CODES].delete_one({"_id": code}).deleted_count != 1:
        raise OAuthError("invalid_grant", "The authorization code is unknown or already used")
    if doc["exp"].replace(tzinfo=now.tzinfo) <= now:
        raise OAuthError("invalid_grant", "The authorization code has expired")
    if doc["client_id"] != client_id:
        raise OAuthError("invalid_grant", "The authorization code was issued to another client")
    if doc["redirect_uri"] != redirect_uri:
        raise OAuthError("invalid_grant", "redirect_uri differs from the authorization request's")
    check_pkce(doc["challenge"], verifier)
    return _grant(doc)


def _grant(doc: dict[str, Any]) -> Grant:
    return Grant(doc["client_id"], doc["username"], doc["kind"], doc["fhir_user"], doc["scope"],
                 doc.get("patient"), doc.get("organization"), doc.get("nonce"))


def issue_refresh(db: Any, grant: Grant, now: datetime, online: bool) -> str:
    token = secrets.token_urlsafe(32)
    lifetime = timedelta(hours=12) if online else timedelta(days=REFRESH_DAYS)
    db[REFRESH].insert_one({"_id": hashlib.sha256(token.encode()).hexdigest(), **grant.__dict__,
                            "exp": now + lifetime})
    return token


def redeem_refresh(db: Any, token: str, client_id: str, now: datetime) -> Grant:
    key = hashlib.sha256(token.encode()).hexdigest()
    doc = db[REFRESH].find_one({"_id": key})
    if doc is None or db[REFRESH].delete_one({"_id": key}).deleted_count != 1:
        raise OAuthError("invalid_grant", "The refresh token is unknown, used or revoked")
    if doc["client_id"] != client_id:
        raise OAuthError("invalid_grant", "The refresh token was issued to another client")
    if doc["exp"].replace(tzinfo=now.tzinfo) <= now:
        raise OAuthError("invalid_grant", "The refresh token has expired")
    return _grant(doc)


def create_launch(db: Any, patient: str, now: datetime) -> str:
    launch = secrets.token_urlsafe(16)
    db[LAUNCHES].insert_one({"_id": launch, "patient": patient,
                             "exp": now + timedelta(minutes=LAUNCH_MINUTES)})
    return launch


def launch_patient(db: Any, launch: str, now: datetime) -> str | None:
    doc = db[LAUNCHES].find_one({"_id": launch})
    if doc is None or doc["exp"].replace(tzinfo=now.tzinfo) <= now:
        return None
    return str(doc["patient"])


def id_token_claims(grant: Grant, issuer: str, now: datetime, lifetime: int) -> dict[str, Any]:
    """OpenID Connect ID token (Core section 2) with SMART's ``fhirUser``."""
    t = int(now.timestamp())
    claims: dict[str, Any] = {"iss": issuer, "sub": grant.username, "aud": grant.client_id,
                              "iat": t, "exp": t + lifetime}
    if "fhirUser" in grant.scope.split():
        claims["fhirUser"] = f"{issuer}/{grant.fhir_user}"
    if grant.nonce:
        claims["nonce"] = grant.nonce
    return claims
