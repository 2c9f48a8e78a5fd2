"""SMART scopes (SMART App Launch 2.x scopes-and-launch-context.html): grammar,
v1/v2 equivalence, granular constraints, granting and matching, as data."""

from __future__ import annotations

import pytest

from fhirserver.auth.scopes import ScopeError, grant, matching, parse_scope, parse_scopes


@pytest.mark.parametrize(("text", "context", "resource", "letters", "query"), [
    ("patient/Observation.read", "patient", "Observation", "rs", ()),
    ("user/*.write", "user", "*", "cud", ()),
    ("system/*.*", "system", "*", "cruds", ()),
    ("patient/Observation.rs", "patient", "Observation", "rs", ()),
    ("user/Patient.cruds", "user", "Patient", "cruds", ()),
    ("system/DiagnosticReport.cu", "system", "DiagnosticReport", "cu", ()),
    ("patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory",
     "patient", "Observation", "rs",
     (("category", "http://terminology.hl7.org/CodeSystem/observation-category|laboratory"),)),
])
def test_clinical_scopes(text: str, context: str, resource: str, letters: str, query: tuple) -> None:
    scope = parse_scope(text)
    assert not isinstance(scope, str)
    assert (scope.context, scope.resource, scope.permissions, scope.query) == (
        context, resource, frozenset(letters), query)


@pytest.mark.parametrize("text", [
    "patient/Observation.sr",  # v2 letters out of order
    "patient/Observation.rr",
    "patient/Observation.x",
    "doctor/Observation.read",
    "patient/Observation",
    "patient/Observation.read?category=x",  # v1 takes no query
    "Observation.read",
])
def test_invalid_scopes(text: str) -> None:
    with pytest.raises(ScopeError):
        parse_scope(text)


def test_non_clinical_scopes_are_kept_by_name() -> None:
    clinical, other = parse_scopes("openid fhirUser launch/patient offline_access patient/*.rs")
    assert other == ["openid", "fhirUser", "launch/patient", "offline_access"]
    assert [s.text for s in clinical] == ["patient/*.rs"]


@pytest.mark.parametrize(("interaction", "letter_scope", "allowed"), [
    ("read", "patient/Observation.r", True), ("vread", "patient/Observation.r", True),
    ("search", "patient/Observation.r", False), ("search", "patient/Observation.s", True),
    ("create", "patient/Observation.rs", False), ("create", "patient/Observation.c", True),
    ("update", "patient/Observation.c", False), ("update", "patient/Observation.u", True),
    ("patch", "patient/Observation.u", True), ("delete", "patient/Observation.u", False),
    ("delete", "patient/Observation.d", True), ("read", "patient/Patient.r", False),
    ("read", "patient/*.read", True), ("delete", "patient/*.write", True),
])
def test_each_interaction_needs_its_letter(interaction: str, letter_scope: str, allowed: bool) -> None:
    clinical, _ = parse_scopes(letter_scope)
    assert bool(matching(clinical, "Observation", interaction)) is allowed


def test_matching_respects_the_context() -> None:
    clinical, _ = parse_scopes("patient/Observation.rs system/Patient.r")
    assert matching(clinical, "Observation", "read", ("user",)) == []
    assert [s.context for s in matching(clinical, "Observation", "read", ("patient",))] == ["patient"]


def test_grant_is_requested_intersect_allowed_intersect_approved() -> None:
    allowed = "patient/*.rs user/Observation.cruds openid fhirUser"
    assert grant("patient/Observation.rs patient/Observation.c openid", allowed) == \
        "patient/Observation.rs openid"
    assert grant("user/Observation.rs?category=laboratory", allowed) == \
        "user/Observation.rs?category=laboratory"  # narrowing a granted scope is fine
    assert grant("patient/*.cruds user/Observation.read launch", allowed) == "user/Observation.read"
    assert grant("patient/Observation.rs openid", allowed, approved=["openid"]) == "openid"
    assert grant("not-a-scope patient/Observation.sr", allowed) == ""
