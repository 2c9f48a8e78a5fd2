"""The audit log: append-only AuditEvents in one hash chain (DESIGN.md section 1:
every access is recorded and the patient can see who looked).

Each record ``n`` stores the hash of record ``n-1`` and its own hash over that and
its canonical JSON, so removing or altering any record breaks every later link.
Appending is linear even with many writers: record ``n+1`` is claimed by inserting
its primary key, so exactly one writer links to record ``n``.

:func:`verify` walks the chain and reports the first broken or missing link.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from pymongo.errors import DuplicateKeyError

RECORDS = "_audit"
HEAD = "_audit_head"
GENESIS = "0" * 64
_lock = threading.Lock()


def digest(previous: str, event: dict[str, Any]) -> str:
    body = orjson.dumps(event, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(previous.encode() + body).hexdigest()


class AuditUnavailable(Exception):
    """The record could not be appended: the request must not go through."""


def append(db: Any, event: dict[str, Any], patients: list[str], attempts: int = 200) -> int:
    """Append ``event`` (an AuditEvent as JSON) about ``patients``; returns its number.

    Record numbers are claimed by inserting the primary key, which is atomic on every
    MongoDB wire-protocol server; the head is a hint (a consistent number/hash pair)
    that may lag, so a writer steps forward over records that already exist.
    """
    with _lock:  # writers of one process take turns; other processes may still race
        head = db[HEAD].find_one({"_id": "head"}) or {"seq": 0, "hash": GENESIS}
        seq, previous = head["seq"], head["hash"]
        for _ in range(attempts):
            event = {**event, "id": f"audit-{seq + 1}"}
            own = digest(previous, event)
            try:
                db[RECORDS].insert_one({"_id": record_id(seq + 1), "prev": previous, "hash": own,
                                        "event": event, "patients": patients})
            except DuplicateKeyError:
                taken = db[RECORDS].find_one({"_id": record_id(seq + 1)}, {"hash": 1})
                seq, previous = seq + 1, taken["hash"] if taken else previous
                continue
            db[HEAD].replace_one({"_id": "head"}, {"_id": "head", "seq": seq + 1, "hash": own},
                                 upsert=True)
            return seq + 1
    raise AuditUnavailable("the audit log is too busy to append to")


def record_id(seq: int) -> str:
    """Record numbers as fixed-width strings: they sort in order, and a string key is
    one FerretDB looks up by index."""
    return f"{seq:012d}"


@dataclass(frozen=True)
class Broken:
    seq: int
    problem: str


def verify(db: Any) -> tuple[int, Broken | None]:
    """(records checked, the first broken or missing link or None)."""
    head = db[HEAD].find_one({"_id": "head"}) or {"seq": 0, "hash": GENESIS}
    previous = GENESIS
    expected = 1
    for doc in _in_order(db):
        if doc["_id"] != record_id(expected):
            return expected - 1, Broken(expected, "record is missing")
        if doc["prev"] != previous:
            return expected - 1, Broken(expected, "does not link to the record before it")
        if digest(previous, doc["event"]) != doc["hash"]:
            return expected - 1, Broken(expected, "content does not match its hash (altered)")
        previous = doc["hash"]
        expected += 1
    if expected - 1 < head["seq"]:
        return expected - 1, Broken(expected, "records after this one are missing")
    return expected - 1, None


def _in_order(db: Any) -> Iterator[dict[str, Any]]:
    yield from db[RECORDS].find({}).sort("_id", 1)
