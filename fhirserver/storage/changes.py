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

Each note carries a random nonce too. A reader keeps the nonce of the last note it
read and finds it again at each look: a log restored a few notes back (a backup, a
replica set's rollback) or dropped and filled again past the reader's number holds
another note, or none, at that number, and the reader reads the collection whole
instead of skipping the changes numbered again.

A writer whose note fails notes a change it cannot name instead; when that fails
too, its process owes the log that note and writes it at its next look, so the other
processes read the collection whole as soon as the log can be written again.

On the embedded database, whose writers are the processes of one server alone, each
note is also signalled (``storage/change_signal.py``): a reader whose signal moved
since its last look looks again at once instead of at its next timed look
(:func:`signal_in`, :func:`signal_of`).

The notes live in a collection of their own (``<collection>_changes``), so reading
the cached collection whole never reads them with it; every ``_id`` there is a
string, which the embedded database's primary key answers by equality.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pymongo import ReadPreference
from pymongo.errors import DuplicateKeyError, PyMongoError

from .change_signal import ChangeSignal
from .change_signal import path_of as signal_path

#: Notes kept: a writer deletes the note this many numbers before its own.
KEEP = 10_000
#: A reader that finds more new notes than this reads the collection whole.
NAMED_AT_MOST = 100


@dataclass(frozen=True)
class Position:
    """Where a reader stands in a log: the number of the last note it read (0: none),
    the log's epoch, and that note's nonce."""

    number: int = 0
    epoch: str | None = None
    nonce: str | None = None


#: (database, collection) whose writer in this process owes the log a note naming
#: nothing: its named note and the unnamed one after it both failed.
_owed: set[tuple[str, str]] = set()
_owed_lock = threading.Lock()


#: per client, the address it was first seen at: a key that neither selects a server
#: again (MongoClient.address blocks, then raises, while none answers) nor changes
#: with the replica set's primary
_addresses: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def db_key(db: Any) -> str:
    client = db.client
    try:
        base = _addresses[client]
    except (KeyError, TypeError):
        base = str(getattr(client, "address", ""))
        with contextlib.suppress(TypeError):
            base = _addresses.setdefault(client, base)
    return f"{base}/{db.name}"


#: per database key, the directory of its change signals: set for a database that
#: only the processes sharing that directory write (the embedded one)
_signal_dirs: dict[str, Path] = {}
#: per (database key, collection), its signal, opened once per process
_signals: dict[tuple[str, str], ChangeSignal] = {}
_signals_lock = threading.Lock()


def signal_in(db: Any, directory: Path | None) -> None:
    """Signal every note of ``db``'s change logs in ``directory`` (None: no longer):
    ``db`` is written by the processes that share that directory alone."""
    key = db_key(db)
    with _signals_lock:
        for known in [k for k in _signals if k[0] == key]:
            del _signals[known]
        if directory is None:
            _signal_dirs.pop(key, None)
        else:
            _signal_dirs[key] = Path(directory)


def signal_of(db: Any, collection: str) -> ChangeSignal | None:
    """The signal of ``collection``'s change log (None: ``db`` is not signalled)."""
    key = db_key(db)
    found = _signals.get((key, collection))
    if found is not None or key not in _signal_dirs:
        return found
    with _signals_lock:
        directory = _signal_dirs.get(key)
        if directory is None:
            return None
        return _signals.setdefault(
            (key, collection), ChangeSignal(signal_path(directory, f"{collection}-{db.name}")))


def primary(db: Any, name: str) -> Any:
    """Collection ``name`` read from the primary whatever ``MONGODB_URI`` prefers: a
    reader of a note must not read the change it names, or the log, from a copy that
    is behind it (the change would be lost until the next whole read)."""
    return db.get_collection(name, read_preference=ReadPreference.PRIMARY)


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
    log = primary(db, log_collection(collection))
    number = _hint(log, collection)[0] + 1
    while True:
        try:
            log.insert_one({"_id": _note_id(collection, number), "key": key,
                            "nonce": secrets.token_hex(8)})
            break
        except DuplicateKeyError:
            number += 1  # taken by another writer: the next one
    try:
        log.update_one({"_id": collection}, {"$max": {"n": number},
                                             "$setOnInsert": {"epoch": secrets.token_hex(8)}},
                       upsert=True)
    except DuplicateKeyError:  # another writer's first hint at the same moment
        log.update_one({"_id": collection}, {"$max": {"n": number}})
    signal = signal_of(db, collection)
    if signal is not None:
        signal.bump()
    if number > KEEP:
        log.delete_one({"_id": _note_id(collection, number - KEEP)})
    return number


def note(db: Any, collection: str, keys: list[str] | None) -> None:
    """Note the documents ``keys`` of ``collection`` once they are stored (None: a
    change that cannot be named). A note that fails is followed by one naming
    nothing, or when that fails too, this process owes it (written at its next look
    at the log); the failure is raised either way."""
    owed = (db_key(db), collection)  # now, while the server that stored the change answers
    try:
        for key in keys if keys is not None else [None]:
            record(db, collection, key)
    except BaseException:
        with _owed_lock:
            _owed.add(owed)
        with contextlib.suppress(PyMongoError, OSError):
            _settle(db, collection)
        raise


def _settle(db: Any, collection: str) -> None:
    """Write the note naming nothing this process owes the log, if it owes one."""
    owed = (db_key(db), collection)
    if owed in _owed:
        record(db, collection, None)
        with _owed_lock:
            _owed.discard(owed)


def newest(db: Any, collection: str) -> Position:
    """Where the newest note stands (number 0 before the first)."""
    log = primary(db, log_collection(collection))
    number, epoch = _hint(log, collection)
    last = log.find_one({"_id": _note_id(collection, number)}, {"nonce": 1}) if number else None
    while True:
        after = log.find_one({"_id": _note_id(collection, number + 1)}, {"nonce": 1})
        if after is None:
            break
        number, last = number + 1, after
    return Position(number, epoch, last.get("nonce") if last else None)


def changed_since(db: Any, collection: str,
                  seen: Position) -> tuple[Position, list[str] | None]:
    """Where the newest note stands, and the keys noted after ``seen`` up to it; the
    keys are None when they cannot all be named (read the collection whole).

    The note at ``seen`` must still be the one read there: another nonce, or none, is
    a log restored a few notes back or dropped and filled again. No note after
    ``seen`` is nothing new, unless the hint says otherwise: another epoch is another
    log, a hint far below ``seen`` an older copy of this one, and a hint past
    ``seen`` with still no note after it means the notes were deleted (more than
    KEEP changes since the last look)."""
    with contextlib.suppress(PyMongoError, OSError):
        _settle(db, collection)
    log = primary(db, log_collection(collection))
    if seen.number:
        last = log.find_one({"_id": _note_id(collection, seen.number)}, {"nonce": 1})
        if last is None or last.get("nonce") != seen.nonce:
            return newest(db, collection), None
    keys: list[str] = []
    number, nonce, epoch = seen.number, seen.nonce, seen.epoch
    while True:
        note_ = log.find_one({"_id": _note_id(collection, number + 1)}, {"key": 1, "nonce": 1})
        if note_ is None and number == seen.number:
            hint, now_epoch = _hint(log, collection)
            if now_epoch != epoch or hint < seen.number - NAMED_AT_MOST:
                return newest(db, collection), None
            if hint > seen.number:  # a note written since the first look, or deleted
                note_ = log.find_one({"_id": _note_id(collection, number + 1)},
                                     {"key": 1, "nonce": 1})
                if note_ is None:
                    return newest(db, collection), None
        if note_ is None:
            if epoch is None:  # read before the log's first note: these are of its epoch
                epoch = _hint(log, collection)[1]
            return Position(number, epoch, nonce), keys
        number, nonce = number + 1, note_.get("nonce")
        if note_.get("key") is None or len(keys) == NAMED_AT_MOST:
            return newest(db, collection), None
        keys.append(str(note_["key"]))
