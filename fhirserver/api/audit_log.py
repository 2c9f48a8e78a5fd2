"""``GET AuditEvent``: who looked at my record, when, and whether it was an emergency.

A patient token (``patient/AuditEvent.rs`` or ``patient/*.rs``) sees the events about
its own and bound family members' compartments; an operator sees all. Newest
first, paged by the record number.
"""

from __future__ import annotations

from flask import Response
from flask_smorest import Blueprint

from .. import errors
from ..audit.chain import RECORDS
from ..audit.events import QUERY_ROLE
from ..interactions.bundles import bundle, link, page_url
from ..search.results import parse_whole, whole_number
from .negotiation import render
from .resources import query_items
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


@blp.route("/AuditEvent", methods=["GET"])
def search_audit() -> Response:
    """search-type on AuditEvent (patient, _count, _cursor)"""
    ctx = context()
    caller = ctx.access.caller if ctx.access else None
    if caller is not None and caller.kind not in ("patient", "operator"):
        raise errors.Forbidden("The audit log is readable by patients (their own) and operators")
    params = dict(query_items())
    if ctx.access is not None:
        ctx.access.decision("AuditEvent", "search")  # the token must allow reading the log
    # A patient reads their own log and their guarded children's, never an adult
    # family member's: whom that member saw is theirs alone.
    reach = ctx.access.audit_reach() if ctx.access else None
    parts: list[dict[str, object]] = []
    if reach is not None:
        parts.append({"patients": {"$in": sorted(reach)}})
    if params.get("patient"):
        parts.append({"patients": params["patient"].removeprefix("Patient/")})
    raw_count = params.get("_count", str(ctx.settings.default_count))
    count = min(max(parse_whole(raw_count, "_count"), 1), ctx.settings.max_count)
    if params.get("_cursor"):
        if whole_number(params["_cursor"]) is None:
            raise errors.Invalid("Invalid paging cursor", expression="_cursor")
        parts.append({"_id": {"$lt": params["_cursor"]}})
    flt = {"$and": parts} if len(parts) > 1 else (parts[0] if parts else {})
    docs = list(ctx.repo.db[RECORDS].find(flt, {"event": 1}).sort("_id", -1).limit(count + 1))
    page = docs[:count]
    applied = [(k, v) for k, v in params.items() if k in ("patient", "_count")]
    links = [link("self", page_url(ctx, "AuditEvent", list(params.items())))]
    if len(docs) > count:
        links.append(link("next", page_url(ctx, "AuditEvent", [*applied, ("_cursor", str(page[-1]["_id"]))])))
    events = [d["event"] if reach is None else redact(d["event"], reach) for d in page]
    entries = [{"fullUrl": ctx.url(f"AuditEvent/{e['id']}"), "resource": e,
                "search": {"mode": "match"}} for e in events]
    return render(200, bundle("searchset", entries, links=links))
