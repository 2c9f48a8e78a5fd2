"""Patient/$merge (R5 patient-operation-merge.html on R4): the duplicate found later
folds into the Patient that stays, all or nothing."""

from __future__ import annotations

from datetime import UTC, datetime

from tests import factories as f

PASSPORT = "https://fhirserver.example/sid/passport/CHN"
MRN = "https://fhirserver.example/sid/mrn/hospital-1"


def merge(fhir, source: str, target: str, **extra: str):
    params = [{"name": "source-patient", "valueReference": {"reference": f"Patient/{source}"}},
              {"name": "target-patient", "valueReference": {"reference": f"Patient/{target}"}}]
    params += [{"name": k, "valueBoolean": v == "true"} for k, v in extra.items()]
    return fhir.post("Patient/$merge", {"resourceType": "Parameters", "parameter": params})


def _duplicates(fhir) -> tuple[str, str, list[str], str]:
    source = fhir.create(f.patient("Wang", "Fang", identifier=[
        {"system": PASSPORT, "value": "E12345678"}, {"system": MRN, "value": "OLD-1"}]))["id"]
    target = fhir.create(f.patient("Wang", "Fang", identifier=[{"system": MRN, "value": "NEW-9"}]))["id"]
    obs = [fhir.create(f.observation(source, code=c))["id"] for c in ("1-1", "2-2")]
    dr = fhir.create({"resourceType": "DiagnosticReport", "status": "final", "code": {"text": "x"},
                      "subject": {"reference": f"Patient/{source}"},
                      "result": [{"reference": f"Observation/{obs[0]}"}]})["id"]
    return source, target, obs, dr


def test_merge_links_inactivates_and_repoints(fhir):
    source, target, obs, dr = _duplicates(fhir)
    r = merge(fhir, source, target)
    assert r.status_code == 200, r.get_json()
    result = [p for p in r.get_json()["parameter"] if p["name"] == "result"][0]["resource"]
    assert result["id"] == target
    assert {"other": {"reference": f"Patient/{source}"}, "type": "replaces"} in result["link"]
    moved = {(i["system"], i["value"]): i.get("use") for i in result["identifier"]}
    assert moved[(PASSPORT, "E12345678")] == "old" and moved[(MRN, "NEW-9")] is None

    src = fhir.get(f"Patient/{source}").get_json()  # still readable: references resolve
    assert src["active"] is False
    assert src["link"] == [{"other": {"reference": f"Patient/{target}"}, "type": "replaced-by"}]
    for oid in obs:
        assert fhir.get(f"Observation/{oid}").get_json()["subject"]["reference"] == f"Patient/{target}"
    assert fhir.get(f"DiagnosticReport/{dr}").get_json()["subject"]["reference"] == f"Patient/{target}"
    everything = fhir.get(f"Patient/{target}/$everything").get_json()
    assert everything["total"] == 1 + len(obs) + 1
    assert fhir.get(f"Observation?patient={source}").get_json()["total"] == 0
    # The passport now identifies the target: the source released it when it went inactive.
    pix = fhir.get(f"Patient/$ihe-pix?sourceIdentifier={PASSPORT}|E12345678").get_json()
    assert [p["valueReference"]["reference"] for p in pix["parameter"]
            if p["name"] == "targetId"] == [f"Patient/{target}"]


def test_merge_refusals(fhir):
    source, target, _, _ = _duplicates(fhir)
    assert merge(fhir, source, source).status_code == 400
    assert merge(fhir, source, "missing").status_code == 404
    r = fhir.post("Patient/$merge", {"resourceType": "Parameters", "parameter": [
        {"name": "source-patient", "valueReference": {"reference": "Observation/1"}}]})
    assert r.status_code == 400
    assert merge(fhir, source, target).status_code == 200
    again = merge(fhir, source, target)
    assert again.status_code == 422 and "already been merged" in again.get_json()["issue"][0]["diagnostics"]


def test_preview_writes_nothing(fhir):
    source, target, obs, _ = _duplicates(fhir)
    r = merge(fhir, source, target, preview="true")
    assert r.status_code == 200
    text = [p for p in r.get_json()["parameter"] if p["name"] == "outcome"][0]["resource"]
    assert "Would merge" in text["issue"][0]["diagnostics"] and "3 records" in text["issue"][0]["diagnostics"]
    assert fhir.get(f"Patient/{source}").get_json().get("active") is not False
    assert fhir.get(f"Observation/{obs[0]}").get_json()["subject"]["reference"] == f"Patient/{source}"


def test_a_merge_that_fails_while_writing_leaves_nothing_behind(fhir, app):
    """All or nothing: the source's passport is held (in the database) by a write still
    in flight, so the target cannot take it; the source's new version, already
    written, is rolled back and no record is re-pointed."""
    source, target, obs, dr = _duplicates(fhir)
    before = {oid: fhir.get(f"Observation/{oid}").get_json() for oid in obs}
    source_before = fhir.get(f"Patient/{source}").get_json()
    claims = app.extensions["fhirserver"].repo.db["_identifier_claims"]
    key = app.extensions["fhirserver"].repo.protection.claim_key(f"{PASSPORT}|E12345678")
    claims.replace_one({"_id": key}, {"_id": key, "rid": "in-flight", "at": datetime.now(UTC)})

    r = merge(fhir, source, target)
    assert r.status_code == 409
    assert fhir.get(f"Patient/{source}").get_json() == source_before
    target_now = fhir.get(f"Patient/{target}").get_json()
    assert "link" not in target_now and target_now["meta"]["versionId"] == "1"
    for oid, body in before.items():
        assert fhir.get(f"Observation/{oid}").get_json() == body
    assert len(fhir.get(f"Patient/{source}/_history").get_json()["entry"]) == 1
