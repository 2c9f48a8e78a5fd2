"""NamingSystem: the master patient index's identifier systems, read-only
(R4 namingsystem.html; search on ``_id``, ``value`` and ``type``)."""

from __future__ import annotations

from typing import Any

from flask import Response, request
from flask_smorest import Blueprint

from .. import errors
from ..interactions.bundles import bundle, link, match_entry, outcome_entry, page_url
from ..mpi.naming import naming_systems
from ..storage.indexing import now
from ..storage.records import Stored
from .negotiation import render
from .resources import query_items
from .state import context

blp = Blueprint("naming", __name__, url_prefix="/",
                description="Identifier systems of the master patient index, as NamingSystem")

ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
SEARCH_PARAMS = ("_id", "value", "type")


def _published() -> list[dict[str, Any]]:
    ctx = context()
    stamp = now().date().isoformat()
    return list(naming_systems(ctx.registry, stamp))


def _read_only() -> None:
    if request.method != "GET":
        raise errors.MethodNotAllowed("NamingSystem is read-only: the registry is configuration "
                                      "(FHIR_IDENTIFIER_SYSTEMS)")


def _matches(ns: dict[str, Any], name: str, value: str) -> bool:
    wanted = value.split(",")
    if name == "_id":
        return ns["id"] in wanted
    if name == "value":
        return any(u["value"] in wanted for u in ns["uniqueId"])
    codes = {c["code"] for c in ns["type"]["coding"]}
    codes |= {f"{c['system']}|{c['code']}" for c in ns["type"]["coding"]}
    return bool(codes & set(wanted))


@blp.route("/NamingSystem", methods=ALL_METHODS)
def search() -> Response:
    """search-type on NamingSystem: every published identifier system"""
    _read_only()
    ctx = context()
    found = _published()
    applied: list[tuple[str, str]] = []
    ignored: list[str] = []
    for name, value in query_items():
        if name in SEARCH_PARAMS:
            found = [ns for ns in found if _matches(ns, name, value)]
            applied.append((name, value))
        elif not name.startswith("_format") and name != "_pretty":
            ignored.append(name)
    entries = [match_entry(ctx, _stored(ns), ns) for ns in found]
    if ignored:
        entries.append(outcome_entry(errors.operation_outcome(
            errors.Issue(f"Search parameter '{n}' was ignored: not supported on NamingSystem",
                         code="not-supported", severity="warning", expression=(n,))
            for n in ignored)))
    return render(200, bundle("searchset", entries, total=len(found),
                              links=[link("self", page_url(ctx, "NamingSystem", applied))]))


@blp.route("/NamingSystem/<rid>", methods=ALL_METHODS)
def read(rid: str) -> Response:
    """read on NamingSystem"""
    _read_only()
    for ns in _published():
        if ns["id"] == rid:
            return render(200, ns)
    raise errors.NotFound(f"Resource NamingSystem/{rid} is not known")


def _stored(ns: dict[str, Any]) -> Stored:
    return Stored("NamingSystem", ns["id"], 1, now(), False, ns, "GET", "")
