"""Group commit for the audit log: concurrent requests share one write.

No answer leaves before its AuditEvent is durable (``api/auditing.py``), and every
append goes to one chain whose records are claimed one after another. Written one
at a time, each append costs at least one round trip to the database's single
writer and concurrent requests queue behind each other. So the requests of one
process hand their records to an :class:`Appender`: the first to arrive becomes the
leader, takes everything queued, chains it after the newest record it knows of (each
record's MAC covers the one before, exactly as :func:`.chain.keyed_record` links
single records), writes it with one ordered ``insert_many``, anchors it (checkpoint
lines in one ``write(2)`` per file, then the head hint) and wakes every request of
the group; the next request waiting, if any, then leads the next group. The cost of
a round trip is shared by everyone who queued while the one before it ran.

The processes of one server (gunicorn workers) share the chain's end through a
locked file (:mod:`.shared_tail`): a leader chains its group after the end any of
them wrote last. It takes its group only once it holds that file, so the requests
of its process that come while another process writes join this group: under load
every process writes one insert per turn, however many requests it holds. Other servers append to the same chain too: the primary key still
decides who gets a record number. An ordered insert stops at the
first duplicate key; the records before it are written and stay (they link to the
end this appender knew, so the chain holds), the rest is chained again after the
real end (found by primary-key probes, :func:`.chain.tail`) and written again, so
nothing is lost and nothing written twice.

Every request of a group gets its record number once its record and checkpoint are
written, or :class:`.chain.AuditUnavailable` when they could not be: a failed write
fails every request waiting on it, as a failed single append did.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pymongo.errors import BulkWriteError, OperationFailure

from . import checkpoints
from .chain import (
    RECORDS,
    AuditUnavailable,
    Keys,
    advance_head,
    keyed_record,
    link_of,
    newest,
    record_id,
    tail,
)
from .events import storable
from .shared_tail import Held, SharedTail

#: Records per ``insert_many`` at most; more waiting go in the next group. FerretDB
#: writes an insert in batches of 100 and, for an ordered insert refused in one
#: batch, still writes the next: a group of one batch keeps "the records before the
#: refused one are written, none after it", on which :meth:`Appender._insert_after`
#: counts.
MAX_GROUP = 100
#: The head hint moves with every record number that is a multiple of this...
HEAD_EVERY = 64
#: ...and when an appender goes idle, at most this often (seconds).
HEAD_IDLE_EVERY = 1.0
DUPLICATE_KEY = 11000


@dataclass(eq=False)
class _Entry:
    """One request's record, waiting for its group to be written."""

    event: dict[str, Any]
    patients: list[str]
    keys: Keys
    checkpoint_file: Path
    advance: bool
    ready: threading.Event = field(default_factory=threading.Event)
    lead: bool = False  # handed the lead: write the next group
    number: int = 0
    error: BaseException | None = None


class Appender:
    """The audit log's writer for one process (one per app) and database."""

    def __init__(self, db: Any, attempts: int = 50, shared_tail: Path | None = None) -> None:
        self.db = db
        self.attempts = attempts
        self._shared = SharedTail(shared_tail)
        self._origin: str | None = None  # the link of record 1: which chain this is
        self._mutex = threading.Lock()
        self._queue: list[_Entry] = []
        self._leading = False
        self._tail: tuple[int, str] | None = None  # the newest record this appender knows
        self._head_moved = float("-inf")  # when this appender last moved the head hint
        #: groups and records written, and inserts refused because another writer
        #: had taken the number, for measurements
        self.groups = 0
        self.records = 0
        self.refused = 0

    def append(self, event: dict[str, Any], patients: list[str], keys: Keys,
               checkpoint_file: Path, *, advance: bool = True) -> int:
        """Append ``event`` (an AuditEvent as JSON) about ``patients``; returns its
        record number once it is written and checkpointed. ``advance`` False: a
        record that another follows at once (which moves the head hint)."""
        entry = _Entry(storable(event), storable(patients), keys, checkpoint_file, advance)
        with self._mutex:
            self._queue.append(entry)
            if not self._leading:
                self._leading = entry.lead = True
        if not entry.lead:
            entry.ready.wait()  # written, failed, or handed the lead
        if entry.lead:
            self._lead()
        if entry.error is not None:
            raise AuditUnavailable(f"the audit log could not be written: {entry.error}") \
                from entry.error
        return entry.number

    def _lead(self) -> None:
        group: list[_Entry] = []
        try:
            # The group is taken once the chain's end is held, not before: while
            # another process's group is written, this process's requests keep
            # joining the queue, and go in this insert instead of the next one.
            with self._shared.held() as shared:
                with self._mutex:
                    group, self._queue = self._queue[:MAX_GROUP], self._queue[MAX_GROUP:]
                done, written = self._write(group, shared)
            if written:
                self._anchor(done, written)
            self.groups += 1
        except BaseException as exc:  # even an interrupt must not leave anyone waiting
            if not group:  # failed before taking it: the leader's own entry is first
                with self._mutex:
                    group, self._queue = self._queue[:MAX_GROUP], self._queue[MAX_GROUP:]
            for entry in group:
                if not entry.number and entry.error is None:
                    entry.error = exc
            raise
        finally:
            with self._mutex:
                following = self._queue[0] if self._queue else None
                if following is not None:
                    following.lead = True
                else:
                    self._leading = False
            for entry in group:
                entry.ready.set()
            if following is not None:
                following.ready.set()

    def _write(self, group: list[_Entry],
               shared: Held) -> tuple[list[_Entry], list[dict[str, Any]]]:
        """Write ``group`` with the chain's end held: each entry ends with its record
        or its error; returns the entries written and their records, to anchor."""
        written, failure = self._insert(group, shared)
        done, rest = group[:len(written)], group[len(written):]
        if isinstance(failure, OperationFailure) and len(rest) > 1:
            # The database answered and refused a record: that request fails, not
            # the others that happened to share its group, so the rest go alone.
            for entry in rest:
                one, entry.error = self._insert([entry], shared)
                if one:
                    done.append(entry)
                    written += one
        else:
            for entry in rest:
                entry.error = failure
        return done, written

    def _insert(self, group: list[_Entry],
                shared: Held) -> tuple[list[dict[str, Any]], Exception | None]:
        """The records written for the first entries of ``group`` (all of them, or
        those before a failure), and the failure; ``shared``: the end other
        processes of this server wrote, held."""
        origin = self._chain_origin()
        known = shared.read(origin) if origin else None
        if known is not None and (self._tail is None or known[0] > self._tail[0]):
            self._tail = known
        try:
            return self._insert_after(group)
        finally:
            origin = origin or self._chain_origin()
            if origin and self._tail is not None \
                    and (known is None or self._tail[0] > known[0]):
                shared.write(origin, *self._tail)

    def _chain_origin(self) -> str | None:
        """The link of record 1 (read once), naming this chain in the shared file."""
        if self._origin is None:
            try:
                first = self.db[RECORDS].find_one({"_id": record_id(1)}, {"mac": 1, "hash": 1})
            except Exception:  # noqa: BLE001 - the insert reports the database's state
                return None
            self._origin = link_of(first) if first is not None else None
        return self._origin

    def _insert_after(self, group: list[_Entry]) -> tuple[list[dict[str, Any]], Exception | None]:
        written: list[dict[str, Any]] = []
        records: list[dict[str, Any]] = []
        try:
            end = self._tail or newest(self.db)
            for _ in range(self.attempts):
                seq, previous = end
                records = []
                for number, entry in enumerate(group[len(written):], seq + 1):
                    record = keyed_record(number, previous, entry.event, entry.patients,
                                          entry.keys)
                    records.append(record)
                    previous = record["mac"]
                try:
                    self.db[RECORDS].insert_many(records, ordered=True)
                    count, duplicate = len(records), False
                except BulkWriteError as exc:
                    count = int(exc.details.get("nInserted", 0))
                    duplicate = _duplicate_at(exc, count)
                    written += records[:count]
                    if count:
                        self._tail = end = (seq + count, records[count - 1]["mac"])
                    if not duplicate:
                        raise
                if not duplicate:
                    written += records
                    self._tail = (seq + count, records[-1]["mac"])
                    return written, None
                # Another process took record seq + count + 1: find the real end.
                self.refused += 1
                self._tail = end = tail(self.db, seq + count + 1)
            raise AuditUnavailable("the audit log is too busy to append to")
        except Exception as exc:  # noqa: BLE001 - handed to every request waiting on it
            return written + self._stored_anyway(records, written), exc

    def _stored_anyway(self, records: list[dict[str, Any]],
                       written: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Of the records an insert that failed was writing, those the database
        stored all the same (a server may store the first records of an ordered
        insert and report the failure without a count): the leading ones whose
        number holds this very record. Their requests are written, not to be
        written again."""
        stored: list[dict[str, Any]] = []
        for record in records:
            if record in written:
                continue
            try:
                found = self.db[RECORDS].find_one({"_id": record["_id"]}, {"mac": 1})
            except Exception:  # noqa: BLE001 - unknown: treated as not written
                break
            if found is None or found.get("mac") != record["mac"]:
                break
            stored.append(record)
            self._tail = (_number(record), record["mac"])
        return stored

    def _anchor(self, entries: list[_Entry], records: list[dict[str, Any]]) -> None:
        """Checkpoint the written records (one write per checkpoint file), then move
        the head hint; an entry whose checkpoint failed fails (its record stays in
        the chain, unanchored, as a single append's did). The head is only where a
        process with no better knowledge starts looking for the end (the processes
        of one server share the end in a file), so it moves when a group passes a
        multiple of ``HEAD_EVERY``, and when the appender goes idle at most every
        ``HEAD_IDLE_EVERY`` seconds: not one more write per request."""
        by_file: dict[tuple[Path, Keys], list[tuple[_Entry, dict[str, Any]]]] = {}
        for entry, record in zip(entries, records, strict=True):
            by_file.setdefault((entry.checkpoint_file, entry.keys), []).append((entry, record))
        for (path, keys), items in by_file.items():
            try:
                checkpoints.write(path, keys.checkpoint, keys.kid, self.db.name,
                                  [(_number(r), r["mac"]) for _, r in items])
            except Exception as exc:  # noqa: BLE001 - those requests must not answer
                for entry, _ in items:
                    entry.error = exc
        first, last = _number(records[0]), _number(records[-1])
        with self._mutex:
            idle = not self._queue
        passed = (first - 1) // HEAD_EVERY != last // HEAD_EVERY
        rested = idle and any(entry.advance for entry in entries) \
            and time.monotonic() - self._head_moved >= HEAD_IDLE_EVERY
        if passed or rested:
            try:
                advance_head(self.db, last, records[-1]["mac"])
                self._head_moved = time.monotonic()
            except Exception as exc:  # noqa: BLE001
                for entry in entries:
                    entry.error = entry.error or exc
        for entry, record in zip(entries, records, strict=True):
            if entry.error is None:
                entry.number = _number(record)
        self.records += len(records)


def _number(record: dict[str, Any]) -> int:
    return int(record["_id"])


def _duplicate_at(exc: BulkWriteError, index: int) -> bool:
    """Did the ordered insert stop at ``index`` because that record number was taken?"""
    errors = exc.details.get("writeErrors") or []
    return bool(errors) and errors[0].get("index") == index \
        and errors[0].get("code") == DUPLICATE_KEY
