"""Electronic health cards: issue, QR code, scan, suspend, resume, revoke, reissue.

A card is a record in ``_health_cards`` keyed by an opaque random key (what the QR
token carries); its 20-digit number (Luhn check digit) becomes a Patient identifier
in the health-card system, so it is unique like every registered identifier. One
active card per patient is a primary key too: the pointer ``active|<patient>``.

Scans are recorded in ``_card_scans`` (who scanned, for which organisation, when):
the care relationship a clinician gets from presenting the card rests on them.

A live code is redeemed (:func:`redeem_code`) by one party only: scanning it again
in the same visit works, another organisation needs a fresh code (:mod:`.code_uses`).
"""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime, timedelta
from typing import Any

from pymongo.errors import DuplicateKeyError
from stdnum import luhn

from .. import errors
from ..interactions import read as read_
from ..interactions import write
from ..interactions.context import Context, run_single
from ..interactions.identity_lookups import card_system
from ..storage.protection import CARD_NUMBER_FIELD, CARDS
from . import code_uses
from .card_tokens import fingerprint, issue_token, new_secret, read_code

SCANS = "_card_scans"
SECRETS = "_secrets"


def new_card_number() -> str:
    body = "6" + "".join(secrets.choice("0123456789") for _ in range(18))
    return body + luhn.calc_check_digit(body)


def signing_secret(ctx: Context) -> str:
    """The configured key, else one generated once and kept in the database, sealed
    under the master key (``crypto/sealing.py``); one an older version kept in clear
    is sealed in place when it is first read."""
    if ctx.settings.card_signing_key:
        return ctx.settings.card_signing_key
    from ..crypto.master import load
    from ..crypto.sealing import is_sealed, sealer

    seal = sealer(load(ctx.settings))
    identity = f"{SECRETS}/card-signing-key/value"
    col = ctx.repo.db[SECRETS]
    doc = col.find_one({"_id": "card-signing-key"})
    if doc is None:
        try:
            col.insert_one({"_id": "card-signing-key",
                            "value": seal.seal(new_secret().encode(), identity)})
        except DuplicateKeyError:
            pass  # another worker got there first: use theirs
        doc = col.find_one({"_id": "card-signing-key"})
    value = doc["value"]  # type: ignore[index]
    if is_sealed(value):
        return seal.open(value, identity).decode()
    col.update_one({"_id": "card-signing-key", "value": value},
                   {"$set": {"value": seal.seal(str(value).encode(), identity)}})
    return str(value)


def _set_card_identifier(ctx: Context, pid: str, number: str | None, drop: str | None) -> None:
    """Replace the Patient's health-card identifier ``drop`` by ``number``."""
    system = card_system(ctx)

    def plan(planner: Any) -> Any:
        current = read_.read(ctx, "Patient", pid)
        resource = dict(current.resource or {})
        idents = [i for i in resource.get("identifier") or ()
                  if not (i.get("system") == system and i.get("value") == drop)]
        if number:
            idents.append({"use": "official", "system": system, "value": number})
        if idents:
            resource["identifier"] = idents
        else:
            resource.pop("identifier", None)  # FHIR JSON has no empty arrays
        return write.update(planner, "Patient", pid, resource, server=True)

    run_single(ctx, plan)




def _sealed_number(ctx: Context, number: str, key: str) -> dict[str, str]:
    """A card number as ``_health_cards`` keeps it: encrypted under the data key."""
    return ctx.repo.protection.cipher.encrypt(number, CARD_NUMBER_FIELD, owner=f"{CARDS}/{key}")


def opened(ctx: Context, card: dict[str, Any]) -> dict[str, Any]:
    """A card document with its number decrypted (one stored in clear by an older
    version reads as it is until the data keys' pass encrypts it)."""
    number = card.get("number")
    if isinstance(number, dict):
        plain = ctx.repo.protection.cipher.decrypt(number, CARD_NUMBER_FIELD,
                                                   owner=f"{CARDS}/{card['_id']}")
        return {**card, "number": plain}
    return card


def active_card(ctx: Context, pid: str) -> dict[str, Any]:
    cards = ctx.repo.db[CARDS]
    pointer = cards.find_one({"_id": f"active|{pid}"})
    card = cards.find_one({"_id": pointer["card"]}) if pointer else None
    if card is None:
        raise errors.NotFound(f"Patient/{pid} has no active health card", details="no-card")
    return opened(ctx, card)


def issue(ctx: Context, pid: str) -> dict[str, Any]:
    """A new card for an active Patient that has none (409 when it has one)."""
    patient = read_.read(ctx, "Patient", pid)
    if (patient.resource or {}).get("active") is False:
        raise errors.Unprocessable(f"Patient/{pid} is inactive: no card can be issued",
                                   details="patient-inactive")
    cards = ctx.repo.db[CARDS]
    key = secrets.token_urlsafe(16)
    try:
        cards.insert_one({"_id": f"active|{pid}", "card": key})
    except DuplicateKeyError as exc:
        raise errors.Conflict(f"Patient/{pid} already has an active health card; "
                              "use $reissue-card to replace it", details="card-exists") from exc
    number = new_card_number()
    card = {"_id": key, "number": number, "patient": pid, "status": "active",
            "issued": ctx.clock(), "changed": ctx.clock(), "guardian": None}
    try:
        cards.insert_one({**card, "number": _sealed_number(ctx, number, key)})
        _set_card_identifier(ctx, pid, number, None)
    except BaseException:
        cards.delete_one({"_id": key})
        cards.delete_one({"_id": f"active|{pid}", "card": key})
        raise
    return card


def set_status(ctx: Context, pid: str, status: str) -> dict[str, Any]:
    """Suspend (``suspended``) or resume (``active``) the active card."""
    card = active_card(ctx, pid)
    ctx.repo.db[CARDS].update_one({"_id": card["_id"]},
                                  {"$set": {"status": status, "changed": ctx.clock()}})
    if ctx.repo.db[CARDS].find_one({"_id": f"active|{pid}"}) is None:
        # A revocation ran meanwhile: it stands.
        ctx.repo.db[CARDS].update_one({"_id": card["_id"]}, {"$set": {"status": "revoked"}})
        raise errors.NotFound(f"Patient/{pid} has no active health card", details="no-card")
    return {**card, "status": status}


def revoke(ctx: Context, pid: str) -> dict[str, Any]:
    """Revoke at once: scans of any of its codes fail from now on."""
    card = active_card(ctx, pid)
    cards = ctx.repo.db[CARDS]
    cards.update_one({"_id": card["_id"]}, {"$set": {"status": "revoked", "changed": ctx.clock()}})
    cards.delete_one({"_id": f"active|{pid}", "card": card["_id"]})
    _set_card_identifier(ctx, pid, None, card["number"])
    return {**card, "status": "revoked"}


def reissue(ctx: Context, pid: str) -> dict[str, Any]:
    """A lost phone: the old card is revoked before the new one exists."""
    try:
        old = revoke(ctx, pid)
    except errors.NotFound:
        old = None
    new = issue(ctx, pid)
    if old is not None and old.get("guardian"):
        ctx.repo.db[CARDS].update_one({"_id": new["_id"]}, {"$set": {"guardian": old["guardian"]}})
    return new


def current_code(ctx: Context, pid: str) -> tuple[str, datetime]:
    card = active_card(ctx, pid)
    if card["status"] != "active":
        raise errors.Forbidden(f"The health card of Patient/{pid} is {card['status']}",
                               details=f"card-{card['status']}")
    now = ctx.clock()
    token = issue_token(card["_id"], now, ctx.settings.card_code_seconds, signing_secret(ctx))
    expires = datetime.fromtimestamp(int(now.timestamp()) + ctx.settings.card_code_seconds, now.tzinfo)
    return token, expires


def redeem_code(ctx: Context, payload: str, party: str) -> dict[str, Any]:
    """The active card a live code stands for, the code now bound to ``party`` (the
    organisation presenting it; without one, the caller's own identity). Bad codes
    are told apart (malformed, altered, expired, unknown, suspended, revoked, used
    by another party) without saying whose card it was; a refused code is bound to
    no one."""
    now = ctx.clock()
    code = read_code(payload, now, signing_secret(ctx))
    card: dict[str, Any] | None = ctx.repo.db[CARDS].find_one({"_id": code.card})
    if card is None:
        raise errors.NotFound("The scanned card is not known", details="card-unknown")
    if card["status"] != "active":
        raise errors.Forbidden(f"The scanned card is {card['status']}",
                               details=f"card-{card['status']}")
    pointer = ctx.repo.db[CARDS].find_one({"_id": f"active|{card['patient']}"})
    if pointer is None or pointer.get("card") != card["_id"]:
        # Revocation deletes the pointer (an atomic delete), whatever a status update
        # racing with it wrote: a card without it is revoked.
        raise errors.Forbidden("The scanned card is revoked", details="card-revoked")
    code_uses.claim(ctx.repo.db, fingerprint(payload), party, code.card,
                    code_uses.expiry(code.exp), now)
    return opened(ctx, card)


def scan(ctx: Context, payload: str, scanner: str | None, organization: str | None, *,
         party: str) -> dict[str, Any]:
    """The Patient a scanned code stands for, recording the scan by ``party``."""
    card = redeem_code(ctx, payload, party)
    key = card["_id"]
    # Read directly: the scan itself is what opens the record to the scanner.
    patient = ctx.repo.get("Patient", card["patient"])
    if patient is None or patient.deleted:
        raise errors.NotFound("The scanned card is not known", details="card-unknown")
    now = ctx.clock()
    ctx.repo.db[SCANS].insert_one({
        "_id": uuid.uuid4().hex, "card": key, "patient": card["patient"],
        "by": scanner, "organization": organization, "at": now,
    })
    # Presenting the card opens the care relationship: the scanning clinician and
    # their organisation may read the record for the configured time.
    until = now + timedelta(hours=ctx.settings.care_hours)
    for who in (scanner, organization):
        if who and who.split("/")[0] in ("Practitioner", "Organization"):
            ctx.open_care(who, patient, until, "card-scan", now=now)
    return patient.resource or {}


def card_parameters(card: dict[str, Any], system: str) -> dict[str, Any]:
    """A card as an operation's Parameters answer."""
    params = [
        {"name": "number", "valueIdentifier": {"system": system, "value": card["number"]}},
        {"name": "status", "valueCode": card["status"]},
        {"name": "patient", "valueReference": {"reference": f"Patient/{card['patient']}"}},
    ]
    if card.get("guardian"):
        params.append({"name": "guardian",
                       "valueReference": {"reference": f"Patient/{card['guardian']}"}})
    return {"resourceType": "Parameters", "parameter": params}
