"""The access policy as a table (DESIGN.md section 1): each kind of caller x care
relationship x interaction, decided without a database."""

from __future__ import annotations

import pytest

from fhirserver.auth.policy import Caller, decide, may_write
from fhirserver.auth.scopes import parse_scopes

ME, CHILD, STRANGER = "p-me", "p-child", "p-stranger"


def caller(kind: str, scope: str, **kw: str) -> Caller:
    clinical, _ = parse_scopes(scope)
    return Caller(kind=kind, scopes=tuple(clinical), subject="s", **kw)  # type: ignore[arg-type]


PATIENT = caller("patient", "patient/*.rs", patient=ME)
CLINICIAN = caller("user", "user/*.cruds", practitioner="Practitioner/dr", organization="Organization/h")
LAUNCHED = caller("user", "patient/Observation.rs", practitioner="Practitioner/dr", patient=ME)
BACKEND = caller("system", "system/Observation.cru system/Patient.rs", organization="Organization/lab")
OPERATOR = caller("operator", "system/*.cruds")

# (caller, reachable patients, type, interaction, allowed, patients in reach)
TABLE = [
    # patient tokens: own compartment and bound family, read-only scopes
    (PATIENT, {ME, CHILD}, "Observation", "search", True, {ME, CHILD}),
    (PATIENT, {ME, CHILD}, "Patient", "read", True, {ME, CHILD}),
    (PATIENT, {ME}, "Observation", "create", False, set()),
    # clinicians: exactly the patients they treat; nobody when they treat nobody
    (CLINICIAN, {STRANGER}, "Observation", "read", True, {STRANGER}),
    (CLINICIAN, set(), "Patient", "search", True, set()),
    (CLINICIAN, {ME}, "DiagnosticReport", "update", True, {ME}),
    # a launched app with patient/ scopes: the launch patient only, if treated
    (LAUNCHED, {ME, STRANGER}, "Observation", "read", True, {ME}),
    (LAUNCHED, {STRANGER}, "Observation", "read", True, set()),
    (LAUNCHED, {ME}, "Patient", "read", False, set()),
    # backend clients: their organisation's relationships; no delete
    (BACKEND, {CHILD}, "Observation", "read", True, {CHILD}),
    (BACKEND, {CHILD}, "Observation", "delete", False, set()),
    (BACKEND, set(), "DiagnosticReport", "read", False, set()),
    # a patient reads bound family's records but writes only their own
    (caller("patient", "patient/*.cruds", patient=ME), {ME, CHILD}, "Observation", "read", True, {ME, CHILD}),
    (caller("patient", "patient/*.cruds", patient=ME), {ME, CHILD}, "Observation", "update", True, {ME}),
    (caller("patient", "patient/*.cruds", patient=ME), {ME, CHILD}, "Patient", "create", True, {ME}),
    # operators: everything
    (OPERATOR, set(), "Observation", "delete", True, None),
]


@pytest.mark.parametrize(("who", "reach", "rtype", "interaction", "allowed", "patients"), TABLE)
def test_policy_table(who: Caller, reach: set[str], rtype: str, interaction: str, allowed: bool,
                      patients: set[str] | None) -> None:
    d = decide(who, rtype, interaction, frozenset(reach) if who.kind != "operator" else None)
    assert d.allowed is allowed, d.reason
    if allowed:
        assert d.patients == (frozenset(patients) if patients is not None else None)


def test_backend_identifier_lookup_reaches_every_patient() -> None:
    """Backend clients look patients up by identifier without a care relationship."""
    d = decide(BACKEND, "Patient", "search", frozenset(), identifier_lookup=True)
    assert d.allowed and d.patients is None
    assert decide(CLINICIAN, "Patient", "search", frozenset(), identifier_lookup=True).patients == frozenset()


def test_granular_constraints_are_lifted_by_an_unconstrained_scope() -> None:
    lab = caller("patient", "patient/Observation.rs?category=laboratory", patient=ME)
    d = decide(lab, "Observation", "search", frozenset({ME}))
    assert d.constraints == ((("category", "laboratory"),),)
    both = caller("patient", "patient/Observation.rs?category=laboratory patient/Observation.rs",
                  patient=ME)
    assert decide(both, "Observation", "search", frozenset({ME})).constraints == ()


@pytest.mark.parametrize(("patients", "touched", "ok"), [
    (frozenset({ME}), {ME}, True),
    (frozenset({ME}), {ME, STRANGER}, False),  # moving a record out of reach
    (frozenset({ME}), {None}, False),  # a record in no compartment
    (None, {STRANGER, None}, True),
])
def test_writes_need_every_touched_compartment(patients, touched, ok) -> None:
    d = decide(CLINICIAN if patients is not None else OPERATOR, "Observation", "update", patients)
    assert may_write(d, touched) is ok


@pytest.mark.parametrize(("who", "interaction", "authored"), [
    (CLINICIAN, "read", ("by", "Practitioner/dr")),  # a clinician reads what they wrote...
    (CLINICIAN, "search", ("by", "Practitioner/dr")),
    (CLINICIAN, "update", None),  # ...but writing needs a care relationship
    (LAUNCHED, "read", None),  # patient/ scopes: the launch patient only
    (BACKEND, "read", ("org", "Organization/lab")),  # an organisation reads its own results
    (PATIENT, "read", None),
])
def test_authorship_reaches_the_record_written_never_the_patient(who: Caller, interaction: str,
                                                                 authored: tuple[str, str] | None) -> None:
    """Writing a record is not a care relationship: it keeps reach to that record
    (read and search), never to the rest of the patient's record, never for writes."""
    d = decide(who, "Observation", interaction, frozenset())
    assert d.allowed and d.authored == authored and d.patients == frozenset()


def _named(kind: str, scope: str, **kw: str) -> Caller:
    clinical, named = parse_scopes(scope)
    return Caller(kind=kind, scopes=tuple(clinical), subject="s", named=frozenset(named), **kw)  # type: ignore[arg-type]


REGISTRAR = _named("user", "user/*.cruds registration", practitioner="Practitioner/desk")


@pytest.mark.parametrize(("who", "rtype", "interaction", "allowed"), [
    # The clinician directory (practitioner.html): every entry in reach of a reader
    # whose scopes cover the type, with or without care relationships...
    (CLINICIAN, "Practitioner", "read", True),
    (PATIENT, "Organization", "search", True),
    (BACKEND, "Practitioner", "read", False),  # no scope for the type
    (_named("system", "system/PractitionerRole.rs"), "PractitionerRole", "search", True),
    # ...and changed by registration and operators only, whatever the other scopes say.
    (CLINICIAN, "Practitioner", "update", False),
    (CLINICIAN, "PractitionerRole", "create", False),
    (REGISTRAR, "Organization", "create", True),
    (REGISTRAR, "Practitioner", "delete", True),
    (_named("user", "user/Patient.cruds registration"), "Practitioner", "create", False),
    (OPERATOR, "PractitionerRole", "delete", True),
])
def test_the_directory_is_read_by_scope_and_kept_by_registration(who, rtype, interaction, allowed):
    d = decide(who, rtype, interaction, frozenset())
    assert d.allowed is allowed
    if allowed:
        assert d.patients is None  # no patient's data: not limited to a care relationship


def test_a_care_team_is_patient_data():
    """CareTeam is in the Patient compartment (compartmentdefinition-patient.html)."""
    assert decide(CLINICIAN, "CareTeam", "read", frozenset({ME})).patients == {ME}
    assert decide(PATIENT, "CareTeam", "search", frozenset({ME})).patients == {ME}


GROUP_KEEPER = caller("system", "system/Group.cruds", client_id="ehr", organization="Organization/a")


@pytest.mark.parametrize(("who", "interaction", "allowed"), [
    # A Group lists patients (group.html): no patient opens one, only the stored
    # writer organisation does; clinicians and patients get none whatever their scopes.
    (GROUP_KEEPER, "create", True),
    (GROUP_KEEPER, "search", True),
    (caller("system", "system/Group.rs", organization="Organization/a"), "create", False),
    (caller("system", "system/Group.cruds"), "read", False),  # no organisation
    (CLINICIAN, "read", False),
    (PATIENT, "search", False),
    (OPERATOR, "delete", True),
])
def test_a_group_is_its_writing_organisations(who, interaction, allowed):
    d = decide(who, "Group", interaction, frozenset({ME}))
    assert d.allowed is allowed
    if allowed and who is GROUP_KEEPER:
        assert d.patients == frozenset() and d.authored == ("org", "Organization/a")
