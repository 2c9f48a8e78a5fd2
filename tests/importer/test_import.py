"""`fhirserver import`: Synthea bundles, NDJSON, idempotency, reference rewriting."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from fhirserver.cli import main, run_import
from tests.conftest import SHARED

SYNTHEA = sorted((SHARED / "synthea").glob("*.json.gz"))
KEPT = ("Patient", "Observation", "DiagnosticReport", "Practitioner", "Organization")


def counts_from_files(files: list[Path]) -> tuple[Counter[str], Counter[str]]:
    """Resource counts read straight from the files, independently of the importer:
    entries, and distinct ids (the bundles share their hospitals and clinicians)."""
    counts: Counter[str] = Counter()
    ids: set[tuple[str, str]] = set()
    for f in files:
        with gzip.open(f) as fh:
            bundle = json.load(fh)
        counts.update(e["resource"]["resourceType"] for e in bundle["entry"])
        ids.update((e["resource"]["resourceType"], e["resource"]["id"]) for e in bundle["entry"])
    return counts, Counter(t for t, _ in ids)


def total(fhir, rtype: str) -> int:
    r = fhir.get(f"{rtype}?_summary=count")
    assert r.status_code == 200, r.get_json()
    return r.get_json()["total"]


@pytest.fixture
def settings(settings):  # type: ignore[no-untyped-def]
    """Counts of whole types (``total``) read every record: allowed here past the
    default FHIR_SCAN_LIMIT, which refuses them on a large type."""
    return settings.with_(scan_limit=100_000)


@pytest.mark.timeout(1200)  # 6,600 resources twice, and counts that read them all
def test_import_all_synthea_bundles_counts_and_idempotency(settings, fhir):
    assert len(SYNTHEA) == 40
    entries, expected = counts_from_files(SYNTHEA)
    stats = run_import(settings, SYNTHEA)
    assert not stats.problems
    for rtype in KEPT:
        assert stats.created[rtype] == expected[rtype]
        # A hospital's second bundle finds its entry unchanged (no new version).
        assert stats.unchanged[rtype] == entries[rtype] - expected[rtype]
        assert total(fhir, rtype) == expected[rtype]
    assert expected["Practitioner"] > 0 and expected["Organization"] > 0
    assert stats.dropped == Counter({k: v for k, v in entries.items() if k not in KEPT})

    again = run_import(settings, SYNTHEA)
    assert sum(again.created.values()) == 0 and sum(again.updated.values()) == 0
    assert sum(again.unchanged.values()) == sum(entries[t] for t in KEPT)
    for rtype in KEPT:
        assert total(fhir, rtype) == expected[rtype]


def test_import_rewrites_urn_uuid_references(settings, fhir):
    path = SYNTHEA[0]
    with gzip.open(path) as fh:
        bundle = json.load(fh)
    by_url = {e["fullUrl"]: e["resource"] for e in bundle["entry"]}
    report = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "DiagnosticReport")
    run_import(settings, [path])
    stored = fhir.get(f"DiagnosticReport/{report['id']}").get_json()
    subject = by_url[report["subject"]["reference"]]
    assert stored["subject"]["reference"] == f"Patient/{subject['id']}"
    encounter = by_url[report["encounter"]["reference"]]
    assert stored["encounter"]["reference"] == f"Encounter/{encounter['id']}"  # dropped type: kept
    for ref, result in zip(report["result"], stored["result"]):
        assert result["reference"] == f"Observation/{by_url[ref['reference']]['id']}"
        assert fhir.get(result["reference"]).status_code == 200


def test_import_keeps_the_clinician_directory_and_references_to_it_resolve(settings, fhir):
    """Synthea's Practitioners (NPI identifiers) and Organizations are stored, not dropped,
    and a result naming one as performer finds it (search.html#include). The 2019
    bundles' kept resources name no performer themselves (Encounter and Claim do, and
    are dropped), so the result here is written after the import."""
    path = SYNTHEA[0]
    with gzip.open(path) as fh:
        bundle = json.load(fh)
    resources = [e["resource"] for e in bundle["entry"]]
    doctor = next(r for r in resources if r["resourceType"] == "Practitioner")
    hospital = next(r for r in resources if r["resourceType"] == "Organization")
    patient = next(r for r in resources if r["resourceType"] == "Patient")
    stats = run_import(settings, [path])
    assert "Practitioner" not in stats.dropped and "Organization" not in stats.dropped
    npi = doctor["identifier"][0]
    found = fhir.get(f"Practitioner?identifier={npi['system']}|{npi['value']}").get_json()
    assert [e["resource"]["id"] for e in found["entry"]] == [doctor["id"]]
    assert found["entry"][0]["resource"]["identifier"] == doctor["identifier"]  # not masked
    assert fhir.get(f"Organization/{hospital['id']}").get_json()["name"] == hospital["name"]
    obs = fhir.create({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                       "subject": {"reference": f"Patient/{patient['id']}"},
                       "performer": [{"reference": f"Practitioner/{doctor['id']}"},
                                     {"reference": f"Organization/{hospital['id']}"}]})["id"]
    r = fhir.get(f"Observation?_id={obs}&_include=Observation:performer").get_json()
    assert {e["resource"]["id"] for e in r["entry"]} == {obs, doctor["id"], hospital["id"]}


def test_import_ndjson_and_bad_lines(settings, fhir, tmp_path):
    good = tmp_path / "patients.ndjson"
    lines = [json.dumps({"resourceType": "Patient", "id": f"nd{i}", "gender": "female"}) for i in range(3)]
    lines.append(json.dumps({"resourceType": "Encounter", "id": "e1", "status": "finished"}))
    lines.append(json.dumps({"resourceType": "Patient", "id": "bad", "gender": 12}))
    good.write_text("\n".join(lines) + "\n")
    stats = run_import(settings, [good])
    assert stats.created["Patient"] == 3
    assert stats.rejected["Patient"] == 1
    assert stats.dropped["Encounter"] == 1
    assert total(fhir, "Patient") == 3
    broken = tmp_path / "broken.ndjson"
    broken.write_text('{"resourceType": "Patient"\n')
    assert run_import(settings, [broken]).problems


def test_import_command_line(settings, tmp_path):
    runner = CliRunner()
    env = {"MONGODB_URI": settings.mongodb_uri, "MONGODB_DB": settings.mongodb_db}
    result = runner.invoke(main, ["import", str(SYNTHEA[1])], env=env)
    assert result.exit_code == 0, result.output
    assert "resources/s" in result.output
    assert "dropped" in result.output


def test_reimport_keeps_the_health_card_number(settings, fhir):
    """A re-import (or `serve --demo` restarting) writes a Patient version without the
    server-owned health card identifier: the card number must survive it, so that
    `Patient?identifier=<card system>|<number>` keeps finding the cardholder."""
    path = SYNTHEA[0]
    run_import(settings, [path])
    with gzip.open(path) as fh:
        pid = next(e["resource"]["id"] for e in json.load(fh)["entry"]
                   if e["resource"]["resourceType"] == "Patient")
    issued = fhir.post(f"Patient/{pid}/$issue-card", None).get_json()
    card = next(p["valueIdentifier"] for p in issued["parameter"] if p["name"] == "number")
    run_import(settings, [path])
    found = fhir.get(f"Patient?identifier={card['system']}|{card['value']}").get_json()
    assert [e["resource"]["id"] for e in found.get("entry", [])] == [pid]


def test_import_encrypts_identity_numbers_and_telecom_on_the_way_in(settings, fhir, tmp_path):
    """Issue "Privacy at rest": ``fhirserver import`` stores identity numbers and
    telecom encrypted like the API does (PIPL art. 51), and they are found by search."""
    from pymongo import MongoClient
    from stdnum.iso7064 import mod_11_2

    rid = "https://fhirserver.example/sid/resident-id"
    number = "11010519800101001" + mod_11_2.calc_check_digit("11010519800101001")
    patient = {"resourceType": "Patient", "identifier": [{"system": rid, "value": number}],
               "telecom": [{"system": "phone", "value": "13512345678"}],
               "birthDate": "1980-01-01", "gender": "male"}
    bundle = {"resourceType": "Bundle", "type": "collection",
              "entry": [{"fullUrl": "urn:uuid:6f1c2a94-2f5e-4a41-9e0c-0d0f6a8d2b11",
                         "resource": patient}]}
    path = tmp_path / "people.json"
    path.write_text(json.dumps(bundle))
    assert not run_import(settings, [path]).problems
    with MongoClient(settings.mongodb_uri) as client:
        db = client[settings.mongodb_db]
        stored = " ".join(str(d) for name in db.list_collection_names() for d in db[name].find({}))
    assert number not in stored and "13512345678" not in stored
    for query in (f"identifier={rid}|{number}", "phone=135-1234-5678"):
        found = fhir.get(f"Patient?{query}").get_json()
        assert found["total"] == 1, query
        assert found["entry"][0]["resource"]["identifier"][0]["value"] == number


@pytest.mark.timeout(120)
def test_a_large_group_of_creates_over_leftover_history_entries_commits(settings, fhir, tmp_path):
    """A create whose history entry is already there (left by a write that died) replaces
    it. A group of 60 such creates (one NDJSON chunk) commits and keeps every version
    readable (FHIR R4 http.html#vread); the database answers afterwards. FerretDB 1.24
    stops answering after an update command of 50 statements."""
    from fhirserver.storage.repository import Repository

    repo = Repository.from_settings(settings)
    history = repo.db["Observation_history"]
    history.insert_many([{"_id": f"left{i}/1", "rid": f"left{i}", "v": 1, "del": False,
                          "res": "{}"} for i in range(60)])
    repo.close()
    lines = [json.dumps({"resourceType": "Observation", "id": f"left{i}", "status": "final",
                         "code": {"text": "glucose"}}) for i in range(60)]
    source = tmp_path / "observations.ndjson"
    source.write_text("\n".join(lines) + "\n")
    stats = run_import(settings, [source])
    assert not stats.problems and stats.created["Observation"] == 60
    for i in (0, 59):
        r = fhir.get(f"Observation/left{i}/_history/1")
        assert r.status_code == 200 and r.get_json()["code"]["text"] == "glucose"
    assert total(fhir, "Observation") == 60
