"""Counting identity look-ups per client and minute in the database (the rules, the
window and the slot search are in :mod:`.lookup_rules`).

Every worker process of the deployment must share the count, and the count must
hold when look-ups race. A counter document with ``$inc`` does not on FerretDB 1.x,
whose updates read, change and write back the document without isolation: 16
threads making 80 increments of one document left it at 16. So each look-up claims
a numbered slot instead, ``<client>|<window start>|<n>`` for n = 1 to the limit, by
inserting it: a primary key admits one insert (MongoDB's duplicate key error, code
11000, for every other), on MongoDB and FerretDB alike, and FerretDB finds it by
index. A full window has ``limit`` documents and the next look-up is refused.

Each process remembers how many slots of a window it knows are taken, so a look-up
usually costs one insert. Past windows are deleted at most once a minute per
process and database.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo.errors import DuplicateKeyError

from .. import errors
from .lookup_rules import WINDOW_SECONDS, Window, client_of, first_free, over_limit, window
from .policy import Caller

COUNTS = "_lookup_counts"
#: per process: (database, client) -> (window start, slots known to be taken)
_known: dict[tuple[str, str], tuple[int, int]] = {}
_swept: dict[str, int] = {}  # database -> the window whose predecessors were deleted


def spend(db: Any, caller: Caller, now: datetime, limit: int, cost: int = 1) -> int:
    """Count ``cost`` look-ups for ``caller``'s client: the window's count so far, or
    :class:`~fhirserver.errors.Throttled` (with Retry-After) once past ``limit``."""
    w = window(client_of(caller), now)
    _sweep(db, w.start)
    count = 0
    for _ in range(cost):
        count = _claim(db, w, limit)
        if over_limit(count, limit):
            raise errors.Throttled(
                f"Too many identity look-ups from this client: at most {limit} a minute "
                "(FHIR_LOOKUPS_PER_MINUTE). Try again after the Retry-After delay.",
                headers={"Retry-After": str(w.retry_after(now))},
            )
    return count


def _claim(db: Any, w: Window, limit: int) -> int:
    """The slot this look-up took, or ``limit + 1`` when the window is full."""
    col = db[COUNTS]
    memo = (_database(db), w.client)
    start, known = _known.get(memo, (w.start, 0))
    n = (known if start == w.start else 0) + 1
    while n <= limit:
        try:
            col.insert_one({"_id": w.slot(n), "w": w.start})
            break
        except DuplicateKeyError:
            n = first_free(n, limit, lambda i: col.find_one({"_id": w.slot(i)}) is not None)
    if len(_known) > 50_000:
        _known.clear()
    _known[memo] = (w.start, min(n, limit))
    return n


def _database(db: Any) -> str:
    return f"{getattr(db.client, 'address', '')}/{db.name}"


def _sweep(db: Any, start: int) -> None:
    key = _database(db)
    if _swept.get(key) == start:
        return
    _swept[key] = start
    db[COUNTS].delete_many({"w": {"$lt": start - WINDOW_SECONDS}})
