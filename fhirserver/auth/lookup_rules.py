"""Identity look-ups: who makes them, what they answer, how they are counted (pure).

An identity look-up finds a Patient by a document number without a care
relationship to them: a Patient search by one exact identifier (the policy's
exception for backend clients, :func:`.policy.decide`), IHE PIXm ``$ihe-pix``
(ITI-83), and ``Patient/$match`` candidates outside the caller's reach. A
registration desk needs a few a minute; someone holding a list of resident ID
numbers wants thousands. So each client gets ``FHIR_LOOKUPS_PER_MINUTE`` of them
per fixed one-minute window (counted in the database by :mod:`.lookups`, shared by
every worker, as numbered slots claimed by primary key), and beyond that the answer
is 429 with ``Retry-After`` (RFC 6585 section 4, RFC 9110 section 10.2.3; FHIR issue
type ``throttled``).

Health card numbers are answered by ``$ihe-pix`` and shown in look-up results only
to callers granted the ``card-number`` scope; ``$match`` reaches beyond the
caller's patients only with the ``registration`` scope (scopes.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .policy import Caller, decide
from .scopes import CARD_NUMBER, REGISTRATION

WINDOW_SECONDS = 60


@dataclass(frozen=True)
class Window:
    """One client's counting window: ``[start, start + WINDOW_SECONDS)`` in seconds
    since the epoch, the same for every worker whatever its clock's sub-second part."""

    client: str
    start: int

    @property
    def key(self) -> str:
        return f"{self.client}|{self.start}"

    def slot(self, n: int) -> str:
        """The primary key of the window's ``n``-th look-up (1 to the limit)."""
        return f"{self.key}|{n}"

    def retry_after(self, now: datetime) -> int:
        """Whole seconds until the next window opens (at least 1)."""
        return max(1, self.start + WINDOW_SECONDS - int(now.timestamp()))


def window(client: str, now: datetime) -> Window:
    t = int(now.timestamp())
    return Window(client, t - t % WINDOW_SECONDS)


def over_limit(count: int, limit: int) -> bool:
    """``count`` look-ups made in the window, this one included: past the limit?"""
    return count > limit


def first_free(known: int, limit: int, taken: Callable[[int], bool]) -> int:
    """The lowest slot not yet taken, or ``limit + 1`` when all are.

    Slots are claimed lowest first and never given back within a window, so the
    taken ones are always ``1..k``: from ``known`` (slots up to it are known to be
    taken) the search gallops and then bisects, asking ``taken`` (a primary-key
    read) about O(log k) slots."""
    lo, step = min(known, limit), 1
    hi = min(lo + step, limit + 1)
    while hi <= limit and taken(hi):
        lo, step = hi, step * 2
        hi = min(lo + step, limit + 1)
    while hi - lo > 1:  # lo taken (or 0), hi free (or past the limit)
        mid = (lo + hi) // 2
        if taken(mid):
            lo = mid
        else:
            hi = mid
    return hi


def client_of(caller: Caller) -> str:
    """What is counted: the OAuth client (every token of a client shares its budget)."""
    return caller.client_id or caller.subject


def uses_lookup_exception(caller: Caller | None) -> bool:
    """Does a Patient search by one identifier reach beyond ``caller``'s patients?
    As the policy decides it (a backend client's look-up reaches every patient);
    operators reach everyone anyway and are not counted."""
    if caller is None or caller.kind == "operator":
        return False
    d = decide(caller, "Patient", "search", frozenset(), identifier_lookup=True)
    return d.allowed and d.patients is None


def sees_card_numbers(caller: Caller | None) -> bool:
    """Health card numbers only to the ``card-number`` scope (operators, internal)."""
    return caller is None or caller.has(CARD_NUMBER)


def matches_beyond_reach(caller: Caller | None) -> bool:
    """``$match`` candidates outside the caller's reach: registration desks only."""
    return caller is None or caller.has(REGISTRATION)


def without_systems(resource: dict[str, Any], systems: frozenset[str]) -> dict[str, Any]:
    """``resource`` without its identifiers of ``systems`` (a copy; FHIR JSON has no
    empty arrays, so an emptied ``identifier`` goes)."""
    idents = resource.get("identifier")
    if not isinstance(idents, list) or not any(
        isinstance(i, dict) and i.get("system") in systems for i in idents
    ):
        return resource
    out = dict(resource)
    kept = [i for i in idents if not (isinstance(i, dict) and i.get("system") in systems)]
    if kept:
        out["identifier"] = kept
    else:
        out.pop("identifier")
    return out
