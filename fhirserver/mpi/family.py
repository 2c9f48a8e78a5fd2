"""Family binding: a cardholder manages up to five family members' cards (children,
elderly parents), each binding shown as a FHIR RelatedPerson (R4 relatedperson.html:
the holder, related to the member ``patient``).

The limit holds under concurrency because a binding occupies one of five slot
records ``<holder>|1`` .. ``<holder>|5`` whose primary keys admit one binding each.
Binding a minor's card makes the holder the card's guardian.
"""

from __future__ import annotations

import hashlib
from datetime import date
from typing import Any

from pymongo.errors import DuplicateKeyError

from .. import errors
from ..interactions import read as read_
from ..interactions.bundles import bundle, link
from ..auth.access import forget
from ..interactions.context import Context
from .cards import CARDS, active_card, card_system
from .validators import InvalidNumber

BINDINGS = "_card_bindings"
MAX_MEMBERS = 5
ADULT_AGE = 18
ROLE_CODES = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"
RELATIONSHIPS = frozenset({
    "FAMMEMB", "CHILD", "SON", "DAU", "PRN", "FTH", "MTH", "GRPRN", "GRFTH", "GRMTH",
    "SPS", "HUSB", "WIFE", "SIB", "GUARD",
})


def _slots(holder: str) -> list[str]:
    return [f"{holder}|{i}" for i in range(1, MAX_MEMBERS + 1)]


def _add_member(col: Any, holder: str, member: str) -> None:
    """The holder's member list, updated by primary key; two first bindings at once
    may race to create it, and the loser retries (then finds it)."""
    for attempt in range(5):
        try:
            col.update_one({"_id": f"members|{holder}"}, {"$addToSet": {"members": member}},
                           upsert=True)
            return
        except DuplicateKeyError:
            if attempt == 4:
                raise


def members(db: Any, holder: str) -> list[str]:
    """The patients bound to ``holder``'s card (one primary-key read)."""
    doc = db[BINDINGS].find_one({"_id": f"members|{holder}"})
    return list(doc.get("members", [])) if doc else []


def bindings(ctx: Context, holder: str) -> list[dict[str, Any]]:
    col = ctx.repo.db[BINDINGS]
    found = (col.find_one({"_id": slot}) for slot in _slots(holder))
    return [b for b in found if b is not None]


def is_minor(patient: dict[str, Any], today: date) -> bool:
    """Under 18 on ``today``; a partial birthDate counts from its latest possible day."""
    born = patient.get("birthDate")
    if not isinstance(born, str) or len(born) < 4:
        return False
    parts = [int(p) for p in born[:10].split("-")]
    year, month, day = parts[0], parts[1] if len(parts) > 1 else 12, parts[2] if len(parts) > 2 else 31
    age = today.year - year - ((today.month, today.day) < (month, day))
    return age < ADULT_AGE


def _member_of_card(ctx: Context, number: str) -> str:
    system = card_system(ctx)
    entry = ctx.registry.by_key("health-card")
    try:
        number = entry.check(number)
    except InvalidNumber as exc:
        raise errors.Invalid(str(exc), expression="card") from exc
    member = ctx.repo.claim_holder(f"{system}|{number}")
    if member is None:
        raise errors.NotFound("No active health card has that number", details="card-unknown")
    card = active_card(ctx, member)
    if card["number"] != number or card["status"] != "active":
        raise errors.NotFound("No active health card has that number", details="card-unknown")
    return member


def related_person(ctx: Context, binding: dict[str, Any]) -> dict[str, Any]:
    holder = read_.read(ctx, "Patient", binding["holder"]).resource or {}
    rid = hashlib.sha256(binding["_id"].encode()).hexdigest()[:32]
    out: dict[str, Any] = {
        "resourceType": "RelatedPerson",
        "id": rid,
        "active": True,
        "patient": {"reference": f"Patient/{binding['member']}"},
        "relationship": [{"coding": [{"system": ROLE_CODES, "code": binding["relationship"]}]}],
    }
    system = card_system(ctx)
    cards = [i for i in holder.get("identifier") or () if i.get("system") == system]
    if cards:
        out["identifier"] = cards
    for key in ("name", "telecom", "gender", "birthDate"):
        if key in holder:
            out[key] = holder[key]
    return out


def bind(ctx: Context, holder: str, card_number: str, relationship: str | None) -> dict[str, Any]:
    rel = relationship or "FAMMEMB"
    if rel not in RELATIONSHIPS:
        raise errors.Invalid(f"Unknown relationship '{rel}': use a v3 RoleCode family code "
                             f"({', '.join(sorted(RELATIONSHIPS))})", expression="relationship")
    read_.read(ctx, "Patient", holder)
    try:
        active_card(ctx, holder)
    except errors.NotFound as exc:
        raise errors.Unprocessable(f"Patient/{holder} has no active health card to bind to",
                                   details="no-card") from exc
    member = _member_of_card(ctx, card_number)
    if member == holder:
        raise errors.Unprocessable("A cardholder cannot bind their own card", expression="card")
    current = bindings(ctx, holder)
    if any(b["member"] == member for b in current):
        raise errors.Conflict(f"Patient/{member} is already bound to Patient/{holder}",
                              details="already-bound")
    col = ctx.repo.db[BINDINGS]
    doc = {"holder": holder, "member": member, "relationship": rel, "at": ctx.clock()}
    for slot in _slots(holder):
        try:
            col.insert_one({"_id": slot, **doc})
            break
        except DuplicateKeyError:
            continue
    else:
        raise errors.Unprocessable(
            f"Patient/{holder} already has {MAX_MEMBERS} family members bound: unbind one first",
            details="binding-limit")
    _add_member(col, holder, member)
    forget(ctx.repo.db, f"family|{holder}")
    stored = ctx.repo.get("Patient", member)  # the member's card was shown: no read check
    member_res = (stored.resource if stored else None) or {}
    if is_minor(member_res, ctx.clock().date()):
        ctx.repo.db[CARDS].update_one(
            {"_id": active_card(ctx, member)["_id"], "guardian": None}, {"$set": {"guardian": holder}})
    return related_person(ctx, {"_id": slot, **doc})


def unbind(ctx: Context, holder: str, member: str) -> None:
    col = ctx.repo.db[BINDINGS]
    for b in bindings(ctx, holder):
        if b["member"] == member:
            col.delete_one({"_id": b["_id"]})
            col.update_one({"_id": f"members|{holder}"}, {"$pull": {"members": member}})
            forget(ctx.repo.db, f"family|{holder}")
            ctx.repo.db[CARDS].update_many({"patient": member, "guardian": holder},
                                           {"$set": {"guardian": None}})
            return
    raise errors.NotFound(f"Patient/{member} is not bound to Patient/{holder}", details="not-bound")


def listing(ctx: Context, holder: str) -> dict[str, Any]:
    read_.read(ctx, "Patient", holder)
    found = bindings(ctx, holder)
    entries = [{"fullUrl": ctx.url(f"RelatedPerson/{rp['id']}"), "resource": rp,
                "search": {"mode": "match"}}
               for rp in (related_person(ctx, b) for b in found)]
    return bundle("searchset", entries, total=len(entries),
                  links=[link("self", ctx.url(f"Patient/{holder}/$family"))])
