"""read, vread, create, update, delete and versioning (FHIR R4 http.html)."""

from __future__ import annotations

from datetime import timedelta
from email.utils import format_datetime, parsedate_to_datetime

import pytest

from tests.factories import observation, patient

BASE = "http://fhir.test/fhir"


def test_create_assigns_id_and_version_1_with_location_http_create(fhir):
    """http.html#create: server-assigned id, body id ignored, Location with _history."""
    r = fhir.post("Patient", patient(id="client-chosen"))
    assert r.status_code == 201
    body = r.get_json()
    assert body["id"] != "client-chosen"
    assert body["meta"]["versionId"] == "1"
    assert body["meta"]["lastUpdated"].endswith("Z")
    assert r.headers["Location"] == f"{BASE}/Patient/{body['id']}/_history/1"
    assert r.headers["ETag"] == 'W/"1"'
    assert parsedate_to_datetime(r.headers["Last-Modified"])
    assert r.headers["Content-Type"].startswith("application/fhir+json")


def test_read_returns_stored_json_http_read(fhir):
    created = fhir.create(patient(gender="female", birthDate="1974-12-25"))
    r = fhir.get(f"Patient/{created['id']}")
    assert r.status_code == 200
    assert r.get_json() == created
    assert r.headers["ETag"] == 'W/"1"'


def test_read_unknown_is_404_operation_outcome_http_read(fhir):
    r = fhir.get("Patient/does-not-exist")
    assert r.status_code == 404
    assert r.get_json()["resourceType"] == "OperationOutcome"
    assert r.get_json()["issue"][0]["code"] == "not-found"


def test_update_increments_version_and_vread_keeps_old_http_update_vread(fhir):
    created = fhir.create(patient(family="Old"))
    rid = created["id"]
    changed = {**created, "name": [{"family": "New"}]}
    r = fhir.put(f"Patient/{rid}", changed)
    assert r.status_code == 200
    assert r.get_json()["meta"]["versionId"] == "2"
    assert r.headers["ETag"] == 'W/"2"'
    assert r.headers["Location"] == f"{BASE}/Patient/{rid}/_history/2"
    old = fhir.get(f"Patient/{rid}/_history/1")
    assert old.status_code == 200 and old.get_json()["name"][0]["family"] == "Old"
    assert fhir.get(f"Patient/{rid}/_history/2").get_json()["name"][0]["family"] == "New"
    assert fhir.get(f"Patient/{rid}/_history/3").status_code == 404


def test_update_as_create_with_client_id_http_update(fhir):
    r = fhir.put("Patient/chosen-1", patient(id="chosen-1"))
    assert r.status_code == 201
    assert r.get_json()["meta"]["versionId"] == "1"
    assert fhir.get("Patient/chosen-1").status_code == 200


def test_update_id_must_match_url_http_update(fhir):
    r = fhir.put("Patient/a", patient(id="b"))
    assert r.status_code == 400
    assert r.get_json()["issue"][0]["expression"] == ["Patient.id"]
    r = fhir.put("Patient/a", patient())
    assert r.status_code == 400
    assert fhir.get("Patient/a").status_code == 404


def test_update_with_same_content_makes_no_new_version(fhir):
    """As HAPI: an update that changes nothing keeps the version (no-op detection)."""
    created = fhir.create(patient())
    r = fhir.put(f"Patient/{created['id']}", created)
    assert r.status_code == 200
    assert r.get_json()["meta"]["versionId"] == "1"


def test_delete_then_read_is_410_and_history_keeps_it_http_delete(fhir):
    rid = fhir.create(patient())["id"]
    r = fhir.delete(f"Patient/{rid}")
    assert r.status_code == 200
    assert r.get_json()["resourceType"] == "OperationOutcome"
    assert r.headers["ETag"] == 'W/"2"'
    gone = fhir.get(f"Patient/{rid}")
    assert gone.status_code == 410
    assert gone.get_json()["issue"][0]["code"] == "deleted"
    assert fhir.get(f"Patient/{rid}/_history/1").status_code == 200
    assert fhir.get(f"Patient/{rid}/_history/2").status_code == 410


def test_delete_missing_or_deleted_is_not_an_error_http_delete(fhir):
    assert fhir.delete("Patient/never-existed").status_code == 200
    rid = fhir.create(patient())["id"]
    assert fhir.delete(f"Patient/{rid}").status_code == 200
    again = fhir.delete(f"Patient/{rid}")
    assert again.status_code == 200
    history = fhir.get(f"Patient/{rid}/_history").get_json()
    assert len(history["entry"]) == 2  # the second delete made no version


def test_update_after_delete_resurrects_with_next_version(fhir):
    created = fhir.create(patient())
    rid = created["id"]
    fhir.delete(f"Patient/{rid}")
    r = fhir.put(f"Patient/{rid}", created)
    assert r.status_code == 201
    assert r.get_json()["meta"]["versionId"] == "3"


def test_delete_refused_while_referenced(fhir):
    """Like HAPI's referential integrity: no stored reference may dangle (409)."""
    pid = fhir.create(patient())["id"]
    oid = fhir.create(observation(pid))["id"]
    r = fhir.delete(f"Patient/{pid}")
    assert r.status_code == 409
    assert f"Observation/{oid}" in r.get_json()["issue"][0]["diagnostics"]
    assert fhir.get(f"Patient/{pid}").status_code == 200
    assert fhir.delete(f"Observation/{oid}").status_code == 200
    assert fhir.delete(f"Patient/{pid}").status_code == 200


def test_an_update_that_moves_its_reference_must_name_a_record_that_exists(fhir):
    """references.html#literal on update: a reference an update changes must resolve
    (422 naming it); a Group member it keeps must still exist, though a Group never
    keeps a Patient from being deleted."""
    pid = fhir.create(patient())["id"]
    other = fhir.create(patient())["id"]
    created = fhir.create(observation(pid))
    kept = fhir.put(f"Observation/{created['id']}", {**created, "status": "amended"})
    assert kept.status_code == 200, kept.get_json()
    moved = fhir.put(f"Observation/{created['id']}",
                     {**kept.get_json(), "subject": {"reference": "Patient/missing"}})
    assert moved.status_code == 422
    assert moved.get_json()["issue"][0]["expression"] == ["Observation.subject.reference"]
    moved = fhir.put(f"Observation/{created['id']}",
                     {**kept.get_json(), "subject": {"reference": f"Patient/{other}"}})
    assert moved.status_code == 200 and moved.get_json()["subject"]["reference"] == f"Patient/{other}"

    member = fhir.create(patient())["id"]
    group = fhir.create({"resourceType": "Group", "type": "person", "actual": True,
                         "member": [{"entity": {"reference": f"Patient/{member}"}}]})
    assert fhir.delete(f"Patient/{member}").status_code == 200  # a member keeps nobody
    r = fhir.put(f"Group/{group['id']}", {**group, "name": "renamed"})
    assert r.status_code == 422, r.get_json()
    assert r.get_json()["issue"][0]["expression"] == ["Group.member[0].entity.reference"]


def test_a_transaction_cannot_delete_a_patient_an_update_in_it_keeps_referring_to(fhir):
    """http.html#transaction with referential integrity: a Patient deleted by the same
    transaction that updates a record still referring to it leaves the transaction
    refused and nothing changed."""
    pid = fhir.create(patient())["id"]
    created = fhir.create(observation(pid))
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "DELETE", "url": f"Patient/{pid}"}},
        {"resource": {**created, "status": "amended"},
         "request": {"method": "PUT", "url": f"Observation/{created['id']}"}}]}
    r = fhir.post("", bundle)
    assert r.status_code in (409, 422), r.get_json()
    assert fhir.get(f"Patient/{pid}").status_code == 200
    assert fhir.get(f"Observation/{created['id']}").get_json()["status"] == created["status"]


def test_if_match_stale_is_412_current_succeeds_http_concurrency(fhir):
    created = fhir.create(patient())
    rid = created["id"]
    ok = fhir.put(f"Patient/{rid}", {**created, "active": True}, headers={"If-Match": 'W/"1"'})
    assert ok.status_code == 200
    stale = fhir.put(f"Patient/{rid}", {**created, "active": False}, headers={"If-Match": 'W/"1"'})
    assert stale.status_code == 412
    assert stale.get_json()["resourceType"] == "OperationOutcome"
    assert fhir.get(f"Patient/{rid}").get_json()["active"] is True
    assert fhir.delete(f"Patient/{rid}", headers={"If-Match": 'W/"1"'}).status_code == 412
    assert fhir.delete(f"Patient/{rid}", headers={"If-Match": 'W/"2"'}).status_code == 200


def test_if_none_match_and_if_modified_since_give_304_http_cread(fhir):
    created = fhir.create(patient())
    rid = created["id"]
    assert fhir.get(f"Patient/{rid}", headers={"If-None-Match": 'W/"1"'}).status_code == 304
    assert fhir.get(f"Patient/{rid}", headers={"If-None-Match": 'W/"0"'}).status_code == 200
    r = fhir.get(f"Patient/{rid}")
    last = parsedate_to_datetime(r.headers["Last-Modified"])
    later = format_datetime(last + timedelta(seconds=5), usegmt=True)
    earlier = format_datetime(last - timedelta(seconds=5), usegmt=True)
    assert fhir.get(f"Patient/{rid}", headers={"If-Modified-Since": later}).status_code == 304
    assert fhir.get(f"Patient/{rid}", headers={"If-Modified-Since": earlier}).status_code == 200


def test_prefer_return_minimal_representation_outcome_http_ops(fhir):
    r = fhir.post("Patient", patient(), headers={"Prefer": "return=minimal"})
    assert r.status_code == 201 and r.data == b"" and r.headers["Location"]
    r = fhir.post("Patient", patient(), headers={"Prefer": "return=OperationOutcome"})
    assert r.status_code == 201 and r.get_json()["resourceType"] == "OperationOutcome"
    r = fhir.post("Patient", patient(), headers={"Prefer": "return=representation"})
    assert r.status_code == 201 and r.get_json()["resourceType"] == "Patient"


def test_meta_tags_from_client_are_kept_server_meta_replaced(fhir):
    tag = {"system": "http://example.org/tags", "code": "t1"}
    r = fhir.post("Patient", patient(meta={"versionId": "99", "lastUpdated": "2001-01-01T00:00:00Z",
                                          "tag": [tag]}))
    meta = r.get_json()["meta"]
    assert meta["versionId"] == "1" and meta["tag"] == [tag]
    assert not meta["lastUpdated"].startswith("2001")


def test_local_reference_must_resolve_422_other_types_kept(fhir):
    r = fhir.post("Observation", observation("missing-patient"))
    assert r.status_code == 422
    issue = r.get_json()["issue"][0]
    assert issue["expression"] == ["Observation.subject.reference"]
    ok = fhir.post("Observation", observation(None, subject={"reference": "Device/d1"},
                                             performer=[{"reference": "Practitioner/p1"}]))
    assert ok.status_code == 201
    assert ok.get_json()["performer"] == [{"reference": "Practitioner/p1"}]
    # Groups are held here, so a subject Group must exist like a subject Patient.
    group = fhir.post("Observation", observation(None, subject={"reference": "Group/g1"}))
    assert group.status_code == 422


def test_absolute_reference_to_this_server_must_resolve(fhir):
    r = fhir.post("Observation", observation(None, subject={"reference": f"{BASE}/Patient/nope"}))
    assert r.status_code == 422
    pid = fhir.create(patient())["id"]
    r = fhir.post("Observation", observation(None, subject={"reference": f"{BASE}/Patient/{pid}"}))
    assert r.status_code == 201


def test_absolute_reference_to_this_server_is_stored_relative_references_literal(fhir):
    """references.html#literal: an absolute URL under the service base names the same
    resource as the relative form; it is stored relative so searches and
    referential integrity treat both alike. Other servers' URLs are kept."""
    pid = fhir.create(patient())["id"]
    other = "http://elsewhere.example/fhir/Practitioner/9"
    obs = fhir.create(observation(None, subject={"reference": f"{BASE}/Patient/{pid}"},
                                  performer=[{"reference": other}]))
    assert obs["subject"] == {"reference": f"Patient/{pid}"}
    assert obs["performer"] == [{"reference": other}]
    found = fhir.get(f"Observation?subject=Patient/{pid}").get_json()
    assert [e["resource"]["id"] for e in found["entry"]] == [obs["id"]]
    assert fhir.delete(f"Patient/{pid}").status_code == 409  # still referenced


@pytest.mark.parametrize("ref", ["Patient/a b", "Patient/", "Patient/x/y", "Patient//x",
                                 "Patient/$bogus", "Patient/urn:uuid:1234", "Patient/\u00e9",
                                 "Patient/" + "x" * 65, "Patient/x/_history/",
                                 "http://fhir.test/fhir//Patient/x"])
def test_a_malformed_local_reference_is_refused_not_stored_references_literal(fhir, ref):
    """references.html#literal: a local reference is ``Type/id`` (an id of 1-64 letters,
    digits, '-' and '.'), optionally ``/_history/vid``. One that means a type this
    server stores but has no such form names nothing (in no patient's compartment):
    refused with its location, nothing stored."""
    before = fhir.get("Observation?_summary=count").get_json()["total"]
    r = fhir.post("Observation", {**observation(), "subject": {"reference": ref}})
    assert r.status_code == 422, r.get_json()
    issue = r.get_json()["issue"][0]
    assert issue["expression"] == ["Observation.subject.reference"]
    assert "not a valid Patient reference" in issue["diagnostics"]
    assert fhir.get("Observation?_summary=count").get_json()["total"] == before


@pytest.mark.parametrize("header", ['W/"1', '"1', '1"', "W/1", "", " ", 'W/"1" x', "*"])
def test_an_if_match_that_is_no_version_etag_is_400_and_changes_nothing_http_concurrency(
        fhir, header):
    """http.html#concurrency: If-Match carries the version's ETag (W/"1"; "1" and a bare
    1 are read too). A header that names no version, half-quoted or sent empty, is a
    malformed request (400), not a version that does not match (412), and nothing
    changes."""
    created = fhir.create(patient())
    r = fhir.put(f"Patient/{created['id']}", {**created, "active": True},
                 headers={"If-Match": header})
    assert r.status_code == 400, (header, r.get_json())
    assert "If-Match" in r.get_json()["issue"][0]["diagnostics"]
    assert fhir.get(f"Patient/{created['id']}").get_json()["meta"]["versionId"] == "1"
    statuses = [fhir.put(f"Patient/{created['id']}", {**created, "active": True},
                         headers={"If-Match": good}).status_code
                for good in ('W/"1"', '"1"', "1")]
    assert statuses == [200, 412, 412]  # each read as version 1, current after the first
