"""Registered OAuth clients (RFC 6749 section 2) and their authentication at the token
endpoint: ``client_secret_basic`` for confidential clients, ``private_key_jwt``
(RFC 7523, SMART Backend Services) for backend clients with a registered JWKS.

A client secret is stored only as a hash (scrypt, from the standard library's
hashlib, with a per-secret salt); an assertion's ``jti`` is remembered until it
expires so it cannot be replayed. A disabled client is refused with ``invalid_client``
however well it authenticates (its tokens are revoked by :mod:`.revocation`).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jws import extract_compact
from pymongo.errors import DuplicateKeyError

CLIENTS = "_oauth_clients"
ASSERTIONS = "_oauth_assertion_jtis"
KINDS = ("public", "confidential", "backend")
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_ALGORITHMS = ["RS384", "ES384", "RS256", "ES256"]
MAX_ASSERTION_SECONDS = 300  # SMART Backend Services: exp at most five minutes ahead
#: The server's own web app, a public client registered again at every start.
BUILT_IN_APP = "fhirserver-app"


class OAuthError(Exception):
    """An RFC 6749 section 5.2 error response."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error, self.description, self.status = error, description, status


@dataclass(frozen=True)
class Client:
    client_id: str
    kind: str
    scopes: str
    redirect_uris: tuple[str, ...] = ()
    organization: str | None = None
    jwks: dict[str, Any] = field(default_factory=dict)
    secret_hash: str = ""
    name: str = ""
    disabled: bool = False


def hash_secret(secret: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=2**14, r=8, p=1)
    return "scrypt$" + base64.b64encode(salt).decode() + "$" + base64.b64encode(digest).decode()


def check_secret(secret: str, stored: str) -> bool:
    try:
        _, salt, digest = stored.split("$")
        got = hashlib.scrypt(secret.encode(), salt=base64.b64decode(salt), n=2**14, r=8, p=1)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, base64.b64decode(digest))


def register(db: Any, client: Client, secret: str | None = None) -> None:
    """Register a client, or replace one of the same id; a replaced client stays
    disabled if it was (only :func:`set_disabled` enables a client).

    Every worker of a server registers the built-in clients as it boots, at the
    same moment: two upserts of one new ``_id`` can both insert, and the loser's
    duplicate-key error means the document is there, so the update is tried again."""
    fields = {"kind": client.kind, "scopes": client.scopes,
              "redirect_uris": list(client.redirect_uris), "organization": client.organization,
              "jwks": client.jwks, "name": client.name,
              "secret_hash": hash_secret(secret) if secret else ""}
    update = {"$set": fields, "$setOnInsert": {"disabled": False}}
    try:
        db[CLIENTS].update_one({"_id": client.client_id}, update, upsert=True)
    except DuplicateKeyError:
        db[CLIENTS].update_one({"_id": client.client_id}, update, upsert=True)


def _client(doc: dict[str, Any]) -> Client:
    return Client(doc["_id"], doc["kind"], doc.get("scopes", ""), tuple(doc.get("redirect_uris", ())),
                  doc.get("organization"), doc.get("jwks") or {}, doc.get("secret_hash", ""),
                  doc.get("name", ""), bool(doc.get("disabled")))


def find(db: Any, client_id: str) -> Client | None:
    """The client, disabled or not."""
    doc = db[CLIENTS].find_one({"_id": client_id})
    return _client(doc) if doc is not None else None


def every(db: Any) -> list[Client]:
    """All registered clients, by id."""
    return [_client(d) for d in db[CLIENTS].find({}).sort("_id", 1)]


def set_disabled(db: Any, client_id: str, disabled: bool) -> Client:
    """Disable or enable a client; its new state. Disabling stops it at the token and
    authorization endpoints only: the caller revokes its tokens
    (:func:`.revocation.end_client`)."""
    client = find(db, client_id)
    if client is None:
        raise ValueError(f"no client {client_id!r}")
    db[CLIENTS].update_one({"_id": client_id}, {"$set": {"disabled": disabled}})
    return dataclasses.replace(client, disabled=disabled)


def remove(db: Any, client_id: str) -> bool:
    """Delete a client; False if there was none."""
    return bool(db[CLIENTS].delete_one({"_id": client_id}).deleted_count == 1)


def enabled(client: Client) -> Client:
    """The client, or ``invalid_client`` (RFC 6749 section 5.2) if it is disabled."""
    if client.disabled:
        raise OAuthError("invalid_client", "This client has been disabled", 401)
    return client


def authenticate_basic(db: Any, header: str) -> Client:
    """``Authorization: Basic`` (RFC 6749 section 2.3.1)."""
    try:
        raw = base64.b64decode(header.split(" ", 1)[1]).decode()
        client_id, _, secret = raw.partition(":")
    except (IndexError, ValueError) as exc:
        raise OAuthError("invalid_client", "Malformed Basic credentials", 401) from exc
    from urllib.parse import unquote

    client = find(db, unquote(client_id))
    if client is None or not client.secret_hash or not check_secret(unquote(secret), client.secret_hash):
        raise OAuthError("invalid_client", "Client authentication failed", 401)
    return enabled(client)


def authenticate_assertion(db: Any, assertion: str, token_url: str, now: datetime) -> Client:
    """``private_key_jwt`` (RFC 7523 section 2.2, SMART Backend Services): a JWT the
    client signed with a key of its registered JWKS, iss = sub = client_id, aud = the
    token endpoint, exp no more than five minutes ahead, jti never seen before."""
    try:
        unverified = json.loads(extract_compact(assertion.encode()).payload)
    except (JoseError, ValueError, TypeError) as exc:
        raise OAuthError("invalid_client", "The client assertion is not a JWT", 401) from exc
    # Only to find whose keys verify it; nothing is trusted before that.
    client_id = str(unverified.get("iss", "")) if isinstance(unverified, dict) else ""
    client = find(db, client_id)
    if client is None or not client.jwks:
        raise OAuthError("invalid_client", "Unknown client or no registered keys", 401)
    try:
        token = jwt.decode(assertion, KeySet.import_key_set(client.jwks), algorithms=ASSERTION_ALGORITHMS)
    except (JoseError, ValueError) as exc:
        raise OAuthError("invalid_client", "The client assertion's signature does not verify", 401) from exc
    claims = token.claims
    t = int(now.timestamp())
    exp = claims.get("exp")
    if claims.get("sub") != client_id:
        raise OAuthError("invalid_client", "The assertion's sub must equal its iss (the client_id)", 401)
    aud = claims.get("aud")
    if token_url not in (aud if isinstance(aud, list) else [aud]):
        raise OAuthError("invalid_client", "The assertion's aud must be the token endpoint URL", 401)
    if not isinstance(exp, int) or exp <= t:
        raise OAuthError("invalid_client", "The client assertion has expired", 401)
    if exp > t + MAX_ASSERTION_SECONDS:
        raise OAuthError("invalid_client", "The assertion's exp is more than five minutes ahead", 401)
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti:
        raise OAuthError("invalid_client", "The client assertion has no jti", 401)
    try:
        db[ASSERTIONS].insert_one({"_id": f"{client_id}|{jti}", "exp": exp})
    except DuplicateKeyError as exc:
        raise OAuthError("invalid_client", "The client assertion was already used (jti replay)", 401) from exc
    return enabled(client)
