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

The notes live in a collection of their own (``<collection>_changes``), so reading
the cached collection whole never reads them with it; every ``_id`` there is a
string, which the embedded database's primary key answers by equality.
"""

from __future__ import annotations

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


def _hint(log: Any, collection: str) -> int:
    doc = log.find_one({"_id": collection}, {"n": 1})
    return int(doc["n"]) if doc else 0


def record(db: Any, collection: str, key: str | None) -> int:
    """Note that the document ``key`` of ``collection`` changed (None: a change that
    cannot be named); call it once the change is stored. Returns its number."""
    log = db[log_collection(collection)]
    number = _hint(log, collection) + 1
    while True:
        try:
            log.insert_one({"_id": _note_id(collection, number), "key": key})
            break
        except DuplicateKeyError:
            number += 1  # taken by another writer: the next one
    try:
        log.update_one({"_id": collection}, {"$max": {"n": number}}, upsert=True)
    except DuplicateKeyError:  # another writer's first hint at the same moment
        log.update_one({"_id": collection}, {"$max": {"n": number}})
    if number > KEEP:
        log.delete_one({"_id": _note_id(collection, number - KEEP)})
    return number


def newest(db: Any, collection: str) -> int:
    """The number of the newest note (0 before the first)."""
    log = db[log_collection(collection)]
    number = _hint(log, collection)
    while log.find_one({"_id": _note_id(collection, number + 1)}, {"_id": 1}) is not None:
        number += 1
    return number


def changed_since(db: Any, collection: str, seen: int) -> tuple[int, list[str] | None]:
    """The number of the newest note and the keys noted after number ``seen`` up to
    it; the keys are None when they cannot all be named (read the collection whole).

    No note after ``seen`` is nothing new, unless the hint says otherwise: a hint past
    ``seen`` means the notes after it were deleted (more than KEEP changes since the
    reader's last look), one far below it a database restored from before."""
    log = db[log_collection(collection)]
    keys: list[str] = []
    number = seen
    while True:
        note = log.find_one({"_id": _note_id(collection, number + 1)}, {"key": 1})
        if note is None:
            if number == seen:
                hint = _hint(log, collection)
                if hint > seen or hint < seen - NAMED_AT_MOST:
                    return newest(db, collection), None  # pruned past it, or restored
            return number, keys
        number += 1
        if note.get("key") is None or len(keys) == NAMED_AT_MOST:
            return max(number, newest(db, collection)), None
        keys.append(str(note["key"]))
