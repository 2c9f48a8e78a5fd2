"""Every request leaves an AuditEvent before its answer leaves the server; when the
audit log cannot be written the request fails with 503 (no unaudited access)."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from flask import Flask, Response, g, request

from .. import errors
from ..audit.chain import append
from ..audit.events import Facts, audit_event
from ..auth.access import CARE
from ..storage.indexing import patient_of
from .guard import PUBLIC
from .negotiation import render
from .state import state

log = logging.getLogger(__name__)
MAX_PATIENTS = 200  # per event; a larger page is listed up to here

_RULES = {
    ("/<rtype>", "GET"): "search-type", ("/<rtype>", "POST"): "create",
    ("/<rtype>", "PUT"): "update", ("/<rtype>", "DELETE"): "delete",
    ("/<rtype>/_search", "POST"): "search-type",
    ("/<rtype>/<rid>", "GET"): "read", ("/<rtype>/<rid>", "PUT"): "update",
    ("/<rtype>/<rid>", "PATCH"): "patch", ("/<rtype>/<rid>", "DELETE"): "delete",
    ("/<rtype>/<rid>/_history", "GET"): "history-instance",
    ("/<rtype>/_history", "GET"): "history-type", ("/_history", "GET"): "history-system",
    ("/<rtype>/<rid>/_history/<vid>", "GET"): "vread",
    ("/<rtype>/<rid>/<ctype>", "GET"): "search-type",
    ("/", "POST"): "transaction",
    ("/oauth/token", "POST"): "token",
    ("/oauth/login", "POST"): "login",
    ("/AuditEvent", "GET"): "search-type",
}


def _interaction() -> str:
    rule = request.url_rule.rule if request.url_rule is not None else request.path
    code = _RULES.get((rule, request.method))
    if code:
        return code
    if "$" in rule:
        return "operation:" + rule.rsplit("$", 1)[1]
    return "read" if request.method == "GET" else request.method.lower()


def _patients(response: Response) -> list[str]:
    found: list[str] = []
    args = request.view_args or {}
    if args.get("rtype") == "Patient" and args.get("rid"):
        found.append(args["rid"])
    if response.mimetype in ("application/fhir+json", "application/json") and response.status_code < 400:
        try:
            body: Any = orjson.loads(response.get_data())
        except orjson.JSONDecodeError:
            body = None
        resources = []
        if isinstance(body, dict):
            if body.get("resourceType") == "Bundle":
                resources = [e.get("resource") for e in body.get("entry", []) if isinstance(e, dict)]
            else:
                resources = [body]
        for res in resources:
            pid = patient_of(res) if isinstance(res, dict) else None
            if pid and pid not in found:
                found.append(pid)
    return found[:MAX_PATIENTS]


def _emergency(who: str | None, patients: list[str]) -> bool:
    if not who or not who.startswith("Practitioner/"):
        return False
    col = state().repo.db[CARE]
    return any((col.find_one({"_id": f"{who}|{p}"}, {"emergency": 1}) or {}).get("emergency")
               for p in patients[:20])


def record(response: Response) -> Response:
    if request.path in PUBLIC or (request.path.startswith("/oauth/")
                                  and request.path not in ("/oauth/token", "/oauth/login")) \
            or request.path.startswith(("/openapi.json", "/docs")):
        return response
    caller = g.get("caller")
    patients = _patients(response)
    who = None
    if caller is not None:
        who = caller.practitioner or (f"Patient/{caller.patient}" if caller.kind == "patient" else None)
    args = request.view_args or {}
    resource = f"{args['rtype']}/{args['rid']}" if args.get("rtype") and args.get("rid") else None
    facts = Facts(
        interaction=_interaction(), at=state().clock(), status=response.status_code,
        method=request.method, path=request.path, query=request.query_string.decode(errors="replace"),
        who=who, client_id=caller.client_id if caller else g.get("oauth_client", ""),
        organization=caller.organization if caller else None, kind=caller.kind if caller else "",
        patients=tuple(patients), resource=resource, emergency=_emergency(who, patients),
        detail=g.get("audit_detail", ""),
    )
    try:
        append(state().repo.db, audit_event(facts), patients)
    except Exception:  # noqa: BLE001 - any failure to audit must stop the answer
        log.exception("audit record could not be written")
        return render(503, errors.ServerError(
            "The audit log could not be written, so the request was not completed").outcome())
    return response


def register(app: Flask) -> None:
    app.after_request(record)
