"""Locks on conditional criteria: at most one create per criteria (R4 http.html#ccreate).

A conditional create (``If-None-Exist``) or a conditional update that finds no match
creates a resource; two clients doing so at once would each find nothing and each
create one. Like HAPI's search-URL table, a writer that found no match first inserts
a *claim* whose ``_id`` is the resource type and the normalised criteria, hashed;
inserting a primary key is atomic on every MongoDB wire-protocol server, FerretDB
and a standalone MongoDB included, so only one writer holds the criteria at a time.
The others wait for the holder to finish and then match again.

A claim is held only while its writer's write runs and is deleted after it: from
then on the truth is the stored resource itself, matched with each caller's view
(so a caller cannot keep another organisation from creating what it cannot see). A
writer that died leaves its claim behind; the claim's lease (``until``) then runs
out and the next writer takes it over. Taking over is a compare-and-set that does not
rely on a filtered replace being atomic (FerretDB reads and then writes): the taker
first inserts a *ticket* keyed by the stale claim's owner, so only one taker per
stale claim proceeds.

The key is a SHA-256 of the criteria: it is only a lock name, and identifier values
are not stored in clear.

A claim (or ticket) whose writer died is only taken over when the same criteria come
again; criteria that never do would keep theirs for ever, and a writer killed while
holding many (a transaction past the worker timeout) leaves them all. So claims and
tickets whose lease ended a lease ago are deleted, at most once a minute per
process: that is what a taker would do with them.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

#: How long a claim holds without its writer renewing it; past that it is stale.
LEASE = timedelta(seconds=10)
#: Seconds between two sweeps of long-stale claims by one process.
SWEEP_EVERY = 60.0
_COMMA = re.compile(r"(?<!\\),")


def _or_values(value: str) -> str:
    """A parameter's comma-separated alternatives (search.html#combining) sorted and
    without repeats; an escaped comma (``\\,``) is part of a value."""
    return ",".join(sorted(set(_COMMA.split(value))))


def criteria_key(rtype: str, items: Sequence[tuple[str, str]],
                 keyed: Callable[[str, str], str]) -> str:
    """The lock name of ``rtype?items``: the same for the same criteria in any order.
    ``keyed`` hashes it under a secret key (the criteria hold identity numbers, and
    an unkeyed hash of a number is found by trying every number).

    Repeated parameters are a conjunction and alternatives in one value a
    disjunction, so the two are kept apart: ``a=1&a=2`` and ``a=1,2`` differ.
    """
    pairs = sorted({(name, _or_values(value)) for name, value in items})
    canonical = json.dumps([rtype, pairs], separators=(",", ":"), ensure_ascii=False)
    return keyed("search-claim", canonical)


class ClaimBusy(Exception):
    """Criteria held by another writer longer than this one may wait, or a claim lost
    to a writer that took it over: the interaction is planned again from the start."""


@dataclass(frozen=True)
class Held:
    """A claim this process holds: its key, its owner token and the ticket, if it
    was taken over from a stale claim."""

    key: str
    owner: str
    ticket: str | None = None


class SearchClaims:
    """The claims collection (``_search_claims``)."""

    def __init__(self, collection: Collection[Any], lease: timedelta = LEASE) -> None:
        self.collection = collection
        self.lease = lease
        self._swept = -SWEEP_EVERY
        self._sweeping = threading.Lock()

    def sweep(self) -> None:
        """Delete the claims and tickets whose lease ended at least a lease ago (their
        writers died), at most once every :data:`SWEEP_EVERY` seconds."""
        with self._sweeping:
            if time.monotonic() - self._swept < SWEEP_EVERY:
                return
            self._swept = time.monotonic()
        self.collection.delete_many({"until": {"$lt": datetime.now(UTC) - self.lease}})

    def _doc(self, key: str, owner: str, rtype: str, rid: str) -> dict[str, Any]:
        return {"_id": key, "owner": owner, "type": rtype, "rid": rid,
                "until": datetime.now(UTC) + self.lease}

    def take(self, key: str, rtype: str, rid: str) -> Held | None:
        """Hold ``key`` for a write of ``rtype/rid``; None while another writer holds it."""
        self.sweep()
        owner = uuid.uuid4().hex
        for _ in range(2):
            try:
                self.collection.insert_one(self._doc(key, owner, rtype, rid))
                return Held(key, owner)
            except DuplicateKeyError:
                pass
            claim = self.collection.find_one({"_id": key})
            if claim is not None:
                return self._take_over(claim, owner, rtype, rid)
            # released between the insert and the read: try once more
        return None

    def _take_over(self, claim: dict[str, Any], owner: str, rtype: str,
                   rid: str) -> Held | None:
        """Take a claim whose lease has run out (its writer died or stalled)."""
        until = claim.get("until")
        if isinstance(until, datetime) and _aware(until) > datetime.now(UTC):
            return None
        ticket = f"{claim['_id']}~{claim.get('owner')}"
        try:
            self.collection.insert_one({"_id": ticket, "until": datetime.now(UTC) + self.lease})
        except DuplicateKeyError:
            # Another writer is taking it over; or one that died doing so left its
            # ticket, which is cleared once its own lease has run out.
            left = self.collection.find_one({"_id": ticket})
            if left is not None and _aware(left["until"]) < datetime.now(UTC):
                self.collection.delete_one({"_id": ticket, "until": left["until"]})
            return None
        result = self.collection.replace_one(
            {"_id": claim["_id"], "owner": claim.get("owner")},
            self._doc(claim["_id"], owner, rtype, rid))
        if result.matched_count == 0:
            self.collection.delete_one({"_id": ticket})
            return None
        return Held(claim["_id"], owner, ticket)

    def renew(self, held: Held) -> bool:
        """Extend the lease before a long write commits; False if the claim was lost."""
        result = self.collection.update_one(
            {"_id": held.key, "owner": held.owner},
            {"$set": {"until": datetime.now(UTC) + self.lease}})
        return result.matched_count == 1

    def release(self, held: Held) -> None:
        """Give the claim back: the written resource (or its absence) now answers."""
        self.collection.delete_one({"_id": held.key, "owner": held.owner})
        if held.ticket is not None:
            self.collection.delete_one({"_id": held.ticket})


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)
