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

Other processes (gunicorn workers, other servers) append to the same chain: the
primary key still decides who gets a record number. An ordered insert stops at the
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pymongo.errors import BulkWriteError, OperationFailure

from . import checkpoints
from .chain import RECORDS, AuditUnavailable, Keys, advance_head, keyed_record, newest, tail
from .events import storable

#: Records per ``insert_many`` at most; more waiting go in the next group.
MAX_GROUP = 256
#: Under load, the head hint moves after this many records (and when the load ends).
HEAD_EVERY = 64
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

    def __init__(self, db: Any, attempts: int = 50) -> None:
        self.db = db
        self.attempts = attempts
        self._mutex = threading.Lock()
        self._queue: list[_Entry] = []
        self._leading = False
        self._tail: tuple[int, str] | None = None  # the newest record this appender knows
        self._since_head = 0  # records written since the head hint last moved
        #: groups and records written, for measurements
        self.groups = 0
        self.records = 0

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
        with self._mutex:
            group, self._queue = self._queue[:MAX_GROUP], self._queue[MAX_GROUP:]
        try:
            self._write(group)
        except BaseException as exc:  # even an interrupt must not leave anyone waiting
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

    def _write(self, group: list[_Entry]) -> None:
        """Write ``group``: each entry ends with its record number or its error."""
        written, failure = self._insert(group)
        done, rest = group[:len(written)], group[len(written):]
        if isinstance(failure, OperationFailure) and len(rest) > 1:
            # The database answered and refused a record: that request fails, not
            # the others that happened to share its group, so the rest go alone.
            for entry in rest:
                one, entry.error = self._insert([entry])
                if one:
                    done.append(entry)
                    written += one
        else:
            for entry in rest:
                entry.error = failure
        if written:
            self._anchor(done, written)
        self.groups += 1

    def _insert(self, group: list[_Entry]) -> tuple[list[dict[str, Any]], Exception | None]:
        """The records written for the first entries of ``group`` (all of them, or
        those before a failure), and the failure."""
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
        the chain, unanchored, as a single append's did). While more records wait,
        the head (a hint where to start looking for the end) moves only every
        ``HEAD_EVERY`` records; the last group before the appender goes idle moves
        it, so at rest it names the newest record."""
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
        self._since_head += len(records)
        with self._mutex:
            idle = not self._queue
        if any(entry.advance for entry in entries) and (idle or self._since_head >= HEAD_EVERY):
            try:
                advance_head(self.db, _number(records[-1]), records[-1]["mac"])
                self._since_head = 0
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
