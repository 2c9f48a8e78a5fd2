"""Change logs for collections that every process caches whole.

A process that keeps a collection in memory (the patients' sharing choices) used to
read all of it again every few seconds, whether anything had changed or not, so each
worker's cost grew with everyone who ever made a choice (20,000 choices: about
0.2-0.3 s per look, measured by ``scripts/bench_auth.py``). A writer now numbers
each change it stored with a note of the document it changed; a reader looks for the
note after the last one it read (one read by ``_id``, which the embedded database
answers from its primary key) and, when there are new ones, reads those documents
alone.

Numbers are taken by inserting the note under them: a primary key admits one insert,
on MongoDB and FerretDB alike, where a counter with ``$inc`` would not hold
(FerretDB 1.x updates without isolation: ``auth/lookups.py``). A writer starts at
the newest number it knows of (a hint document, raised after each note, never
higher than a note that exists) and steps up past every number taken, so the
numbers taken always run without a gap from the oldest note kept to the newest.

Order is what makes the reader right. The writer stores its document, then notes
it; the reader finds the notes before it reads the documents. A reader that found
notes up to n has read every change numbered up to n, since each was stored before
its note was written. A change noted without a name (``key`` None: a process that
may have been stopped between storing a change and noting it), or more changes
than a reader will read one by one, make it read the collection whole.

The hint also holds the log's epoch, a random name given when the hint is first
written: a reader that finds another epoch than the one it read (the log dropped,
or restored from a copy) reads the collection whole.

The notes live in a collection of their own (``<collection>_changes``), so reading
the cached collection whole never reads them with it; every ``_id`` there is a
string, which the embedded database's primary key answers by equality.
"""

from __future__ import annotations

import secrets
from typing import Any

from pymongo.errors import DuplicateKeyError

#: Notes kept: a writer deletes the note this many numbers before its own.
KEEP = 10_000
#: A reader that finds more new notes than this reads the collection whole.
NAMED_AT_MOST = 100


def log_collection(collection: str) -> str:
    return f"{collection}_changes"


def _note_id(collection: str, number: int) -> str:
    return f"{collection}#{number}"


def _hint(log: Any, collection: str) -> tuple[int, str | None]:
    """The hint's number and the log's epoch (None before the first note)."""
    doc = log.find_one({"_id": collection}, {"n": 1, "epoch": 1})
    return (int(doc["n"]), doc.get("epoch")) if doc else (0, None)


def record(db: Any, collection: str, key: str | None) -> int:
    """Note that the document ``key`` of ``collection`` changed (None: a change that
    cannot be named); call it once the change is stored. Returns its number."""
    log = db[log_collection(collection)]
    number = _hint(log, collection)[0] + 1
    while True:
        try:
            log.insert_one({"_id": _note_id(collection, number), "key": key})
            break
        except DuplicateKeyError:
            number += 1  # taken by another writer: the next one
    try:
        log.update_one({"_id": collection}, {"$max": {"n": number},
                                             "$setOnInsert": {"epoch": secrets.token_hex(8)}},
                       upsert=True)
    except DuplicateKeyError:  # another writer's first hint at the same moment
        log.update_one({"_id": collection}, {"$max": {"n": number}})
    if number > KEEP:
        log.delete_one({"_id": _note_id(collection, number - KEEP)})
    return number


def newest(db: Any, collection: str) -> tuple[int, str | None]:
    """The number of the newest note (0 before the first), and the log's epoch."""
    log = db[log_collection(collection)]
    number, epoch = _hint(log, collection)
    while log.find_one({"_id": _note_id(collection, number + 1)}, {"_id": 1}) is not None:
        number += 1
    return number, epoch


def changed_since(db: Any, collection: str, seen: int,
                  epoch: str | None) -> tuple[int, str | None, list[str] | None]:
    """The number of the newest note, the log's epoch, and the keys noted after
    number ``seen`` of log ``epoch`` up to it; the keys are None when they cannot all
    be named (read the collection whole).

    No note after ``seen`` is nothing new, unless the hint says otherwise: another
    epoch is another log (dropped and begun again), a hint far below ``seen`` an older
    copy of this one (restored: a copy a few changes older is seen within
    ``auth/consent.py`` RELOAD), and a hint past ``seen`` with still no note after it
    means the notes were deleted (more than KEEP changes since the last look)."""
    log = db[log_collection(collection)]
    keys: list[str] = []
    number = seen
    while True:
        note = log.find_one({"_id": _note_id(collection, number + 1)}, {"key": 1})
        if note is None and number == seen:
            hint, now_epoch = _hint(log, collection)
            if now_epoch != epoch or hint < seen - NAMED_AT_MOST:
                return (*newest(db, collection), None)
            if hint > seen:  # a note written since the first look, or deleted
                note = log.find_one({"_id": _note_id(collection, number + 1)}, {"key": 1})
                if note is None:
                    return (*newest(db, collection), None)
        if note is None:
            if epoch is None:  # read before the log's first note: these are of its epoch
                epoch = _hint(log, collection)[1]
            return number, epoch, keys
        number += 1
        if note.get("key") is None or len(keys) == NAMED_AT_MOST:
            return (*newest(db, collection), None)
        keys.append(str(note["key"]))
