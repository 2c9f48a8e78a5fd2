"""``GET AuditEvent``: who looked at my record, when, and whether it was an emergency.

A patient token (``patient/AuditEvent.rs`` or ``patient/*.rs``) sees the events about
its own and bound family members' compartments; an operator sees all. Newest
first, paged by the record number.
"""

from __future__ import annotations

from typing import Any

from flask import Response
from flask_smorest import Blueprint

from .. import errors
from ..audit.chain import RECORDS, DamagedRecord, event_of, newest, record_id
from ..audit.events import QUERY_ROLE
from ..interactions.bundles import bundle, link, outcome_entry, page_url
from ..interactions.context import Context
from ..model.types import is_valid_id
from ..search.results import parse_whole, whole_number
from .negotiation import render
from .resources import query_items, strict
from .state import context

blp = Blueprint("audit", __name__, url_prefix="/", description="The audit log, as AuditEvent")


def redact(event: dict[str, object], reach: frozenset[str]) -> dict[str, object]:
    """What a patient sees of an event: who, when, why and outcome, only the patients
    in their own reach, and of a search its shape in plain words (entity.description,
    e.g. "Search for Patient by identifier (...)"); not other patients, the resources
    or the query itself."""
    out = dict(event)
    entities: list[dict[str, object]] = []
    for e in event.get("entity", []) or []:  # type: ignore[union-attr]
        if not isinstance(e, dict):
            continue
        ref = str(e.get("what", {}).get("reference", ""))
        if ref.startswith("Patient/") and ref.removeprefix("Patient/") in reach:
            entities.append(e)
        elif e.get("role", {}).get("code") == QUERY_ROLE and e.get("description"):
            entities.append({k: e[k] for k in ("type", "role", "description") if k in e})
    if entities:
        out["entity"] = entities
    else:
        out.pop("entity", None)
    return out


#: The parameters this search applies; _format and _pretty belong to the HTTP layer.
PARAMETERS = frozenset({"patient", "_count", "_cursor"})
_HTTP = frozenset({"_format", "_pretty"})


def _parameters(items: list[tuple[str, str]], strict: bool) -> tuple[dict[str, str], list[str]]:
    """The applied parameters, and the names ignored (search.html#errors: unknown
    parameters are ignored and reported, or refused under ``Prefer: handling=strict``);
    a repeated or malformed value of a known one is a 400."""
    params: dict[str, str] = {}
    ignored: list[str] = []
    for key, value in items:
        if key in _HTTP:
            continue
        if key not in PARAMETERS:
            if strict:
                raise errors.Invalid(f"Search parameter '{key[:60]}' cannot be used: unknown "
                                     "search parameter for AuditEvent (patient, _count, "
                                     "_cursor)", expression=key[:60])
            ignored.append(key[:60])
            continue
        if key in params:
            raise errors.Invalid(f"'{key}' may be given once", expression=key)
        params[key] = value
    patient = params.get("patient")
    if patient is not None and not is_valid_id(patient.removeprefix("Patient/")):
        raise errors.Invalid(f"Invalid patient value '{patient[:60]}': expected Patient/<id>",
                             expression="patient")
    return params, ignored


@blp.route("/AuditEvent", methods=["GET"])
def search_audit() -> Response:
    """search-type on AuditEvent (patient, _count, _cursor)"""
    ctx = context()
    caller = ctx.access.caller if ctx.access else None
    if caller is not None and caller.kind not in ("patient", "operator"):
        raise errors.Forbidden("The audit log is readable by patients (their own) and operators")
    params, ignored = _parameters(query_items(), strict())
    if ctx.access is not None:
        ctx.access.decision("AuditEvent", "search")  # the token must allow reading the log
    # A patient reads their own log and their guarded children's, never an adult
    # family member's: whom that member saw is theirs alone.
    reach = ctx.access.audit_reach() if ctx.access else None
    wanted = params["patient"].removeprefix("Patient/") if "patient" in params else None
    count = min(max(parse_whole(params.get("_count", str(ctx.settings.default_count)), "_count"),
                    1), ctx.settings.max_count)
    cursor = params.get("_cursor")
    if cursor is not None and whole_number(cursor) is None:
        raise errors.Invalid("Invalid paging cursor", expression="_cursor")
    if wanted is None and reach is None:
        docs = _newest(ctx, int(cursor) - 1 if cursor else None, count + 1)
    else:
        # Records by patient (an equality where one patient is asked), newest first.
        parts: list[dict[str, object]] = [
            {"patients": wanted if reach is None or wanted in reach else {"$in": []}}
            if wanted is not None else
            {"patients": min(reach) if len(reach) == 1 else {"$in": sorted(reach)}}]
        if cursor:
            parts.append({"_id": {"$lt": cursor}})
        flt = {"$and": parts} if len(parts) > 1 else parts[0]
        docs = list(ctx.repo.db[RECORDS].find(flt, {"event": 1}).sort("_id", -1).limit(count + 1))
    page = docs[:count]
    applied = [(k, v) for k, v in params.items() if k in ("patient", "_count")]
    links = [link("self", page_url(ctx, "AuditEvent", list(params.items())))]
    if len(docs) > count:
        links.append(link("next", page_url(ctx, "AuditEvent", [*applied, ("_cursor", str(page[-1]["_id"]))])))
    try:
        events = [event_of(d) if reach is None else redact(event_of(d), reach) for d in page]
    except DamagedRecord as exc:
        raise errors.ServerError(str(exc)) from exc
    entries = [{"fullUrl": ctx.url(f"AuditEvent/{e['id']}"), "resource": e,
                "search": {"mode": "match"}} for e in events]
    if ignored:
        entries.append(outcome_entry(errors.operation_outcome([
            errors.Issue(f"Search parameter '{name}' was ignored: unknown search parameter "
                         "for AuditEvent", code="not-supported", severity="warning",
                         expression=(name,)) for name in ignored])))
    return render(200, bundle("searchset", entries, links=links))


def _newest(ctx: Context, below: int | None, count: int) -> list[dict[str, Any]]:
    """The whole log's ``count`` newest records from number ``below`` down (from the
    end when None). Records are numbered without gaps, so a page is read by primary
    key, record by record, at the same cost whatever the log's size: a sort of the
    whole log is a scan on FerretDB."""
    db = ctx.repo.db
    top = newest(db)[0] if below is None else below
    docs = (db[RECORDS].find_one({"_id": record_id(n)}, {"event": 1})
            for n in range(top, max(top - count, 0), -1))
    return [d for d in docs if d is not None]
