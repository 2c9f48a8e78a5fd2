"""The export work, outside any request (export.html#bulk-data-kick-off-request:
"the server SHALL ... process the request asynchronously").

Each server process runs a daemon thread that claims jobs from the database
(:mod:`.jobs`) and writes their files. A job runs as the client that kicked it off:
its token's claims rebuild the caller, and each type's resources are selected by the
same search machinery, with the same access filter, as the client's own searches
(``interactions/search.py``): what the client could not find by searching, hidden or
restricted by the patient's consent, is never exported. Resources are read a page
at a time in ``_id`` order (keyset paging), never a whole collection at once, and
each leaves through the same minimum-disclosure view as any answer
(``interactions/disclosure.py``): identity numbers masked unless the client holds
the scope that shows them.

After each page the job's checkpoint (type, cursor, bytes written, count) is saved
with its lease renewed; the patients whose records the page held are recorded in
the audit log first, so a patient's access trail names every export of their data.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode

from pymongo.errors import InvalidOperation

from .. import errors
from ..auth.access import Access
from ..auth.callers import caller_from_claims
from ..auth.tokens import revoked_now
from ..config import Settings
from ..interactions import search
from ..interactions.context import Context
from ..interactions.disclosure import disclosed
from ..model import json_text
from ..storage.indexing import patient_of
from ..storage.repository import Repository
from . import files, jobs
from .request import ExportRequest

log = logging.getLogger(__name__)
PAGE = 500
POLL = 1.0  # seconds between looks for work when idle
SWEEP_EVERY = timedelta(seconds=60)
ORDER = [("_id", 1)]
MISSING_CHUNK = 200  # patients looked for per query when reporting those out of reach

#: (job, patients, detail): record that ``patients``' records went into the export
Audit = Callable[[dict[str, Any], list[str], str], None]


def export_request(job: dict[str, Any]) -> ExportRequest:
    spec = job["spec"]
    return ExportRequest(
        spec["level"], tuple(spec["types"]),
        tuple((f["type"], tuple(tuple(parse_qsl(q, keep_blank_values=True)) for q in f["queries"]))
              for f in spec["filters"]),
        spec.get("since"), tuple(spec["patients"]) if spec.get("patients") is not None else None,
        spec.get("format") or "application/fhir+ndjson")


def stored_spec(req: ExportRequest) -> dict[str, Any]:
    return {"level": req.level, "types": list(req.types),
            # query strings: FerretDB stores no arrays within arrays
            "filters": [{"type": t, "queries": [urlencode(q) for q in qs]} for t, qs in req.filters],
            "since": req.since, "format": req.output_format,
            "patients": list(req.patients) if req.patients is not None else None}


def selection(ctx: Context, req: ExportRequest, rtype: str) -> dict[str, Any]:
    """The MongoDB filter of ``rtype``'s resources in the export, the caller's access
    condition included (as in their searches)."""
    parts = [search.matching(ctx, search.parse(ctx, rtype, list(q), strict=True), lookups=False)
             for q in req.queries(rtype)]
    flt = parts[0] if len(parts) == 1 else {"$or": parts}
    extra: list[dict[str, Any]] = []
    field_ = "_id" if rtype == "Patient" else "pat"
    if req.patients is not None:
        extra.append({field_: {"$in": list(req.patients)}})
    elif req.level == "patient" and rtype != "Patient":
        extra.append({"pat": {"$type": "string"}})  # the patients' compartments only
    for e in extra:
        flt = {"$and": [flt, e]} if flt else e
    return flt


def progress(job: dict[str, Any]) -> str:
    """X-Progress (export.html#bulk-data-status-request): where the job is."""
    if job["status"] == "queued":
        return "queued"
    types = job["spec"]["types"]
    step = job["step"]
    if step["index"] >= len(types):
        return "writing the manifest"
    total = "?" if step.get("total") is None else step["total"]
    return f"{types[step['index']]} {step['count']}/{total} (type {step['index'] + 1} of {len(types)})"


@dataclass
class Runner:
    """One process's export worker."""

    repo: Repository
    settings: Settings
    audit: Audit
    clock: Callable[[], datetime]
    page: int = PAGE
    name: str = field(default_factory=lambda: f"{os.getpid()}-{uuid.uuid4().hex[:8]}")
    _stop: threading.Event = field(default_factory=threading.Event)
    _wake: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _swept: datetime | None = None

    @property
    def root(self) -> Any:
        return self.settings.exports

    # -- the thread ---------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=f"export-{self.name}",
                                        daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, wait: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(wait)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                if not self.step():
                    self._wake.wait(POLL)
                    self._wake.clear()
            except InvalidOperation:
                return  # the database connection was closed: the app is gone
            except Exception:  # a worker thread must outlive one bad job
                log.exception("export worker")
                self._stop.wait(POLL)

    def step(self, stop: Callable[[], bool] | None = None) -> bool:
        """Sweep when due, then claim and run one job; False when there was none."""
        now = self.clock()
        if self._swept is None or now - self._swept > SWEEP_EVERY:
            self._swept = now
            sweep(self.repo.db, self.root, now)
        job = jobs.claim(self.repo.db, self.name, now)
        if job is None:
            return False
        self.work(job, stop or self._stop.is_set)
        return True

    # -- one job ------------------------------------------------------------------------

    def context(self, job: dict[str, Any]) -> Context:
        caller = caller_from_claims(job["claims"])
        return Context(self.repo, self.settings, job["base_url"], self.clock,
                       Access(caller, self.repo.db, self.clock(), tz=self.repo.tz))

    def work(self, job: dict[str, Any], stop: Callable[[], bool]) -> None:
        """Run ``job`` from its checkpoint until it is done, cancelled, taken over,
        or ``stop`` says to leave it (its lease then runs out, and any process
        resumes it)."""
        try:
            done = self._work(job, stop)
        except errors.Unavailable:
            # passing (the sharing choices not read in time): left to its lease, which
            # runs out, and any process resumes it from its checkpoint
            log.warning("export %s left for later: the sharing choices were not read in time",
                        job["_id"])
            return
        except errors.FhirError as exc:
            self._fail(job, exc.status, exc.outcome())
            return
        except InvalidOperation:
            raise
        except Exception as exc:  # recorded on the job, answered as 500
            log.exception("export %s failed", job["_id"])
            self._fail(job, 500, errors.ServerError(f"The export failed: {type(exc).__name__}")
                       .outcome())
            return
        if done is False:
            current = jobs.get(self.repo.db, job["_id"])
            if current is None or current["status"] == "cancelled":
                files.remove(self.root, job["_id"])  # another process's, if taken over

    def _fail(self, job: dict[str, Any], status: int, outcome: dict[str, Any]) -> None:
        retention = timedelta(minutes=self.settings.export_retention_minutes)
        jobs.finish(self.repo.db, job, self.name, "failed", self.clock() + retention,
                    failure={"status": status, "outcome": outcome})
        files.remove(self.root, job["_id"])

    def _work(self, job: dict[str, Any], stop: Callable[[], bool]) -> bool | None:
        """True: complete; False: no longer ours (cancelled, taken over); None: left
        for later by ``stop``."""
        db, ctx, req = self.repo.db, self.context(job), export_request(job)
        if job["attempts"] > jobs.MAX_ATTEMPTS:
            raise errors.ServerError(f"The export was started {jobs.MAX_ATTEMPTS} times "
                                     "without finishing")
        step, outputs, issues = dict(job["step"]), list(job["outputs"]), list(job["errors"])
        if step["index"] == 0 and step["cursor"] is None and req.patients:
            issues += self._missing(ctx, req)
        while step["index"] < len(req.types):
            rtype = req.types[step["index"]]
            ctx = self.context(job)
            flt = selection(ctx, req, rtype)
            if step["total"] is None:
                step["total"] = self.repo.count(rtype, flt)
            name = files.name_of(rtype)
            fd = files.open_at(self.root, job["_id"], name, step["offset"])
            try:
                while True:
                    if stop():
                        return None
                    if revoked_now(db, job["claims"]):  # a disabled client exports no more
                        raise errors.Forbidden("The access token that started this export "
                                               "was revoked; the export was stopped")
                    # An export may run for long: each page applies whom the client
                    # reaches and the patients' sharing choices as they are now.
                    ctx = self.context(job)
                    flt = selection(ctx, req, rtype)
                    paging = {"_cursor": step["cursor"]} if step["cursor"] else {}
                    found = search.keyset_page(ctx, rtype, flt, ORDER, self.page, paging)
                    self._write(ctx, job, rtype, found.rows, fd, step)
                    step["cursor"] = found.next[1] if found.next else None
                    if not jobs.checkpoint(db, job, self.name, self.clock(), step=step,
                                           errors=issues):
                        return False
                    if step["cursor"] is None:
                        break
            finally:
                os.close(fd)
            if step["count"]:
                outputs.append({"type": rtype, "name": name, "count": step["count"]})
            else:
                os.unlink(files.job_dir(self.root, job["_id"]) / name)
            step = {"index": step["index"] + 1, "cursor": None, "offset": 0, "count": 0,
                    "total": None}
            if not jobs.checkpoint(db, job, self.name, self.clock(), step=step,
                                   outputs=outputs, errors=issues):
                return False
        error_files = []
        if issues:
            fd = files.open_at(self.root, job["_id"], "OperationOutcome-error.ndjson", 0)
            try:
                os.write(fd, b"".join(json_text.dumps(o) + b"\n" for o in issues))
            finally:
                os.close(fd)
            error_files.append({"type": "OperationOutcome",
                                "name": "OperationOutcome-error.ndjson", "count": len(issues)})
        retention = timedelta(minutes=self.settings.export_retention_minutes)
        return jobs.finish(db, job, self.name, "complete", self.clock() + retention,
                           outputs=outputs, error_files=error_files, finished=self.clock())

    def _write(self, ctx: Context, job: dict[str, Any], rtype: str, page: list[Any], fd: int,
               step: dict[str, Any]) -> None:
        shown = [disclosed(ctx, s.resource) for s in page if s.resource is not None]
        patients = list(dict.fromkeys(p for p in (patient_of(r) for r in shown) if p))
        if patients:
            # Recorded before the data is written: no export the log does not show.
            self.audit(job, patients, f"bulk export {job['_id']}: {rtype} records exported")
        data = b"".join(json_text.dumps(r) + b"\n" for r in shown)
        written = 0
        while written < len(data):
            written += os.write(fd, data[written:])
        step["offset"] += len(data)
        step["count"] += len(shown)

    @staticmethod
    def _missing(ctx: Context, req: ExportRequest) -> list[dict[str, Any]]:
        """An OperationOutcome for each patient asked for (or member of the group)
        that the client cannot see (unknown, deleted and out of reach alike: the
        answer tells them apart by nothing)."""
        wanted = list(req.patients or ())
        seen: set[str] = set()
        for i in range(0, len(wanted), MISSING_CHUNK):
            query = search.parse(ctx, "Patient", [("_id", ",".join(wanted[i:i + MISSING_CHUNK]))])
            seen.update(ctx.repo.find_ids("Patient", search.matching(ctx, query, lookups=False)))
        where = ("patient",) if req.level == "patient" else ("Group.member",)
        return [errors.operation_outcome([errors.Issue(
            f"Patient/{p} is not known", code="not-found", expression=where)])
            for p in wanted if p not in seen]


def sweep(db: Any, root: Any, now: datetime) -> None:
    """Remove expired jobs and their files, and directories no job owns any more."""
    for job_id in jobs.expired(db, now):
        files.remove(root, job_id)
    present = files.directories(root)
    known = jobs.all_ids(db)
    for job_id in present:
        if job_id not in known:
            files.remove(root, job_id)
