"""Minimum disclosure of identity numbers in answers (issue "Privacy at rest").

Identity document numbers reach a caller whole only where their access needs them:
the patient and their bound family, registration, backend clients with the
``identity`` scope, the operator. A treating clinician gets them masked, and the
resource carries the v3 ObservationValue ``MASKED`` security label
(security-labels.html). A masked number sent back in an update keeps the stored
one (http.html#update); one that masks nothing is refused.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from fhirserver.auth.access import record_care
from tests import factories as f
from tests.conftest import mint

RID = "https://fhirserver.example/sid/resident-id"
PASSPORT = "https://fhirserver.example/sid/passport/USA"
CARD = "https://fhirserver.example/sid/health-card"
NUMBER = "110101199003071233"  # GB 11643: Beijing Dongcheng, born 1990-03-07, male
SHOWN = "110101********1233"
MASKED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
          "code": "MASKED", "display": "masked"}
HOSPITAL = "Organization/hospital-1"


class As:
    """Requests carrying one caller's token."""

    def __init__(self, fhir, token: str) -> None:
        self.fhir, self.h = fhir, {"Authorization": f"Bearer {token}"}

    def get(self, url: str, **kw):
        return self.fhir.get(url, headers={**self.h, **kw.pop("headers", {})}, **kw)

    def post(self, url: str, body, **kw):
        return self.fhir.post(url, body, headers={**self.h, **kw.pop("headers", {})}, **kw)

    def put(self, url: str, body, **kw):
        return self.fhir.put(url, body, headers={**self.h, **kw.pop("headers", {})}, **kw)

    def patch(self, url: str, body, **kw):
        return self.fhir.patch(url, body, headers={**self.h, **kw.pop("headers", {})}, **kw)


def labelled(resource: dict) -> bool:
    return MASKED in (resource.get("meta") or {}).get("security", [])


def numbers(resource: dict) -> dict[str, str]:
    return {i["system"]: i["value"] for i in resource.get("identifier", [])}


def treat(app, who: str, pid: str) -> None:
    db = app.extensions["fhirserver"].repo.db
    record_care(db, who, pid, datetime.now(UTC) + timedelta(hours=1), "test")


@pytest.fixture
def world(app, fhir):
    """Patient Wang with a resident ID, a passport and a health card, and a result
    whose subject names him by reference and identifier; Dr Li treats him."""
    pid = fhir.create(f.patient("Wang", birthDate="1990-03-07", gender="male", identifier=[
        {"system": RID, "value": NUMBER}, {"system": PASSPORT, "value": "X1234567"}],
        telecom=[{"system": "phone", "value": "13900002222"}]))["id"]
    assert fhir.post(f"Patient/{pid}/$issue-card", None).status_code == 201
    whole = fhir.get(f"Patient/{pid}").get_json()
    obs = fhir.create(f.observation(pid, code="1-1") | {"subject": {
        "reference": f"Patient/{pid}", "identifier": {"system": RID, "value": NUMBER}}})["id"]
    treat(app, "Practitioner/dr-li", pid)
    dr = As(fhir, mint(app, "user", "user/*.cruds", subject="dr-li",
                       fhirUser="Practitioner/dr-li", organization=HOSPITAL))
    return {"pid": pid, "obs": obs, "whole": whole, "card": numbers(whole)[CARD], "dr": dr}


def assert_masked(resource: dict, world) -> None:
    assert numbers(resource) == {RID: SHOWN, PASSPORT: "****4567",
                                 CARD: "*" * 16 + world["card"][-4:]}
    assert labelled(resource)


def test_treating_clinician_reads_masked_numbers_with_the_masked_label(fhir, world):
    """security-labels.html: MASKED marks a resource some of whose content is masked;
    its version and ETag stay those of the stored version (http.html#read)."""
    r = world["dr"].get(f"Patient/{world['pid']}")
    assert r.status_code == 200
    body = r.get_json()
    assert_masked(body, world)
    operator = fhir.get(f"Patient/{world['pid']}")
    assert r.headers["ETag"] == operator.headers["ETag"]
    assert body["meta"]["versionId"] == operator.get_json()["meta"]["versionId"]
    assert body["telecom"] == [{"system": "phone", "value": "13900002222"}]  # to call him
    obs = world["dr"].get(f"Observation/{world['obs']}").get_json()
    assert obs["subject"]["identifier"]["value"] == SHOWN and labelled(obs)
    vread = world["dr"].get(f"Patient/{world['pid']}/_history/1").get_json()
    assert numbers(vread)[RID] == SHOWN and labelled(vread)


def test_clinician_search_include_history_everything_and_transaction_are_masked(fhir, world):
    """search.html#include, http.html#history, patient-operation-everything.html,
    http.html#transaction: every answer masks."""
    dr, pid = world["dr"], world["pid"]
    searched = dr.get(f"Patient?_id={pid}").get_json()["entry"][0]["resource"]
    assert_masked(searched, world)
    bundle = dr.get(f"Observation?subject=Patient/{pid}&_include=Observation:subject").get_json()
    by_type = {e["resource"]["resourceType"]: e["resource"] for e in bundle["entry"]}
    assert_masked(by_type["Patient"], world)
    assert by_type["Observation"]["subject"]["identifier"]["value"] == SHOWN
    assert labelled(by_type["Observation"])
    assert "meta" not in bundle or not labelled(bundle)  # the label is on each resource
    elements = dr.get(f"Patient?_id={pid}&_elements=identifier").get_json()["entry"][0]["resource"]
    assert numbers(elements)[RID] == SHOWN and labelled(elements)
    history = dr.get(f"Patient/{pid}/_history").get_json()
    assert all(numbers(e["resource"])[RID] == SHOWN for e in history["entry"])
    everything = dr.get(f"Patient/{pid}/$everything").get_json()
    patients = [e["resource"] for e in everything["entry"]
                if e["resource"]["resourceType"] == "Patient"]
    assert patients and all(numbers(p)[RID] == SHOWN and labelled(p) for p in patients)
    r = dr.post("", {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "GET", "url": f"Patient/{pid}"}},
        {"resource": f.observation(pid, code="2-2"),
         "request": {"method": "POST", "url": "Observation"}}]},
        headers={"Prefer": "return=representation"})
    assert r.status_code == 200, r.get_json()
    assert_masked(r.get_json()["entry"][0]["resource"], world)


@pytest.mark.parametrize("who", ["self", "family", "registration", "identity-client", "operator"])
def test_whose_access_needs_the_numbers_sees_them_whole(app, fhir, world, who):
    """The patient, bound family, registration, backend clients with the identity
    scope and the operator: whole numbers, no MASKED label."""
    pid = world["pid"]
    if who == "self":
        caller = As(fhir, mint(app, "patient", "patient/*.rs", patient=pid))
    elif who == "family":
        holder = fhir.create(f.patient("Wang", given="Mother"))["id"]
        fhir.post(f"Patient/{holder}/$issue-card", None)
        code = fhir.get(f"Patient/{pid}/$card-qr").get_json()["parameter"][0]["valueString"]
        caller = As(fhir, mint(app, "patient", "patient/*.rs patient/Patient.u", patient=holder))
        r = caller.post(f"Patient/{holder}/$bind-family", {"resourceType": "Parameters",
                        "parameter": [{"name": "code", "valueString": code}]})
        assert r.status_code == 201, r.get_json()
        listing = caller.get(f"Patient/{holder}/$family").get_json()["entry"][0]["resource"]
        assert listing["identifier"][0]["value"].isdigit() and not labelled(listing)
    elif who == "registration":
        treat(app, "Practitioner/desk", pid)
        caller = As(fhir, mint(app, "user", "user/*.cruds registration", subject="desk",
                               fhirUser="Practitioner/desk", organization=HOSPITAL))
    elif who == "identity-client":
        treat(app, "Organization/lab", pid)
        caller = As(fhir, mint(app, "system", "system/*.cruds identity", subject="lab",
                               client_id="lab", organization="Organization/lab"))
    else:
        caller = As(fhir, mint(app))
    patient = caller.get(f"Patient/{pid}").get_json()
    assert numbers(patient) == numbers(world["whole"])
    assert not labelled(patient)
    obs = caller.get(f"Observation/{world['obs']}").get_json()
    assert obs["subject"]["identifier"]["value"] == NUMBER and not labelled(obs)


def test_backend_client_without_identity_scope_sees_masked_numbers(app, fhir, world):
    """A clinic system without ``identity``: masked, in reads and in $ihe-pix."""
    treat(app, "Organization/lab", world["pid"])
    lab = As(fhir, mint(app, "system", "system/*.cruds", subject="lab", client_id="lab",
                        organization="Organization/lab"))
    patient = lab.get(f"Patient/{world['pid']}").get_json()
    assert numbers(patient)[RID] == SHOWN and labelled(patient)
    pix = lab.get(f"Patient/$ihe-pix?sourceIdentifier={PASSPORT}|X1234567").get_json()
    given = {p["valueIdentifier"]["system"]: p["valueIdentifier"]["value"]
             for p in pix["parameter"] if p["name"] == "targetIdentifier"}
    assert given == {RID: SHOWN}  # no card number without the card-number scope
    assert labelled(pix)
    match = lab.post("Patient/$match", {"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": f.patient("Wang", identifier=[
            {"system": PASSPORT, "value": "X1234567"}])}]}).get_json()
    candidate = match["entry"][0]["resource"]
    assert candidate["id"] == world["pid"] and numbers(candidate)[RID] == SHOWN
    assert labelled(candidate)
    lastn = lab.get(f"Observation/$lastn?patient={world['pid']}").get_json()
    assert lastn["entry"][0]["resource"]["subject"]["identifier"]["value"] == SHOWN


def test_clinician_read_modify_put_keeps_the_stored_numbers(fhir, world):
    """http.html#update: the main story. A clinician reads the masked Patient, edits
    the name and telecom, PUTs it back: 200, and every number stays as stored."""
    dr, pid = world["dr"], world["pid"]
    patient = dr.get(f"Patient/{pid}").get_json()
    patient["name"][0]["given"] = ["Wei"]
    patient["telecom"] = [{"system": "phone", "value": "13800001111"}]
    r = dr.put(f"Patient/{pid}", patient)
    assert r.status_code == 200, r.get_json()
    assert numbers(r.get_json())[RID] == SHOWN and labelled(r.get_json())  # the answer: masked
    stored = fhir.get(f"Patient/{pid}").get_json()
    assert numbers(stored) == numbers(world["whole"])
    assert stored["name"][0]["given"] == ["Wei"]
    assert stored["telecom"][0]["value"] == "13800001111"
    assert not labelled(stored)
    assert stored["meta"]["versionId"] == "3"  # card issue made version 2


def test_masked_put_in_a_transaction_or_conditional_update_keeps_the_numbers(fhir, world):
    """http.html#transaction, http.html#cond-update: the same rule in every update."""
    dr, pid = world["dr"], world["pid"]
    patient = dr.get(f"Patient/{pid}").get_json()
    patient["name"][0]["given"] = ["Wei"]
    r = dr.post("", {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": patient, "request": {"method": "PUT", "url": f"Patient/{pid}"}}]})
    assert r.status_code == 200, r.get_json()
    patient["name"][0]["given"] = ["Wei", "Ming"]
    r = dr.put(f"Patient?_id={pid}", patient)
    assert r.status_code == 200, r.get_json()
    stored = fhir.get(f"Patient/{pid}").get_json()
    assert numbers(stored) == numbers(world["whole"])
    assert stored["name"][0]["given"] == ["Wei", "Ming"] and stored["meta"]["versionId"] == "4"


def test_patch_keeps_the_stored_numbers(fhir, world):
    """http.html#patch: a patch of other elements, or one that writes back a mask."""
    dr, pid = world["dr"], world["pid"]
    r = dr.patch(f"Patient/{pid}", [
        {"op": "replace", "path": "/name/0/given", "value": ["Wei"]},
        {"op": "replace", "path": "/identifier/0/value", "value": SHOWN}])
    assert r.status_code == 200, r.get_json()
    stored = fhir.get(f"Patient/{pid}").get_json()
    assert numbers(stored) == numbers(world["whole"]) and stored["name"][0]["given"] == ["Wei"]


def test_a_forged_masked_value_is_refused_at_its_element(fhir, world):
    """A masked value that masks no stored number: 422 at its FHIRPath, nothing written."""
    dr, pid = world["dr"], world["pid"]
    patient = dr.get(f"Patient/{pid}").get_json()
    patient["identifier"][0]["value"] = "110101********9999"
    r = dr.put(f"Patient/{pid}", patient)
    assert r.status_code == 422
    issue = r.get_json()["issue"][0]
    assert issue["expression"] == ["Patient.identifier[0].value"]
    assert "masked" in issue["diagnostics"]
    assert fhir.get(f"Patient/{pid}").get_json()["meta"]["versionId"] == "2"
    created = fhir.post("Patient", f.patient("Zhao", identifier=[
        {"system": PASSPORT, "value": "****4567"}]))
    assert created.status_code == 422
    assert created.get_json()["issue"][0]["expression"] == ["Patient.identifier[0].value"]


def test_the_masked_label_of_a_write_is_not_stored(fhir):
    """security-labels.html: MASKED is the server's statement about an answer."""
    body = f.patient("Sun", meta={"security": [
        MASKED, {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
                 "code": "R"}]})
    pid = fhir.create(body)["id"]
    stored = fhir.get(f"Patient/{pid}").get_json()
    assert not labelled(stored)
    assert stored["meta"]["security"] == [
        {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}]
