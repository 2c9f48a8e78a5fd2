"""Per process: each caller's care relationships, kept current by a change log.

Whom a caller reaches rests on their care relationships (``auth/access.py``): a
clinician's few dozen, but a clinic system's organisation can hold tens of
thousands. They used to be read again whole, per caller, every 2 s in every worker,
so a busy organisation's client paid for all its relationships every 2 s, whether
any had changed or not: about 0.2 s a look at 10,000 (``scripts/bench_auth.py``).

Now a process keeps what it read. Every writer of a relationship notes its ``_id``
in the change log of ``_care_relationships`` once it is stored
(``storage/changes.py``); every REFRESH seconds one thread of a process reads the
notes that came since its last look and reads those relationships alone, by
``_id``, into the callers it holds. A note it cannot name (a process that may have
stopped between storing and noting), more notes than it reads one by one, a log
begun again, and RELOAD seconds drop everything it holds: each caller's
relationships are read whole again at their next request. The writer's own process
applies its change at once, as the cache it replaced forgot the caller's entry (or,
when another thread holds the cache past WAIT, drops everything at its next look).

On a database that the server's own processes alone write (the embedded one), each
note is signalled through a file in the data directory (``storage/changes.py``,
``storage/change_signal.py``), and a process whose signal moved since its last look
looks again before it answers: what it holds is then as current as the database for
every change noted and signalled before the request came (:func:`exact`), not up to
REFRESH seconds behind.

Relationships end by time, not by a write: each holds its end, which
:func:`.reach.live_reach` compares with the request's moment. What it worked out is
carried over a change (:func:`.reach.with_changes`): an organisation's next request
after another worker's card scan does not work out its ten thousand again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pymongo.errors import PyMongoError

from .. import errors
from ..storage import changes
from .reach import with_changes

CARE = "_care_relationships"
#: What a caller's reach needs of each relationship.
FIELDS = {"patient": 1, "until": 1, "emergency": 1, "emergency_until": 1}
#: A caller's relationships come in one reply: a clinic system's organisation can hold
#: thousands, and the driver's batches of 101 cost a round trip each (10,000 of these
#: small documents make about a megabyte).
BATCH = 10_000
REFRESH = 2.0
RELOAD = 300.0
#: A thread waits for another's refresh once what is held is this old, and no longer
#: than WAIT seconds: past it the request fails (503) rather than use older reach.
STALE = 2 * REFRESH
WAIT = 30.0
#: Callers held per process at most; past it the process starts afresh.
CALLERS = 50_000


@dataclass
class _Held:
    counted: changes.Position  # the newest change read
    looked: float
    loaded: float  # when everything held was dropped and began to be read again
    #: per caller: ``{"r": {patient: relationship}}``, plus what live_reach keeps
    callers: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: the signal file's value read before the change log was (None: no signal)
    signal: bytes | None = None


_held: dict[str, _Held] = {}
_lock = threading.Lock()
#: databases whose relationships this process changed while another thread held the
#: lock past WAIT: everything held is dropped at the next look
_behind: set[str] = set()


def _db_key(db: Any) -> str:
    return changes.db_key(db)


def _acquire(wait: bool) -> bool:
    return _lock.acquire(timeout=WAIT) if wait else _lock.acquire(blocking=False)


def _current(db: Any) -> _Held:
    """What this process holds for ``db``, brought up to date every REFRESH seconds
    by one thread; the others answer from it meanwhile while it is under STALE. When
    the signal moved, every thread waits for the look it calls for."""
    key = _db_key(db)
    held = _held.get(key)
    now = time.monotonic()
    signal = changes.signal_of(db, CARE)
    news = signal is not None and held is not None and signal.read() != held.signal
    if held is not None and now - held.looked <= REFRESH and not news and key not in _behind:
        return held
    wait = held is None or now - held.looked > STALE or news
    if not _acquire(wait):
        if wait:
            raise errors.Unavailable("The care relationships could not be read in time")
        assert held is not None
        return held
    try:
        held = _held.get(key)
        # read before the change log: a change signalled after this is looked for again
        value = signal.read() if signal is not None else None
        if held is None or key in _behind:
            _behind.discard(key)
            held = _held[key] = _Held(changes.newest(db, CARE), now, now,  # notes before reads
                                      signal=value)
        elif now - held.looked > REFRESH or held.signal != value:
            held = _held[key] = _refresh(db, held, now, value)
        return held
    finally:
        _lock.release()


def _refresh(db: Any, held: _Held, now: float, signal: bytes | None) -> _Held:
    counted, keys = changes.changed_since(db, CARE, held.counted)
    if keys is None or now - held.loaded > RELOAD:
        return _Held(counted, now, now, signal=signal)
    _apply(db, held, keys)
    held.counted, held.looked, held.signal = counted, now, signal
    return held


def exact(db: Any) -> bool:
    """Whether what this process holds of ``db`` reflects every change of a
    relationship noted and signalled before the caller's last look
    (:func:`relationships`): the database is signalled and its signal could be read."""
    held = _held.get(_db_key(db))
    return changes.signal_of(db, CARE) is not None and held is not None \
        and held.signal is not None


def _apply(db: Any, held: _Held, keys: Iterable[str]) -> None:
    """Read again the relationships ``keys`` of the callers ``held`` holds. Each
    caller's map is replaced, never changed in place: other threads may be reading it."""
    by_caller: dict[str, dict[str, dict[str, Any] | None]] = {}
    for key in sorted(set(keys)):
        who, _, patient = key.rpartition("|")
        if who in held.callers:
            by_caller.setdefault(who, {})[patient] = \
                changes.primary(db, CARE).find_one({"_id": key}, FIELDS)
    for who, found in by_caller.items():
        held.callers[who] = with_changes(held.callers[who], found)


def relationships(db: Any, who: str) -> dict[str, Any]:
    """``who``'s relationships as :func:`.reach.live_reach` takes them, read whole
    the first time this process is asked for them since it last dropped what it held.
    Read under the lock, so that no change is applied meanwhile to what the read may
    already have missed."""
    held = _current(db)
    entry = held.callers.get(who)
    if entry is not None:
        return entry
    if not _acquire(True):
        raise errors.Unavailable("The care relationships could not be read in time")
    try:
        held = _held.get(_db_key(db)) or held
        entry = held.callers.get(who)
        if entry is None:
            found = changes.primary(db, CARE).find({"who": who}, FIELDS).batch_size(BATCH)
            entry = {"r": {d["patient"]: d for d in found}}
            if len(held.callers) >= CALLERS:
                held.callers = {}
            held.callers[who] = entry
        return entry
    finally:
        _lock.release()


def changed(db: Any, keys: list[str] | None) -> None:
    """Note that the relationships ``keys`` (``"<who>|<patient>"``) were stored or
    removed (None: some that cannot be named), and apply them here at once. A note
    that fails is followed by one that names nothing, and this process drops what it
    holds at its next look even if that one fails too."""
    if keys is not None and len(keys) > changes.NAMED_AT_MOST:
        keys = None  # a reader would read them whole anyway
    noted = False
    try:
        changes.note(db, CARE, keys)
        noted = True
    finally:
        if _lock.acquire(timeout=WAIT):
            try:
                held = _held.get(_db_key(db))
                if held is not None:
                    drop = keys is None or not noted
                    if not drop:
                        try:
                            _apply(db, held, keys)  # type: ignore[arg-type]
                        except PyMongoError:
                            drop = True
                    if drop:  # everything is read again at the next look
                        held.loaded = held.looked = float("-inf")
            finally:
                _lock.release()
        else:
            _behind.add(_db_key(db))


def count_lost_change(db: Any) -> None:
    """A process stopped between storing a relationship and noting it leaves the
    others holding the old one: a process starting notes a change it cannot name,
    so they all drop what they hold once."""
    changes.note(db, CARE, None)


def clear() -> None:
    """Forget everything this process holds (tests: a process that just started)."""
    with _lock:
        _held.clear()
        _behind.clear()
