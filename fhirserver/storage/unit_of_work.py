"""All-or-nothing writes of several versions (FHIR R4 http.html#transaction).

Two ways to get there:

* On a replica set or sharded cluster, a MongoDB multi-document transaction.
* On a standalone MongoDB or FerretDB, which have none, a journalled compensating
  unit of work: the planned writes are recorded in ``_journal`` first, each write is
  a compare-and-set on the current document's version, and a failure part-way undoes
  the writes already made, newest first, by restoring the previous version from
  history.

A process that dies mid-way leaves a ``pending`` journal entry behind;
:meth:`UnitOfWork.recover` rolls it back before the next start answers anything, and
the running processes look for such entries every half minute. An entry is only
rolled back once nobody will finish it: its owner process is gone, or, for an owner
on another host, its lease ran out (:mod:`.journal`). Recovery holds a lock entry so
that one process rolls back while the others wait, costs what the pending entries
cost (the journal is found by its ``state`` index and each undo is by primary key,
in bulk for creates), and may itself be killed and run again.

Readers may briefly see a transaction's first writes before its last ones
(read-uncommitted); they never see a failed transaction's writes once it has
answered, nor a crashed one's once the server answers again. Hiding the writes of a
transaction in flight (a marker on each document, cleared at commit and filtered out
by every read) was weighed and left out: it would cost a second write of every
document at commit, and every read, the read by id included, a filter that FerretDB
cannot push down to its primary key.

Writers, though, never build on such a write: each document a unit writes names its
journal entry (``tx``, left in place after the commit), and a write planned on a
version whose entry is still in the journal is a :class:`VersionConflict` (the
caller plans again, or answers 409). Otherwise a transaction that fails could not
take back a version another request had already replaced ("changed again since"),
and the other request would have built on a version that never was. Whether an
entry is still there costs one read by primary key the first time a process meets
it, none after it is gone (:class:`Finished`).

Every single write is a compare-and-set too: ``expected=None`` inserts the current
document (the primary key refuses a second create of the same id); ``expected=n``
first claims history key ``<id>/<n+1>`` (the primary key again: only one writer can)
and then replaces the current document. Losing that race raises
:class:`VersionConflict`.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import MongoClient
from pymongo.client_session import ClientSession
from pymongo.errors import BulkWriteError, DuplicateKeyError

from ..errors import ServerError
from ..model.security_labels import is_sensitive
from ..search.buckets import BUCKET_FIELD, buckets_of
from ..search.keys import KEY_FIELD, keys_of, stored_values
from ..search.shards import shard_fields
from ..search.sorting import sort_values
from .documents import Collections
from .journal import Leases, journal_write, me, new_lease
from .protection import DATA_KEYS_FIELD
from .records import Write
from .recovery import Recovery
from .stored_form import stored_form

log = logging.getLogger(__name__)

ORPHAN_AGE = timedelta(seconds=30)
Rebuild = Callable[[str, dict[str, Any]], dict[str, Any]]
Verify = Callable[[], None]


class VersionConflict(Exception):
    """The current version changed between planning and writing."""

    def __init__(self, write: Write) -> None:
        super().__init__(f"{write.type}/{write.id} was changed by another request")
        self.write = write


class InFlight(VersionConflict):
    """The current version was written by a unit that has not ended: a transaction,
    or a delete (``target``: a record a write refers to, being deleted)."""

    def __init__(self, write: Write | None = None, target: str | None = None) -> None:
        about = target if write is None else f"{write.type}/{write.id}"
        Exception.__init__(self, f"{about} is being written by a request still in progress")
        self.write = write  # type: ignore[assignment]  # None: a record referred to


class IdentifierTaken(Exception):
    """A unique identifier the write claims is held by another active resource."""

    def __init__(self, write: Write, key: str, holder: str) -> None:
        super().__init__(f"{key} is held by {write.type}/{holder}")
        self.write, self.key, self.holder = write, key, holder


def _own_create(w: Write, now: dict[str, Any]) -> bool:
    """Is the current document ``now`` the one the create ``w`` wrote? Creates claim
    no history entry before they write, so two creates of one id are told apart by
    what they stored: the time and the content."""
    stored = now.get("lu")
    if isinstance(stored, datetime) and stored.tzinfo is None:
        stored = stored.replace(tzinfo=UTC)
    return now.get("v") == w.version and stored == w.last_updated \
        and now.get("h") == w.content_hash


def current_document(w: Write) -> dict[str, Any]:
    if w.derived is None:
        so = sort_values(w.type, w.search)
        w.derived = {
            "res": stored_form(w.sealed),
            "sp": stored_values(w.type, w.search),
            KEY_FIELD: keys_of(w.type, w.search),
            "so": so,
            BUCKET_FIELD: buckets_of(w.type, so),
            "sens": is_sensitive(w.resource),
            "shards": shard_fields(w.id),
        }
    d = w.derived
    return {
        "_id": w.id,
        "v": w.version,
        "lu": w.last_updated,
        "del": w.deleted,
        "res": d["res"],
        DATA_KEYS_FIELD: w.data_keys,
        "pat": w.patient,
        "sp": d["sp"],
        KEY_FIELD: d[KEY_FIELD],
        "so": d["so"],
        BUCKET_FIELD: d[BUCKET_FIELD],
        "h": w.content_hash,
        "refs": w.refs,
        "cl": list(w.claims),
        "org": w.org,
        "by": w.by,
        "sens": d["sens"],
        **d["shards"],
        **({"tx": w.tx} if w.tx else {}),
    }


def history_document(w: Write) -> dict[str, Any]:
    return {
        "_id": f"{w.id}/{w.version}",
        "rid": w.id,
        "v": w.version,
        "lu": w.last_updated,
        "del": w.deleted,
        "res": stored_form(w.sealed),
        DATA_KEYS_FIELD: w.data_keys,
        "pat": w.patient,
        "method": w.method,
        "org": w.org,
        "by": w.by,
    }


def new_entry_id(started: datetime) -> str:
    """A journal entry's id: its start (milliseconds, hex) and a random part."""
    return f"{int(started.timestamp() * 1000):x}-{uuid.uuid4().hex}"


def started_of(entry: str) -> datetime | None:
    """When the unit of journal entry ``entry`` began, as its id says (None for ids
    of an older form)."""
    head, dash, _ = entry.partition("-")
    try:
        return datetime.fromtimestamp(int(head, 16) / 1000, UTC) if dash else None
    except (ValueError, OverflowError, OSError):
        return None


class Finished:
    """Which journal entries are gone. A unit's entry is deleted when it ends and its
    id is never used again, so once gone it stays gone.

    An entry is looked for by its id at most once per process, and not at all when
    it began well before a recent list of the whole journal (:data:`SNAPSHOT_AGE`
    old at most) and is not on it: that is the common case, an update of a record an
    import or a transaction wrote some time ago. Start times are compared across
    processes, so hosts sharing a database need clocks within :data:`SKEW` (the
    journal's leases ask for as much, storage/journal.py).
    """

    SNAPSHOT_AGE = timedelta(seconds=1)
    SKEW = timedelta(seconds=10)
    #: past this many entries in flight, each is looked up by id
    SNAPSHOT_LIMIT = 1000

    def __init__(self, journal: Any, size: int = 65536) -> None:
        self.journal = journal
        self.size = size
        #: entry -> when (time.monotonic) this process knew it gone
        self._gone: dict[str, float] = {}
        self._snapshot: tuple[datetime, frozenset[str], float] | None = None
        self._lock = threading.Lock()

    def add(self, entry: str, known: float | None = None) -> None:
        """``entry`` is gone, as this process knows since ``known`` (now if None)."""
        with self._lock:
            self._gone.setdefault(entry, time.monotonic() if known is None else known)
            if len(self._gone) > self.size:
                del self._gone[next(iter(self._gone))]

    def _listed(self) -> tuple[datetime, frozenset[str], float] | None:
        now = datetime.now(UTC)
        snap = self._snapshot
        if snap is None or snap[0] < now - self.SNAPSHOT_AGE:
            # Taken before the query is sent: an entry that began before this instant
            # and is not listed had ended by the time the journal was read.
            ids = [d["_id"] for d in self.journal.find({}, {"_id": 1})
                   .limit(self.SNAPSHOT_LIMIT + 1)]
            snap = (now, frozenset(ids), time.monotonic()) \
                if len(ids) <= self.SNAPSHOT_LIMIT else None
            self._snapshot = snap
        return snap

    def in_flight(self, entry: str) -> bool:
        if entry in self._gone:
            return False
        started = started_of(entry)
        if started is not None:
            snap = self._listed()
            if snap is not None and started < snap[0] - self.SKEW and entry not in snap[1]:
                self.add(entry, snap[2])
                return False
        if self.journal.find_one({"_id": entry}, {"_id": 1}) is not None:
            return True
        self.add(entry)
        return False

    def still_in_flight(self, entries: list[str]) -> list[str]:
        """Those of ``entries`` still in flight, in one read of the journal for all of
        them (a waiter polls many units at once: one read each would flood the
        database while they run)."""
        unknown = [e for e in entries if e not in self._gone]
        if not unknown:
            return []
        found = {d["_id"] for d in self.journal.find({"_id": {"$in": unknown}}, {"_id": 1})}
        for entry in unknown:
            if entry not in found:
                self.add(entry)
        return [e for e in unknown if e in found]

    def ended_before(self, entry: str, instant: float) -> bool:
        """Whether ``entry`` is known to have ended before ``instant`` (time.monotonic),
        once :meth:`in_flight` said it has ended. A version read before then may have
        been taken back since by its unit, which ended in between: read it again."""
        known = self._gone.get(entry)
        return known is not None and known <= instant


class UnitOfWork:
    def __init__(
        self,
        cols: Collections,
        client: MongoClient[Any],
        rebuild: Rebuild,
        use_transactions: bool,
        pk_only: bool = False,
    ) -> None:
        self.cols = cols
        self.client = client
        self.rebuild = rebuild
        self.use_transactions = use_transactions
        # FerretDB 1.x answers ``_id: {$in: [...]}`` by scanning (storage/recovery.py).
        self.pk_only = pk_only
        self.leases = Leases(cols.journal, lambda: self.recover(wait=False))
        self.finished = Finished(cols.journal)

    def close(self) -> None:
        self.leases.close()

    # -- one write -----------------------------------------------------------------

    def _apply(self, w: Write, session: ClientSession | None = None) -> None:
        if w.expected is not None and w.base_tx and session is None \
                and self.finished.in_flight(w.base_tx):
            # The version it builds on belongs to a unit still in flight, which may
            # yet take it back.
            raise InFlight(w)
        taken = self._take_claims(w, session)
        try:
            self._apply_version(w, session)
        except BaseException:
            if session is None:
                self._give_back(w, taken)
            raise
        self._release_claims(w, session)

    def _apply_version(self, w: Write, session: ClientSession | None) -> None:
        current = self.cols.current[w.type]
        if w.expected is None:
            # A create: the current collection's primary key refuses a second one.
            try:
                current.insert_one(current_document(w), session=session)
            except DuplicateKeyError as exc:
                raise VersionConflict(w) from exc
            try:
                self._record_created([w], session)
            except Exception:
                if session is None:
                    self._undo(w)
                raise
            return
        # An update: claiming version n+1 in history is the compare-and-set. Inserting
        # a primary key is atomic on every MongoDB wire-protocol server, where a
        # filtered replace is not (FerretDB reads and then writes).
        # The history claim made this writer the only one that may move the record
        # from version n to n+1; the filter checks it is still at n (FerretDB reads the
        # record by the ``_id`` index and tests ``v`` before its UPDATE, so the filter
        # alone would let two writers through: the claim is what decides).
        self._claim(w, session)
        # The version planned on, not only its number: a unit that failed took its
        # version back and another may have written one of the same number since.
        base: dict[str, Any] = {"_id": w.id, "v": w.expected}
        if w.base_written is not None:
            base["lu"] = w.base_written
        matched = current.replace_one(base, current_document(w), session=session
                                      ).matched_count == 1
        if not matched:
            # Give back this writer's claim only: a writer stalled past ORPHAN_AGE may
            # find its claim cleared (:meth:`_clear_orphan`) and the version another's.
            self.cols.history[w.type].delete_one(
                {"_id": f"{w.id}/{w.version}", "lu": w.last_updated}, session=session)
            raise VersionConflict(w)

    # -- unique identifiers (master patient index) -----------------------------------

    def _take_claims(self, w: Write, session: ClientSession | None) -> list[tuple[str, str | None]]:
        """Hold ``w``'s new unique identifiers; returns (key, previous holder) for each
        key taken, so a failure can give them back. The claims collection's primary key
        makes two concurrent holders impossible."""
        claims = self.cols.claims
        taken: list[tuple[str, str | None]] = []
        try:
            for key in w.taken:
                doc = claims.find_one({"_id": key}, session=session)
                if doc is None:
                    try:
                        claims.insert_one({"_id": key, "rid": w.id, "at": datetime.now(UTC)},
                                          session=session)
                    except DuplicateKeyError as exc:
                        holder = (claims.find_one({"_id": key}) or {}).get("rid", "")
                        raise IdentifierTaken(w, key, holder) from exc
                    taken.append((key, None))
                elif doc["rid"] != w.id:
                    if not self._stale_claim(w.type, doc):
                        raise IdentifierTaken(w, key, doc["rid"])
                    result = claims.replace_one(
                        {"_id": key, "rid": doc["rid"]},
                        {"_id": key, "rid": w.id, "at": datetime.now(UTC)}, session=session)
                    if result.matched_count == 0:
                        raise IdentifierTaken(w, key, "")
                    taken.append((key, doc["rid"]))
        except BaseException:
            if session is None:
                self._give_back(w, taken)
            raise
        return taken

    def _stale_claim(self, rtype: str, claim: dict[str, Any]) -> bool:
        """A claim whose holder no longer holds the identifier, left by a write that
        died; a young one may belong to a write still in flight."""
        holder = self.cols.current[rtype].find_one({"_id": claim["rid"]}, {"del": 1, "cl": 1})
        if holder is not None and not holder.get("del") and claim["_id"] in holder.get("cl", ()):
            return False
        at = claim.get("at")
        return at is None or at < datetime.now(UTC) - ORPHAN_AGE

    def _give_back(self, w: Write, taken: list[tuple[str, str | None]]) -> None:
        for key, before in taken:
            if before is None:
                self.cols.claims.delete_one({"_id": key, "rid": w.id})
            else:
                self.cols.claims.update_one({"_id": key, "rid": w.id}, {"$set": {"rid": before}})

    def _release_claims(self, w: Write, session: ClientSession | None) -> None:
        for key in w.released:
            self.cols.claims.delete_one({"_id": key, "rid": w.id}, session=session)

    def _claim(self, w: Write, session: ClientSession | None) -> None:
        history = self.cols.history[w.type]
        for attempt in range(2):
            try:
                history.insert_one(history_document(w), session=session)
                return
            except DuplicateKeyError as exc:
                if attempt or session is not None or not self._clear_orphan(w):
                    raise VersionConflict(w) from exc

    def _clear_orphan(self, w: Write) -> bool:
        """Free version n+1 claimed by a write that died before updating the current one."""
        now = self.cols.current[w.type].find_one({"_id": w.id}, {"v": 1})
        if now is None or now["v"] != w.expected:
            return False
        hid = f"{w.id}/{w.version}"
        claim = self.cols.history[w.type].find_one({"_id": hid}, {"lu": 1})
        if claim is None:
            return True
        if claim["lu"] > datetime.now(UTC) - ORPHAN_AGE:
            return False  # most likely a write still in flight
        self.cols.history[w.type].delete_one({"_id": hid, "lu": claim["lu"]})
        return True

    def _undo(self, w: Write) -> None:
        """Put back the version ``w`` replaced, if ``w`` is still the current one."""
        self._undo_version(w)
        for key in w.taken:
            self.cols.claims.delete_one({"_id": key, "rid": w.id})
        for key in w.released:
            try:
                self.cols.claims.insert_one({"_id": key, "rid": w.id, "at": datetime.now(UTC)})
            except DuplicateKeyError:
                log.error("cannot restore identifier %s of %s/%s: taken since", key, w.type, w.id)

    def _undo_version(self, w: Write) -> None:
        current = self.cols.current[w.type]
        now = current.find_one({"_id": w.id}, {"v": 1, "lu": 1, "h": 1})
        if now is not None and now["v"] > w.version:
            log.error("cannot restore %s/%s: changed again since", w.type, w.id)
            return
        if w.expected is None and now is not None and w.content_hash \
                and not _own_create(w, now):
            # A create refused by the primary key: the record is another writer's,
            # and so is its history.
            return
        self.cols.history[w.type].delete_one({"_id": f"{w.id}/{w.version}"})
        if now is None or now["v"] != w.version:
            return  # the write never reached the current document
        if w.expected is None:
            current.delete_one({"_id": w.id, "v": w.version})
            return
        previous = self.cols.history[w.type].find_one({"_id": f"{w.id}/{w.expected}"})
        if previous is None:
            log.error("cannot restore %s/%s: version %s missing", w.type, w.id, w.expected)
            return
        result = current.replace_one(
            {"_id": w.id, "v": w.version},
            {**self.rebuild(w.type, previous), "cl": list(w.previous_claims)},
        )
        if result.matched_count == 0:
            log.error("cannot restore %s/%s: changed again since", w.type, w.id)

    # -- several writes --------------------------------------------------------------

    def commit(self, writes: Sequence[Write], verify: Verify | None = None,
               journalled: bool = False) -> None:
        """Write all of ``writes`` or none. ``verify`` runs once they are all stored,
        before the unit ends: what it raises takes them back (a check that must see
        them in the database: interactions/integrity.py). ``journalled`` writes even
        a single write as a unit with a journal entry: others cannot build on it
        until it ends, and a crash before then rolls it back."""
        if not writes:
            return
        if len(writes) == 1 and not (journalled and not self.use_transactions):
            self._apply(writes[0])
            self._verified(writes, verify)
        elif self.use_transactions:
            with self.client.start_session() as session:
                session.with_transaction(lambda s: [self._apply(w, s) for w in writes])
            self._verified(writes, verify)
        else:
            self._commit_compensating(writes, verify)

    def _verified(self, applied: Sequence[Write], verify: Verify | None) -> None:
        if verify is None:
            return
        try:
            verify()
        except BaseException:
            for w in reversed(applied):
                self._undo(w)
            raise

    def _commit_compensating(self, writes: Sequence[Write], verify: Verify | None) -> None:
        started = datetime.now(UTC)
        journal_id = new_entry_id(started)
        owner = me()
        self.cols.journal.insert_one(
            {
                "_id": journal_id,
                "state": "pending",
                "started": started,
                "owner": owner.document(),
                "lease": new_lease(),
                "writes": [journal_write(w) for w in writes],
            }
        )
        self.leases.hold(journal_id)
        for w in writes:
            w.tx = journal_id
        applied: list[Write] = []
        try:
            try:
                self._insert_new(writes, applied)
                for w in writes:
                    if w.expected is not None:
                        self._apply(w)
                        applied.append(w)
                if verify is not None:
                    verify()
            except BaseException:
                for w in reversed(applied):
                    self._undo(w)
                self._finish(journal_id, owner.token)
                raise
            if not self._finish(journal_id, owner.token):
                # Another process judged this one dead (its lease ran out: the database
                # did not answer for that long) and rolls the transaction back.
                raise ServerError("the transaction was rolled back: the database did not "
                                  "answer in time")
        finally:
            self.leases.release(journal_id)

    def _finish(self, journal_id: str, token: str) -> bool:
        """Drop the entry, if it is still this process's; False when it is not."""
        done = self.cols.journal.delete_one(
            {"_id": journal_id, "owner.token": token}).deleted_count == 1
        if done:
            self.finished.add(journal_id)
        return done

    def _insert_new(self, writes: Sequence[Write], applied: list[Write]) -> None:
        """Creates in bulk, one round trip per collection: imports are mostly creates.
        A create that claims unique identifiers goes alone, claims first."""
        by_type: dict[str, list[Write]] = {}
        for w in writes:
            if w.expected is None and w.claims:
                self._apply(w)
                applied.append(w)
            elif w.expected is None:
                by_type.setdefault(w.type, []).append(w)
        for rtype, group in by_type.items():
            try:
                # Unordered: whatever the engine, every create but the refused ones is
                # written, and the refused ones are named. An ordered insert stops at
                # the first refusal on MongoDB, but FerretDB goes on with its next
                # batch of 100: counting ``nInserted`` from the start then took the
                # refused create (another writer's record) for one of ours.
                self.cols.current[rtype].insert_many([current_document(w) for w in group],
                                                     ordered=False)
            except BulkWriteError as exc:
                refused = sorted({e["index"] for e in exc.details.get("writeErrors", [])})
                if not refused:
                    raise
                applied.extend(w for i, w in enumerate(group) if i not in set(refused))
                raise VersionConflict(group[refused[0]]) from exc
            applied.extend(group)
            self._record_created(group)

    def _record_created(self, group: Sequence[Write], session: ClientSession | None = None) -> None:
        """History entries for creates: inserts, overwriting a leftover of a write that died.

        The current document's primary key already decided these creates, so a
        history entry of the same key can only be debris; plain inserts keep the
        common case at one round trip (an upsert by ``_id`` costs a lookup each).
        """
        history = self.cols.history[group[0].type]
        try:
            history.insert_many([history_document(w) for w in group], ordered=False,
                                session=session)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(e.get("code") != 11000 for e in errors):
                raise
            # One replacement per command: FerretDB 1.24 stops answering every client
            # after an update command of 50 statements.
            for e in errors:
                w = group[e["index"]]
                history.replace_one({"_id": f"{w.id}/{w.version}"}, history_document(w),
                                    upsert=True, session=session)

    def older_in_flight(self, own: str | None) -> list[str]:
        """The journal entries of the units running now that began before ``own`` (all
        but it when its start is not known): two units each waiting for the other
        would wait for ever."""
        mine = started_of(own) if own else None
        found = []
        for d in self.cols.journal.find({"state": "pending"}, {"_id": 1}):
            began = started_of(d["_id"])
            if d["_id"] != own and (mine is None or began is None or began < mine):
                found.append(d["_id"])
        return found

    # -- recovery --------------------------------------------------------------------

    def recover(self, wait: bool = True) -> int:
        """Roll back the transactions nobody will finish (:mod:`.recovery`); returns
        how many."""
        return Recovery(self.cols, self._undo, self.pk_only).run(wait)
