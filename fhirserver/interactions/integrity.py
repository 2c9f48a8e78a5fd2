"""Referential integrity between a delete and the writes that refer to its target,
when both run at once (the protocol is storage/deletions.py).

A plan that deletes marks its target before it looks for referrers
(:func:`mark_delete`); a plan whose writes refer to stored records notes them while
its references are checked (:func:`refer`). Once a plan's writes are stored,
:func:`settle` runs before the unit ends: a delete whose mark was taken over, or a
write whose target was deleted meanwhile, is taken back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import errors
from ..storage.deletions import Busy
from ..storage.records import Write
from ..storage.unit_of_work import VersionConflict

if TYPE_CHECKING:
    from .context import Planner


def mark_delete(planner: Planner, w: Write) -> None:
    """Before the referrers of ``w``'s target are looked for."""
    assert w.expected is not None
    try:
        planner.marks.append((planner.repo.deletions.begin(f"{w.type}/{w.id}", w.expected), w))
    except Busy as exc:
        raise VersionConflict(w) from exc  # planned again: it then finds the record deleted


def refer(planner: Planner, target: str, path: str) -> None:
    """``target`` ("Type/id"), a stored record, is referred to at ``path``."""
    planner.referred.setdefault(target, path)


def settle(planner: Planner) -> None:
    """After the plan's writes are stored, before they count."""
    deletions = planner.repo.deletions
    for mark, w in planner.marks:
        if not deletions.held(mark):
            raise VersionConflict(w)  # judged dead by another request: planned again
    written = {f"{w.type}/{w.id}" for w in planner.writes}
    targets = sorted(t for t in planner.referred if t not in written)
    for target in deletions.marked(targets):
        path = planner.referred[target]
        try:
            gone = deletions.gone(target)
        except Busy as exc:
            raise errors.Conflict(f"{exc}: nothing was written, try again",
                                  expression=path) from exc
        if gone:
            raise errors.Conflict(
                f"{target} was deleted while this request was written: nothing was written",
                expression=path)


def abandon(planner: Planner) -> None:
    """The plan failed: its deletes did not happen."""
    marks, planner.marks = planner.marks, []
    for mark, _ in marks:
        planner.repo.deletions.abandon(mark)
