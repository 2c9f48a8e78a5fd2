"""Identity look-ups decided without a database (issue point 6): who makes them, the
fixed one-minute window they are counted in (RFC 6585 section 4: 429 with
Retry-After), and what they may show (card numbers, ``$match`` beyond reach)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from fhirserver.auth.lookup_rules import (
    Window,
    client_of,
    first_free,
    matches_beyond_reach,
    over_limit,
    sees_card_numbers,
    uses_lookup_exception,
    window,
    without_systems,
)
from fhirserver.auth.policy import Caller
from fhirserver.auth.scopes import parse_scopes

CARD = "https://fhirserver.example/sid/health-card"
RID = "https://fhirserver.example/sid/resident-id"


def caller(kind: str, scope: str, **kw: str) -> Caller:
    clinical, named = parse_scopes(scope)
    return Caller(kind=kind, scopes=tuple(clinical), subject="s", named=frozenset(named), **kw)  # type: ignore[arg-type]


BACKEND = caller("system", "system/Patient.rs", client_id="lab-1", organization="Organization/lab")
DESK = caller("system", "system/Patient.rs registration card-number", client_id="desk-1")
NO_PATIENT_SEARCH = caller("system", "system/Observation.rs", client_id="lab-2")
CLINICIAN = caller("user", "user/*.cruds", practitioner="Practitioner/dr")
PATIENT = caller("patient", "patient/*.rs", patient="p")
OPERATOR = caller("operator", "system/*.cruds")


@pytest.mark.parametrize(
    ("who", "counted"),
    [
        (BACKEND, True),  # the policy's exception: a backend client finds any patient
        (DESK, True),
        (NO_PATIENT_SEARCH, False),  # no Patient search scope: no look-up at all
        (CLINICIAN, False),  # clinicians search only the patients they treat
        (PATIENT, False),
        (OPERATOR, False),  # reaches everyone anyway
        (None, False),  # trusted internal callers (import)
    ],
)
def test_who_makes_identity_lookups(who: Caller | None, counted: bool) -> None:
    assert uses_lookup_exception(who) is counted


@pytest.mark.parametrize(
    ("who", "cards", "wide"),
    [
        (BACKEND, False, False),
        (DESK, True, True),
        (OPERATOR, True, True),
        (None, True, True),
    ],
)
def test_card_numbers_and_match_beyond_reach_need_their_scopes(
    who: Caller | None, cards: bool, wide: bool
) -> None:
    assert sees_card_numbers(who) is cards
    assert matches_beyond_reach(who) is wide


def test_one_window_per_client_and_minute() -> None:
    at = datetime(2026, 3, 1, 9, 0, 59, 999000, tzinfo=UTC)
    w = window("lab-1", at)
    assert w == Window("lab-1", int(datetime(2026, 3, 1, 9, 0, tzinfo=UTC).timestamp()))
    assert w.key == f"lab-1|{w.start}"
    assert w.retry_after(at) == 1  # never 0: RFC 9110 delay-seconds, and a retry now fails
    assert (
        window("lab-1", datetime(2026, 3, 1, 9, 0, 0, tzinfo=UTC)).retry_after(
            datetime(2026, 3, 1, 9, 0, 0, tzinfo=UTC)
        )
        == 60
    )
    assert window("lab-1", datetime(2026, 3, 1, 9, 1, tzinfo=UTC)).key != w.key
    assert window("lab-2", at).key != w.key


@pytest.mark.parametrize(
    ("count", "limit", "over"), [(1, 30, False), (30, 30, False), (31, 30, True), (1, 0, True)]
)
def test_the_limit_is_inclusive(count: int, limit: int, over: bool) -> None:
    assert over_limit(count, limit) is over


def test_every_token_of_a_client_shares_its_budget() -> None:
    assert client_of(BACKEND) == "lab-1"
    assert client_of(caller("system", "system/Patient.rs")) == "s"  # no client id: the subject


def test_card_numbers_are_removed_from_a_copy() -> None:
    patient = {
        "resourceType": "Patient",
        "identifier": [{"system": RID, "value": "1"}, {"system": CARD, "value": "2"}],
    }
    shown = without_systems(patient, frozenset({CARD}))
    assert shown["identifier"] == [{"system": RID, "value": "1"}]
    assert len(patient["identifier"]) == 2  # the stored resource is untouched
    only_card = {"resourceType": "Patient", "identifier": [{"system": CARD, "value": "2"}]}
    assert "identifier" not in without_systems(only_card, frozenset({CARD}))  # no empty arrays
    assert without_systems({"resourceType": "Patient"}, frozenset({CARD})) == {
        "resourceType": "Patient"
    }


@pytest.mark.parametrize(
    ("query", "lookup"),
    [
        ([("identifier", f"{RID}|1")], True),
        ([("identifier", f"{RID}|1"), ("_count", "1"), ("_elements", "name")], True),
        ([("identifier", f"{RID}|1,{RID}|2")], False),  # a comma list: OR of several people
        ([("identifier", f"{RID}|1"), ("identifier", f"{RID}|2")], False),  # repeated
        ([("identifier", f"{RID}|")], False),
        ([("identifier", "1")], False),  # no system
        ([("identifier:text", "1")], False),
        ([("identifier", f"{RID}|1"), ("_revinclude", "Observation:patient")], False),
        ([("identifier", f"{RID}|1"), ("family", "x")], False),
    ],
)
def test_the_lookup_exception_is_one_exact_identifier(
    query: list[tuple[str, str]], lookup: bool
) -> None:
    """Point 6 (search.html#token, #combining): only ``identifier=system|value``."""
    from zoneinfo import ZoneInfo

    from fhirserver.interactions.search import is_identifier_lookup
    from fhirserver.search.parse import parse_query

    parsed = parse_query("Patient", query, tz=ZoneInfo("UTC"), strict=True)
    assert is_identifier_lookup(parsed) is lookup


@pytest.mark.parametrize(
    ("taken", "known", "limit", "free"),
    [
        (0, 0, 30, 1),
        (7, 0, 30, 8),  # a new process finds the end of the taken slots
        (7, 5, 30, 8),
        (29, 3, 30, 30),
        (30, 0, 30, 31),  # full: past the limit
        (30, 30, 30, 31),
        (0, 0, 0, 1),  # a limit of 0 refuses every look-up
        (500, 0, 10_000, 501),
    ],
)
def test_the_first_free_slot_is_found_in_few_reads(
    taken: int, known: int, limit: int, free: int
) -> None:
    asked: list[int] = []

    def is_taken(n: int) -> bool:
        assert 1 <= n <= limit
        asked.append(n)
        return n <= taken

    assert first_free(known, limit, is_taken) == free
    assert len(asked) <= 2 * max(1, taken - known).bit_length() + 2
    assert window("lab-1", datetime(2026, 3, 1, tzinfo=UTC)).slot(free).endswith(f"|{free}")
