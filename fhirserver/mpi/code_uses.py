"""Who used a health card code first: a code binds to the first party redeeming it.

A QR code lives ``FHIR_CARD_CODE_SECONDS``; a screenshot of it must not let a
second organisation open the record within that time (DESIGN.md section 1: only
clinicians actually treating the patient read the record). The first redemption is
recorded in ``_card_code_uses`` under the code's fingerprint as primary key, so of
two parties redeeming one code at the same instant exactly one insert wins (the
other gets MongoDB's duplicate key error, code 11000) and FerretDB finds the record
by index. The same party may redeem the code again (a second scan in the same
visit). A record is useless once its code has expired, so expired ones are swept,
at most once a minute per process and database.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.errors import DuplicateKeyError

from .. import errors

CODE_USES = "_card_code_uses"
SWEEP_EVERY = timedelta(seconds=60)
_last_sweep: dict[str, datetime] = {}


def may_reuse(first: str, party: str) -> bool:
    """A code already redeemed is accepted again only from the party that redeemed it."""
    return first == party


def claim(
    db: Any, fingerprint: str, party: str, card: str, expires: datetime, now: datetime
) -> None:
    """Record ``party`` as the code's first user, or check that it was (409
    ``card-code-used`` otherwise, naming neither the patient nor the other party)."""
    _sweep(db, now)
    uses = db[CODE_USES]
    for _ in range(3):
        try:
            uses.insert_one(
                {"_id": fingerprint, "party": party, "card": card, "exp": expires, "at": now}
            )
            return
        except DuplicateKeyError:
            pass
        first = uses.find_one({"_id": fingerprint}, {"party": 1})
        if first is None:
            continue  # swept between the insert and the read: try again
        if may_reuse(first["party"], party):
            return
        raise errors.Conflict(
            "This card code was already scanned elsewhere: ask the patient to show a fresh code",
            details="card-code-used",
            expression="payload",
        )
    raise errors.Conflict(
        "This card code could not be checked: ask the patient to show a fresh code",
        details="card-code-used",
        expression="payload",
    )


def _sweep(db: Any, now: datetime) -> None:
    """Delete the records of expired codes, once per ``SWEEP_EVERY`` per database."""
    key = f"{getattr(db.client, 'address', '')}/{db.name}"
    last = _last_sweep.get(key)
    if last is not None and last <= now < last + SWEEP_EVERY:
        return
    _last_sweep[key] = now
    db[CODE_USES].delete_many({"exp": {"$lte": now}})


def expiry(exp: int) -> datetime:
    """A code's ``exp`` claim as a datetime, as the record stores it."""
    return datetime.fromtimestamp(exp, UTC)
