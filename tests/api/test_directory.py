"""The clinician directory: Practitioner, Organization and PractitionerRole stored like
the clinical record (R4 http.html: CRUD, history, search with the tables of
practitioner.html#search, organization.html#search, practitionerrole.html#search),
read by whoever holds a scope for the type, changed by operators and registration."""

from __future__ import annotations

import pytest

from tests import factories as f
from tests.api.test_access import As, clinician
from tests.conftest import mint

NPI = "http://hl7.org/fhir/sid/us-npi"


def practitioner(rid: str = "dr-wu", npi: str = "1234567893", email: str = "wu@clinic.example"):
    return {"resourceType": "Practitioner", "id": rid, "active": True,
            "identifier": [{"system": NPI, "value": npi}],
            "name": [{"family": "Wu", "given": ["Mei"], "prefix": ["Dr."]}],
            "telecom": [{"system": "email", "value": email}, {"system": "phone", "value": "555-0101"}],
            "gender": "female"}


def organization(rid: str = "clinic-a", part_of: str | None = None):
    org = {"resourceType": "Organization", "id": rid, "active": True, "name": f"Clinic {rid}",
           "alias": ["The Clinic"],
           "type": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/organization-type",
                                 "code": "prov"}]}]}
    if part_of:
        org["partOf"] = {"reference": f"Organization/{part_of}"}
    return org


def role(rid: str, dr: str, org: str):
    return {"resourceType": "PractitionerRole", "id": rid, "active": True,
            "practitioner": {"reference": f"Practitioner/{dr}"},
            "organization": {"reference": f"Organization/{org}"},
            "period": {"start": "2020-01-01"},
            "code": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/practitioner-role",
                                  "code": "doctor"}]}],
            "specialty": [{"coding": [{"system": "http://snomed.info/sct", "code": "394802001"}]}]}


@pytest.fixture
def directory(fhir):
    for body in (organization("net"), organization("clinic-a", part_of="net"), practitioner(),
                 role("wu-at-a", "dr-wu", "clinic-a")):
        r = fhir.put(f"{body['resourceType']}/{body['id']}", body)
        assert r.status_code == 201, r.get_json()
    return fhir


def ids(r) -> list[str]:
    assert r.status_code == 200, r.get_json()
    return sorted(e["resource"]["id"] for e in r.get_json().get("entry", []))


def test_crud_and_history_of_a_practitioner_http_html_update_and_history(directory):
    fhir = directory
    body = fhir.get("Practitioner/dr-wu").get_json()
    assert body["meta"]["versionId"] == "1" and body["identifier"][0]["value"] == "1234567893"
    r = fhir.put("Practitioner/dr-wu", {**practitioner(), "active": False})
    assert r.status_code == 200 and r.get_json()["meta"]["versionId"] == "2"
    history = fhir.get("Practitioner/dr-wu/_history").get_json()
    assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == ["2", "1"]
    assert fhir.get("Practitioner/dr-wu/_history/1").get_json()["active"] is True
    # Invalid content is refused at its element (validation.html).
    bad = fhir.put("Practitioner/dr-wu", {**practitioner(), "gender": ["female"]})
    assert bad.status_code == 400 and bad.get_json()["resourceType"] == "OperationOutcome"
    # A role still names the Organization: it is not deleted (referential integrity).
    assert fhir.delete("Organization/clinic-a").status_code == 409
    assert fhir.delete("PractitionerRole/wu-at-a").status_code == 200
    assert fhir.get("PractitionerRole/wu-at-a").status_code == 410


@pytest.mark.parametrize(("query", "expected"), [
    ("Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|1234567893", ["dr-wu"]),
    ("Practitioner?family=wu&gender=female", ["dr-wu"]),
    ("Practitioner?name=mei", ["dr-wu"]),
    ("Practitioner?email=WU@clinic.example", ["dr-wu"]),  # e-mail compares without case
    ("Practitioner?telecom=555-0101", ["dr-wu"]),
    ("Practitioner?phone=555-9999", []),
    ("Organization?name=the clinic", ["clinic-a", "net"]),  # name | alias
    ("Organization?partof=Organization/net", ["clinic-a"]),
    ("Organization?type=prov&active=true", ["clinic-a", "net"]),
    ("PractitionerRole?practitioner=Practitioner/dr-wu&organization=Organization/clinic-a",
     ["wu-at-a"]),
    ("PractitionerRole?role=doctor&specialty=http://snomed.info/sct|394802001", ["wu-at-a"]),
    ("PractitionerRole?date=ge2021-01-01", ["wu-at-a"]),  # period.start 2020, open end
    ("PractitionerRole?practitioner.family=wu", ["wu-at-a"]),  # chained (search.html#chaining)
])
def test_r4_search_parameters_of_the_directory(directory, query, expected):
    assert ids(directory.get(query)) == expected


def test_include_and_revinclude_follow_directory_references_search_html_include(directory):
    r = directory.get("PractitionerRole?_id=wu-at-a&_include=PractitionerRole:practitioner"
                      "&_include=PractitionerRole:organization")
    found = {(e["resource"]["resourceType"], e["resource"]["id"]) for e in r.get_json()["entry"]}
    assert found == {("PractitionerRole", "wu-at-a"), ("Practitioner", "dr-wu"),
                     ("Organization", "clinic-a")}
    r = directory.get("Practitioner?_id=dr-wu&_revinclude=PractitionerRole:practitioner")
    assert {e["resource"]["id"] for e in r.get_json()["entry"]} == {"dr-wu", "wu-at-a"}


def test_a_performer_reference_resolves_and_need_not_exist_first(directory):
    """A result names its performer; the directory answers for it once registered, and a
    result naming a clinician not yet registered is still accepted."""
    fhir = directory
    pid = fhir.create(f.patient("Perf"))["id"]
    obs = fhir.create(f.observation(pid, performer=[{"reference": "Practitioner/dr-wu"}]))["id"]
    r = fhir.get(f"Observation?_id={obs}&_include=Observation:performer")
    assert {e["resource"]["id"] for e in r.get_json()["entry"]} == {obs, "dr-wu"}
    unknown = fhir.post("Observation", f.observation(pid, performer=[
        {"reference": "Practitioner/not-registered-yet"}]))
    assert unknown.status_code == 201


def test_any_clinician_backend_and_patient_with_the_scope_reads_the_directory(directory, app):
    """Directory entries are nobody's health data: no care relationship is needed
    (a clinician reads the colleague who performed a test they were shown)."""
    fhir = directory
    stranger = clinician(app, fhir, "dr-stranger", scope="user/*.rs")
    assert stranger.get("Practitioner/dr-wu").status_code == 200
    assert stranger.ids("PractitionerRole?organization=Organization/clinic-a") == ["wu-at-a"]
    backend = As(fhir, mint(app, "system", "system/Practitioner.rs system/Organization.rs",
                            client_id="lab-1", organization="Organization/lab"))
    assert backend.get("Practitioner/dr-wu").status_code == 200
    assert backend.get("Organization/clinic-a").status_code == 200
    assert backend.get("PractitionerRole/wu-at-a").status_code == 403  # no scope for it
    pid = fhir.create(f.patient("Reader"))["id"]
    patient = As(fhir, mint(app, "patient", "patient/Practitioner.rs patient/Observation.rs",
                            patient=pid))
    assert patient.get("Practitioner/dr-wu").status_code == 200
    assert patient.get("Organization/clinic-a").status_code == 403


def test_only_operators_and_registration_change_the_directory(directory, app):
    fhir = directory
    dr = clinician(app, fhir, "dr-wu", scope="user/*.cruds")
    body = dr.get("Practitioner/dr-wu").get_json()
    assert dr.put("Practitioner/dr-wu", {**body, "active": False}).status_code == 403
    assert dr.post("Practitioner", practitioner("dr-fake")).status_code == 403
    assert dr.delete("PractitionerRole/wu-at-a").status_code == 403
    backend = As(fhir, mint(app, "system", "system/*.cruds", client_id="ehr-1",
                            organization="Organization/clinic-a"))
    assert backend.post("Organization", organization("mine")).status_code == 403
    patient_id = fhir.create(f.patient("Self"))["id"]
    patient = As(fhir, mint(app, "patient", "patient/*.cruds", patient=patient_id))
    assert patient.post("Practitioner", practitioner("dr-me")).status_code == 403
    registrar = clinician(app, fhir, "dr-desk", scope="user/*.cruds registration")
    created = registrar.post("Practitioner", practitioner("ignored", npi="1111111111"))
    assert created.status_code == 201, created.get_json()
    assert registrar.put("Practitioner/dr-wu", {**body, "active": False}).status_code == 200
    # The registration scope without a scope for the type is not enough.
    narrow = clinician(app, fhir, "dr-desk", scope="user/Patient.cruds registration")
    assert narrow.post("Organization", organization("x")).status_code == 403


def test_practitioner_identifiers_and_telecom_are_answered_whole(directory, app):
    """An NPI is no resident's identity number: not masked; telecom is encrypted at
    rest (crypto/fields.py) and read back whole, searchable through its blind index."""
    fhir = directory
    stranger = clinician(app, fhir, "dr-stranger", scope="user/*.rs")
    body = stranger.get("Practitioner/dr-wu").get_json()
    assert body["identifier"] == [{"system": NPI, "value": "1234567893"}]
    assert body["telecom"][0]["value"] == "wu@clinic.example"
    assert "MASKED" not in str(body.get("meta", {}))
    stored = app.extensions["fhirserver"].repo.db["Practitioner"].find_one({"_id": "dr-wu"})
    assert "wu@clinic.example" not in str(stored)
    assert stranger.ids("Practitioner?email=wu@clinic.example") == ["dr-wu"]


def test_the_directory_is_in_the_capability_statement_and_openapi(fhir):
    """capabilitystatement.html: each type with its search parameters."""
    cs = fhir.get("metadata").get_json()
    by_type = {r["type"]: r for r in cs["rest"][0]["resource"]}
    for rtype, names in (("Practitioner", {"identifier", "name", "family", "email", "telecom"}),
                         ("Organization", {"name", "partof", "type"}),
                         ("PractitionerRole", {"practitioner", "organization", "role", "specialty"}),
                         ("CareTeam", {"patient", "subject", "participant", "status", "date"})):
        assert names <= {p["name"] for p in by_type[rtype]["searchParam"]}
    assert "PractitionerRole:practitioner" in by_type["PractitionerRole"]["searchInclude"]
    paths = fhir.get("openapi.json").get_json()["paths"]
    assert {"/Practitioner", "/Organization/{id}", "/PractitionerRole/{id}/_history",
            "/CareTeam", "/Patient/{id}/CareTeam"} <= set(paths)
    assert "/Patient/{id}/Practitioner" not in paths  # not in the Patient compartment


def test_a_clinicians_own_resident_id_is_masked_like_a_patients(directory, app):
    """A resident ID number (GB 11643) recorded on a Practitioner identifies a person as
    much as a patient's does: masked for readers who are not registration
    (security-labels.html MASKED), whole for registration; the NPI stays whole."""
    from tests.mpi.numbers import gb11643

    fhir = directory
    number = gb11643("110105", "19800101", "013")
    body = {**practitioner("dr-cn"), "identifier": [
        {"system": NPI, "value": "1234567893"},
        {"system": "https://fhirserver.example/sid/resident-id", "value": number}]}
    assert fhir.put("Practitioner/dr-cn", body).status_code == 201
    reader = clinician(app, fhir, "dr-reader", scope="user/*.rs")
    shown = reader.get("Practitioner/dr-cn").get_json()
    assert shown["identifier"][0]["value"] == "1234567893"
    assert shown["identifier"][1]["value"] != number and "*" in shown["identifier"][1]["value"]
    registrar = clinician(app, fhir, "dr-desk", scope="user/*.rs registration")
    assert registrar.get("Practitioner/dr-cn").get_json()["identifier"][1]["value"] == number
