"""Authorization codes, PKCE, refresh tokens and ID tokens (RFC 6749 section 4.1,
RFC 7636, SMART App Launch 2.x, OpenID Connect Core).

* A code is single-use (deleting it by primary key is the use), lives
  ``CODE_SECONDS``, and is bound to its client, redirect URI and PKCE challenge;
  only ``S256`` is accepted.
* Refresh tokens are random strings stored as their SHA-256 (a database dump does
  not yield usable tokens) and rotate on every use. Every token issued from one
  authorization is a *family*: presenting a refresh token that was already used
  means it was stolen, by the one presenting it now or the one who used it first,
  so the whole family (the live refresh token and every access token issued from
  it) is revoked (RFC 9700 section 4.14.2).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.errors import DuplicateKeyError

from .clients import OAuthError

CODES = "_oauth_codes"
REFRESH = "_oauth_refresh_tokens"
FAMILIES = "_oauth_token_families"
CODE_SECONDS = 60
REFRESH_DAYS = 30


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


def new_family(db: Any, client_id: str, now: datetime) -> str:
    """A token family for one authorization (its refresh and access tokens)."""
    family = secrets.token_urlsafe(16)
    db[FAMILIES].insert_one({"_id": family, "client_id": client_id, "live": None,
                             "exp": now + timedelta(days=REFRESH_DAYS)})
    return family


def family_client(db: Any, family: str) -> str | None:
    doc = db[FAMILIES].find_one({"_id": family}, {"client_id": 1})
    return str(doc["client_id"]) if doc and doc.get("client_id") else None


def record_access_token(db: Any, family: str, jti: str, exp: int) -> None:
    """Remember an access token of the family, to revoke it with the family (a
    document of its own: no list that two writers could update at once)."""
    db[FAMILIES].insert_one({"_id": f"{family}|{jti}", "family": family, "jti": jti, "exp": exp})


def issue_refresh(db: Any, grant: Grant, now: datetime, online: bool, family: str) -> str:
    token = secrets.token_urlsafe(32)
    key = _key(token)
    lifetime = timedelta(hours=12) if online else timedelta(days=REFRESH_DAYS)
    db[REFRESH].insert_one({"_id": key, **grant.__dict__, "family": family, "exp": now + lifetime})
    db[FAMILIES].update_one({"_id": family}, {"$set": {"live": key}})
    return token


def _key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Replayed(OAuthError):
    """A used refresh token came back: its family has been revoked. ``tokens`` are the
    access tokens (jti, exp) the caller must add to the revocation list."""

    def __init__(self, tokens: list[dict[str, Any]]) -> None:
        super().__init__("invalid_grant", "The refresh token was already used: every token of "
                         "this authorization has been revoked; sign in again")
        self.tokens = tokens


def redeem_refresh(db: Any, token: str, client_id: str, now: datetime) -> tuple[Grant, str]:
    """The grant and family of a live refresh token, used up by this call. A token
    that was used before revokes its family (:class:`Replayed`).

    Using a token is inserting its ``used|`` marker by primary key: of two requests
    presenting one token at the same instant exactly one succeeds, and the other is
    a replay."""
    key = _key(token)
    doc = db[REFRESH].find_one({"_id": key})
    if doc is None:
        used = db[REFRESH].find_one({"_id": f"used|{key}"})
        if used is not None:
            raise Replayed(revoke_family(db, used["family"]))
        raise OAuthError("invalid_grant", "The refresh token is unknown, used or revoked")
    try:
        db[REFRESH].insert_one({"_id": f"used|{key}", "family": doc.get("family"), "exp": doc["exp"]})
    except DuplicateKeyError:
        raise Replayed(revoke_family(db, doc.get("family"))) from None
    db[REFRESH].delete_one({"_id": key})
    if family_revoked(db, doc.get("family")):
        raise OAuthError("invalid_grant", "The refresh token has been revoked")
    if doc["client_id"] != client_id:
        raise OAuthError("invalid_grant", "The refresh token was issued to another client")
    if doc["exp"].replace(tzinfo=now.tzinfo) <= now:
        raise OAuthError("invalid_grant", "The refresh token has expired")
    return _grant(doc), str(doc["family"])


def family_revoked(db: Any, family: str | None) -> bool:
    """Revocation is a document of its own: an update of the family's other fields
    can never undo it."""
    return family is None or db[FAMILIES].find_one({"_id": f"revoked|{family}"}) is not None


def revoke_family(db: Any, family: str | None) -> list[dict[str, Any]]:
    """Revoke a family: its live refresh token is deleted and its access tokens are
    returned for the revocation list."""
    if not family:
        return []
    try:
        db[FAMILIES].insert_one({"_id": f"revoked|{family}", "exp": datetime.now(UTC)
                                 + timedelta(days=REFRESH_DAYS)})
    except DuplicateKeyError:
        pass
    doc = db[FAMILIES].find_one({"_id": family})
    if doc is not None and doc.get("live"):
        db[REFRESH].delete_one({"_id": doc["live"]})
    return [{"jti": t["jti"], "exp": t["exp"]} for t in db[FAMILIES].find({"family": family})]


def family_of_refresh(db: Any, token: str) -> str | None:
    """The family of a refresh token, live or used (revocation, RFC 7009)."""
    key = _key(token)
    doc = db[REFRESH].find_one({"_id": key}) or db[REFRESH].find_one({"_id": f"used|{key}"})
    return str(doc["family"]) if doc and doc.get("family") else None


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
