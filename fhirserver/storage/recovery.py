"""Rolling back transactions a dead process left half done (FHIR R4
http.html#transaction: "either all succeed or all fail").

:class:`Recovery` runs at every start, before the process answers anything
(``Repository.initialise``; `fhirserver serve` runs it once more before gunicorn
forks, so the workers find nothing left to do), and every half minute in a process
that runs transactions (:class:`.journal.Leases`). It reads the pending journal
entries (the ``state`` index serves that query, and the journal only holds the
transactions in flight), picks those nobody will finish (:func:`.journal.abandoned`)
and, holding the lock entry :data:`RECOVERY_LOCK` so that one process rolls back
while the others wait, undoes each one's writes by primary key, the creates in bulk.
Its cost is that of the pending entries, whatever the size of the database.

Every step can be cut short by a kill and done again: an entry is taken over first
(the recovering process becomes its owner, so a second recovery knows it abandoned
once that process is gone), each undo is a no-op when already done, and the entry is
dropped last.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from pymongo import DeleteOne
from pymongo.errors import DuplicateKeyError

from .documents import Collections
from .journal import LEASE, abandoned, alive, from_journal, lease_of, me, new_lease
from .records import Write

log = logging.getLogger(__name__)

#: The journal entry whose holder is rolling back abandoned transactions.
RECOVERY_LOCK = "~recovery"


class Recovery:
    """One pass over the journal of the database of ``cols``. ``undo`` undoes one
    write (:meth:`.UnitOfWork._undo`); ``pk_only``: the engine answers ``_id: {$in}``
    by a scan (FerretDB), so reads go one id at a time."""

    def __init__(self, cols: Collections, undo: Callable[[Write], None], pk_only: bool) -> None:
        self.cols = cols
        self.journal = cols.journal
        self.undo = undo
        self.pk_only = pk_only

    def run(self, wait: bool = True) -> int:
        """Roll back the transactions nobody will finish; returns how many.

        At start (``wait``) this waits for another process's recovery to end, and
        watches each entry of an owner on another host until that owner renews its
        lease (it is alive: leave it) or stays silent for a whole lease (roll back).
        The periodic sweep (``wait=False``) leaves all that to the next sweep.
        """
        rolled = 0
        watched: dict[str, tuple[datetime, float]] = {}  # owner elsewhere: lease, since
        renewed: set[str] = set()
        while True:
            now = datetime.now(UTC)
            pending = list(self.journal.find({"state": "pending"}, {"writes": 0}))
            doomed = [e["_id"] for e in pending if abandoned(e, now)]
            forced: list[str] = []
            for e in pending:
                if e["_id"] in doomed or alive(e.get("owner")) is not None:
                    continue
                lease, since = watched.setdefault(e["_id"], (lease_of(e), time.monotonic()))
                if lease != lease_of(e):
                    renewed.add(e["_id"])  # its owner is alive
                elif wait and time.monotonic() - since > LEASE.total_seconds():
                    forced.append(e["_id"])  # silent for a whole lease: its clock runs ahead
            if doomed or forced:
                lock = self._lock_recovery(wait)
                if lock is None:
                    return rolled  # a live process is rolling them back
                try:
                    for entry_id in [*doomed, *forced]:
                        rolled += self._roll_back(entry_id, lock, force=entry_id in forced)
                finally:
                    self.journal.delete_one({"_id": RECOVERY_LOCK, "owner.token": lock})
                continue
            undecided = {e["_id"] for e in pending if e["_id"] in watched} - renewed
            if not wait or not undecided:
                return rolled
            time.sleep(0.5)

    def _lock_recovery(self, wait: bool) -> str | None:
        """Hold the recovery lock (returns its token), taking it from a holder that
        died; None when a live process holds it and ``wait`` is False."""
        while True:
            owner = me()
            try:
                self.journal.insert_one({"_id": RECOVERY_LOCK, "state": "lock",
                                         "owner": owner.document(), "lease": new_lease()})
                return owner.token
            except DuplicateKeyError:
                pass
            holder = self.journal.find_one({"_id": RECOVERY_LOCK})
            if holder is not None and abandoned(holder, datetime.now(UTC)):
                token = (holder.get("owner") or {}).get("token")
                self.journal.delete_one({"_id": RECOVERY_LOCK, "owner.token": token})
                continue
            if holder is not None and not wait:
                return None
            time.sleep(0.2)

    def _roll_back(self, entry_id: str, lock: str, force: bool = False) -> int:
        """Undo one abandoned entry's writes, newest first, then drop it.

        The entry is first taken over (this process becomes its owner): the old owner,
        if it was only slow, then fails instead of answering success, and a recovery
        killed part-way leaves an entry of a dead owner, which the next one takes over
        again; each undo is a no-op when already done."""
        self.journal.update_one({"_id": RECOVERY_LOCK, "owner.token": lock},
                                {"$set": {"lease": new_lease()}})
        entry = self.journal.find_one({"_id": entry_id})
        if entry is None or entry.get("state") != "pending":
            return 0
        if not force and not abandoned(entry, datetime.now(UTC)):
            return 0
        self.journal.update_one({"_id": entry_id},
                                {"$set": {"owner": me().document(), "lease": new_lease()}})
        started = time.perf_counter()
        writes = [from_journal(raw) for raw in entry["writes"] if raw["type"] in self.cols.current]
        self._undo_all(writes)
        self.journal.delete_one({"_id": entry_id})
        log.warning("rolled back transaction %s (%d writes) left by a process that died, "
                    "in %.2f s", entry_id, len(writes), time.perf_counter() - started)
        return 1

    def _undo_all(self, writes: Sequence[Write]) -> None:
        """Undo ``writes`` in reverse order of :meth:`.UnitOfWork._commit_compensating`: updates and
        creates that hold identifiers one by one, the other creates in bulk."""
        plain: dict[str, list[Write]] = {}
        for w in writes:
            if w.expected is None and not w.claims:
                plain.setdefault(w.type, []).append(w)
        for w in reversed(writes):
            if w.expected is not None:
                self.undo(w)
        for rtype, group in plain.items():
            self._undo_creates(rtype, group)
        for w in reversed(writes):
            if w.expected is None and w.claims:
                self.undo(w)

    def _undo_creates(self, rtype: str, group: Sequence[Write]) -> None:
        """Delete the versions these creates wrote, where they are still current: the
        current versions read by primary key, then two bulk deletes of those found.

        History goes first: a create writes its current document before its history
        entry, and is undone the other way round, so a create whose current document
        is absent has no history entry left either (killed at any point, a commit or
        a recovery leaves nothing a second recovery must look for)."""
        current, history = self.cols.current[rtype], self.cols.history[rtype]
        now = self._versions(rtype, [w.id for w in group])
        ours: list[Write] = []
        for w in group:
            if now.get(w.id, w.version) > w.version:
                log.error("cannot restore %s/%s: changed again since", w.type, w.id)
            elif w.id in now:
                ours.append(w)
        if ours:
            history.bulk_write([DeleteOne({"_id": f"{w.id}/{w.version}"}) for w in ours],
                               ordered=False)
            current.bulk_write([DeleteOne({"_id": w.id, "v": w.version}) for w in ours],
                               ordered=False)

    def _versions(self, rtype: str, ids: Sequence[str]) -> dict[str, int]:
        """The current version of each of ``ids`` that exists, by primary key."""
        current = self.cols.current[rtype]
        if not self.pk_only:
            return {d["_id"]: d["v"] for d in current.find({"_id": {"$in": list(ids)}}, {"v": 1})}
        # FerretDB answers ``$in`` by scanning the collection: one indexed read each.
        with ThreadPoolExecutor(max_workers=min(8, max(1, len(ids)))) as pool:
            found = pool.map(lambda rid: current.find_one({"_id": rid}, {"v": 1}), ids)
            return {d["_id"]: d["v"] for d in found if d is not None}
