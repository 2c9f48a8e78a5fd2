"""Export jobs in the database (``_export_jobs``), so that any server process can
answer their status and carry on their work (export.html#bulk-data-status-request).

A job is ``queued`` when kicked off, ``running`` while a process holds its lease,
then ``complete``, ``failed`` or ``cancelled``. A process claims a job atomically
(``find_one_and_update``) with a lease it renews after every page it writes; a
process that dies (``kill -9``, a worker restart) stops renewing, and once the lease
has run out another process claims the job and resumes it at its last checkpoint
(the type, the paging cursor and the length of the file written so far). A job that
kills its worker every time is failed after :data:`MAX_ATTEMPTS` claims.

Finished jobs carry ``expires``: after it a sweep removes their files and the job
(the status URL answers 404 from then on).
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

JOBS = "_export_jobs"
#: one document per client whose export is waiting or running: ``_id`` is the client
SLOTS = "_export_slots"
LEASE = timedelta(seconds=60)
MAX_ATTEMPTS = 5
ACTIVE = ("queued", "running")
FINISHED = ("complete", "failed", "cancelled")


def new_id() -> str:
    """An id nobody can guess: the status and file URLs carry it."""
    return secrets.token_urlsafe(18)


def create(db: Any, job: dict[str, Any], expires: datetime) -> dict[str, Any] | None:
    """Queue ``job`` unless its owner already has one waiting or running (None then).

    Two kick-offs of one client at the same instant must not both get in, and a count
    followed by an insert lets them: the owner's slot is a document keyed by the owner,
    taken by insert (the primary key decides between racers). The job is written
    first, in a state no runner claims, so a slot never names a job that does not exist
    yet; if its request dies before the slot is settled, the job expires and the slot,
    naming a job no longer active, is taken over by the next kick-off."""
    doc = {**job, "status": "reserving", "lease_until": None, "worker": None, "attempts": 0,
           "step": {"index": 0, "cursor": None, "offset": 0, "count": 0, "total": None},
           "outputs": [], "errors": [], "expires": expires}
    db[JOBS].insert_one(doc)
    if not _take_slot(db, job["owner"], job["_id"]):
        db[JOBS].delete_one({"_id": job["_id"]})
        return None
    db[JOBS].update_one({"_id": job["_id"]}, {"$set": {"status": "queued", "expires": None}})
    return {**doc, "status": "queued", "expires": None}


def _take_slot(db: Any, owner: str, job_id: str) -> bool:
    try:
        db[SLOTS].insert_one({"_id": owner, "job": job_id})
        return True
    except DuplicateKeyError:
        pass
    held = db[SLOTS].find_one({"_id": owner})
    if held is None:
        return _take_slot(db, owner, job_id)
    if db[JOBS].find_one({"_id": held["job"], "status": {"$in": [*ACTIVE, "reserving"]}},
                         {"_id": 1}) is not None:
        return False
    # The slot names a job that has finished, expired or was never queued: take it over,
    # against another kick-off doing the same (compare-and-set on the job it names).
    done = db[SLOTS].update_one({"_id": owner, "job": held["job"]}, {"$set": {"job": job_id}})
    return bool(done.matched_count)


def get(db: Any, job_id: str) -> dict[str, Any] | None:
    return db[JOBS].find_one({"_id": job_id})  # type: ignore[no-any-return]


def claim(db: Any, worker: str, now: datetime) -> dict[str, Any] | None:
    """Take the oldest job that is waiting or whose holder's lease ran out."""
    return db[JOBS].find_one_and_update(  # type: ignore[no-any-return]
        {"status": {"$in": list(ACTIVE)},
         "$or": [{"lease_until": None}, {"lease_until": {"$lt": now}}]},
        {"$set": {"status": "running", "worker": worker, "lease_until": now + LEASE},
         "$inc": {"attempts": 1}},
        sort=[("created", 1)], return_document=ReturnDocument.AFTER)


def checkpoint(db: Any, job: dict[str, Any], worker: str, now: datetime,
               **changes: Any) -> bool:
    """Record progress and renew the lease; False when the job is no longer this
    worker's to run (cancelled, or taken over after the lease ran out)."""
    done = db[JOBS].update_one(
        {"_id": job["_id"], "status": "running", "worker": worker},
        {"$set": {**changes, "lease_until": now + LEASE}})
    return bool(done.matched_count)


def finish(db: Any, job: dict[str, Any], worker: str, status: str, expires: datetime,
           **changes: Any) -> bool:
    done = db[JOBS].update_one(
        {"_id": job["_id"], "status": "running", "worker": worker},
        {"$set": {**changes, "status": status, "expires": expires, "lease_until": None}})
    return bool(done.matched_count)


def cancel(db: Any, job_id: str, now: datetime) -> bool:
    """Cancel a job that has not finished, or withdraw a finished one's files now."""
    done = db[JOBS].update_one({"_id": job_id, "status": {"$ne": "cancelled"}},
                               {"$set": {"status": "cancelled", "expires": now,
                                         "lease_until": None}})
    return bool(done.matched_count)


def expired(db: Any, now: datetime) -> list[str]:
    """Remove the jobs past their ``expires`` and return their ids (their files go next)."""
    gone: list[str] = []
    for doc in list(db[JOBS].find({"expires": {"$lt": now}}, {"_id": 1})):
        if db[JOBS].delete_one({"_id": doc["_id"]}).deleted_count:
            gone.append(doc["_id"])
    return gone


def all_ids(db: Any) -> set[str]:
    return {d["_id"] for d in db[JOBS].find({}, {"_id": 1})}
