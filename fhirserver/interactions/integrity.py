"""Referential integrity between a delete and the writes that refer to its target,
when both run at once.

A delete is refused while other records refer to its target (interactions/write.py).
Checking that alone left a race: a create that found the target alive, and stored
its reference just after the delete looked for referrers, pointed at a deleted
record. Neither write sees the other without a multi-document transaction, which
FerretDB and a standalone MongoDB do not have, so each side writes first and reads
second, and one of the two always sees the other:

* a delete is written as a journalled unit (storage/unit_of_work.py: others cannot
  build on it while it runs, a crash rolls it back) and, once stored, looks for
  referrers again before its unit ends; finding one, it is taken back (409);
* a write that refers to stored records reads each of them again once its own
  writes are stored (:func:`settle`). One being deleted by a unit still in flight
  is waited for; deleted for good, the write is taken back (409).

Only a delete that has passed its second look can stand, so a write it did not see
was stored after the target was deleted, and a writer planned on that write would
have found the target deleted (a 422). Nor does a write refer to a record that a
unit still running may take back: a reference to a record whose create or delete is
in flight is planned again, and a version whose unit ended after it was read is read
again (context.Planner.resolves). A reference is checked again only to the records
of this server the write's references resolved to (rules.check_references).

Most writes need no second look, and skip its round trip. A stored delete waits
:data:`GRACE` before its own second look. A write whose first read of its targets
(the plan began before it) and whose last stored write lie less than :data:`QUICK`
apart was therefore stored before any delete its first read missed looked again: the
delete was stored after that read, and looks :data:`GRACE` later. That delete
sees the write and is taken back. Durations are measured on each process's own
clock, one that keeps counting while the machine sleeps; no two clocks are compared.
A write already slow when it comes to store is written as a journalled unit, so
that nobody refers to its records while its second look may take them back. One
that only becomes slow while storing is not: a reference to one of its records made
in that instant, while what it refers to is deleted, is the window left.
The managed care team of a Patient (model/care_teams.py) is deleted with the
Patient, without a look for its own referrers, so a write referring to it always
looks again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from .. import errors
from ..model.care_teams import is_managed
from ..storage.records import Write
from ..storage.repository import Repository


class Planner(Protocol):
    """What these checks read of a plan (interactions/context.Planner, which calls
    them: a protocol keeps this module below it)."""

    @property
    def repo(self) -> Repository: ...

    writes: list[Write]
    referred: dict[str, str]
    settles: list[Callable[[], None]]
    #: :func:`now` before the plan's first read, and once its writes were stored
    started: float
    stored_at: float


#: How long a write waits for a delete of what it refers to (a delete takes
#: milliseconds; one held up longer is answered "try again").
WAIT = 10.0
POLL = 0.01
#: How long a stored delete waits before it looks for referrers again (s).
GRACE = 0.25
#: A write planned and stored in less than this (s) skips its second look; the
#: margin below :data:`GRACE` is for clocks that run at slightly different rates.
QUICK = 0.2

_CLOCK = getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC)


def now() -> float:
    """Seconds on a clock that never goes back and, on Linux, keeps counting while
    the machine is suspended (a writer asleep in between must not seem quick)."""
    return time.clock_gettime(_CLOCK)


def refer(planner: Planner, target: str, path: str) -> None:
    """``target`` ("Type/id"), a stored record, is referred to at ``path``."""
    planner.referred.setdefault(target, path)


def settle(planner: Planner) -> None:
    """After the plan's writes are stored, before its unit ends."""
    planner.stored_at = now()
    for check in planner.settles:
        check()
    quick = planner.stored_at - planner.started < QUICK
    written = {f"{w.type}/{w.id}" for w in planner.writes}
    for target, path in sorted(planner.referred.items()):
        if target not in written and not (quick and _looked_for(target)):
            _still_there(planner, target, path)


def slow(planner: Planner) -> bool:
    """Whether a plan that refers to stored records will look at them again once
    stored: then its writes are a journalled unit (storage/unit_of_work.py), so that
    nobody builds on a record that its second look may yet take back."""
    return bool(planner.referred) and now() - planner.started >= QUICK


def _looked_for(target: str) -> bool:
    """Whether every delete of ``target`` looks for its referrers once stored."""
    rtype, _, rid = target.partition("/")
    return not is_managed(rtype, rid)


def stays(repo: Repository, rtype: str, rid: str, version: int) -> bool:
    """Whether taking back ``version`` of a live record leaves it live: it updated a
    live version (taking back a create or a re-create takes the record away)."""
    if version <= 1:
        return False
    before = repo.get_version(rtype, rid, version - 1)
    return before is not None and not before.deleted


def before_second_look(planner: Planner, target: str) -> None:
    """Wait, once a delete of ``target`` is stored, until the units that began before
    it and still run have ended (at most :data:`WAIT`; past it the delete is refused,
    409), and until :data:`GRACE` has passed since it was stored."""
    own = next((w.tx for w in planner.writes if w.tx), None)
    uow = planner.repo.uow
    running = uow.older_in_flight(own)
    deadline = time.monotonic() + WAIT
    while running:
        if time.monotonic() > deadline:
            raise errors.Conflict(f"{target} cannot be deleted while other transactions "
                                  "are being written: try again")
        time.sleep(POLL)
        running = uow.finished.still_in_flight(running)
    left = planner.stored_at + GRACE - now()
    if left > 0:
        time.sleep(left)


def _still_there(planner: Planner, target: str, path: str) -> None:
    """The second look at ``target``. A version whose unit still runs is waited for
    when taking it back would change whether the record is there (a delete stands
    back up, a create goes; an update of a live record leaves it there), and one
    whose unit ended after it was read is read again."""
    rtype, _, rid = target.partition("/")
    finished = planner.repo.uow.finished
    deadline = time.monotonic() + WAIT
    while True:
        read_at = time.monotonic()
        live, unit, version = planner.repo.standing(rtype, rid)
        running = unit is not None and finished.in_flight(unit)
        if running and live and stays(planner.repo, rtype, rid, version):
            return  # an update in flight: taken back or not, the record is there
        if unit is None or (not running and finished.ended_before(unit, read_at)):
            if live:
                return
            raise errors.Conflict(f"{target} was deleted while this request was written: "
                                  "nothing was written", expression=path)
        if time.monotonic() > deadline:
            raise errors.Conflict(f"{target} is being written by another request: nothing "
                                  "was written, try again", expression=path)
        if running:
            time.sleep(POLL)
