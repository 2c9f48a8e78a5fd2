"""The audit log: append-only AuditEvents in one keyed chain (DESIGN.md section 1:
every access is recorded and the patient can see who looked).

Each record ``n`` stores the link of record ``n-1`` (``prev``) and ``mac``, an
HMAC-SHA256 (RFC 2104) over every other field it stores (canonical JSON: record
number, format, key id, ``prev``, the event and ``patients``, which decides what a
patient sees), under a key derived from the master key that never enters the
database. Whoever can write the database but does not hold the key cannot alter,
insert or re-chain a record without breaking a MAC; removing the newest records is
caught by the checkpoints kept outside the database (:mod:`.checkpoints`), written
after every append.

Records from before the keyed chain carry a plain SHA-256 ``hash`` over the event
alone. They are accepted only as an unbroken prefix: the first keyed record's MAC
covers the last plain hash, so rewriting them breaks that link, and no plain record
may stand where a checkpoint names a keyed one (a log rewritten wholesale as plain
records would otherwise pass as old).

Appending is linear even with many writers: record ``n+1`` is claimed by inserting
its primary key, so exactly one writer links to record ``n``. The appender
(:mod:`.appender`) writes the records of concurrent requests in groups, each record
built by :func:`keyed_record`; :func:`tail` finds the end after another writer.
:func:`verify` walks the chain and reports the first broken or missing link.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from pymongo.errors import DuplicateKeyError

from ..crypto.master import MasterKey
from . import checkpoints

RECORDS = "_audit"
HEAD = "_audit_head"
GENESIS = "0" * 64
#: 3: keyed records holding their event as JSON text; 2: keyed records holding it as a
#: document (still read and verified); the plain SHA-256 records before them carry no "v"
FORMAT = 3
PURPOSE = "audit/record-mac/v1"
_LEGACY_FIELDS = frozenset({"_id", "prev", "hash", "event", "patients"})


@dataclass(frozen=True)
class Keys:
    """The audit log's keys, derived from the master key; ``kid`` names it."""

    record: bytes = field(repr=False)
    checkpoint: bytes = field(repr=False)
    kid: str

    @classmethod
    def derive(cls, master: MasterKey) -> Keys:
        return cls(master.derive(PURPOSE), master.derive(checkpoints.PURPOSE), master.kid)


def digest(previous: str, event: dict[str, Any]) -> str:
    """The plain SHA-256 link of a record from before the keyed chain."""
    body = orjson.dumps(event, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(previous.encode() + body).hexdigest()


def mac(key: bytes, record: dict[str, Any]) -> str:
    """HMAC-SHA256 over every stored field of ``record`` but ``mac`` itself."""
    body = orjson.dumps({k: v for k, v in record.items() if k != "mac"},
                        option=orjson.OPT_SORT_KEYS)
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def link_of(doc: dict[str, Any]) -> str:
    """What the next record's ``prev`` holds: the MAC, or a plain record's hash."""
    return str(doc.get("mac") or doc.get("hash") or GENESIS)


class AuditUnavailable(Exception):
    """The record could not be appended: the request must not go through."""


def keyed_record(number: int, previous: str, event: dict[str, Any], patients: list[str],
                 keys: Keys) -> dict[str, Any]:
    """Record ``number``, linked to ``previous`` (the link of record ``number - 1``).

    The event is stored as JSON text, not as a document: every request appends one,
    and the log is only ever filtered by ``patients`` and ``_id``, so nothing reads its
    fields in the database. A document's every field costs the database to encode
    (FerretDB keeps a type schema of each), while one string costs it almost nothing:
    the append every answer waits for is the shorter for it. The MAC covers the text
    as stored."""
    record: dict[str, Any] = {
        "_id": record_id(number), "v": FORMAT, "kid": keys.kid, "prev": previous,
        "event": orjson.dumps({**event, "id": f"audit-{number}"}).decode(),
        "patients": patients,
    }
    record["mac"] = mac(keys.record, record)
    return record


class DamagedRecord(ValueError):
    """A stored record whose event cannot be read: the log was altered."""


def event_of(doc: dict[str, Any]) -> dict[str, Any]:
    """The AuditEvent a stored record holds: JSON text from format 3 on, a document in
    the records written before."""
    event = doc.get("event")
    if isinstance(event, str):
        try:
            event = orjson.loads(event)
        except orjson.JSONDecodeError:
            event = None
    if not isinstance(event, dict):
        raise DamagedRecord(f"audit record {doc.get('_id')} holds no readable event "
                            "(`fhirserver audit verify` says where the log was altered)")
    return event


def newest(db: Any) -> tuple[int, str]:
    """The number and link of the newest record, starting from the head hint."""
    head = db[HEAD].find_one({"_id": "head"}) or {"seq": 0}
    return tail(db, int(head["seq"]))


def advance_head(db: Any, number: int, link: str) -> None:
    """Move the head hint forward only: an older writer never sets it back. The head
    is where a process that starts looks for the end (a head left behind costs a few
    reads, never the log), and one more check for :func:`verify`."""
    try:
        db[HEAD].update_one({"_id": "head", "seq": {"$lt": number}},
                            {"$set": {"seq": number, "link": link}}, upsert=True)
    except DuplicateKeyError:
        pass  # the head is ahead already


def tail(db: Any, hint: int) -> tuple[int, str]:
    """The number and link of the newest record, found from ``hint`` by primary-key
    probes: records are numbered without gaps, so "record n exists" holds up to the
    end and not after it. Gallops forward from the hint (or from the start, if the
    hint names a record that is not there) and bisects: O(log distance) reads."""
    links: dict[int, str | None] = {0: GENESIS}

    def link(n: int) -> str | None:
        if n not in links:
            doc = db[RECORDS].find_one({"_id": record_id(n)}, {"mac": 1, "hash": 1})
            links[n] = link_of(doc) if doc is not None else None
        return links[n]

    low = hint if hint > 0 and link(hint) is not None else 0
    step = 1
    while link(low + step) is not None:
        low, step = low + step, step * 2
    high = low + step  # missing
    while high - low > 1:
        middle = (low + high) // 2
        if link(middle) is not None:
            low = middle
        else:
            high = middle
    return low, link(low) or GENESIS


def record_id(seq: int) -> str:
    """Record numbers as fixed-width strings: they sort in order, and a string key is
    one FerretDB looks up by index."""
    return f"{seq:012d}"


@dataclass(frozen=True)
class Broken:
    seq: int
    problem: str


@dataclass(frozen=True)
class Report:
    """What :func:`verify` found: ``checked`` records intact before the first problem
    (``legacy`` of them plain records from before the keyed chain), the newest
    checkpoint's record number, and the problem or None."""

    checked: int
    legacy: int
    checkpoint: int
    broken: Broken | None


def verify(db: Any, keys: Keys, checkpoint_files: Sequence[Path]) -> Report:
    """Walk the whole log against its MACs and the checkpoints in ``checkpoint_files``."""
    marks, bad = checkpoints.read(checkpoint_files, keys.checkpoint, keys.kid, db.name)
    newest, first_mark = max(marks, default=0), min(marks, default=0)
    if bad is not None:
        return Report(0, 0, newest, Broken(bad.seq, bad.problem))
    previous, expected, legacy, first_keyed = GENESIS, 1, 0, 0

    def broken(problem: str) -> Report:
        return Report(expected - 1, legacy, newest, Broken(expected, problem))

    for doc in _in_order(db):
        if doc["_id"] != record_id(expected):
            return broken("record is missing")
        if doc.get("prev") != previous:
            return broken("does not link to the record before it")
        if "mac" in doc:
            problem = _keyed_problem(doc, keys, marks.get(expected))
            if problem:
                return broken(problem)
            first_keyed = first_keyed or expected
        elif first_keyed:
            return broken("has no MAC although records before it have one (inserted or "
                          "rewritten)")
        elif first_mark and expected >= first_mark:
            return broken("has no MAC although a checkpoint shows keyed records from record "
                          f"{first_mark} on (rewritten as a plain record)")
        elif set(doc) - _LEGACY_FIELDS or _digest_of(previous, doc) != doc.get("hash"):
            return broken("content does not match its hash (altered)")
        else:
            legacy += 1
        previous = link_of(doc)
        expected += 1
    last = expected - 1
    if newest > last:
        return broken(f"records {expected} to {newest} are missing: the newest checkpoint names "
                      f"record {newest} (the log was cut)")
    if first_keyed and not marks:
        return Report(first_keyed - 1, legacy, 0, Broken(
            first_keyed, "no checkpoints were found although keyed records exist: the "
                         "checkpoint file is missing or was emptied"))
    head = int((db[HEAD].find_one({"_id": "head"}) or {"seq": 0})["seq"])
    if last < head:
        return broken(f"records {expected} to {head} are missing: the head names record {head}")
    return Report(last, legacy, newest, None)


def _digest_of(previous: str, doc: dict[str, Any]) -> str | None:
    try:
        return digest(previous, doc.get("event") or {})
    except TypeError:  # a value JSON has no form for (binary, an ObjectId): never written
        return None


def _keyed_problem(doc: dict[str, Any], keys: Keys, checkpoint: str | None) -> str | None:
    try:
        expected = mac(keys.record, doc)
    except TypeError:  # a value JSON has no form for: the server writes none
        return "holds a value that is not JSON (altered)"
    if not hmac.compare_digest(expected, str(doc["mac"])):
        if doc.get("kid") != keys.kid:
            return (f"was written under master key {doc.get('kid')}, not the configured "
                    f"{keys.kid}")
        return "content or patients do not match its MAC (altered)"
    if checkpoint is not None and checkpoint != doc["mac"]:
        return "differs from its checkpoint (replaced)"
    return None


def _in_order(db: Any) -> Iterator[dict[str, Any]]:
    yield from db[RECORDS].find({}).sort("_id", 1)
