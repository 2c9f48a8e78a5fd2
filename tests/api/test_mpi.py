"""The master patient index over HTTP: identifier validation on Patient writes,
uniqueness of uniquely-identifying documents, NamingSystem publication and IHE
PIXm $ihe-pix (DESIGN.md sections 1 and 3)."""

from __future__ import annotations

import threading

from fhir.resources.R4B.namingsystem import NamingSystem

from tests import factories as f
from tests.mpi.numbers import gb11643, luhn_complete

RID = "https://fhirserver.example/sid/resident-id"
CARD = "https://fhirserver.example/sid/health-card"
PASSPORT_CHN = "https://fhirserver.example/sid/passport/CHN"
MRN = "https://fhirserver.example/sid/mrn/hospital-1"
FEMALE_1949 = "11010519491231002X"  # GB 11643's example: female, born 1949-12-31


def person(number: str = FEMALE_1949, *extra: dict, **fields: object) -> dict:
    return f.patient(gender="female", birthDate="1949-12-31",
                     identifier=[{"system": RID, "value": number}, *extra], **fields)


def issues(r) -> list[dict]:
    return r.get_json()["issue"]


def test_resident_id_is_normalised_on_write(fhir):
    """Lower-case x becomes X and spaces go, so one number has one stored form."""
    created = fhir.create(person(" 110105 19491231 002x"))
    assert created["identifier"][0]["value"] == FEMALE_1949


def test_invalid_number_is_422_at_its_fhirpath(fhir):
    bad = person("110105194912310021", {"system": PASSPORT_CHN, "value": "12345"})
    r = fhir.post("Patient", bad)
    assert r.status_code == 422
    found = {i["expression"][0]: i["diagnostics"] for i in issues(r)}
    assert "check character" in found["Patient.identifier[0].value"]
    assert "Chinese passport" in found["Patient.identifier[1].value"]
    assert fhir.get("Patient?_summary=count").get_json()["total"] == 0


def test_resident_id_must_agree_with_birth_date_and_gender(fhir):
    r = fhir.post("Patient", {**person(), "birthDate": "1950-01-01", "gender": "male"})
    assert r.status_code == 422
    text = " ".join(i["diagnostics"] for i in issues(r))
    assert "birth date 1949-12-31, but birthDate is 1950-01-01" in text
    assert "gender female, but gender is male" in text
    assert {i["expression"][0] for i in issues(r)} == {"Patient.birthDate", "Patient.gender"}
    # A birthDate of lower precision that agrees, and no gender, are fine.
    no_gender = {k: v for k, v in person().items() if k != "gender"}
    assert fhir.post("Patient", {**no_gender, "birthDate": "1949-12"}).status_code == 201


def test_unregistered_systems_are_kept_as_given(fhir):
    created = fhir.create(f.patient(identifier=[{"system": "urn:example:other", "value": " a b "}]))
    assert created["identifier"][0]["value"] == " a b "


def test_second_active_patient_with_the_same_resident_id_is_409(fhir):
    first = fhir.create(person())["id"]
    r = fhir.post("Patient", person(FEMALE_1949.lower()))
    assert r.status_code == 409
    assert f"Patient/{first}" in issues(r)[0]["diagnostics"]
    # Through an update of another patient too.
    other = fhir.create(f.patient())["id"]
    r = fhir.put(f"Patient/{other}", {**person(), "id": other})
    assert r.status_code == 409
    # The holder itself may be updated freely.
    assert fhir.put(f"Patient/{first}", {**person(), "id": first, "active": True}).status_code == 200


def test_inactive_or_deleted_holders_release_the_identifier(fhir):
    first = fhir.create(person())["id"]
    assert fhir.put(f"Patient/{first}", {**person(), "id": first, "active": False}).status_code == 200
    second = fhir.create(person())["id"]
    # Re-activating the first would make two active holders.
    r = fhir.put(f"Patient/{first}", {**person(), "id": first, "active": True})
    assert r.status_code == 409 and f"Patient/{second}" in issues(r)[0]["diagnostics"]
    assert fhir.delete(f"Patient/{second}").status_code == 200
    assert fhir.put(f"Patient/{first}", {**person(), "id": first, "active": True}).status_code == 200
    # Dropping the identifier in an update releases it as well.
    assert fhir.put(f"Patient/{first}", {**f.patient(), "id": first}).status_code == 200
    assert fhir.post("Patient", person()).status_code == 201


def test_concurrent_creates_with_one_resident_id_leave_exactly_one(app, fhir):
    """Enforced by the database's unique key, not by a read-then-write check."""
    racers = 6
    for round_ in range(3):
        number = gb11643("440106", "19850615", f"{11 + 2 * round_:03d}")
        body = {**f.patient(birthDate="1985-06-15", gender="male",
                            identifier=[{"system": RID, "value": number}])}
        barrier = threading.Barrier(racers)
        statuses: list[int] = [0] * racers

        def run(i: int) -> None:
            client = app.test_client()
            barrier.wait()
            statuses[i] = client.post("/Patient", json=body,
                                      content_type="application/fhir+json").status_code

        threads = [threading.Thread(target=run, args=(i,)) for i in range(racers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(statuses) == [201] + [409] * (racers - 1)
        found = fhir.get(f"Patient?identifier={RID}|{number}").get_json()
        assert found["total"] == 1


def test_transaction_with_a_taken_identifier_writes_nothing(fhir):
    fhir.create(person())
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": f.patient("Fresh"), "request": {"method": "POST", "url": "Patient"}},
        {"resource": person(), "request": {"method": "POST", "url": "Patient"}},
    ]}
    r = fhir.post("", bundle)
    assert r.status_code == 409
    assert fhir.get("Patient?family=fresh").get_json()["total"] == 0


def test_naming_systems_are_published_read_only(fhir):
    b = fhir.get("NamingSystem").get_json()
    systems = {e["resource"]["uniqueId"][0]["value"]: e["resource"] for e in b["entry"]}
    assert {RID, CARD, PASSPORT_CHN} <= set(systems)
    for ns in systems.values():
        NamingSystem.model_validate(ns)  # valid R4 NamingSystem
    assert systems[RID]["type"]["coding"][0]["code"] == "01"
    assert systems[PASSPORT_CHN]["type"]["coding"][0]["code"] == "03"
    one = fhir.get(f"NamingSystem?value={RID}").get_json()
    assert [e["resource"]["id"] for e in one["entry"]] == ["resident-id"]
    by_type = fhir.get("NamingSystem?type=03").get_json()
    assert all(e["resource"]["type"]["coding"][0]["code"] == "03" for e in by_type["entry"])
    assert fhir.get("NamingSystem/resident-id").get_json()["uniqueId"][0]["value"] == RID
    assert fhir.get("NamingSystem/nope").status_code == 404
    assert fhir.post("NamingSystem", {"resourceType": "NamingSystem"}).status_code == 405
    assert fhir.delete("NamingSystem/resident-id").status_code == 405


def issued_card(fhir, pid: str) -> str:
    """The number of a card issued to ``pid`` (the server owns card numbers)."""
    r = fhir.post(f"Patient/{pid}/$issue-card", None)
    assert r.status_code == 201, r.get_json()
    return [p["valueIdentifier"]["value"] for p in r.get_json()["parameter"] if p["name"] == "number"][0]


def test_identifier_search_and_of_type_find_patients(fhir):
    """search.html#token: identifier=system|value, and :of-type on Identifier.type."""
    pid = fhir.create(person(FEMALE_1949,
                             {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                                   "code": "MR"}]}, "system": MRN, "value": "a-17"}))["id"]
    card = issued_card(fhir, pid)
    fhir.create(f.patient("Other"))
    found = fhir.get(f"Patient?identifier={CARD}|{card}").get_json()
    assert [e["resource"]["id"] for e in found["entry"]] == [pid]
    of_type = fhir.get("Patient?identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|MR|A-17")
    assert [e["resource"]["id"] for e in of_type.get_json()["entry"]] == [pid]


def test_ihe_pix_maps_one_document_to_the_others(fhir):
    """IHE PIXm ITI-83: health card number -> resident ID (targetSystem), targetId."""
    pid = fhir.create(person(FEMALE_1949, {"system": PASSPORT_CHN, "value": "E12345678"}))["id"]
    card = issued_card(fhir, pid)
    r = fhir.get(f"Patient/$ihe-pix?sourceIdentifier={CARD}|{card}&targetSystem={RID}")
    assert r.status_code == 200
    params = r.get_json()["parameter"]
    assert {"name": "targetIdentifier", "valueIdentifier": {"system": RID, "value": FEMALE_1949}} in params
    assert {"name": "targetId", "valueReference": {"reference": f"Patient/{pid}"}} in params
    assert all(p["valueIdentifier"]["system"] == RID for p in params if p["name"] == "targetIdentifier")
    every = fhir.get(f"Patient/$ihe-pix?sourceIdentifier={RID}|{FEMALE_1949.lower()}").get_json()
    assert len([p for p in every["parameter"] if p["name"] == "targetIdentifier"]) == 2
    # PIXm error cases: unknown source 404, unregistered source system 400,
    # unregistered target system 403, malformed 400.
    other = luhn_complete("6" + "3" * 18)
    assert fhir.get(f"Patient/$ihe-pix?sourceIdentifier={CARD}|{other}").status_code == 404
    assert fhir.get("Patient/$ihe-pix?sourceIdentifier=urn:x|1").status_code == 400
    assert fhir.get(f"Patient/$ihe-pix?sourceIdentifier={CARD}|{card}&targetSystem=urn:x").status_code == 403
    assert fhir.get("Patient/$ihe-pix?sourceIdentifier=nonsense").status_code == 400
    assert fhir.get(f"Patient/$ihe-pix?sourceIdentifier={CARD}|123").status_code == 400
