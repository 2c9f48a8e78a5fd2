"""Whom a clinician's care relationships reach at a moment (DESIGN.md section 1:
treating clinicians only, for a limited time; emergency access flagged), as worked
out from the relationships a process holds for a few seconds: a relationship stops
reaching at its end, an emergency stops being one at its own, whatever answer an
earlier or later request of the same process was given."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from fhirserver.auth.reach import live_reach, with_changes

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


# -- carried over a change ------------------------------------------------------------

_HOURS = st.sampled_from([-3, -1, 0.25, 0.5, 1, 2, 6, 24])
_DOC = st.one_of(st.none(), st.tuples(_HOURS, st.one_of(st.none(), _HOURS)))
_PATIENTS = st.sampled_from([f"p{i}" for i in range(8)])


def _doc(patient: str, spec: tuple[float, float | None] | None) -> dict[str, Any] | None:
    return None if spec is None else _rel(patient, *spec)


@settings(max_examples=300, deadline=None)
@given(before=st.dictionaries(_PATIENTS, _DOC.filter(lambda d: d is not None)),
       worked_out=_HOURS, changed=st.dictionaries(_PATIENTS, _DOC, min_size=1),
       later=st.lists(st.sampled_from([0, 0.1, 0.5, 1, 1.5, 2, 5, 23, 30]), min_size=1))
def test_an_answer_carried_over_a_change_is_the_one_worked_out_afresh(
        before, worked_out, changed, later):
    """A worker applies another's changes to what it holds (auth/reach_cache.py): for
    every moment after, the reach it carried over is exactly what the changed
    relationships reach when worked out from all of them, so no patient stays
    reached past the end of their new relationship, nor unreached once it began."""
    rels: dict[str, Any] = {"r": {p: _rel(p, *spec) for p, spec in before.items()}}
    since = T0 + timedelta(hours=worked_out)
    live_reach(rels, since)  # the answer a request worked out and kept
    carried = with_changes(rels, {p: _doc(p, spec) for p, spec in changed.items()})
    fresh = {"r": dict(carried["r"])}
    for h in later:
        at = since + timedelta(hours=h)
        assert live_reach(carried, at) == live_reach(fresh, at), h
        fresh.pop("live", None)


def test_a_change_leaves_the_held_map_as_other_threads_read_it():
    rels: dict[str, Any] = {"r": {"a": _rel("a", 24)}}
    kept = live_reach(rels, T0)
    carried = with_changes(rels, {"a": None, "b": _rel("b", 1, 1)})
    assert set(rels["r"]) == {"a"} and live_reach(rels, T0) == kept
    assert live_reach(carried, T0) == (frozenset({"b"}), frozenset({"b"}))
