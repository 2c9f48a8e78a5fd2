"""Bulk Data export over HTTP (FHIR Bulk Data Access IG 2.0.0, export.html), with
the FHIR asynchronous request pattern (R4 async.html):

* kick-off: ``GET|POST [base]/$export``, ``[base]/Patient/$export`` and
  ``[base]/Group/{id}/$export`` with ``Prefer: respond-async`` answer 202 with
  ``Content-Location``, the status URL;
* status: ``GET [base]/bulk-status/{job}`` answers 202 with ``X-Progress`` and
  ``Retry-After`` while the job runs, 200 with the manifest when it is complete, the
  job's error (an OperationOutcome) when it failed; ``DELETE`` cancels (202);
* files: ``GET [base]/bulk-files/{job}/{Type}.ndjson``, NDJSON
  (``application/fhir+ndjson``). The manifest says ``requiresAccessToken: true``:
  only the client that kicked the export off reads its status and files, with a
  valid access token; any other caller gets 404, as for a job that does not exist.

Exports are for backend clients (SMART Backend Services, ``system/`` scopes) and
operators; the work runs in each server process's export thread (``bulk/runner.py``),
started here the first time a process sees an export request, and by the gunicorn
worker at boot so that jobs left by a worker that died are resumed.

Group-level export is Patient-level export of the group's current members (read
when the export is kicked off; ``patient`` narrows them further): the caller must be
able to read the Group (another organisation's answers 404, as a read does), and a
member out of the client's reach is reported in the manifest's ``error`` file, like
a ``patient`` out of reach at Patient level. ``_since`` applies to every member alike
(a member added to the group after it gets only what changed after it).
"""

from __future__ import annotations

import dataclasses
import threading
from datetime import UTC, timedelta
from email.utils import format_datetime
from typing import Any

from flask import Flask, Response, current_app, g, request, send_file
from flask_smorest import Blueprint

from .. import errors
from ..audit.events import Facts, audit_event
from ..auth.policy import COMPARTMENT_TYPES
from ..bulk import files, jobs
from ..bulk import request as bulk_request
from ..bulk.runner import Runner, progress, stored_spec
from ..interactions import search
from ..interactions.read import read
from ..model.groups import GROUP, member_ids
from ..model.types import SUPPORTED_TYPES
from .auditing import EXTENSION, MAX_PATIENTS, AuditSetup
from .negotiation import render
from .operations import operation_params
from .resources import check_type
from .state import base_url, context, prefer, state

blp = Blueprint("export", __name__, url_prefix="/",
                description="Bulk Data export: kick-off, status, files")

RUNNER = "fhirserver.export"
#: Jobs one client may have waiting or running at once (export.html leaves the
#: limit to the server; more are answered 429).
MAX_ACTIVE = 1
RETRY_AFTER = 2  # seconds between status polls that the status answer suggests
NDJSON = "application/fhir+ndjson"
#: What the job keeps of the token: enough to rebuild the caller in the worker.
CLAIMS = ("scope", "kind", "sub", "client_id", "organization", "jti", "iat", "fhirUser",
          "patient")
_start = threading.Lock()


def start_runner(app: Flask) -> Runner | None:
    """This process's export thread for ``app`` (started once); None when
    ``FHIR_EXPORT_THREADS`` is 0."""
    with _start:
        runner: Runner | None = app.extensions.get(RUNNER)
        if runner is not None and runner.alive:
            return runner
        st = app.extensions["fhirserver"]
        if st.settings.export_threads <= 0:
            return None
        runner = Runner(st.repo, st.settings, lambda job, patients, detail:
                        audit_export(app, job, patients, detail), st.clock)
        runner.start()
        app.extensions[RUNNER] = runner
        return runner


def audit_export(app: Flask, job: dict[str, Any], patients: list[str], detail: str) -> None:
    """One AuditEvent per :data:`MAX_PATIENTS` patients whose records an export wrote,
    so that each patient's access trail shows the export."""
    setup: AuditSetup = app.extensions[EXTENSION]
    claims = job["claims"]
    for i in range(0, len(patients), MAX_PATIENTS):
        chunk = patients[i:i + MAX_PATIENTS]
        facts = Facts(interaction="operation:export", at=app.extensions["fhirserver"].clock(),
                      status=200, method=job["method"], path=job["path"],
                      client_id=str(claims.get("client_id", "")),
                      organization=claims.get("organization"), kind=str(claims.get("kind", "")),
                      patients=tuple(chunk), detail=detail)
        setup.appender.append(audit_event(facts), chunk, setup.keys, setup.checkpoints)


def _owner() -> str | None:
    """Whose exports the caller's token opens: a backend client's (by its client id)
    or an operator's (by subject). Other tokens (a user's or a patient's) open none,
    even when issued to the same client id: a confidential client also signs users
    in, and its patients' tokens must not reach its organisation's export."""
    caller = g.caller
    if caller.kind == "system" and caller.client_id:
        return f"client/{caller.client_id}"
    if caller.kind == "operator":
        return f"operator/{caller.subject}"
    return None


def _respond_async() -> bool:
    return any(item.strip().lower() == "respond-async"
               for part in request.headers.get("Prefer", "").split(";")
               for item in part.split(","))


def _may_search(rtype: str) -> bool:
    ctx = context()
    try:
        if ctx.access is not None:
            ctx.access.decision(rtype, "search")
    except errors.Forbidden:
        return False
    return True


def _kickoff(level: str, group: str | None = None) -> Response:
    ctx = context()
    caller = g.get("caller")
    if caller is None or caller.kind not in ("system", "operator"):
        raise errors.Forbidden("Bulk Data export is for backend clients (system/ scopes) and "
                               "operators")
    if not _respond_async():
        raise errors.Invalid("A Bulk Data kick-off request needs 'Prefer: respond-async' "
                             "(export.html#headers)", expression="Prefer")
    # The group as the caller may read it: another organisation's is 404, as a read.
    members = member_ids(read(ctx, GROUP, group).resource) if group is not None else None
    lenient = prefer("handling") == "lenient"
    candidates = [t for t in SUPPORTED_TYPES if level == "system" or t in COMPARTMENT_TYPES]
    req = bulk_request.parse(level, operation_params(), lenient=lenient,
                             candidates=candidates, allowed=_may_search)
    if members is not None:
        asked = set(req.patients) if req.patients is not None else None
        req = dataclasses.replace(req, patients=tuple(
            m for m in members if asked is None or m in asked))
    for rtype, queries in req.filters:
        for query in queries:
            search.parse(ctx, rtype, list(query), strict=True)  # 400 naming the parameter
    db = ctx.repo.db
    owner = _owner()
    if owner is None:
        raise errors.Forbidden("A backend client's token without a client id starts no export")
    job_id = jobs.new_id()
    now = state().clock()
    claims = g.get("claims") or {}
    queued = jobs.create(db, {
        "_id": job_id, "owner": owner, "created": now, "transaction_time": now,
        "claims": {k: claims[k] for k in CLAIMS if k in claims},
        "spec": stored_spec(req), "request": request.url, "base_url": base_url(),
        "method": request.method, "path": request.path,
        **({"group": group} if group is not None else {}),
    }, expires=now + timedelta(minutes=state().settings.export_retention_minutes))
    if queued is None:
        raise errors.Throttled(f"This client already has {MAX_ACTIVE} export running: wait for "
                               "it to finish, or cancel it (DELETE its status URL)",
                               headers={"Retry-After": "30"})
    of = f" of Group/{group}" if group is not None else ""
    g.audit_detail = f"bulk export {job_id}{of} kicked off: {', '.join(req.types)}"
    runner = start_runner(current_app._get_current_object())  # type: ignore[attr-defined]
    if runner is not None:
        runner.wake()
    issues = [errors.Issue(f"Export {job_id} accepted; poll its status URL", code="informational",
                           severity="information")]
    issues += [errors.Issue(f"Ignored: {text}", code="not-supported", severity="warning")
               for text in req.ignored]
    return render(202, errors.operation_outcome(issues),
                  {"Content-Location": f"{base_url()}/bulk-status/{job_id}"})


@blp.route("/$export", methods=["GET", "POST"])
def system_export() -> Response:
    """System-level $export: every type the client may search, for the patients it reaches"""
    return _kickoff("system")


@blp.route("/<rtype>/$export", methods=["GET", "POST"])
def patient_export(rtype: str) -> Response:
    """Patient-level $export: the compartments of the patients the client reaches"""
    check_type(rtype)
    if rtype != "Patient":
        raise errors.NotFound(f"Operation '$export' is not defined on {rtype}")
    return _kickoff("patient")


@blp.route("/<rtype>/<rid>/$export", methods=["GET", "POST"])
def group_export(rtype: str, rid: str) -> Response:
    """Group-level $export: the compartments of the group's members the client reaches"""
    check_type(rtype)
    if rtype != GROUP:
        raise errors.NotFound(f"Operation '$export' is not defined on {rtype} instances")
    return _kickoff("group", rid)


def _own(job_id: str) -> dict[str, Any]:
    """The caller's job, or 404 (another client's job answers as a missing one)."""
    start_runner(current_app._get_current_object())  # type: ignore[attr-defined]
    job = jobs.get(state().repo.db, job_id)
    owner = _owner()
    if job is None or owner is None or job["owner"] != owner or job["status"] == "cancelled":
        raise errors.NotFound(f"No export {job_id} (finished exports are removed after "
                              f"{state().settings.export_retention_minutes} minutes)")
    return job


def manifest(job: dict[str, Any], base: str) -> dict[str, Any]:
    """The complete-status body (export.html#response---complete-status)."""
    def url(name: str) -> str:
        return f"{base}/bulk-files/{job['_id']}/{name}"

    return {
        "transactionTime": job["transaction_time"].astimezone(UTC).isoformat(
            timespec="milliseconds").replace("+00:00", "Z"),
        "request": job["request"],
        "requiresAccessToken": True,
        "output": [{"type": o["type"], "url": url(o["name"]), "count": o["count"]}
                   for o in job["outputs"]],
        "error": [{"type": "OperationOutcome", "url": url(o["name"]), "count": o["count"]}
                  for o in job.get("error_files") or []],
    }


@blp.route("/bulk-status/<job_id>", methods=["GET"])
def export_status(job_id: str) -> Response:
    """Bulk Data status: 202 with X-Progress while running, 200 with the manifest"""
    job = _own(job_id)
    if job["status"] in jobs.ACTIVE:
        return render(202, None, {"X-Progress": progress(job), "Retry-After": str(RETRY_AFTER)})
    if job["status"] == "failed":
        failure = job.get("failure") or {}
        return render(int(failure.get("status", 500)), failure.get("outcome"))
    expires = format_datetime(job["expires"].replace(tzinfo=UTC), usegmt=True)
    return render(200, manifest(job, job["base_url"]), {"Expires": expires},
                  mimetype="application/json")


@blp.route("/bulk-status/<job_id>", methods=["DELETE"])
def export_cancel(job_id: str) -> Response:
    """Bulk Data delete request: cancel the export and remove its files"""
    job = _own(job_id)
    jobs.cancel(state().repo.db, job["_id"], state().clock())
    if job["status"] not in jobs.ACTIVE:
        files.remove(state().settings.exports, job["_id"])
    g.audit_detail = f"bulk export {job_id} cancelled"
    return render(202, errors.information(f"Export {job_id} is cancelled; its files are removed"))


@blp.route("/bulk-files/<job_id>/<name>", methods=["GET"])
def export_file(job_id: str, name: str) -> Response:
    """Bulk Data output file: NDJSON, for the client that kicked the export off"""
    job = _own(job_id)
    listed = {o["name"] for o in (*job["outputs"], *(job.get("error_files") or ()))}
    path = files.path_of(state().settings.exports, job_id, name)
    if job["status"] != "complete" or name not in listed or path is None or not path.is_file():
        raise errors.NotFound(f"Export {job_id} has no file {name}")
    g.audit_detail = f"bulk export {job_id}: {name} downloaded"
    return send_file(path, mimetype=NDJSON, conditional=False, etag=False, max_age=0)
