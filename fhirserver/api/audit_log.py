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
from ..interactions.bundles import bundle, link, page_url
from .negotiation import render
from .resources import query_items
from .state import context

blp = Blueprint("audit", __name__, url_prefix="/", description="The audit log, as AuditEvent")


def redact(event: dict[str, object], reach: frozenset[str]) -> dict[str, object]:
    """What a patient sees of an event: who, when, why and outcome, and only the
    patients in their own reach; not other patients, the resources or the query."""
    out = dict(event)
    entities = [e for e in event.get("entity", []) or []  # type: ignore[union-attr]
                if isinstance(e, dict) and str(e.get("what", {}).get("reference", ""))
                .removeprefix("Patient/") in reach
                and str(e.get("what", {}).get("reference", "")).startswith("Patient/")]
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
    reach = ctx.access.decision("AuditEvent", "search").patients if ctx.access else None
    parts: list[dict[str, object]] = []
    if reach is not None:
        parts.append({"patients": {"$in": sorted(reach)}})
    if params.get("patient"):
        parts.append({"patients": params["patient"].removeprefix("Patient/")})
    raw_count = params.get("_count", str(ctx.settings.default_count))
    if not raw_count.isdigit():
        raise errors.Invalid(f"Invalid '_count' value '{raw_count}'", expression="_count")
    count = min(max(int(raw_count), 1), ctx.settings.max_count)
    if params.get("_cursor"):
        if not params["_cursor"].isdigit():
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
