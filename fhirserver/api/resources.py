"""The RESTful interactions on resource types and instances (R4 http.html).

Thin: each view reads the HTTP request, calls one interaction, renders its result.
"""

from __future__ import annotations

from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any

from flask import Response, g, request
from flask.views import MethodView
from flask_smorest import Blueprint

from .. import errors
from ..interactions import history as history_
from ..interactions import read as read_
from ..interactions import search as search_
from ..interactions import write
from ..interactions.context import Result, run_single
from ..model.types import ALL_R4_TYPES, SUPPORTED_TYPES
from ..storage.records import Stored
from .body import PATCH_TYPES, json_body
from .negotiation import render, version_headers
from .state import context, prefer

blp = Blueprint(
    "resources", __name__, url_prefix="/",
    description="FHIR R4 RESTful interactions on Patient, Observation and DiagnosticReport",
)


SYSTEM_PATHS = ("metadata", "_history")


def check_type(rtype: str) -> None:
    if rtype in SYSTEM_PATHS:
        raise errors.MethodNotAllowed(f"Method {request.method} is not allowed on '/{rtype}'")
    if rtype not in SUPPORTED_TYPES:
        if rtype in ALL_R4_TYPES:
            raise errors.NotFound(f"Resource type '{rtype}' is not supported by this server")
        raise errors.NotFound(f"Unknown resource type '{rtype}'")


def query_items() -> list[tuple[str, str]]:
    return list(request.args.items(multi=True))


def strict() -> bool:
    return prefer("handling") == "strict"


def written(result: Result) -> Response:
    """A create/update/patch answer shaped by Prefer: return= (http.html#ops)."""
    stored = result.stored
    headers: dict[str, str] = {}
    if stored is not None:
        headers.update(version_headers(stored))
    if result.location:
        headers["Location"] = context().url(result.location)
    wanted = prefer("return") or "representation"
    body: dict[str, Any] | None
    if wanted == "minimal":
        body = None
    elif wanted == "OperationOutcome":
        body = result.outcome or errors.information(f"{request.method} succeeded ({result.status})")
    else:
        body = stored.resource if stored is not None else result.outcome
    return render(result.status, body, headers)


def not_modified(stored: Stored) -> bool:
    """If-None-Match / If-Modified-Since on read (http.html#cread)."""
    inm = request.headers.get("If-None-Match")
    if inm:
        tags = {t.strip() for t in inm.split(",")}
        return "*" in tags or stored.etag in tags or f'"{stored.version}"' in tags
    ims = request.headers.get("If-Modified-Since")
    if ims:
        try:
            since = parsedate_to_datetime(ims)
        except (TypeError, ValueError):
            return False
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        return stored.last_updated.replace(microsecond=0) <= since
    return False


@blp.route("/<rtype>")
class TypeLevel(MethodView):
    def get(self, rtype: str) -> Response:
        """search-type: GET [base]/[type]?params (search.html)"""
        check_type(rtype)
        return render(200, search_.search(context(), rtype, query_items(), strict=strict(),
                                          note=_audit_note))

    def post(self, rtype: str) -> Response:
        """create: POST [base]/[type], conditional with If-None-Exist (http.html#create)"""
        check_type(rtype)
        body = json_body()
        ine = request.headers.get("If-None-Exist")
        return written(run_single(context(), lambda p: write.create(p, rtype, body, if_none_exist=ine)))

    def put(self, rtype: str) -> Response:
        """conditional update: PUT [base]/[type]?criteria (http.html#cond-update)"""
        check_type(rtype)
        body = json_body()
        query, if_match = request.query_string.decode(), request.headers.get("If-Match")
        return written(run_single(
            context(), lambda p: write.conditional_update(p, rtype, query, body, if_match=if_match),
            retry=not if_match,
        ))

    def delete(self, rtype: str) -> Response:
        """conditional delete: DELETE [base]/[type]?criteria (http.html#cdelete)"""
        check_type(rtype)
        query = request.query_string.decode()
        result = run_single(context(), lambda p: write.conditional_delete(p, rtype, query))
        return deleted(result)


@blp.route("/<rtype>/_search", methods=["POST"])
def search_post(rtype: str) -> Response:
    """search-type via POST with form parameters (http.html#search): same as GET."""
    check_type(rtype)
    if request.mimetype != "application/x-www-form-urlencoded":
        raise errors.UnsupportedMedia("POST _search takes application/x-www-form-urlencoded parameters")
    items = query_items() + list(request.form.items(multi=True))
    return render(200, search_.search(context(), rtype, items, strict=strict(), note=_audit_note))


def _audit_note(text: str) -> None:
    """What the request's AuditEvent says of it (an identity look-up, api/auditing.py)."""
    g.audit_detail = text


@blp.route("/<rtype>/_history")
def type_history(rtype: str) -> Response:
    """history-type (http.html#history)"""
    check_type(rtype)
    return render(200, history_.history(context(), query_items(), rtype))


def deleted(result: Result) -> Response:
    headers = version_headers(result.stored) if result.stored else {}
    if prefer("return") == "minimal":
        return render(204, None, headers)
    return render(200, result.outcome, headers)


@blp.route("/<rtype>/<rid>")
class Instance(MethodView):
    def get(self, rtype: str, rid: str) -> Response:
        """read (http.html#read); 410 when deleted; 304 on If-None-Match/If-Modified-Since"""
        check_type(rtype)
        stored = read_.read(context(), rtype, rid)
        if not_modified(stored):
            return render(304, None, version_headers(stored))
        return render(200, stored.resource, version_headers(stored))

    def put(self, rtype: str, rid: str) -> Response:
        """update, or update-as-create for a new client-chosen id (http.html#update)"""
        check_type(rtype)
        body = json_body()
        if_match = request.headers.get("If-Match")
        return written(run_single(
            context(), lambda p: write.update(p, rtype, rid, body, if_match=if_match),
            retry=not if_match,
        ))

    def patch(self, rtype: str, rid: str) -> Response:
        """patch with JSON Patch (http.html#patch)"""
        check_type(rtype)
        ops = json_body(PATCH_TYPES)
        if_match = request.headers.get("If-Match")
        return written(run_single(
            context(), lambda p: write.patch(p, rtype, rid, ops, if_match=if_match),
            retry=not if_match,
        ))

    def delete(self, rtype: str, rid: str) -> Response:
        """delete (http.html#delete): a missing or deleted resource is not an error"""
        check_type(rtype)
        if_match = request.headers.get("If-Match")
        return deleted(run_single(
            context(), lambda p: write.delete(p, rtype, rid, if_match=if_match), retry=not if_match
        ))


@blp.route("/<rtype>/<rid>/_history")
def instance_history(rtype: str, rid: str) -> Response:
    """history-instance (http.html#history)"""
    check_type(rtype)
    return render(200, history_.history(context(), query_items(), rtype, rid))


@blp.route("/<rtype>/<rid>/_history/<vid>")
def vread(rtype: str, rid: str, vid: str) -> Response:
    """vread (http.html#vread)"""
    check_type(rtype)
    stored = read_.vread(context(), rtype, rid, vid)
    return render(200, stored.resource, version_headers(stored))
