"""The health card's QR payload: a signed, short-lived token (pure).

The QR code carries a JWS (HS256, RFC 7515/7519 via joserfc) whose claims are the
card's opaque key ``c`` (never the card number or the patient), ``iat``, ``exp``
and a random nonce ``n``. A screenshot of an old code stops working once ``exp``
passes; a code whose signature fails was altered. The clock is a parameter so
expiry is tested without waiting.

Failures are told apart for the scanning client (each a distinct 4xx and
``details`` code) but none names a patient.

A code is bound to the first party that redeems it (:mod:`.cards`): the record of
that first use is keyed by :func:`fingerprint`, a hash of the signed part, so the
database never holds a code that could be replayed.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import OctKey

from .. import errors

ALGORITHM = "HS256"
PREFIX = "FHC1:"  # marks our payload in a QR code, and its version


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def _key(secret: str) -> OctKey:
    return OctKey.import_key(secret.encode())


def issue_token(card_key: str, now: datetime, lifetime_seconds: int, secret: str) -> str:
    t = int(now.timestamp())
    # A nonce makes every code shown a fresh one, even two within one second: a
    # code is redeemed by one party only, so the next party needs a new code.
    claims = {"c": card_key, "iat": t, "exp": t + lifetime_seconds, "n": secrets.token_urlsafe(6)}
    return PREFIX + jwt.encode({"alg": ALGORITHM}, claims, _key(secret), algorithms=[ALGORITHM])


@dataclass(frozen=True)
class CardCode:
    """What a valid payload says: the card's opaque key and when the code expires
    (seconds since the epoch, the JWT ``exp`` claim, RFC 7519 section 4.1.4)."""

    card: str
    exp: int


def fingerprint(payload: str) -> str:
    """The key a code's first use is recorded under: SHA-256 of the signed part
    (header and claims, RFC 7515 section 5.1's signing input), which tells codes
    apart (each has its nonce). Not of the whole payload: the signature's last
    base64url character has spare bits (RFC 4648 section 3.5), and were a decoder
    lenient about them, each spelling would pass for a new code."""
    signed, _, _ = payload.rpartition(".")
    return hashlib.sha256(signed.encode()).hexdigest()


def read_code(payload: str, now: datetime, secret: str) -> CardCode:
    """The claims of a scanned payload, if it is ours, intact and current."""
    if not isinstance(payload, str) or not payload.startswith(PREFIX) or payload.count(".") != 2:
        raise errors.Invalid("The scanned code is not a health card code", details="card-malformed",
                             expression="payload")
    try:
        token = jwt.decode(payload[len(PREFIX):], _key(secret), algorithms=[ALGORITHM])
    except (JoseError, ValueError) as exc:
        raise errors.Invalid("The scanned code has been altered or was not issued here",
                             details="card-tampered", expression="payload") from exc
    claims = token.claims
    card, exp = claims.get("c"), claims.get("exp")
    if not isinstance(card, str) or not isinstance(exp, int):
        raise errors.Invalid("The scanned code has been altered or was not issued here",
                             details="card-tampered", expression="payload")
    if int(now.timestamp()) >= exp:
        raise errors.Gone("The scanned code has expired: ask the patient to show the current code",
                          details="card-expired")
    return CardCode(card, exp)
