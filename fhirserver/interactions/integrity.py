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
have found the target deleted (a 422): no chain of writes builds on one that is then
taken back. A reference is checked again only to the records of this server the
write's references resolved to (rules.check_references).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from .. import errors
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

#: How long a write waits for a delete of what it refers to (a delete takes
#: milliseconds; one held up longer is answered "try again").
WAIT = 10.0
POLL = 0.01


def refer(planner: Planner, target: str, path: str) -> None:
    """``target`` ("Type/id"), a stored record, is referred to at ``path``."""
    planner.referred.setdefault(target, path)


def settle(planner: Planner) -> None:
    """After the plan's writes are stored, before its unit ends."""
    for check in planner.settles:
        check()
    written = {f"{w.type}/{w.id}" for w in planner.writes}
    for target, path in sorted(planner.referred.items()):
        if target not in written:
            _still_there(planner, target, path)


def wait_for_units(planner: Planner, target: str) -> None:
    """Until the units that began before a stored delete of ``target`` and still run
    have ended (at most :data:`WAIT`; past it the delete is refused, 409)."""
    own = next((w.tx for w in planner.writes if w.tx), None)
    uow = planner.repo.uow
    running = uow.older_in_flight(own)
    deadline = time.monotonic() + WAIT
    while running:
        if time.monotonic() > deadline:
            raise errors.Conflict(f"{target} cannot be deleted while other transactions "
                                  "are being written: try again")
        time.sleep(POLL)
        running = [unit for unit in running if uow.finished.in_flight(unit)]


def _still_there(planner: Planner, target: str, path: str) -> None:
    rtype, _, rid = target.partition("/")
    deadline = time.monotonic() + WAIT
    while True:
        live, unit = planner.repo.standing(rtype, rid)
        if live:
            return
        if unit is None or not planner.repo.uow.finished.in_flight(unit):
            raise errors.Conflict(f"{target} was deleted while this request was written: "
                                  "nothing was written", expression=path)
        if time.monotonic() > deadline:
            raise errors.Conflict(f"{target} is being deleted by another request: nothing "
                                  "was written, try again", expression=path)
        time.sleep(POLL)
