"""Deletes of referenced records against writes that refer to them.

A delete is refused while other records refer to its target (409,
interactions/write.py). Checking that alone leaves a race: a create that found the
target alive, and stored its reference after the delete looked for referrers, was
left pointing at a deleted record. Neither write can see the other without a
multi-document transaction, which FerretDB and a standalone MongoDB do not have, so
each side writes first and reads second (Dekker's protocol), and one of the two
always sees the other:

* the deleter inserts a *mark* whose ``_id`` is its target ("Patient/x") before it
  looks for referrers, writes the delete, and checks after that the mark is still
  its own (inserting a primary key is atomic on every MongoDB wire-protocol server;
  a filtered update is not on FerretDB, which reads and then writes);
* a writer that refers to a stored record reads the target's mark after its write.
  No mark: the delete either has not begun (it will see the referrer) or never
  happened. A mark: it reads the target and waits while the delete is in flight;
  if the target ends up deleted, its own write is taken back (409).

A mark is kept after the delete succeeds (a writer that found the target alive just
before the delete still meets it) and deleted when the delete fails. It names its
owner process like a journal entry (:mod:`.journal`): one left by a deleter that
died is removed by the next writer or deleter that meets it, and the deleter, were
it still running after all, would find its mark gone and take its delete back. A
writer waits at most :data:`WAIT` for a delete in flight, then gives up (its write
is taken back: a 409 to try again). A mark for a version the target no longer has
(written again since, or re-created after the delete) means nothing.
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

from .journal import abandoned, me

COLLECTION = "_deletions"
#: How long a writer waits for a delete in flight (one takes milliseconds).
WAIT = 10.0
#: How often it looks again.
POLL = 0.01


class Busy(Exception):
    """Another request is deleting the same record."""


@dataclass(frozen=True)
class Mark:
    target: str  # "Type/id"
    token: str


def abandoned_mark(doc: dict[str, Any], now: datetime) -> bool:
    """Its deleter is gone (on this host), or silent past a journal lease (elsewhere)."""
    return abandoned({"owner": doc.get("owner"), "started": doc.get("at")}, now)


class Deletions:
    def __init__(self, marks: Collection[Any], current: dict[str, Collection[Any]]) -> None:
        self.marks = marks
        self.current = current

    # -- the deleter -------------------------------------------------------------------

    def begin(self, target: str, version: int) -> Mark:
        """Mark ``target`` (at ``version``) as being deleted, before looking for its
        referrers. Raises :class:`Busy` while another delete of it is in flight."""
        mark = Mark(target, uuid.uuid4().hex)
        for _ in range(2):
            try:
                self.marks.insert_one({"_id": target, "t": mark.token, "v": version,
                                       "at": datetime.now(UTC), "owner": me().document()})
                return mark
            except DuplicateKeyError:
                doc = self.marks.find_one({"_id": target})
                if doc is None:
                    continue
                if doc.get("v") == version and not abandoned_mark(doc, datetime.now(UTC)):
                    raise Busy(f"{target} is being deleted by another request") from None
                # An earlier delete's mark (the record was written again since), or a
                # dead deleter's.
                self.marks.delete_one({"_id": target, "t": doc.get("t")})
        raise Busy(f"{target} is being deleted by another request")

    def held(self, mark: Mark) -> bool:
        """Is the mark still this deleter's? Checked after the delete is written."""
        doc = self.marks.find_one({"_id": mark.target}, {"t": 1})
        return doc is not None and doc.get("t") == mark.token

    def abandon(self, mark: Mark) -> None:
        """The delete failed: referring to the target is safe again."""
        self.marks.delete_one({"_id": mark.target, "t": mark.token})

    # -- a writer that refers to stored records -------------------------------------

    def marked(self, targets: list[str]) -> list[str]:
        """Of ``targets``, those with a mark: one read by primary key each, side by
        side when there are many (an import's chunk refers to many patients)."""
        def has(target: str) -> bool:
            return self.marks.find_one({"_id": target}, {"_id": 1}) is not None

        if len(targets) <= 2:
            return [t for t in targets if has(t)]
        with ThreadPoolExecutor(max_workers=min(8, len(targets))) as pool:
            return [t for t, m in zip(targets, pool.map(has, targets)) if m]

    def gone(self, target: str) -> bool:
        """After a write referring to ``target`` is stored: was the target deleted in
        the meantime (True), or is it safe (False)? Waits while a delete is in flight;
        :class:`Busy` when it lasts past :data:`WAIT`."""
        doc = self.marks.find_one({"_id": target})
        if doc is None:
            return False
        rtype, _, rid = target.partition("/")
        deadline = time.monotonic() + WAIT
        while True:
            now = self.current[rtype].find_one({"_id": rid}, {"v": 1, "del": 1})
            if now is None or now.get("del"):
                return True
            if doc is None or now.get("v") != doc.get("v"):
                return False  # no delete, or a mark for a version no longer current
            if abandoned_mark(doc, datetime.now(UTC)):
                self.marks.delete_one({"_id": target, "t": doc.get("t")})
            elif time.monotonic() > deadline:
                raise Busy(f"{target} is being deleted by another request")
            else:
                time.sleep(POLL)
            doc = self.marks.find_one({"_id": target})
