"""Compartment search and the search operations (R4 http.html#search,
patient-operation-everything.html, observation-operation-lastn.html).

Each operation's parameters are described in ``opdefs.OPERATIONS``, from which the
CapabilityStatement, the OperationDefinitions and the OpenAPI paths are made; the
CapabilityStatement lists an operation exactly when its route is registered.
"""

from __future__ import annotations

from typing import Any

from flask import Response, g, request
from flask_smorest import Blueprint

from .. import errors
from ..auth import consent, users
from ..interactions import care_team as team_op
from ..interactions import compartment, emergency, lastn
from ..mpi import match_op, pix
from ..mpi import merge as merge_
from ..storage.repository import Repository
from .body import json_body
from .negotiation import render, version_headers
from .resources import check_type, query_items, strict
from .state import context

blp = Blueprint(
    "operations", __name__, url_prefix="/",
    description="Patient compartment search, Patient/$everything and Observation/$lastn",
)

def _allow(interaction: str, kinds: tuple[str, ...], patient: str | None = None) -> None:
    ctx = context()
    if ctx.access is not None:
        ctx.access.require(interaction, kinds, patient)


def _only(rtype: str, wanted: str, operation: str) -> None:
    check_type(rtype)
    if rtype != wanted:
        raise errors.NotFound(f"Operation '${operation}' is not defined on {rtype}")


def operation_params() -> list[tuple[str, str]]:
    """Query parameters, plus a Parameters body on POST (operations.html#request):
    primitive ``value[x]`` parameters become name=value pairs."""
    items = query_items()
    if request.method == "POST" and request.content_length:
        body = json_body()
        if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
            raise errors.Invalid("The body of an operation must be a Parameters resource",
                                 expression="Parameters")
        params = body.get("parameter") or []
        if not isinstance(params, list):
            raise errors.Invalid("Parameters.parameter must be an array",
                                 expression="Parameters.parameter")
        for i, param in enumerate(params):
            name = param.get("name") if isinstance(param, dict) else None
            values = [v for k, v in param.items() if k.startswith("value")] if name else []
            value = _flat(values[0]) if len(values) == 1 else None
            if not isinstance(name, str) or value is None:
                raise errors.Invalid("Only primitive, Reference and Identifier parameters are "
                                     "accepted", expression=f"Parameters.parameter[{i}]")
            items.append((name, str(value).lower() if isinstance(value, bool) else str(value)))
    return items


def _flat(value: Any) -> Any:
    """A parameter value as a search-style string: a Reference as its reference, an
    Identifier as ``system|value``; None for other complex values."""
    if isinstance(value, dict):
        if isinstance(value.get("reference"), str):
            return value["reference"]
        if isinstance(value.get("value"), str):
            return f"{value.get('system', '')}|{value['value']}" if "system" in value else value["value"]
        return None
    return None if isinstance(value, list) else value


@blp.route("/<rtype>/<rid>/<ctype>", methods=["GET"])
def compartment_search(rtype: str, rid: str, ctype: str) -> Response:
    """search-compartment: GET Patient/{id}/{type}?params (http.html#search)"""
    check_type(rtype)
    if rtype != "Patient":
        raise errors.NotFound(f"{rtype} is not a compartment on this server")
    check_type(ctype)
    return render(200, compartment.compartment_search(context(), rid, ctype, query_items(),
                                                      strict=strict()))


@blp.route("/<rtype>/<rid>/$everything", methods=["GET", "POST"])
def everything(rtype: str, rid: str) -> Response:
    """Patient/{id}/$everything: the patient and their compartment, paged"""
    _only(rtype, "Patient", "everything")
    return render(200, compartment.everything(context(), rid, operation_params()))


@blp.route("/<rtype>/$lastn", methods=["GET", "POST"])
def observation_lastn(rtype: str) -> Response:
    """Observation/$lastn: the last ``max`` observations of each code"""
    _only(rtype, "Observation", "lastn")
    return render(200, lastn.lastn(context(), operation_params(), strict=strict()))


@blp.route("/<rtype>/$ihe-pix", methods=["GET", "POST"])
def ihe_pix(rtype: str) -> Response:
    """IHE PIXm Patient/$ihe-pix: a document number to the patient's other identifiers"""
    _only(rtype, "Patient", "ihe-pix")
    _allow("search", ("system", "user"))
    # An identity look-up is marked in the request's AuditEvent (outcomeDesc).
    return render(200, pix.ihe_pix(context(), operation_params(),
                                   note=lambda text: setattr(g, "audit_detail", text)))


@blp.route("/<rtype>/$merge", methods=["POST"])
def patient_merge(rtype: str) -> Response:
    """Patient/$merge: fold a duplicate (source-patient) into target-patient, all or nothing"""
    _only(rtype, "Patient", "merge")
    _allow("update", ("system",))
    return render(200, merge_.merge(context(), operation_params()))


@blp.route("/<rtype>/$match", methods=["POST"])
def patient_match(rtype: str) -> Response:
    """Patient/$match: scored, graded candidates for a Patient (best first)"""
    _only(rtype, "Patient", "match")
    _allow("search", ("system",))
    return render(200, match_op.match(context(), json_body(),
                                      note=lambda text: setattr(g, "audit_detail", text)))


@blp.route("/<rtype>/<rid>/$break-glass", methods=["POST"])
def break_glass(rtype: str, rid: str) -> Response:
    """Emergency access to one patient for a short time, with a stated reason (recorded)"""
    _only(rtype, "Patient", "break-glass")
    ctx = context()
    caller = ctx.access.caller if ctx.access else None
    if caller is None or caller.kind != "user" or not caller.practitioner:
        raise errors.Forbidden("Break-the-glass is for clinicians (user tokens with fhirUser)")
    if not users.has_role(ctx.repo.db, caller.subject, caller.practitioner, users.EMERGENCY_ACCESS):
        raise errors.Forbidden("Break-the-glass needs the emergency-access role "
                               "(fhirserver users roles NAME --add emergency-access)")
    reasons = [v for k, v in operation_params() if k == "reason"]
    if len(reasons) != 1 or not reasons[0].strip():
        raise errors.Invalid("A 'reason' is required to break the glass", expression="reason")
    reason = reasons[0].strip()[:500]
    g.audit_detail = f"break-the-glass: {reason}"
    return render(200, emergency.break_glass(ctx, caller, rid, reason))


@blp.route("/<rtype>/<rid>/$consent", methods=["GET", "POST"])
def patient_consent(rtype: str, rid: str) -> Response:
    """The patient's sharing choices: restrictSensitive (sensitive-labelled records only
    to the organisation that wrote them), optOut (no sharing across organisations) and
    shareWithFamily (family bound to the card also read sensitive-labelled records)"""
    _only(rtype, "Patient", "consent")
    ctx = context()
    caller = ctx.access.caller if ctx.access else None
    interaction = "update" if request.method == "POST" else "read"
    if caller is not None and caller.kind == "patient":
        ctx.access.decision("Patient", interaction)  # type: ignore[union-attr]  # the scope
        if not ctx.access.acts_for(rid):  # type: ignore[union-attr]
            raise errors.Forbidden("Only the patient (or a child's guardian) sets their sharing "
                                   "choices")
    else:
        _allow(interaction, ("patient",), rid)
    if request.method == "POST":
        values = dict(operation_params())
        flags: dict[str, bool] = {}
        for name, attr in (("restrictSensitive", "restrict_sensitive"), ("optOut", "opt_out"),
                           ("shareWithFamily", "share_with_family")):
            if name in values:
                if values[name] not in ("true", "false"):
                    raise errors.Invalid(f"'{name}' must be a boolean", expression=name)
                flags[attr] = values[name] == "true"
        current = consent.change(ctx.repo.db, ctx.repo.search_claims, rid, flags,
                                 alive=lambda: _registered(ctx.repo, rid))
    else:
        if not _registered(ctx.repo, rid):
            # As a change would (consent.change): an id that holds no Patient has no
            # choices to show, rather than defaults that read as the person's own.
            raise errors.NotFound(f"Resource Patient/{rid} is not known")
        current = consent.load(ctx.repo.db, [rid]).get(rid) or consent.Choice()
    return render(200, {"resourceType": "Parameters", "parameter": [
        {"name": "restrictSensitive", "valueBoolean": current.restrict_sensitive},
        {"name": "optOut", "valueBoolean": current.opt_out},
        {"name": "shareWithFamily", "valueBoolean": current.share_with_family}]})


def _registered(repo: Repository, pid: str) -> bool:
    found = repo.get("Patient", pid)
    return found is not None and not found.deleted


@blp.route("/<rtype>/<rid>/$care-team", methods=["GET", "POST"])
def care_team(rtype: str, rid: str) -> Response:
    """The patient's care team, the CareTeam resource ``CareTeam/care-team-{id}``:
    members (Practitioner references) have a care relationship for as long as the
    organisation that put them on the team treats the patient (an operator's: until
    ended). POST with ``member`` (and ``remove=true`` to take one off, by the same
    organisation); clinic systems and operators manage it"""
    _only(rtype, "Patient", "care-team")
    _allow("update" if request.method == "POST" else "read", ("system",), rid)
    ctx = context()
    patient = ctx.repo.get("Patient", rid)
    if patient is None or patient.deleted:  # a deleted patient's team went with them
        raise errors.NotFound(f"Resource Patient/{rid} is not known")
    member, remove, org = None, False, None
    if request.method == "POST":
        params = operation_params()
        members = [v for k, v in params if k == "member"]
        if len(members) != 1 or not members[0].startswith("Practitioner/"):
            raise errors.Invalid("One 'member' (a Practitioner reference) is required",
                                 expression="member")
        member, remove = members[0], dict(params).get("remove") == "true"
        caller = ctx.access.caller if ctx.access else None
        org = None if caller is None or caller.kind == "operator" else caller.organization
        if caller is not None and caller.kind != "operator" and not org:
            raise errors.Forbidden("Care teams are managed by an organisation's clinic system")
    stored = team_op.care_team(ctx, rid, member=member, remove=remove, organization=org)
    return render(200, stored.resource, version_headers(stored))
