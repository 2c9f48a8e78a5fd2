"""A patient's sharing choices (DESIGN.md section 1): restrict records carrying
sensitive security labels to the organisation that wrote them, or opt out of
sharing across organisations altogether. Break-the-glass still opens the record
(and is recorded as an emergency). Family members bound to the patient's card read
sensitive-labelled records only when the patient chooses to share them.

Which labels are sensitive is ``model/security_labels.py``.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .. import errors
from ..storage import changes
from ..storage.documents import SEARCH_CLAIMS_COLLECTION
from ..storage.search_claims import SearchClaims
from ..storage.upserts import upsert

CONSENTS = "_consents"
_JITTER = random.Random()


@dataclass(frozen=True)
class Choice:
    restrict_sensitive: bool = False
    opt_out: bool = False
    #: family members bound to this patient's card may read sensitive-labelled records
    share_with_family: bool = False


def _choice(doc: dict[str, Any]) -> Choice:
    return Choice(bool(doc.get("restrict_sensitive")), bool(doc.get("opt_out")),
                  bool(doc.get("share_with_family")))


def load(db: Any, patients: Iterable[str]) -> dict[str, Choice]:
    wanted = sorted(set(patients))
    if not wanted:
        return {}
    return {d["_id"]: _choice(d) for d in db[CONSENTS].find({"_id": {"$in": wanted}})}


def save(db: Any, patient: str, choice: Choice) -> None:
    upsert(db[CONSENTS], {"_id": patient, **choice.__dict__})
    noted = False
    try:
        changes.note(db, CONSENTS, [patient])  # once stored: storage/changes.py
        noted = True
    finally:
        # not during a refresh that may have looked for notes before ours
        if _refreshing.acquire(timeout=WAIT):
            try:
                held = _cache.get(_cache_key(db))
                if held is not None:
                    held.looked = float("-inf")  # this process reads its own change next
                    if not noted:
                        held.loaded = float("-inf")
            finally:
                _refreshing.release()
        else:  # the next look of this process, whoever makes it, reads them whole
            _behind.add(_cache_key(db))


#: How long a change of one patient's choices waits for another's to finish.
CHANGE_WAIT = 5.0


@contextmanager
def _held(claims: SearchClaims, patient: str,
          wait: float = CHANGE_WAIT) -> Iterator[Callable[[], bool] | None]:
    """Hold ``patient``'s choices (a primary key, ``storage/search_claims.py``) for a
    read and the write after it; yields how to check, just before writing, that they
    are still held (a lease, taken over by the next change once it ran out: the
    holder stalled), or None when another held them past CHANGE_WAIT (a holder that
    died keeps them for its lease)."""
    deadline = time.monotonic() + wait
    while (held := claims.take(f"consent|{patient}", "Patient", patient)) is None:
        if time.monotonic() > deadline:
            yield None
            return
        time.sleep(_JITTER.uniform(0.01, 0.05))
    try:
        yield lambda: claims.renew(held)
    finally:
        claims.release(held)


def change(db: Any, claims: SearchClaims, patient: str, flags: dict[str, bool],
           alive: Callable[[], bool]) -> Choice:
    """Set the choices named in ``flags`` (``Choice`` fields), keeping the others as
    stored, and return the result. Two changes at once (the patient on two devices, a
    guardian and the patient) would each read the same choices and the second write
    would undo the first's flag: each holds the patient's choices from its read to
    its write. ``alive``: whether the Patient is still there, asked once they are
    held, so that a change racing the Patient's delete is not left for a new person
    registered at the id (the delete forgets the choices under the same hold). 409
    when another holds them past CHANGE_WAIT; 404 once the Patient is deleted."""
    with _held(claims, patient) as still_held:
        if still_held is None:
            raise errors.Conflict("The sharing choices are being changed; try again")
        if not alive():
            raise errors.NotFound(f"Resource Patient/{patient} is not known")
        stored = load(db, [patient]).get(patient) or Choice()
        if flags:
            stored = Choice(**{**stored.__dict__, **flags})
            if not still_held():  # another change went ahead: what was read is old
                raise errors.Conflict("The sharing choices were changed meanwhile; try again")
            save(db, patient, stored)
        return stored


def forget_patient(db: Any, patient: str) -> None:
    """A deleted Patient's choice goes with the record: a new person registered at
    the id later has made none. Once a change in flight has written, or no longer
    holds the choices (it stalled past its lease and finds them taken: it writes
    nothing)."""
    claims = SearchClaims(db[SEARCH_CLAIMS_COLLECTION])
    with _held(claims, patient, wait=claims.lease.total_seconds() + CHANGE_WAIT):
        if db[CONSENTS].delete_one({"_id": patient}).deleted_count:
            changes.note(db, CONSENTS, [patient])


def count_lost_change(db: Any) -> None:
    """A process stopped between storing a choice and noting it leaves the other
    processes holding the old one. A process starting notes a change it cannot
    name, so they all read the choices whole once, whether or not one was lost."""
    changes.note(db, CONSENTS, None)


#: Per process: every patient's choice. Only patients who chose something have a
#: record, and a request that must check hundreds of treated patients pays no
#: database round trip for them. Every REFRESH seconds one thread of the process
#: reads the change log (storage/changes.py), and the choices that changed since when
#: any did; every RELOAD seconds it reads them whole (a choice stored whose note
#: failed, a restored database, a process that looked too seldom: at most this late).
REFRESH = 2.0
RELOAD = 300.0
#: A thread waits for another's refresh once what is held is this old, and no longer
#: than WAIT seconds: past it the request fails rather than use older choices.
STALE = 2 * REFRESH
WAIT = 30.0


@dataclass
class _Cached:
    choices: dict[str, Choice]
    counted: changes.Position  # the newest change read
    looked: float
    loaded: float  # when the choices were read whole


_cache: dict[str, _Cached] = {}
_refreshing = threading.Lock()
#: databases whose choices this process changed while another thread held the lock
#: past WAIT: read whole at the next look
_behind: set[str] = set()


def _cache_key(db: Any) -> str:
    return changes.db_key(db)


def _read_all(db: Any, now: float) -> _Cached:
    counted = changes.newest(db, CONSENTS)  # the notes before the choices
    return _Cached({d["_id"]: _choice(d) for d in changes.primary(db, CONSENTS).find({})},
                   counted, now, now)


def _refresh(db: Any, key: str, held: _Cached | None, now: float) -> _Cached:
    """Bring the choices up to date, under ``_refreshing``. Reading them whole only
    because RELOAD passed, this first publishes what the change log brings, so other
    threads answer from it meanwhile instead of waiting for the whole read."""
    if held is None or key in _behind:
        _behind.discard(key)
        return _read_all(db, now)
    counted, keys = changes.changed_since(db, CONSENTS, held.counted)
    if keys is None:
        return _read_all(db, now)
    choices = held.choices
    if keys:
        choices = dict(choices)
        for patient in sorted(set(keys)):
            doc = changes.primary(db, CONSENTS).find_one({"_id": patient})
            if doc is None:
                choices.pop(patient, None)
            else:
                choices[patient] = _choice(doc)
    fresh = _Cached(choices, counted, now, held.loaded)
    if now - held.loaded > RELOAD:
        _cache[key] = fresh
        return _read_all(db, now)
    return fresh


def cached(db: Any, patients: Iterable[str]) -> dict[str, Choice]:
    """The choices of ``patients`` that made one. One thread of a process refreshes
    them at a time; the others meanwhile answer from what is held while it is less
    than STALE seconds old, and otherwise wait for the refresh."""
    key = _cache_key(db)
    held = _cache.get(key)
    now = time.monotonic()
    if held is None or now - held.looked > REFRESH or key in _behind:
        wait = held is None or now - held.looked > STALE
        if _refreshing.acquire(timeout=WAIT) if wait else _refreshing.acquire(blocking=False):
            try:
                held = _cache.get(key)
                if held is None or now - held.looked > REFRESH or key in _behind:
                    held = _cache[key] = _refresh(db, key, held, now)
            finally:
                _refreshing.release()
        elif wait:
            raise errors.Unavailable("The patients' sharing choices could not be read in time")
        else:
            held = _cache.get(key) or held
    assert held is not None
    everyone = held.choices
    return {p: everyone[p] for p in patients if p in everyone}


def allowed(choice: Choice | None, sensitive: bool, writer_org: str | None,
            reader_org: str | None) -> bool:
    """May a clinician or client of ``reader_org`` see a record of this patient?"""
    if choice is None:
        return True
    same_org = writer_org is not None and writer_org == reader_org
    if choice.opt_out:
        return same_org
    if choice.restrict_sensitive and sensitive:
        return same_org
    return True


def condition(choices: dict[str, Choice], reader_org: str | None) -> dict[str, Any] | None:
    """The MongoDB condition on Observation/DiagnosticReport documents that applies
    the choices of these patients (``pat`` the patient, ``sens`` the label flag,
    ``org`` the writing organisation); None when none of them chose anything."""
    restricted = sorted(p for p, c in choices.items() if c.restrict_sensitive and not c.opt_out)
    opted_out = sorted(p for p, c in choices.items() if c.opt_out)
    if not restricted and not opted_out:
        return None
    mine = {"org": reader_org} if reader_org else {"_id": {"$exists": False}}
    special = restricted + opted_out
    branches: list[dict[str, Any]] = [{"pat": {"$nin": special}}]
    if restricted:
        branches.append({"$and": [{"pat": {"$in": restricted}},
                                  {"$or": [{"sens": {"$ne": True}}, mine]}]})
    if opted_out:
        branches.append({"$and": [{"pat": {"$in": opted_out}}, mine]})
    return {"$or": branches}
