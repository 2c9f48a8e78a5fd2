"""The health card's QR payload: a signed, short-lived token (pure).

The QR code carries a JWS (HS256, RFC 7515/7519 via joserfc) whose claims are the
card's opaque key ``c`` (never the card number or the patient), ``iat`` and
``exp``. A screenshot of an old code stops working once ``exp`` passes; a code
whose signature fails was altered. The clock is a parameter so expiry is tested
without waiting.

Failures are told apart for the scanning client (each a distinct 4xx and
``details`` code) but none names a patient.
"""

from __future__ import annotations

import secrets
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
    claims = {"c": card_key, "iat": t, "exp": t + lifetime_seconds}
    return PREFIX + jwt.encode({"alg": ALGORITHM}, claims, _key(secret), algorithms=[ALGORITHM])


def read_token(payload: str, now: datetime, secret: str) -> str:
    """The card key a scanned payload carries, if it is ours, intact and current."""
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
    return card
