"""Whom a clinician's care relationships reach at a moment (DESIGN.md section 1:
treating clinicians only, for a limited time; emergency access flagged), as worked
out from the relationships a process holds for a few seconds: a relationship stops
reaching at its end, an emergency stops being one at its own, whatever answer an
earlier or later request of the same process was given."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fhirserver.auth.access import live_reach

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _rel(patient: str, hours: float, emergency_hours: float | None = None) -> dict[str, Any]:
    # Stored as the database gives them back: naive UTC.
    doc: dict[str, Any] = {"patient": patient,
                           "until": (T0 + timedelta(hours=hours)).replace(tzinfo=None)}
    if emergency_hours is not None:
        doc.update(emergency=True,
                   emergency_until=(T0 + timedelta(hours=emergency_hours)).replace(tzinfo=None))
    return doc


def test_each_relationship_reaches_until_its_end_and_an_emergency_until_its_own():
    rels: dict[str, Any] = {"r": {d["patient"]: d for d in (
        _rel("scan", 24), _rel("short", 1), _rel("glass", 24, 2), _rel("ended", -1))}}
    at = {h: T0 + timedelta(hours=h) for h in (0, 0.5, 1, 1.5, 2, 23, 24)}
    expected = {
        0: ({"scan", "short", "glass"}, {"glass"}),
        0.5: ({"scan", "short", "glass"}, {"glass"}),
        1: ({"scan", "glass"}, {"glass"}),
        1.5: ({"scan", "glass"}, {"glass"}),
        2: ({"scan", "glass"}, set()),
        23: ({"scan", "glass"}, set()),
        24: (set(), set()),
    }
    # In order, backwards and shuffled: each answer is that moment's alone.
    for order in (sorted(at), sorted(at, reverse=True), [2, 0, 24, 1, 0.5, 23, 1.5, 0]):
        for h in order:
            live, emergency = live_reach(rels, at[h])
            assert (set(live), set(emergency)) == expected[h], (order, h)


def test_a_caller_with_no_live_relationship_reaches_nobody():
    assert live_reach({"r": {}}, T0) == (frozenset(), frozenset())
    assert live_reach({"r": {"ended": _rel("ended", -2)}}, T0) == (frozenset(), frozenset())
