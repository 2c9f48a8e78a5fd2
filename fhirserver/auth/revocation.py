"""Ending everything an account or a client holds, when an operator disables or
removes it: its refresh tokens and the access tokens already handed out.

Three steps, in this order, so that no token issued at the same time escapes:

1. the account or client is marked disabled (or deleted) by the caller first, so the
   token endpoint issues nothing more (it checks again after minting, and takes back
   what it minted if the check fails: :func:`fhirserver.api.oauth._user_tokens`);
2. a holder cut-off (:meth:`.tokens.TokenService.cut_off`) revokes every access token
   issued to it up to this second, whether or not it was recorded one by one
   (``client_credentials`` tokens are not);
3. every token family (RFC 9700 section 4.14.2) of its live refresh tokens is revoked,
   as a replayed refresh token revokes its family: the refresh tokens are deleted. The
   family's access tokens need no entry of their own: the cut-off covers them, and
   every worker loads the revocation list every few seconds, so it is kept short.

Servers read revocations every ``tokens.REVOCATION_REFRESH`` seconds: a revoked
access token may still be accepted by another worker for up to that long.

A cut-off counts whole seconds (a token's ``iat``): enabling again waits for the next
second (:func:`wait_past_cut_off`), so a token issued after enabling is never taken
for one issued before the disable.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from . import grants
from .tokens import (
    MAX_LIFETIME,
    REVOKED,
    TokenService,
    client_holder,
    cut_off,
    patient_holder,
    user_holder,
)


@dataclass(frozen=True)
class Ended:
    """What was revoked: token families (each with its refresh token)."""

    families: int


def _keep_until(now: datetime, token_seconds: int) -> int:
    """When every token issued before ``now`` has expired: the longest lifetime an
    access token can have here (refresh tokens are revoked by family, not by this)."""
    longest = max(min(token_seconds, MAX_LIFETIME), 3600,
                  int(timedelta(days=grants.REFRESH_DAYS).total_seconds()))
    return int(now.timestamp()) + longest


def end_user(db: Any, service: TokenService, username: str, now: datetime,
             token_seconds: int) -> Ended:
    """Revoke every token issued to the account ``username`` up to ``now``."""
    service.cut_off(user_holder(username), int(now.timestamp()), _keep_until(now, token_seconds))
    families = {d["family"] for d in db[grants.REFRESH].find({"username": username}, {"family": 1})
                if d.get("family")}
    return Ended(_revoke(db, families))


def end_client(db: Any, service: TokenService, client_id: str, now: datetime,
               token_seconds: int) -> Ended:
    """Revoke every token issued to the client ``client_id`` up to ``now``: its own
    (client_credentials) and those its users approved."""
    service.cut_off(client_holder(client_id), int(now.timestamp()), _keep_until(now, token_seconds))
    families = {d["_id"] for d in db[grants.FAMILIES].find({"client_id": client_id}, {"_id": 1})}
    families |= {d["family"] for d in db[grants.REFRESH].find({"client_id": client_id}, {"family": 1})
                 if d.get("family")}
    return Ended(_revoke(db, families))


def end_patient_tokens(db: Any, patient: str, now: datetime) -> None:
    """Revoke every access token issued up to ``now`` in the context of ``patient``
    (a deleted Patient): the patient's own and those of apps launched for them. Their
    refresh tokens need nothing here: the patient's accounts are disabled with the
    record, and a clinician's refreshed token is issued after the cut-off."""
    cut_off(db, patient_holder(patient), int(now.timestamp()), _keep_until(now, 0))


def _revoke(db: Any, families: set[str]) -> int:
    for family in sorted(families):
        grants.revoke_family(db, family)  # its access tokens: the holder's cut-off
    return len(families)


def wait_past_cut_off(db: Any, holder: str, now: datetime) -> None:
    """Return once the second of ``holder``'s cut-off (if any) has passed."""
    doc = db[REVOKED].find_one({"_id": holder}, {"before": 1})
    if doc is not None and "before" in doc:
        left = int(doc["before"]) + 1 - now.timestamp()
        if 0 < left <= 1:
            time.sleep(left)
