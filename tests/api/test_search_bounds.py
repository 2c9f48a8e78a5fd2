"""Searches no index can answer are refused once a type is large (search.html#errors:
"too-costly"), instead of reading every record while a clinician waits."""

from __future__ import annotations

import pytest

from tests import factories as f
from tests.finds import Commands, commands_listening


@pytest.fixture
def settings(settings):  # type: ignore[no-untyped-def]
    return settings.with_(scan_limit=3)


def test_an_unindexed_search_of_a_large_type_is_400_too_costly_search_errors(fhir):
    pid = fhir.create(f.patient())["id"]
    for day in range(1, 6):
        fhir.create(f.observation(pid, effectiveDateTime=f"2024-01-0{day}"))
    r = fhir.get("Observation?date=ge2020-01-01")
    assert r.status_code == 400
    issue = r.get_json()["issue"][0]
    assert issue["code"] == "too-costly" and "patient" in issue["diagnostics"]
    # Narrowed by something an index answers, the same question is fine.
    assert fhir.get(f"Observation?patient={pid}&date=ge2020-01-01").status_code == 200
    assert fhir.get("Observation?code=http://loinc.org|15074-8&date=ge2020").status_code == 200
    assert fhir.get(f"Observation?_id={pid}").status_code == 200
    # A small type is read in full as before.
    assert fhir.get("Patient?birthdate=ge1900").status_code == 200


@pytest.fixture
def sent() -> Commands:
    return commands_listening()


def test_the_refusal_reads_none_of_the_records_it_refuses_to_read_search_errors(
        sent, fhir, settings):
    """The too-costly refusal (search.html#errors) costs a look at how large the type
    is, not a count of its records: FerretDB counts a collection by reading every one
    of them (17 s for 200,000 Observations), so on it the size comes from
    PostgreSQL's statistics; MongoDB answers ``count`` from its metadata."""
    pid = fhir.create(f.patient())["id"]
    for day in range(1, 6):
        fhir.create(f.observation(pid, effectiveDateTime=f"2024-01-0{day}"))
    sent.active = True
    r = fhir.get("Observation?date=ge2020-01-01")
    sent.active = False
    assert r.status_code == 400 and r.get_json()["issue"][0]["code"] == "too-costly"
    read = [(name, target) for name, target in sent.sent
            if target == "Observation" or name in ("collStats", "dbStats")]
    if settings.ferretdb_postgresql_url:
        assert read == []
    else:
        assert read in ([], [("count", "Observation")])
    # The statistics' figure is the type's size: a small type is read as before.
    sent.active = True
    assert fhir.get("Patient?birthdate=ge1900").status_code == 200
    sent.active = False


def test_lastn_without_a_patient_on_a_large_type_is_400_too_costly(fhir):
    """observation-operation-lastn.html reads every candidate Observation to keep the
    newest of each code: without a patient (or a code) on a large type that is the
    whole collection, refused like a search no index answers (search.html#errors)."""
    pid = fhir.create(f.patient())["id"]
    for day in range(1, 6):
        fhir.create(f.observation(pid, effectiveDateTime=f"2024-01-0{day}"))
    r = fhir.get("Observation/$lastn")
    assert r.status_code == 400 and r.get_json()["issue"][0]["code"] == "too-costly"
    r = fhir.get(f"Observation/$lastn?patient={pid}")
    assert r.status_code == 200 and len(r.get_json()["entry"]) >= 1
