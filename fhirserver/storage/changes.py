"""Change logs for collections that every process caches whole.

A process that keeps a collection in memory (the patients' sharing choices) used to
read all of it again every few seconds, whether anything had changed or not, so each
worker's cost grew with everyone who ever made a choice (20,000 choices: about
0.3 s per look, measured by ``scripts/bench_auth.py``). A writer now numbers each
change it stored and notes which document it changed; a reader reads the number
(one read by ``_id``, which the embedded database answers from its primary key)
and, when it moved, the notes since its last look and those documents alone.

Order is what makes this safe. The writer stores its document, then takes a
number, then writes the note under it; the reader reads the number before the
notes and the documents. A reader that saw number n has seen the document of every
change numbered up to n, since each was stored before its number was taken. A note
missing below the number read is a writer between taking its number and writing
the note, or one stopped there: the reader cannot name that change and reads the
collection whole (:func:`changed_since` answers None), as it does when too many
changes passed since its last look or the notes it needs were pruned.

Numbers and notes live in a collection of their own (``<collection>_changes``), so
reading the cached collection whole never reads them with it; every ``_id`` there
is a string, which the embedded database's primary key answers by equality.
"""

from __future__ import annotations

from typing import Any

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

#: A reader that missed more changes than this reads the collection whole; a writer
#: drops the note this many numbers before its own.
KEEP = 1000


def log_collection(collection: str) -> str:
    return f"{collection}_changes"


def _note_id(collection: str, number: int) -> str:
    return f"{collection}#{number}"


def _advance(db: Any, collection: str, attempts: int = 5) -> int:
    """Take the next number. Two first numbers at once may both try to insert the
    counter (an upsert, as in :mod:`.upserts`): the loser tries again and finds it."""
    log = db[log_collection(collection)]
    for attempt in range(attempts):
        try:
            doc = log.find_one_and_update({"_id": collection}, {"$inc": {"n": 1}}, upsert=True,
                                          return_document=ReturnDocument.AFTER)
            return int(doc["n"])
        except DuplicateKeyError:
            if attempt + 1 == attempts:
                raise
    raise AssertionError("unreachable")


def record(db: Any, collection: str, key: str) -> None:
    """Note that the document ``key`` of ``collection`` changed; call it once the
    change is stored."""
    number = _advance(db, collection)
    log = db[log_collection(collection)]
    log.insert_one({"_id": _note_id(collection, number), "key": key})
    if number > KEEP:
        log.delete_one({"_id": _note_id(collection, number - KEEP)})


def unnamed_change(db: Any, collection: str) -> None:
    """Count a change without naming it: every reader reads the collection whole at
    its next look (a change whose writer may have stopped before noting it)."""
    _advance(db, collection)


def count(db: Any, collection: str) -> int:
    """The number of the newest change of ``collection`` (0 before the first)."""
    doc = db[log_collection(collection)].find_one({"_id": collection}, {"n": 1})
    return int(doc["n"]) if doc else 0


def changed_since(db: Any, collection: str, seen: int, now: int) -> list[str] | None:
    """The keys changed after number ``seen`` up to ``now`` (read by :func:`count`), or
    None when they cannot all be named: read the collection whole then."""
    if now < seen or now - seen > KEEP // 10:
        return None  # counted again from the start (a restored database), or too many
    log = db[log_collection(collection)]
    keys: list[str] = []
    for number in range(seen + 1, now + 1):
        note = log.find_one({"_id": _note_id(collection, number)}, {"key": 1})
        if note is None:
            return None
        keys.append(str(note["key"]))
    return keys
