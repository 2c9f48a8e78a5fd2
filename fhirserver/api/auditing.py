"""Every request leaves an AuditEvent before its answer leaves the server; when the
audit log cannot be written the request fails with 503 (no unaudited access).

The audit log's keys come from the master key, which is checked against the
database when the app is created (``crypto/binding.py``): a server holding another
key does not start, rather than extend the chain under a key its verification lacks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from flask import Flask, Response, current_app, g, request

from .. import errors
from ..audit import checkpoints, shared_tail
from ..audit.appender import Appender
from ..audit.chain import Keys
from ..audit.events import Facts, audit_event
from ..audit.queries import PURPOSE as PSEUDONYM_PURPOSE
from ..audit.queries import Pseudonyms, describe, pseudonymise
from ..auth import reach_cache
from ..auth.access import CARE
from ..auth.reach import emergency_now
from ..crypto.binding import bind
from ..crypto.master import load
from ..model.identifier_systems import Registry, load_registry
from .guard import public
from .negotiation import render
from .state import state

log = logging.getLogger(__name__)
MAX_PATIENTS = 200  # per event; a larger page is listed up to here
EXTENSION = "fhirserver.audit"


@dataclass(frozen=True)
class AuditSetup:
    """What recording needs besides the request: keys, checkpoint file, registry, and
    the app's appender (group commit: one per process and database)."""

    keys: Keys
    checkpoints: Path
    pseudonyms: Pseudonyms
    registry: Registry
    appender: Appender


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
    ("/oauth/launch", "POST"): "operation:launch",
    ("/AuditEvent", "GET"): "search-type",
    ("/bulk-status/<job_id>", "GET"): "operation:export-status",
    ("/bulk-status/<job_id>", "DELETE"): "operation:export-cancel",
    ("/bulk-files/<job_id>/<name>", "GET"): "operation:export-file",
}


def _interaction() -> str:
    rule = request.url_rule.rule if request.url_rule is not None else request.path
    code = _RULES.get((rule, request.method))
    if code:
        return code
    if "$" in rule:
        return "operation:" + rule.rsplit("$", 1)[1]
    return "read" if request.method == "GET" else request.method.lower()


def _patients(limit: int | None = MAX_PATIENTS) -> list[str]:
    """The patients the request is about, from what the interactions noted as they
    ran (``Access.touched``: returned, counted or changed), the patient named in the
    path, and what a view outside the interactions named (``g.audit_patients``);
    the first ``limit`` of them (None: all)."""
    found: list[str] = []
    args = request.view_args or {}
    if args.get("rtype") == "Patient" and args.get("rid"):
        found.append(args["rid"])
    access = g.get("access")
    for p in (*(access.touched if access is not None else ()), *g.get("audit_patients", ())):
        if p not in found:
            found.append(p)
    return found if limit is None else found[:limit]


def _emergency(who: str | None, patients: list[str]) -> bool:
    """Did a clinician reach any of ``patients`` (all of them, however many a page
    held) by break-the-glass? This request's authorization already read the
    relationships it relied on (``Access.emergency``): an emergency it saw is one,
    even when the request then ended it (deleting the Patient) or its time ran out
    meanwhile, and one it opened (breaking the glass) is one. What it did not see was
    none for a read. For a change it was none too when what this process holds is
    exact (auth/reach_cache.py: the embedded database, whose workers signal each
    other's changes); otherwise the cache may predate another worker's
    break-the-glass, and one query reads the clinician's emergency relationships
    running when the request was authorized (an ended one gave this request
    nothing: it was refused). That query was one of a write's seven commands."""
    if not who or not who.startswith("Practitioner/"):
        return False
    access = g.get("access")
    if access is None or access.caller is None or access.caller.practitioner != who:
        access = None
    settled = request.method in ("GET", "HEAD") or reach_cache.exact(state().repo.db)
    unknown: list[str] = []
    for p in patients:
        known = access.emergency(p) if access is not None else None
        if known:
            return True
        if known is None or not settled:
            unknown.append(p)
    if not unknown:
        return False
    now = access.now if access is not None else state().clock()
    broken = {d["patient"] for d in state().repo.db[CARE].find(
        {"who": who, "emergency": True, "until": {"$gt": now}},
        {"patient": 1, "until": 1, "emergency": 1, "emergency_until": 1})
        if emergency_now(d, now)}
    return not broken.isdisjoint(unknown)


#: The OAuth endpoints whose requests are audited: sign-in, token issue, and the EHR
#: launch (it names a patient).
AUDITED_OAUTH = ("/oauth/token", "/oauth/login", "/oauth/launch")


def _audited() -> bool:
    return not (public(request.path) and request.path not in AUDITED_OAUTH)


#: Requests that may change data: recorded before they run as well as after.
CHANGING = ("POST", "PUT", "PATCH", "DELETE")


def intend() -> Response | None:
    """Before a request that may change data: record that it started, or refuse it
    (503) when the log cannot be written, so that no change is ever made that the
    log does not show (a crash or a failing log after the change leaves this record)."""
    if request.method not in CHANGING or not request.path.startswith("/") or not _audited() \
            or request.path.endswith("/_search") or request.path.startswith("/oauth/"):
        return None
    caller = g.get("caller")
    setup: AuditSetup = current_app.extensions[EXTENSION]
    args = request.view_args or {}
    who = caller.practitioner or (f"Patient/{caller.patient}" if caller.kind == "patient" else None) \
        if caller is not None else None
    patients = [args["rid"]] if args.get("rtype") == "Patient" and args.get("rid") else []
    facts = Facts(
        interaction=_interaction(), at=state().clock(), status=0, method=request.method,
        path=request.path, who=who, client_id=caller.client_id if caller else "",
        organization=caller.organization if caller else None, kind=caller.kind if caller else "",
        patients=tuple(patients),
        resource=f"{args['rtype']}/{args['rid']}" if args.get("rtype") and args.get("rid") else None,
        intent=True,
    )
    try:
        setup.appender.append(audit_event(facts), patients, setup.keys, setup.checkpoints,
                              advance=False)  # the outcome's record follows and moves the head
    except Exception:
        log.exception("audit record could not be written")
        return render(503, errors.ServerError(
            "The audit log could not be written, so the request was not started").outcome())
    return None


def record(response: Response) -> Response:
    if not _audited():
        return response
    caller = g.get("caller")
    patients = _patients()
    who = None
    if caller is not None:
        who = caller.practitioner or (f"Patient/{caller.patient}" if caller.kind == "patient" else None)
    args = request.view_args or {}
    resource = f"{args['rtype']}/{args['rid']}" if args.get("rtype") and args.get("rid") else None
    setup: AuditSetup = current_app.extensions[EXTENSION]
    interaction = _interaction()
    query = request.query_string.decode(errors="replace")
    searched = args.get("ctype") or args.get("rtype") or request.path.strip("/").split("/")[0]
    facts = Facts(
        interaction=interaction, at=state().clock(), status=response.status_code,
        method=request.method, path=request.path, query=pseudonymise(query, setup.pseudonyms),
        query_description=describe(searched or None, query, setup.registry)
        if interaction.startswith("search") else "",
        who=who, client_id=caller.client_id if caller else g.get("oauth_client", ""),
        organization=caller.organization if caller else None, kind=caller.kind if caller else "",
        patients=tuple(patients), resource=resource,
        emergency=_emergency(who, _patients(None)),
        detail=g.get("audit_detail", ""),
    )
    try:
        setup.appender.append(audit_event(facts), patients, setup.keys, setup.checkpoints)
    except Exception:
        log.exception("audit record could not be written")
        return render(503, errors.ServerError(
            "The audit log could not be written, so the request was not completed").outcome())
    return response


def register(app: Flask) -> None:
    st = app.extensions["fhirserver"]
    master = load(st.settings)
    bind(st.repo.db, master)  # WrongMasterKey: the app is not created
    app.extensions[EXTENSION] = AuditSetup(
        Keys.derive(master), checkpoints.path_of(st.settings),
        Pseudonyms(master.derive(PSEUDONYM_PURPOSE)), load_registry(st.settings.identifier_systems),
        Appender(st.repo.db, shared_tail=shared_tail.path_of(st.settings, st.repo.db.name)))
    app.before_request(intend)
    app.after_request(record)
