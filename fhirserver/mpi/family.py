"""Family binding: a cardholder reads up to five family members' records (children,
elderly parents), each binding shown as a FHIR RelatedPerson (R4 relatedperson.html:
the holder, related to the member ``patient``).

A card number is no proof: it is printed on the card, shown to every treating
clinician and answered by ``$ihe-pix``. So a binding needs the member's consent,
shown one of two ways:

* the member's **live card code** (the short-lived QR on their phone) presented by
  the holder: bound at once; for a child under 14 this is the only way, and the
  holder becomes the child's guardian;
* the member's **approval while signed in**: a request made with the card number
  waits in the member's ``$family`` until they accept or decline it (the holder
  learns nothing about the card's owner before that, not even whether the number
  is a card).

The member sees who is bound to them and can end it (``$unbind-family``). What a
binding gives is read-only, and sensitive-labelled records stay with the member
unless they share them; only a guardian manages a child's card.

A binding is its slot document, ``slot|<holder>|1..5`` (primary keys, so the limit
of five holds under concurrency); whom a holder reaches is read from those five
documents by key, never from a list kept beside them (``auth/bindings.py``, what
the access policy reads). Requests are ``request|<hash>``, filed under
a hash of the card number. What a member sees is found by ``member`` (who holds
their card) and by their card's hash (requests to them).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pymongo.errors import DuplicateKeyError

from .. import errors
from ..auth.access import forget
from ..auth.bindings import BINDINGS, MAX_MEMBERS, aware, slots
from ..interactions.bundles import bundle, link
from ..interactions.context import Context
from ..interactions.identity_lookups import card_system
from ..model.identity_numbers import InvalidNumber
from .cards import CARDS, active_card, redeem_code

MINOR_AGE = 14  # under 14: a child, bound only by a guardian showing the child's live code
REQUEST_DAYS = 7
DECLINE_DAYS = 30
MAX_PENDING = 20  # requests a member is shown, newest first
MAX_OUTGOING = 5  # open requests one holder may have
ROLE_CODES = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"
STATUS_URL = "https://fhirserver.example/StructureDefinition/family-binding-status"
RELATIONSHIPS = frozenset({
    "FAMMEMB", "CHILD", "SON", "DAU", "PRN", "FTH", "MTH", "GRPRN", "GRFTH", "GRMTH",
    "SPS", "HUSB", "WIFE", "SIB", "GUARD",
})


# -- minors ------------------------------------------------------------------------------


def minor_until(patient: dict[str, Any]) -> datetime | None:
    """The day a patient turns ``MINOR_AGE``; a partial birthDate counts from its
    latest possible day (the child is protected for longest). None: no birth date."""
    born = patient.get("birthDate")
    if not isinstance(born, str) or len(born) < 4:
        return None
    try:
        parts = [int(p) for p in born[:10].split("-")]
    except ValueError:
        return None
    year = parts[0] + MINOR_AGE
    month = parts[1] if len(parts) > 1 else 12
    day = parts[2] if len(parts) > 2 else 31
    try:
        end = date(year, month, day)
    except ValueError:  # 29 February, or the 31st of a shorter month
        end = date(year, month, 28) + timedelta(days=1)
    return datetime(end.year, end.month, end.day, tzinfo=UTC)


def is_minor(patient: dict[str, Any], now: datetime) -> bool:
    until = minor_until(patient)
    return until is not None and now < until


# -- binding -----------------------------------------------------------------------------


def bindings(ctx: Context, holder: str) -> list[dict[str, Any]]:
    col = ctx.repo.db[BINDINGS]
    found = (col.find_one({"_id": slot}) for slot in slots(holder))
    return [b for b in found if b is not None]


def _bound_to(ctx: Context, member: str) -> list[dict[str, Any]]:
    """The bindings that hold ``member``'s card."""
    return list(ctx.repo.db[BINDINGS].find({"member": member, "kind": "binding"}))


def _relationship(value: str | None) -> str:
    rel = value or "FAMMEMB"
    if rel not in RELATIONSHIPS:
        raise errors.Invalid(f"Unknown relationship '{rel}': use a v3 RoleCode family code "
                             f"({', '.join(sorted(RELATIONSHIPS))})", expression="relationship")
    return rel


def _holder_ready(ctx: Context, holder: str) -> None:
    stored = ctx.repo.get("Patient", holder)
    if stored is None or stored.deleted:
        raise errors.NotFound(f"Resource Patient/{holder} is not known")
    try:
        active_card(ctx, holder)
    except errors.NotFound as exc:
        raise errors.Unprocessable(f"Patient/{holder} has no active health card to bind to",
                                   details="no-card") from exc


def _forget(ctx: Context, *patients: str) -> None:
    for p in patients:
        forget(ctx.repo.db, f"family|{p}")


def _bind(ctx: Context, holder: str, member: str, relationship: str, via: str) -> dict[str, Any]:
    """Occupy a free slot (at most five, enforced by the slots' primary keys) and
    index the binding both ways. A child's binding makes the holder its guardian."""
    if member == holder:
        raise errors.Unprocessable("A cardholder cannot bind their own card", expression="card")
    col = ctx.repo.db[BINDINGS]
    pair = f"pair|{holder}|{member}"
    try:  # one binding per pair, even for two requests at once
        col.insert_one({"_id": pair, "kind": "pair", "at": ctx.clock()})
    except DuplicateKeyError as exc:
        if any(b["member"] == member for b in bindings(ctx, holder)) or not _stale(col, pair, ctx):
            raise errors.Conflict(f"Patient/{member} is already bound to Patient/{holder}",
                                  details="already-bound") from exc
        # A pair left without its slot by a crash between the two writes: free it.
        col.delete_one({"_id": pair})
        return _bind(ctx, holder, member, relationship, via)
    try:
        return _occupy(ctx, holder, member, relationship, via)
    except BaseException:
        col.delete_one({"_id": f"pair|{holder}|{member}"})
        raise


def _stale(col: Any, pair: str, ctx: Context) -> bool:
    """A pair record older than a binding takes to write, with no slot behind it."""
    doc = col.find_one({"_id": pair})
    at = doc.get("at") if doc else None
    return at is None or aware(at) < ctx.clock() - timedelta(minutes=1)


def _occupy(ctx: Context, holder: str, member: str, relationship: str, via: str) -> dict[str, Any]:
    stored = ctx.repo.get("Patient", member)
    member_res = (stored.resource if stored else None) or {}
    now = ctx.clock()
    until = minor_until(member_res)
    child = until is not None and now < until
    col = ctx.repo.db[BINDINGS]
    doc = {"kind": "binding", "holder": holder, "member": member, "relationship": relationship,
           "at": now, "via": via, "guardian_until": until if child else None}
    for slot in slots(holder):
        try:
            col.insert_one({"_id": slot, **doc})
            break
        except DuplicateKeyError:
            continue
    else:
        raise errors.Unprocessable(
            f"Patient/{holder} already has {MAX_MEMBERS} family members bound: unbind one first",
            details="binding-limit")
    if child:
        ctx.repo.db[CARDS].update_one({"_id": active_card(ctx, member)["_id"], "guardian": None},
                                      {"$set": {"guardian": holder}})
    _forget(ctx, holder, member)
    return related_person(ctx, {"_id": slot, **doc})


def bind_with_code(ctx: Context, holder: str, payload: str, relationship: str | None,
                   party: str) -> dict[str, Any]:
    """The member's live card code is their consent: bound at once."""
    rel = _relationship(relationship)
    _holder_ready(ctx, holder)
    card = redeem_code(ctx, payload, party)
    return _bind(ctx, holder, card["patient"], rel, "code")


def bind_by_operator(ctx: Context, holder: str, number: str, relationship: str | None) -> dict[str, Any]:
    """An operator (a support desk acting on a signed form) binds by card number."""
    rel = _relationship(relationship)
    _holder_ready(ctx, holder)
    return _bind(ctx, holder, _member_of_card(ctx, number), rel, "operator")


def _member_of_card(ctx: Context, number: str) -> str:
    entry = ctx.registry.by_key("health-card")
    try:
        number = entry.check(number)
    except InvalidNumber as exc:
        raise errors.Invalid(str(exc), expression="card") from exc
    member = ctx.repo.claim_holder(f"{card_system(ctx)}|{number}")
    if member is not None:
        card = active_card(ctx, member) if _has_card(ctx, member) else None
        if card is not None and card["number"] == number and card["status"] == "active":
            return member
    raise errors.NotFound("No active health card has that number", details="card-unknown")


def _has_card(ctx: Context, pid: str) -> bool:
    return ctx.repo.db[CARDS].find_one({"_id": f"active|{pid}"}) is not None


REQUEST_SENT = ("Request sent. If the card number belongs to an active card of an adult, its "
                "holder sees the request in their family list and can accept it; a child under "
                f"{MINOR_AGE} is bound by their guardian showing the child's live card code.")


def request_binding(ctx: Context, holder: str, number: str, relationship: str | None) -> str:
    """A request the member accepts while signed in. It is filed under the card
    number as typed, without looking the card up: whether the number is a card, an
    adult's, or bound already, the answer and the work are the same, so a card
    number never becomes a way to learn about its owner. The member finds it by
    their own card's number."""
    rel = _relationship(relationship)
    _holder_ready(ctx, holder)
    entry = ctx.registry.by_key("health-card")
    try:
        number = entry.check(number)
    except InvalidNumber as exc:
        raise errors.Invalid(str(exc), expression="card") from exc
    col = ctx.repo.db[BINDINGS]
    card = card_key(ctx, number)
    rid = request_id(holder, card)
    now = ctx.clock()
    declined = col.find_one({"_id": f"declined|{rid}"})
    if declined is not None and aware(declined["exp"]) > now:
        return REQUEST_SENT  # the member said no: not asked again for a while
    mine = [d for d in col.find({"holder": holder, "kind": "request"}) if aware(d["exp"]) > now]
    if len(mine) >= MAX_OUTGOING and all(d["_id"] != f"request|{rid}" for d in mine):
        return REQUEST_SENT
    col.replace_one({"_id": f"request|{rid}"}, {
        "_id": f"request|{rid}", "kind": "request", "holder": holder, "card": card,
        "relationship": rel, "at": now, "exp": now + timedelta(days=REQUEST_DAYS)}, upsert=True)
    return REQUEST_SENT


def card_key(ctx: Context, number: str) -> str:
    """What a request stores of the card number it was sent to: a keyed hash (an
    unkeyed one is found by hashing every possible number)."""
    return ctx.repo.protection.blinder.keyed("family-card", number)


def request_id(holder: str, card: str) -> str:
    """One open request per holder and card; its id names neither patient."""
    return hashlib.sha256(f"family-request|{holder}|{card}".encode()).hexdigest()[:32]


def _pending(ctx: Context, member: str) -> list[dict[str, Any]]:
    """Open requests to ``member``'s active card, newest first (at most
    ``MAX_PENDING``; expired ones are left out)."""
    try:
        card = active_card(ctx, member)
    except errors.NotFound:
        return []
    if card["status"] != "active":
        return []
    now = ctx.clock()
    found = ctx.repo.db[BINDINGS].find({"card": card_key(ctx, card["number"]), "kind": "request"})
    live = [d for d in found if aware(d["exp"]) > now and d["holder"] != member]
    return sorted(live, key=lambda d: d["at"], reverse=True)[:MAX_PENDING]


def _request_for(ctx: Context, member: str, rid: str) -> dict[str, Any]:
    doc = next((d for d in _pending(ctx, member) if d["_id"] == f"request|{rid}"), None)
    if doc is None:
        raise errors.NotFound("No open family request with that id for this patient",
                              details="request-unknown", expression="request")
    return doc


def accept(ctx: Context, member: str, rid: str) -> dict[str, Any]:
    """The member, signed in, accepts a request addressed to their card."""
    doc = _request_for(ctx, member, rid)
    stored = ctx.repo.get("Patient", member)
    if is_minor((stored.resource if stored else None) or {}, ctx.clock()):
        raise errors.Unprocessable(f"A child under {MINOR_AGE} is bound by their guardian showing "
                                   "the child's live card code", details="minor")
    _holder_ready(ctx, doc["holder"])
    done = _bind(ctx, doc["holder"], member, doc["relationship"], "approval")
    ctx.repo.db[BINDINGS].delete_one({"_id": doc["_id"]})
    return done


def decline(ctx: Context, member: str, rid: str) -> None:
    """Turn a request down; the same holder cannot ask again for ``DECLINE_DAYS``."""
    doc = _request_for(ctx, member, rid)
    col = ctx.repo.db[BINDINGS]
    col.delete_one({"_id": doc["_id"]})
    col.replace_one({"_id": f"declined|{rid}"}, {"_id": f"declined|{rid}", "kind": "declined",
                                                 "exp": ctx.clock() + timedelta(days=DECLINE_DAYS)},
                    upsert=True)


def unbind(ctx: Context, holder: str, member: str) -> None:
    """End a binding: the holder lets go of a member, or the member of a holder."""
    col = ctx.repo.db[BINDINGS]
    for b in bindings(ctx, holder):
        if b["member"] == member:
            col.delete_one({"_id": b["_id"]})
            col.delete_one({"_id": f"pair|{holder}|{member}"})
            ctx.repo.db[CARDS].update_many({"patient": member, "guardian": holder},
                                           {"$set": {"guardian": None}})
            _forget(ctx, holder, member)
            return
    raise errors.NotFound(f"Patient/{member} is not bound to Patient/{holder}", details="not-bound")


# -- showing -----------------------------------------------------------------------------


def related_person(ctx: Context, binding: dict[str, Any], *, pending: bool = False,
                   member: str | None = None) -> dict[str, Any]:
    """The holder as a RelatedPerson of the member. Read directly: the binding (or
    the request the member is asked to answer) is what lets each side see this."""
    stored = ctx.repo.get("Patient", binding["holder"])
    holder = (stored.resource if stored else None) or {}
    rid = binding["_id"].removeprefix("request|") if pending else \
        hashlib.sha256(binding["_id"].encode()).hexdigest()[:32]
    out: dict[str, Any] = {
        "resourceType": "RelatedPerson",
        "id": rid,
        "extension": [{"url": STATUS_URL, "valueCode": "requested" if pending else "active"}],
        "active": not pending,
        "patient": {"reference": f"Patient/{binding.get('member') or member}"},
        "relationship": [{"coding": [{"system": ROLE_CODES, "code": binding["relationship"]}]}],
    }
    if "name" in holder:
        out["name"] = holder["name"]
    if pending:
        return out  # who asks, nothing more, until accepted
    system = card_system(ctx)
    cards = [i for i in holder.get("identifier") or () if i.get("system") == system]
    if cards:
        out["identifier"] = cards
    for key in ("telecom", "gender", "birthDate"):
        if key in holder:
            out[key] = holder[key]
    return out


def listing(ctx: Context, pid: str) -> dict[str, Any]:
    """Everything that binds ``pid``: the members whose cards they hold, the holders
    of their own card (``patient`` is then ``pid`` itself), and requests waiting
    for their answer (``active`` false, status ``requested``)."""
    stored = ctx.repo.get("Patient", pid)
    if stored is None or stored.deleted:
        raise errors.NotFound(f"Resource Patient/{pid} is not known")
    found = [related_person(ctx, b) for b in bindings(ctx, pid)]
    found += [related_person(ctx, b) for b in _bound_to(ctx, pid)]
    found += [related_person(ctx, d, pending=True, member=pid) for d in _pending(ctx, pid)]
    entries = [{"fullUrl": ctx.url(f"RelatedPerson/{rp['id']}"), "resource": rp,
                "search": {"mode": "match"}} for rp in found]
    return bundle("searchset", entries, total=len(entries),
                  links=[link("self", ctx.url(f"Patient/{pid}/$family"))])
