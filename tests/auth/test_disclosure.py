"""Who receives identity numbers whole (auth/disclosure.py), as a table: minimum
disclosure, masked otherwise with the MASKED label (security-labels.html)."""

from __future__ import annotations

import pytest

from fhirserver.auth.disclosure import kept_whole, sees_whole
from fhirserver.auth.policy import Caller
from fhirserver.auth.scopes import parse_scopes

ME, CHILD, STRANGER = "p-me", "p-child", "p-stranger"
CARD = "https://fhirserver.example/sid/health-card"


def caller(kind: str, scope: str, **kw: str) -> Caller:
    clinical, named = parse_scopes(scope)
    return Caller(kind=kind, scopes=tuple(clinical), subject="s", named=frozenset(named),
                  **kw)  # type: ignore[arg-type]


PATIENT = caller("patient", "patient/*.rs", patient=ME)
CLINICIAN = caller("user", "user/*.cruds", practitioner="Practitioner/dr")
REGISTRAR = caller("user", "user/*.cruds registration", practitioner="Practitioner/desk")
BACKEND = caller("system", "system/*.cruds", organization="Organization/lab")
IDENTITY = caller("system", "system/*.cruds identity", organization="Organization/lab")
CARDS = caller("system", "system/Patient.rs card-number", organization="Organization/lab")
CLINICIAN_ASKING_IDENTITY = caller("user", "user/*.cruds identity",
                                   practitioner="Practitioner/dr")
OPERATOR = caller("operator", "system/*.cruds")

# (caller, patient of the record, reach, whole?)
TABLE = [
    (PATIENT, ME, frozenset({ME, CHILD}), True),  # their own record
    (PATIENT, CHILD, frozenset({ME, CHILD}), True),  # a bound family member's
    (PATIENT, STRANGER, frozenset({ME, CHILD}), False),
    (PATIENT, None, frozenset({ME}), False),  # a record of no patient
    (CLINICIAN, ME, frozenset({ME}), False),  # treating is not registering
    (REGISTRAR, ME, frozenset(), True),
    (BACKEND, ME, frozenset({ME}), False),
    (IDENTITY, STRANGER, frozenset(), True),
    (CARDS, ME, frozenset({ME}), False),
    (CLINICIAN_ASKING_IDENTITY, ME, frozenset({ME}), False),  # identity is for backend clients
    (OPERATOR, STRANGER, None, True),
    (None, STRANGER, None, True),  # trusted internal callers (import)
]


@pytest.mark.parametrize(("who", "patient", "reach", "whole"), TABLE)
def test_who_sees_identity_numbers_whole(who, patient, reach, whole):
    assert sees_whole(who, patient, reach) is whole


def test_card_numbers_stay_whole_for_the_card_number_scope_only():
    assert kept_whole(CARDS, CARD) == frozenset({CARD})
    assert kept_whole(CLINICIAN, CARD) == frozenset()
    assert kept_whole(IDENTITY, CARD) == frozenset()
