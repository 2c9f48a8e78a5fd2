"""Signing keys, access tokens and their verification.

Access tokens are JWTs signed RS256 (RFC 7519/7515, via joserfc) with a key from
``_auth_keys``: the newest key signs, every key not yet retired verifies, and all
of them are published at the JWKS endpoint with their ``kid``, so keys rotate
without invalidating tokens in flight (``fhirserver keys rotate``). Private keys are
stored sealed (``crypto/sealing.py``, associated data ``_auth_keys/<kid>/jwk``) under
the master key, which never enters the database; a key stored in clear by an older
version is sealed in place when it is first read.

Verifying a token needs no database round trip: the keys are cached per process,
and so are revoked token ids (RFC 7009) and holder cut-offs, refreshed every
``REVOCATION_REFRESH`` seconds; a verified token string is remembered until it
expires. A holder cut-off (``user|<name>`` or ``client|<id>`` in ``_auth_revoked``,
with ``before``) revokes every token issued to that account or client up to that
second: how disabling or removing one ends the tokens it holds
(:mod:`.revocation`), whether or not they were recorded one by one.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet, RSAKey
from pymongo.database import Database

from .. import errors
from ..crypto.sealing import Sealer, is_sealed
from ..storage.upserts import upsert

KEYS = "_auth_keys"
REVOKED = "_auth_revoked"
ALGORITHM = "RS256"
REVOCATION_REFRESH = 2.0
#: The longest an access token lives, whatever FHIR_TOKEN_SECONDS or ``fhirserver
#: token --lifetime`` ask: the revocations that end tokens by holder (a disabled
#: account, a deleted Patient) are kept this long, and a token outliving them would
#: be valid again (auth/revocation.py).
MAX_LIFETIME = 30 * 24 * 3600
_VERIFIED_CACHE = 10_000


@dataclass
class _Cache:
    keys: KeySet | None = None
    signing: RSAKey | None = None
    revoked: frozenset[str] = frozenset()
    cutoffs: dict[str, int] = field(default_factory=dict)
    revoked_at: float = 0.0
    verified: dict[str, dict[str, Any]] | None = None


_caches: dict[str, _Cache] = {}
_lock = threading.Lock()


class TokenService:
    """Mints and verifies access tokens for one database (one deployment)."""

    def __init__(self, db: Database[Any], issuer: str, sealer: Sealer) -> None:
        self.db = db
        self.issuer = issuer
        self.sealer = sealer
        where = f"{db.client.address}/{db.name}" if db.client else db.name
        key = f"{where}/{sealer.kid}"  # opened keys are cached per database and master key
        with _lock:
            self.cache = _caches.setdefault(key, _Cache(verified={}))

    # -- keys ------------------------------------------------------------------------

    def _load_keys(self) -> None:
        docs = list(self.db[KEYS].find({"retired": {"$ne": True}}).sort("created", -1))
        if not docs:
            self.rotate()
            docs = list(self.db[KEYS].find({"retired": {"$ne": True}}).sort("created", -1))
        keys = [RSAKey.import_key(self._private(d)) for d in docs]
        self.cache.keys = KeySet(keys)
        self.cache.signing = keys[0]

    def rotate(self) -> str:
        """A new signing key; older ones keep verifying until retired."""
        kid = secrets.token_hex(8)
        key = RSAKey.generate_key(2048, parameters={"kid": kid, "use": "sig", "alg": ALGORITHM})
        self.db[KEYS].insert_one({"_id": kid, "jwk": self.sealer.seal_json(
                                      key.as_dict(private=True), f"{KEYS}/{kid}/jwk"),
                                  "created": datetime.now(UTC), "retired": False})
        self.cache.keys = None
        return kid

    def _private(self, doc: dict[str, Any]) -> dict[str, Any]:
        """The private JWK of a stored key; one still in clear is sealed in place."""
        identity = f"{KEYS}/{doc['_id']}/jwk"
        if is_sealed(doc["jwk"]):
            jwk: dict[str, Any] = self.sealer.open_json(doc["jwk"], identity)
            return jwk
        self.db[KEYS].update_one({"_id": doc["_id"], "jwk.sealed": {"$exists": False}},
                                 {"$set": {"jwk": self.sealer.seal_json(doc["jwk"], identity)}})
        return dict(doc["jwk"])

    def retire(self, kid: str) -> None:
        self.db[KEYS].update_one({"_id": kid}, {"$set": {"retired": True}})
        self.cache.keys = None

    def keyset(self) -> KeySet:
        if self.cache.keys is None:
            self._load_keys()
        assert self.cache.keys is not None
        return self.cache.keys

    def jwks(self) -> dict[str, Any]:
        return {"keys": [k.as_dict(private=False) for k in self.keyset().keys]}

    # -- tokens ----------------------------------------------------------------------

    def sign(self, claims: dict[str, Any]) -> str:
        self.keyset()
        key = self.cache.signing
        assert key is not None
        return jwt.encode({"alg": ALGORITHM, "kid": key.kid, "typ": "JWT"}, claims, key)

    def mint(self, *, subject: str, scope: str, kind: str, lifetime: int, now: datetime,
             client_id: str = "", **context: str | None) -> tuple[str, dict[str, Any]]:
        t = int(now.timestamp())
        claims: dict[str, Any] = {
            "iss": self.issuer, "aud": self.issuer, "sub": subject, "iat": t,
            "exp": t + min(lifetime, MAX_LIFETIME),
            "jti": secrets.token_urlsafe(16), "scope": scope, "kind": kind, "client_id": client_id,
        }
        claims.update({k: v for k, v in context.items() if v})
        return self.sign(claims), claims

    def _revoked(self) -> frozenset[str]:
        now = time.monotonic()
        if now - self.cache.revoked_at > REVOCATION_REFRESH:
            cutoff = int(datetime.now(UTC).timestamp())
            docs = list(self.db[REVOKED].find({"exp": {"$gt": cutoff}}, {"_id": 1, "before": 1}))
            self.cache.revoked = frozenset(d["_id"] for d in docs if "before" not in d)
            self.cache.cutoffs = {d["_id"]: int(d["before"]) for d in docs if "before" in d}
            self.cache.revoked_at = now
        return self.cache.revoked

    def revoke(self, claims: dict[str, Any]) -> None:
        upsert(self.db[REVOKED], {"_id": claims["jti"], "exp": int(claims.get("exp", 0))})
        self.cache.revoked_at = 0.0

    def cut_off(self, holder: str, before: int, exp: int) -> None:
        """Revoke every token of ``holder`` (:func:`holders`) issued at or before the
        second ``before``; the record is kept until ``exp``, when all of them have
        expired. Tokens issued later are unaffected."""
        cut_off(self.db, holder, before, exp)

    def _cut_off(self, claims: dict[str, Any]) -> bool:
        issued = int(claims.get("iat", 0))
        return any(issued <= self.cache.cutoffs.get(h, -1) for h in holders(claims))

    def verify(self, token: str, now: datetime) -> dict[str, Any]:
        """The claims of a valid, current, unrevoked token of ours; 401 otherwise."""
        verified = self.cache.verified
        assert verified is not None
        claims = verified.get(token)
        if claims is None:
            claims = self._decode(token)
            if len(verified) >= _VERIFIED_CACHE:
                verified.clear()
            verified[token] = claims
        if int(now.timestamp()) >= int(claims.get("exp", 0)):
            raise errors.Unauthorized("The access token has expired",
                                      headers=challenge("invalid_token", "The access token expired"))
        if claims.get("jti") in self._revoked() or self._cut_off(claims):
            raise errors.Unauthorized("The access token has been revoked",
                                      headers=challenge("invalid_token", "The access token was revoked"))
        return claims

    def decode_unverified_time(self, token: str) -> dict[str, Any]:
        """Claims of a token we signed, whatever its expiry (introspection, revocation)."""
        return self._decode(token)

    def _decode(self, token: str) -> dict[str, Any]:
        try:
            decoded = jwt.decode(token, self.keyset(), algorithms=[ALGORITHM])
        except (JoseError, ValueError) as exc:
            self.cache.keys = None  # a key rotated in another process: reload once
            try:
                decoded = jwt.decode(token, self.keyset(), algorithms=[ALGORITHM])
            except (JoseError, ValueError):
                raise errors.Unauthorized(
                    "The access token is not valid",
                    headers=challenge("invalid_token", "The access token is malformed or not ours"),
                ) from exc
        claims = dict(decoded.claims)
        if claims.get("iss") != self.issuer or claims.get("aud") != self.issuer:
            raise errors.Unauthorized("The access token was issued for another server",
                                      headers=challenge("invalid_token", "Wrong issuer or audience"))
        return claims


def cut_off(db: Any, holder: str, before: int, exp: int) -> None:
    """:meth:`TokenService.cut_off` without a service (no keys needed): this process
    reads the revocations again at its next verification, the others within
    ``REVOCATION_REFRESH``."""
    upsert(db[REVOKED], {"_id": holder, "before": before, "exp": exp})
    with _lock:
        for cache in _caches.values():
            cache.revoked_at = 0.0


def revoked_now(db: Any, claims: dict[str, Any]) -> bool:
    """Has the token with these claims been revoked, by itself or by its holder's
    cut-off (a disabled account or client)? Read from the database rather than a
    process's cache: for work that outlives the request that started it (an export)."""
    ids = [i for i in (claims.get("jti"), *holders(claims)) if i]
    issued = int(claims.get("iat", 0))
    return any("before" not in d or issued <= int(d["before"])
               for d in db[REVOKED].find({"_id": {"$in": ids}}))


def holders(claims: dict[str, Any]) -> list[str]:
    """Who holds a token, as cut-off keys (pure): the account a user's or patient's
    token was issued to (``sub`` is its user name), the client it was issued to, and
    the patients it was issued for: the one signed in (``fhirUser``) and the one in
    context (an app launched for a patient, or on a family member's record): a
    deleted Patient's tokens end with the record, or they would open a new person
    registered at the id later."""
    out = []
    if claims.get("kind") in ("user", "patient") and claims.get("sub"):
        out.append(user_holder(str(claims["sub"])))
    if claims.get("client_id"):
        out.append(client_holder(str(claims["client_id"])))
    patients = {str(claims["patient"])} if claims.get("patient") else set()
    user = str(claims.get("fhirUser") or "")
    if user.startswith("Patient/"):
        patients.add(user.removeprefix("Patient/"))  # whose record it opens as its own
    out += [patient_holder(p) for p in sorted(patients)]
    return out


def user_holder(username: str) -> str:
    return f"user|{username}"


def client_holder(client_id: str) -> str:
    return f"client|{client_id}"


def patient_holder(patient: str) -> str:
    return f"patient|{patient}"


def challenge(error: str | None = None, description: str | None = None) -> dict[str, str]:
    """The ``WWW-Authenticate`` header of a 401 (RFC 6750 section 3)."""
    value = 'Bearer realm="fhirserver"'
    if error:
        value += f', error="{error}"'
    if description:
        value += f', error_description="{description}"'
    return {"WWW-Authenticate": value}
