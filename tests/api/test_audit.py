"""The audit log (R4 auditevent.html; DESIGN.md section 1: every access is recorded
and visible to the patient): AuditEvents per request, the hash chain, and the
patient's view of who looked at their record."""

from __future__ import annotations

import base64

from fhirserver.audit.chain import GENESIS, HEAD, RECORDS, record_id, verify
from tests import factories as f
from tests.conftest import mint

from .test_access import As, clinician, scan_card


def events(app) -> list[dict]:
    db = app.extensions["fhirserver"].repo.db
    return [d["event"] for d in db[RECORDS].find({}).sort("_id", 1)]


def test_a_clinicians_read_is_recorded_with_who_what_and_why(fhir, app):
    pid = fhir.create(f.patient())["id"]
    dr = clinician(app, fhir)
    scan_card(fhir, app, pid, dr)
    assert dr.get(f"Patient/{pid}").status_code == 200
    event = events(app)[-1]
    assert event["resourceType"] == "AuditEvent"
    assert event["type"]["code"] == "110110" and event["subtype"][0]["code"] == "read"
    assert event["action"] == "R" and event["outcome"] == "0"
    assert event["purposeOfEvent"][0]["coding"][0]["code"] == "TREAT"
    assert {"reference": "Practitioner/dr-li"} in [a["who"] for a in event["agent"]]
    assert {"reference": "Organization/hospital-1"} in [a["who"] for a in event["agent"]]
    assert [e["what"]["reference"] for e in event["entity"]] == [f"Patient/{pid}"]
    scans = [e for e in events(app) if e["subtype"][0]["code"] == "scan-card"]
    assert scans and scans[-1]["entity"][0]["what"]["reference"] == f"Patient/{pid}"


def test_searches_record_the_query_and_the_patients_returned(fhir, app):
    a, b = (fhir.create(f.patient(n))["id"] for n in ("Aa", "Bb"))
    fhir.create(f.observation(a))
    fhir.create(f.observation(b))
    r = fhir.get("Observation?code=15074-8&_count=10")
    assert r.status_code == 200
    event = events(app)[-1]
    assert event["type"]["code"] == "110112" and event["subtype"][0]["code"] == "search-type"
    refs = {e["what"]["reference"] for e in event["entity"] if "what" in e}
    assert refs == {f"Patient/{a}", f"Patient/{b}"}
    query = [e["query"] for e in event["entity"] if "query" in e][0]
    assert base64.b64decode(query).decode() == "/Observation?code=15074-8&_count=10"


def test_failures_and_emergencies_are_recorded(fhir, app):
    pid = fhir.create(f.patient())["id"]
    dr = clinician(app, fhir)
    assert dr.get(f"Patient/{pid}").status_code == 404
    assert events(app)[-1]["outcome"] == "4"
    dr.post(f"Patient/{pid}/$break-glass", {"resourceType": "Parameters", "parameter": [
        {"name": "reason", "valueString": "cardiac arrest"}]})
    assert dr.get(f"Patient/{pid}").status_code == 200
    assert events(app)[-1]["purposeOfEvent"][0]["coding"][0]["code"] == "ETREAT"
    assert fhir.get("Patient", headers={"Authorization": ""}).status_code == 401
    assert events(app)[-1]["agent"][0]["who"]["display"] == "unauthenticated caller"


def test_patient_sees_who_looked_at_their_record_and_nobody_elses(fhir, app):
    me, other = (fhir.create(f.patient(n))["id"] for n in ("Me", "Other"))
    dr = clinician(app, fhir)
    scan_card(fhir, app, me, dr)
    dr.get(f"Patient/{me}")
    fhir.get(f"Patient/{other}")
    patient = As(fhir, mint(app, "patient", "patient/*.rs", patient=me))
    r = patient.get("AuditEvent?_count=100")
    assert r.status_code == 200
    seen = r.get_json()["entry"]
    assert seen and all(
        any(e.get("what", {}).get("reference") == f"Patient/{me}" for e in s["resource"].get("entity", []))
        for s in seen)
    readers = {a["who"].get("reference") for s in seen for a in s["resource"]["agent"]}
    assert "Practitioner/dr-li" in readers
    # Clinicians and backend clients do not browse the audit log.
    assert dr.get("AuditEvent").status_code == 403


def test_hash_chain_verifies_and_reports_the_first_broken_link(fhir, app):
    for n in range(4):
        fhir.create(f.patient(f"P{n}"))
    db = app.extensions["fhirserver"].repo.db
    checked, broken = verify(db)
    assert broken is None and checked == len(events(app)) >= 4
    db[RECORDS].update_one({"_id": record_id(2)}, {"$set": {"event.outcome": "0", "event.action": "D"}})
    checked, broken = verify(db)
    assert broken is not None and broken.seq == 2 and "altered" in broken.problem and checked == 1
    db[RECORDS].delete_one({"_id": record_id(2)})
    _, broken = verify(db)
    assert broken is not None and broken.seq == 2 and "missing" in broken.problem


def test_no_unaudited_access_when_the_log_cannot_be_written(fhir, app):
    pid = fhir.create(f.patient("Secret"))["id"]
    db = app.extensions["fhirserver"].repo.db
    head = db[HEAD].find_one({"_id": "head"})
    # The next 300 record numbers are taken: appending gives up.
    db[RECORDS].insert_many([{"_id": record_id(head["seq"] + i), "prev": GENESIS, "hash": GENESIS,
                              "event": {}, "patients": []} for i in range(1, 301)])
    r = fhir.get(f"Patient/{pid}")
    assert r.status_code == 503
    assert "Secret" not in r.get_data(as_text=True)
