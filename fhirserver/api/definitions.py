"""OperationDefinition: the definition of every operation the server offers, read-only
(R4 operationdefinition.html; search on ``_id``, ``code`` and ``url``).

Public, like /metadata: a definition says how to call an operation and holds no
patient data, and the server's own canonical URLs (``[base]/OperationDefinition/
Patient-scan-card``) must resolve for a client or validator that has no token yet.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, request

from .. import errors
from ..interactions.bundles import bundle, link, outcome_entry, page_url
from ..storage.indexing import instant, now
from . import opdefs
from .negotiation import render
from .resources import query_items
from .state import context, public_base_url

blp = Blueprint("definitions", __name__)

ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
SEARCH_PARAMS = ("_id", "code", "url")
_HTTP = ("_format", "_pretty")


def _read_only() -> None:
    if request.method != "GET":
        raise errors.MethodNotAllowed("OperationDefinition is read-only: the operations are "
                                      "those the server implements")


def _published() -> list[dict[str, Any]]:
    base, date = public_base_url(), instant(now())[:10]
    return [opdefs.definition(op, base, date) for op in opdefs.OPERATIONS]


def _matches(definition: dict[str, Any], name: str, value: str) -> bool:
    wanted = value.split(",")
    key = {"_id": "id", "code": "code", "url": "url"}[name]
    return definition[key] in wanted


@blp.route("/OperationDefinition", methods=ALL_METHODS)
def search() -> Response:
    """search-type on OperationDefinition: every operation of this server"""
    _read_only()
    ctx = context()
    found = _published()
    applied: list[tuple[str, str]] = []
    ignored: list[str] = []
    for name, value in query_items():
        if name in SEARCH_PARAMS:
            found = [d for d in found if _matches(d, name, value)]
            applied.append((name, value))
        elif name not in _HTTP:
            ignored.append(name[:60])
    entries = [{"fullUrl": ctx.url(f"OperationDefinition/{d['id']}"), "resource": d,
                "search": {"mode": "match"}} for d in found]
    if ignored:
        entries.append(outcome_entry(errors.operation_outcome(
            errors.Issue(f"Search parameter '{n}' was ignored: not supported on "
                         "OperationDefinition", code="not-supported", severity="warning",
                         expression=(n,)) for n in ignored)))
    return render(200, bundle("searchset", entries, total=len(found), links=[
        link("self", page_url(ctx, "OperationDefinition", applied))]))


@blp.route("/OperationDefinition/<rid>", methods=ALL_METHODS)
def read(rid: str) -> Response:
    """read on OperationDefinition"""
    _read_only()
    for definition in _published():
        if definition["id"] == rid:
            return render(200, definition)
    raise errors.NotFound(f"Resource OperationDefinition/{rid[:64]} is not known")
