"""Whom a caller's care relationships reach at a moment (pure).

A caller's relationships are held per process (``auth/reach_cache.py``) as
``{"r": {patient: relationship}}``; :func:`live_reach` works out which patients
they reach at a request's moment, and which of those by an emergency. An
organisation can hold tens of thousands, so the answer is kept with them (``"live"``)
for as long as it holds: relationships end by time, and until the first end after
the moment it was worked out at, no patient enters or leaves it. When a few
relationships change, :func:`with_changes` carries that answer over rather than
leave the next request to work it out again from all of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

#: ``(from, until, reached, by emergency)``: the answer for every moment in
#: ``[from, until)``
Live = tuple[datetime, datetime, frozenset[str], frozenset[str]]


def emergency_now(doc: Mapping[str, Any], now: datetime) -> bool:
    """Does the care relationship ``doc`` give emergency access at ``now``? Until its
    emergency's own end when it was laid over a longer relationship, else until the
    relationship's."""
    if not doc.get("emergency"):
        return False
    end = doc.get("emergency_until") or doc.get("until")
    return isinstance(end, datetime) and end.replace(tzinfo=now.tzinfo) > now


def _ends(doc: Mapping[str, Any], now: datetime) -> tuple[bool, bool, list[datetime]]:
    """Whether ``doc`` reaches at ``now``, whether by an emergency, and the moments
    after ``now`` at which either answer changes."""
    until = doc["until"].replace(tzinfo=now.tzinfo)
    if until <= now:
        return False, False, []
    if not emergency_now(doc, now):
        return True, False, [until]
    own = (doc.get("emergency_until") or until).replace(tzinfo=now.tzinfo)
    return True, True, [until, own]


def live_reach(rels: dict[str, Any], now: datetime) -> tuple[frozenset[str], frozenset[str]]:
    """The patients the relationships ``rels["r"]`` (by patient) reach at ``now``,
    and those of them reached by an emergency; the answer is kept in ``rels`` until
    the next end after ``now``, so a request of a caller who treats thousands costs
    no pass over them all."""
    memo: Live | None = rels.get("live")
    if memo is not None and memo[0] <= now < memo[1]:
        return memo[2], memo[3]
    found: set[str] = set()
    emergency: set[str] = set()
    first = datetime.max.replace(tzinfo=now.tzinfo)
    for d in rels["r"].values():
        reaches, urgent, ends = _ends(d, now)
        if reaches:
            found.add(d["patient"])
            first = min(first, *ends)
            if urgent:
                emergency.add(d["patient"])
    out = frozenset(found), frozenset(emergency)
    rels["live"] = (now, first, *out)
    return out


def with_changes(rels: dict[str, Any], changed: Mapping[str, Mapping[str, Any] | None]
                 ) -> dict[str, Any]:
    """``rels`` with the relationships ``changed`` (by patient; None: removed) put in,
    as a new mapping (``rels`` may be read by other threads meanwhile). What
    :func:`live_reach` kept is carried over, worked out for its moment: the changed
    patients are taken out and put back as their new relationship has it, and it
    holds no further than their ends; the others' answer has not changed."""
    mine = dict(rels["r"])
    for patient, doc in changed.items():
        if doc is None:
            mine.pop(patient, None)
        else:
            mine[patient] = doc
    out: dict[str, Any] = {"r": mine}
    memo: Live | None = rels.get("live")
    if memo is None:
        return out
    since, until, reached, urgent = memo
    found, emergency = set(reached), set(urgent)
    for patient, doc in changed.items():
        found.discard(patient)
        emergency.discard(patient)
        if doc is None:
            continue
        reaches, by_emergency, ends = _ends(doc, since)
        if reaches:
            found.add(patient)
            until = min(until, *ends)
            if by_emergency:
                emergency.add(patient)
    out["live"] = (since, until, frozenset(found), frozenset(emergency))
    return out
