"""Who holds a journal entry, and whether they still do.

The compensating unit of work (:mod:`.unit_of_work`) writes a journal entry before
the first write of a transaction Bundle and deletes it after the last one, so that
a process that dies in between leaves the entry behind and another process can roll
the transaction back (FHIR R4 http.html#transaction: "either all succeed or all
fail"). Rolling back a transaction whose process is still writing would itself
break that promise, so an entry names its **owner** and carries a **lease**:

* the owner is the host (host name, boot id and PID namespace: where a process id
  means something), the process id, the process's start time (``/proc/<pid>/stat``,
  so a reused process id is not mistaken for the owner) and a random token;
* the lease (``lease``, an instant) is pushed forward every :data:`RENEW_EVERY`
  seconds by one daemon thread per process (:class:`Leases`) for as long as the
  transaction runs, however long one of its writes takes.

An entry is abandoned when its owner is on this host and that process is gone (at
once: nothing to wait for), or when its owner is elsewhere and its lease has run
out. An entry whose owner is alive is never abandoned. Leases compare the owner's
clock with the reader's: hosts sharing a database need synchronised clocks (NTP)
to well within :data:`LEASE`.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

from pymongo.collection import Collection
from pymongo.errors import PyMongoError

from .records import Write

log = logging.getLogger(__name__)

#: How long an entry stays held without renewal. Only owners on another host are
#: judged by it: a process on this host is checked directly.
LEASE = timedelta(seconds=60)
#: How often the heartbeat renews the leases of the entries a process holds.
RENEW_EVERY = 5.0
#: How often a process that runs transactions looks for abandoned entries.
SWEEP_EVERY = 30.0


@cache
def _host_of_boot() -> str:
    """Host name, kernel boot and PID namespace: two processes with the same
    ``host`` see the same process table, so a process id can be looked up."""
    parts = [socket.gethostname()]
    try:
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip())
        parts.append(os.readlink("/proc/self/ns/pid"))
    except OSError:
        parts.append(secrets.token_hex(8))  # no /proc: no other process can check ours
    return "/".join(parts)


def start_time(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot), None when there is no
    such process or it is a zombie (dead, not yet reaped by its parent)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()  # after "pid (command) "
    if len(fields) < 20 or fields[0] in ("Z", "X", "x"):
        return None
    return fields[19]  # field 22 of proc(5): starttime


@dataclass(frozen=True)
class Owner:
    """The process that holds a journal entry."""

    host: str
    pid: int
    start: str
    token: str

    def document(self) -> dict[str, Any]:
        return {"host": self.host, "pid": self.pid, "start": self.start, "token": self.token}


_me: Owner | None = None


def me() -> Owner:
    """This process (a forked child is a new owner: new pid, new token)."""
    global _me
    if _me is None or _me.pid != os.getpid():
        pid = os.getpid()
        _me = Owner(_host_of_boot(), pid, start_time(pid) or "", secrets.token_hex(8))
    return _me


def alive(owner: dict[str, Any] | None) -> bool | None:
    """True or False for an owner on this host; None when this process cannot tell
    (another host, or an entry written before owners were recorded)."""
    if not owner or owner.get("host") != _host_of_boot():
        return None
    if owner.get("token") == me().token:
        return True
    started = start_time(int(owner.get("pid", 0)))
    return started is not None and started == owner.get("start", started)


def abandoned(entry: dict[str, Any], now: datetime) -> bool:
    """Whether nobody will finish ``entry``: its owner is gone, or elsewhere and
    silent past its lease (an entry without one is held for :data:`LEASE` from its
    start)."""
    living = alive(entry.get("owner"))
    if living is not None:
        return not living
    return lease_of(entry) <= now


def lease_of(entry: dict[str, Any]) -> datetime:
    lease = entry.get("lease")
    if isinstance(lease, datetime):
        return lease if lease.tzinfo else lease.replace(tzinfo=UTC)
    started = entry.get("started")
    if isinstance(started, datetime):
        return (started if started.tzinfo else started.replace(tzinfo=UTC)) + LEASE
    return datetime.min.replace(tzinfo=UTC)


def new_lease() -> datetime:
    return datetime.now(UTC) + LEASE


class Leases:
    """The journal entries one process holds, renewed by a daemon thread.

    The thread starts with the first entry held (in each process: threads do not
    survive ``fork``) and also runs ``sweep`` every :data:`SWEEP_EVERY` seconds, so
    an entry left by a process that died while this one runs on is rolled back
    without waiting for a restart.
    """

    def __init__(self, journal: Collection[Any], sweep: Callable[[], object]) -> None:
        self.journal = journal
        self.sweep = sweep
        self._held: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def hold(self, entry_id: str) -> None:
        with self._lock:
            if self._pid != os.getpid():  # a forked child: the parent's thread is not here
                self._held, self._thread, self._pid = set(), None, os.getpid()
            self._held.add(entry_id)
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._run, name="journal-leases",
                                                daemon=True)
                self._thread.start()

    def release(self, entry_id: str) -> None:
        with self._lock:
            self._held.discard(entry_id)

    def close(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and self._pid == os.getpid():
            thread.join(timeout=RENEW_EVERY * 2)

    def renew(self) -> None:
        """Push forward the lease of every entry held (by ``_id``: one indexed write
        each); an entry another process took over (its owner token changed) is not."""
        with self._lock:
            held = list(self._held)
        token = me().token
        for entry_id in held:
            try:
                self.journal.update_one({"_id": entry_id, "owner.token": token},
                                        {"$set": {"lease": new_lease()}})
            except PyMongoError as exc:
                log.warning("could not renew the lease of transaction %s: %s", entry_id, exc)

    def _run(self) -> None:
        since_sweep = 0.0
        while not self._stop.wait(RENEW_EVERY):
            self.renew()
            since_sweep += RENEW_EVERY
            if since_sweep >= SWEEP_EVERY:
                since_sweep = 0.0
                try:
                    self.sweep()
                except Exception:  # the next sweep tries again
                    log.exception("rolling back abandoned transactions failed")


def journal_write(w: Write) -> dict[str, Any]:
    """What the journal keeps of a write: enough to undo it."""
    return {"type": w.type, "id": w.id, "expected": w.expected, "version": w.version,
            "claims": list(w.claims), "previous_claims": list(w.previous_claims),
            # tell a create's own record from another writer's of the same id
            "lu": w.last_updated, "h": w.content_hash}


def from_journal(raw: dict[str, Any]) -> Write:
    """The write a journal entry describes; an entry an older version wrote has no
    ``lu`` and ``h``, and its creates are undone by id alone, as they were."""
    at = raw.get("lu")
    if isinstance(at, datetime) and at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return Write(
        raw["type"], raw["id"], raw["version"], raw["expected"],
        at if isinstance(at, datetime) else datetime.now(UTC), None, "",
        content_hash=str(raw.get("h") or ""),
        claims=tuple(raw.get("claims", ())),
        previous_claims=tuple(raw.get("previous_claims", ())),
    )
