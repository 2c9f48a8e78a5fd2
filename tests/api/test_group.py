"""Group (R4 group.html) stored as a list of patients for Group-level Bulk Data export
(export.html, "Endpoint - Group of Patients"): CRUD and history (http.html), the
search parameters of group.html#search, and who may see a Group: operators and the
organisation whose backend client wrote it, nobody else (another organisation's
Group reads 404, as one that does not exist)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from fhirserver.auth.access import record_care
from tests import factories as f
from tests.api.test_access import As, clinician
from tests.conftest import mint

ORG_A, ORG_B = "Organization/org-a", "Organization/org-b"
LOINC = "http://loinc.org"


def group(*members: str, rid: str | None = None, **extra) -> dict:
    body = {"resourceType": "Group", "type": "person", "actual": True, **extra}
    if members:
        body["member"] = [{"entity": {"reference": f"Patient/{m}"}} for m in members]
    if rid is not None:
        body["id"] = rid
    return body


def backend(app, fhir, client_id: str, org: str,
            scope: str = "system/Group.cruds system/Patient.rs") -> As:
    return As(fhir, mint(app, "system", scope, client_id=client_id, organization=org))


@pytest.fixture
def patients(fhir, app):
    """Org A treats ``treated``; nobody treats ``stranger``."""
    treated = fhir.create(f.patient("Treated"))["id"]
    stranger = fhir.create(f.patient("Stranger"))["id"]
    record_care(app.extensions["fhirserver"].repo.db, ORG_A, treated,
                datetime.now(UTC) + timedelta(hours=1), "test")
    return {"treated": treated, "stranger": stranger}


def test_crud_and_history_of_a_group_http_html(fhir, patients):
    """http.html#create, #update, #history, #delete: a Group is stored like any
    resource; being listed in it keeps no patient from being deleted."""
    gid = fhir.create(group(patients["treated"], name="cohort"))["id"]
    body = fhir.get(f"Group/{gid}").get_json()
    assert body["member"][0]["entity"]["reference"] == f"Patient/{patients['treated']}"
    r = fhir.put(f"Group/{gid}", {**body, "name": "cohort 2"})
    assert r.status_code == 200 and r.get_json()["meta"]["versionId"] == "2"
    history = fhir.get(f"Group/{gid}/_history").get_json()
    assert [e["resource"]["name"] for e in history["entry"]] == ["cohort 2", "cohort"]
    assert fhir.delete(f"Patient/{patients['treated']}").status_code == 200
    assert fhir.delete(f"Group/{gid}").status_code == 200
    assert fhir.get(f"Group/{gid}").status_code == 410


@pytest.mark.parametrize(("body", "expression"), [
    ({"member": [{"entity": {"reference": "Practitioner/dr-x"}}]}, "Group.member[0].entity.reference"),
    ({"member": [{"entity": {"reference": "http://elsewhere.example/Patient/1"}}]},
     "Group.member[0].entity.reference"),
    ({"type": "device"}, "Group.type"),
])
def test_members_must_be_patients_of_this_server(fhir, body, expression):
    """group.html: Group.member.entity may name many types; this server keeps groups
    of its own patients (what Group-level export exports): 422 naming the element."""
    r = fhir.post("Group", {**group(), **body})
    assert r.status_code == 422, r.get_json()
    assert r.get_json()["issue"][0]["expression"] == [expression]


def test_a_missing_member_is_422_only_for_a_writer_who_reaches_everyone(fhir, app, patients):
    """references.html: the operator's unknown member does not resolve (422); for a
    backend client a member it does not reach is stored as given whether or not the
    patient exists, so that the answer tells it nothing about who is a patient here."""
    r = fhir.post("Group", group("no-such-patient"))
    assert r.status_code == 422 and r.get_json()["issue"][0]["code"] == "not-found"
    a = backend(app, fhir, "ehr-a", ORG_A)
    exists = a.post("Group", group(patients["stranger"]))
    missing = a.post("Group", group("no-such-patient"))
    assert exists.status_code == missing.status_code == 201
    assert a.post("Group", group(patients["treated"])).status_code == 201
    fhir.delete(f"Patient/{patients['treated']}")
    # A deleted patient is a reference that does not resolve for the operator; deleting
    # it ended the backend's care relationship, so to the backend it reads like any
    # patient out of reach.
    assert fhir.post("Group", group(patients["treated"])).status_code == 422
    assert a.post("Group", group(patients["treated"])).status_code == 201


@pytest.mark.parametrize(("query", "expected"), [
    ("Group?member=Patient/{treated}", ["g1"]),
    ("Group?type=person&actual=true", ["g1", "g2"]),
    ("Group?actual=false", []),
    ("Group?code=http://snomed.info/sct|44054006", ["g1"]),
    ("Group?identifier=urn:cohorts|c-1", ["g1"]),
    ("Group?managing-entity=Organization/org-a", ["g2"]),
    ("Group?characteristic=http://loinc.org|4548-4", ["g1"]),
    ("Group?value=http://snomed.info/sct|44054006", ["g1"]),
    ("Group?exclude=true", ["g2"]),
    ("Group?characteristic-value=http://loinc.org|4548-4$http://snomed.info/sct|44054006", ["g1"]),
    # Components pair within one characteristic (search.html#composite).
    ("Group?characteristic-value=http://loinc.org|4548-4$true", []),
    ("Group?characteristic-value=http://loinc.org|72166-2$true", ["g2"]),
])
def test_r4_search_parameters_of_group_html_search(fhir, patients, query, expected):
    fhir.put("Group/g1", group(patients["treated"], rid="g1",
                               identifier=[{"system": "urn:cohorts", "value": "c-1"}],
                               code={"coding": [{"system": "http://snomed.info/sct",
                                                 "code": "44054006"}]},
                               characteristic=[{"code": {"coding": [{"system": LOINC,
                                                                     "code": "4548-4"}]},
                                                "valueCodeableConcept": {"coding": [{
                                                    "system": "http://snomed.info/sct",
                                                    "code": "44054006"}]},
                                                "exclude": False}]))
    fhir.put("Group/g2", group(patients["stranger"], rid="g2",
                               managingEntity={"reference": ORG_A},
                               characteristic=[{"code": {"coding": [{"system": LOINC,
                                                                     "code": "72166-2"}]},
                                                "valueBoolean": True, "exclude": True}]))
    r = fhir.get(query.format(**patients))
    assert r.status_code == 200, r.get_json()
    assert sorted(e["resource"]["id"] for e in r.get_json().get("entry", [])) == expected


def test_only_the_writing_organisation_sees_its_group_no_existence_leak(fhir, app, patients):
    """A Group lists patients: another organisation's reads 404 exactly as an id never
    used, its searches leave it out, and its writes find nothing (404 / nothing to
    delete); clinicians and patients get 403 whatever their scopes."""
    a = backend(app, fhir, "ehr-a", ORG_A)
    b = backend(app, fhir, "ehr-b", ORG_B)
    gid = a.post("Group", group(patients["treated"], patients["stranger"])).get_json()["id"]
    assert a.get(f"Group/{gid}").status_code == 200
    assert a.ids(f"Group?member=Patient/{patients['stranger']}") == [gid]
    assert fhir.get(f"Group/{gid}").status_code == 200  # operators see all

    hidden, never = b.get(f"Group/{gid}"), b.get("Group/never-used")
    assert hidden.status_code == never.status_code == 404
    assert hidden.get_json()["issue"][0]["code"] == never.get_json()["issue"][0]["code"]
    assert b.get(f"Group/{gid}/_history").status_code == 404
    assert b.ids("Group") == []
    assert b.ids(f"Group?member=Patient/{patients['treated']}") == []
    assert b.ids(f"Patient?_id={patients['treated']}&_revinclude=Group:member") == []
    body = fhir.get(f"Group/{gid}").get_json()
    assert b.put(f"Group/{gid}", {**body, "name": "taken"}).status_code == 404
    gone = b.delete(f"Group/{gid}")
    assert gone.status_code == 200 and "does not exist" in gone.get_json()["issue"][0]["diagnostics"]
    assert a.get(f"Group/{gid}").get_json()["meta"]["versionId"] == "1"  # untouched

    # The writing organisation updates and deletes its own.
    assert a.put(f"Group/{gid}", {**body, "name": "mine"}).status_code == 200
    # An operator's Group is the operators' alone.
    own = fhir.create(group(patients["treated"]))["id"]
    assert a.get(f"Group/{own}").status_code == 404

    dr = clinician(app, fhir, "dr-li", scope="user/*.cruds")
    assert dr.get(f"Group/{gid}").status_code == 403
    assert dr.post("Group", group(patients["treated"])).status_code == 403
    patient = As(fhir, mint(app, "patient", "patient/*.cruds", patient=patients["treated"]))
    assert patient.get(f"Group?member=Patient/{patients['treated']}").status_code == 403
    # Scopes still apply to backend clients: reading without a write scope, and back.
    reader = backend(app, fhir, "ehr-a", ORG_A, scope="system/Group.rs")
    assert reader.post("Group", group()).status_code == 403
    assert a.delete(f"Group/{gid}").status_code == 200


def test_group_is_in_the_capability_statement(fhir):
    """capabilitystatement.html: the type with its group.html search parameters."""
    cs = fhir.get("metadata").get_json()
    entry = next(r for r in cs["rest"][0]["resource"] if r["type"] == "Group")
    assert {"actual", "characteristic", "characteristic-value", "code", "exclude", "identifier",
            "managing-entity", "member", "type", "value"} <= {p["name"] for p in entry["searchParam"]}
    ops = {o["name"]: o["definition"] for o in entry["operation"]}
    assert ops["export"] == "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export"
