"""Health card operations (the master patient index's card life cycle) and family
binding, as FHIR operations on Patient."""

from __future__ import annotations

import base64
import io
from typing import Any

import segno
from flask import Response, request
from flask_smorest import Blueprint

from .. import errors
from ..interactions.disclosure import identifier_for
from ..interactions.identity_lookups import card_system
from ..model.masking import labelled
from ..mpi import cards, family
from ..storage.indexing import instant
from .negotiation import render
from .operations import _only, operation_params
from .state import context

blp = Blueprint("cards", __name__, url_prefix="/",
                description="Electronic health cards: issue, QR code, scan, suspend, revoke, "
                            "reissue; family binding")

IMAGE_TYPES = ("image/svg+xml", "image/png")


def _one(params: list[tuple[str, str]], name: str, required: bool = True) -> str | None:
    values = [v for k, v in params if k == name]
    if len(values) > 1 or (required and not values):
        raise errors.Invalid(f"Parameter '{name}' is required once", expression=name)
    return values[0] if values else None


def _allow(interaction: str, kinds: tuple[str, ...], patient: str | None = None) -> None:
    ctx = context()
    if ctx.access is not None:
        ctx.access.require(interaction, kinds, patient)


def _own_card(holder: str, interaction: str = "update") -> None:
    """Family binding is the cardholder's own business (or an operator's)."""
    ctx = context()
    if ctx.access is None or ctx.access.caller is None:
        return
    caller = ctx.access.caller
    _allow(interaction, ("patient",), holder)
    if caller.kind == "patient" and caller.patient != holder:
        raise errors.Forbidden("Only the cardholder manages their family binding")


def _card_of(pid: str, interaction: str, kinds: tuple[str, ...]) -> None:
    """Who may use or manage a card: clinic systems reaching the patient, the
    cardholder, a guardian for a child; an adult family member reads the record
    but never holds the card (its code, its reissue)."""
    ctx = context()
    caller = ctx.access.caller if ctx.access else None
    if caller is None or caller.kind != "patient" or "patient" not in kinds:
        _allow(interaction, kinds, pid)
        return
    ctx.access.decision("Patient", interaction)  # type: ignore[union-attr]  # the scope
    if not ctx.access.acts_for(pid):  # type: ignore[union-attr]
        raise errors.Forbidden("Only the cardholder (or a child's guardian) uses and manages this card")


def _party() -> str:
    """Who presents a live card code, for the code's one-party rule."""
    ctx = context()
    caller = ctx.access.caller if ctx.access else None
    if caller is None:
        return "internal"
    return caller.organization or caller.who or caller.client_id or caller.subject


MANAGE = ("system", "patient")  # clinic systems, and cardholders for their own cards


def _card_answer(status: int, card: dict[str, Any]) -> Response:
    """The card as Parameters, its number masked (and the answer labelled MASKED,
    security-labels.html) unless the caller sees that patient's card number whole:
    managing a card (suspend, resume, reissue) is no reason to learn its number."""
    ctx = context()
    answer = cards.card_parameters(card, card_system(ctx))
    number = answer["parameter"][0]
    given = identifier_for(ctx, card["patient"], number["valueIdentifier"])
    if given is number["valueIdentifier"]:
        return render(status, answer)
    params = [{**number, "valueIdentifier": given}, *answer["parameter"][1:]]
    return render(status, labelled({**answer, "parameter": params}))


@blp.route("/<rtype>/<rid>/$issue-card", methods=["POST"])
def issue_card(rtype: str, rid: str) -> Response:
    """Issue a health card: one active card per patient; its number becomes an identifier"""
    _only(rtype, "Patient", "issue-card")
    _allow("update", ("system",), rid)
    return _card_answer(201, cards.issue(context(), rid))


@blp.route("/<rtype>/<rid>/$reissue-card", methods=["POST"])
def reissue_card(rtype: str, rid: str) -> Response:
    """Revoke the current card at once and issue a new one (a lost phone)"""
    _only(rtype, "Patient", "reissue-card")
    _card_of(rid, "update", MANAGE)
    return _card_answer(201, cards.reissue(context(), rid))


@blp.route("/<rtype>/<rid>/$revoke-card", methods=["POST"])
def revoke_card(rtype: str, rid: str) -> Response:
    """Revoke the active card"""
    _only(rtype, "Patient", "revoke-card")
    _card_of(rid, "update", MANAGE)
    return _card_answer(200, cards.revoke(context(), rid))


@blp.route("/<rtype>/<rid>/$suspend-card", methods=["POST"])
def suspend_card(rtype: str, rid: str) -> Response:
    """Suspend the active card: its codes stop scanning until resumed"""
    _only(rtype, "Patient", "suspend-card")
    _card_of(rid, "update", MANAGE)
    return _card_answer(200, cards.set_status(context(), rid, "suspended"))


@blp.route("/<rtype>/<rid>/$resume-card", methods=["POST"])
def resume_card(rtype: str, rid: str) -> Response:
    """Lift a suspension"""
    _only(rtype, "Patient", "resume-card")
    _card_of(rid, "update", MANAGE)
    return _card_answer(200, cards.set_status(context(), rid, "active"))


@blp.route("/<rtype>/<rid>/$card-qr", methods=["GET"])
def card_qr(rtype: str, rid: str) -> Response:
    """The card's current QR code: image/svg+xml or image/png by Accept, else a
    Parameters with the payload, its expiry and both images"""
    _only(rtype, "Patient", "card-qr")
    _card_of(rid, "read", ("patient",))  # the cardholder, or a child's guardian
    payload, expires = cards.current_code(context(), rid)
    qr = segno.make(payload, error="m")
    images: dict[str, bytes] = {}
    for mimetype, kind, scale in (("image/svg+xml", "svg", 4), ("image/png", "png", 6)):
        buffer = io.BytesIO()
        qr.save(buffer, kind=kind, scale=scale, border=2)
        images[mimetype] = buffer.getvalue()
    headers = {"Cache-Control": "no-store", "Expires": expires.strftime("%a, %d %b %Y %H:%M:%S GMT")}
    wanted = request.accept_mimetypes.best_match(IMAGE_TYPES) if request.headers.get("Accept") else None
    if wanted and request.accept_mimetypes[wanted] > 0:
        return Response(images[wanted], status=200, mimetype=wanted, headers=headers)
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "payload", "valueString": payload},
        {"name": "expires", "valueInstant": instant(expires)},
        *({"name": kind, "valueAttachment": {"contentType": mt,
                                              "data": base64.b64encode(data).decode()}}
          for kind, mt, data in (("svg", "image/svg+xml", images["image/svg+xml"]),
                                 ("png", "image/png", images["image/png"]))),
    ]}
    return render(200, body, headers)


@blp.route("/<rtype>/$scan-card", methods=["POST"])
def scan_card(rtype: str) -> Response:
    """Scan a card code: the Patient, after checking signature, lifetime and card status"""
    _only(rtype, "Patient", "scan-card")
    _allow("read", ("user", "system"))
    params = operation_params()
    payload = _one(params, "payload")
    assert payload is not None
    ctx = context()
    caller = ctx.access.caller if ctx.access else None
    if caller is not None and caller.kind in ("patient",):
        raise errors.Forbidden("Cards are scanned by clinicians and clinic systems")
    # Who scanned is the token's clinician and organisation; only an operator's
    # script may name them in the parameters.
    scanner = caller.practitioner if caller is not None and caller.kind != "operator" else \
        _one(params, "scanner", False)
    organization = caller.organization if caller is not None and caller.kind != "operator" else \
        _one(params, "organization", False)
    # The party a code binds to: the organisation the scan is for; without one, the
    # caller itself (another organisation replaying the code is refused).
    party = organization or (caller.who if caller is not None else "") or scanner or "internal"
    patient = cards.scan(ctx, payload, scanner, organization, party=party)
    ctx.touch(patient)  # the audit record names the patient scanned
    return render(200, patient)


@blp.route("/<rtype>/<rid>/$bind-family", methods=["POST"])
def bind_family(rtype: str, rid: str) -> Response:
    """Bind a family member's card to this cardholder (at most five): with the
    member's live card ``code``, at once (a child under 14: only so, and the holder
    becomes guardian); with their ``card`` number, a request they accept when signed
    in (202)"""
    _only(rtype, "Patient", "bind-family")
    _own_card(rid)
    params = operation_params()
    code, number = _one(params, "code", False), _one(params, "card", False)
    relationship = _one(params, "relationship", False)
    if (code is None) == (number is None):
        raise errors.Invalid("Give the member's live card 'code' (from their QR code) or their "
                             "'card' number, not both", expression="code")
    ctx = context()
    if code is not None:
        return render(201, family.bind_with_code(ctx, rid, code, relationship, _party()))
    assert number is not None
    caller = ctx.access.caller if ctx.access else None
    if caller is None or caller.kind == "operator":
        return render(201, family.bind_by_operator(ctx, rid, number, relationship))
    return render(202, errors.information(family.request_binding(ctx, rid, number, relationship)))


@blp.route("/<rtype>/<rid>/$accept-family", methods=["POST"])
def accept_family(rtype: str, rid: str) -> Response:
    """The member, signed in, accepts a binding request from their ``$family`` list
    (``decision=decline`` turns it down)"""
    _only(rtype, "Patient", "accept-family")
    _own_card(rid)
    params = operation_params()
    request_id = _one(params, "request")
    assert request_id is not None
    if _one(params, "decision", False) == "decline":
        family.decline(context(), rid, request_id)
        return render(200, errors.information("Request declined"))
    return render(201, family.accept(context(), rid, request_id))


@blp.route("/<rtype>/<rid>/$unbind-family", methods=["POST"])
def unbind_family(rtype: str, rid: str) -> Response:
    """End a binding: the holder names the ``member``, or the member names the
    ``holder`` of their card"""
    _only(rtype, "Patient", "unbind-family")
    _own_card(rid)
    params = operation_params()
    member, holder = _one(params, "member", False), _one(params, "holder", False)
    if (member is None) == (holder is None):
        raise errors.Invalid("Name the 'member' whose card you hold, or the 'holder' of your card",
                             expression="member")
    if member is not None:
        other = member.removeprefix("Patient/")
        family.unbind(context(), rid, other)
    else:
        other = (holder or "").removeprefix("Patient/")
        family.unbind(context(), other, rid)
    return render(200, errors.information(f"The binding with Patient/{other} has ended"))


@blp.route("/<rtype>/<rid>/$family", methods=["GET"])
def list_family(rtype: str, rid: str) -> Response:
    """Who is bound: the members whose cards this patient holds, the holders of this
    patient's card, and requests waiting for this patient's answer (RelatedPerson)"""
    _only(rtype, "Patient", "family")
    _own_card(rid, "read")
    return render(200, family.listing(context(), rid))
