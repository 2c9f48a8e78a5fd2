"""Searches no index can answer are refused once a type is large (search.html#errors:
"too-costly"), instead of reading every record while a clinician waits."""

from __future__ import annotations

import pytest

from tests import factories as f
from tests.finds import commands_listening, listening

# Registered before any app of the module exists: a listener applies to the clients
# created after it (and an app may reuse the client of an earlier one).
SENT = commands_listening()
REPORT_FINDS = listening("DiagnosticReport")
PATIENT_FINDS = listening("Patient")
OBSERVATION_FINDS = listening("Observation")


@pytest.fixture
def sent():  # type: ignore[no-untyped-def]
    SENT.active, SENT.sent = False, []
    return SENT


@pytest.fixture
def report_finds():  # type: ignore[no-untyped-def]
    REPORT_FINDS.active, REPORT_FINDS.filters = False, []
    return REPORT_FINDS


@pytest.fixture
def patient_finds():  # type: ignore[no-untyped-def]
    PATIENT_FINDS.active, PATIENT_FINDS.filters = False, []
    return PATIENT_FINDS


@pytest.fixture
def observation_finds():  # type: ignore[no-untyped-def]
    OBSERVATION_FINDS.active, OBSERVATION_FINDS.filters = False, []
    return OBSERVATION_FINDS


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
    assert sent.sent  # the listener sees this app's commands
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


def _report(pid: str, results: list[str], status: str = "final") -> dict:
    return {"resourceType": "DiagnosticReport", "status": status,
            "code": {"coding": [{"system": "http://loinc.org", "code": "24323-8"}]},
            "subject": {"reference": f"Patient/{pid}"},
            **({"result": [{"reference": f"Observation/{o}"} for o in results]} if results else {})}


def test_has_whose_inner_condition_no_index_answers_is_400_too_costly_search_has(fhir):
    """A ``_has`` (search.html#has) runs its inner query alone against the referring
    type, whatever narrows the outer search: ``status=final`` over every
    DiagnosticReport is the whole collection, refused on a large type like any
    search no index answers (search.html#errors); a code narrows it."""
    pid = fhir.create(f.patient())["id"]
    obs = [fhir.create(f.observation(pid))["id"] for _ in range(5)]
    for o in obs:
        fhir.create(_report(pid, [o]))
    r = fhir.get(f"Observation?patient={pid}&_has:DiagnosticReport:result:status=final")
    assert r.status_code == 400, r.get_json()
    issue = r.get_json()["issue"][0]
    assert issue["code"] == "too-costly"
    assert issue["expression"] == ["_has:DiagnosticReport:result"]
    r = fhir.get(f"Observation?patient={pid}"
                 "&_has:DiagnosticReport:result:code=http://loinc.org|24323-8")
    assert r.status_code == 200
    assert sorted(e["resource"]["id"] for e in r.get_json()["entry"]) == sorted(obs)


def test_a_chain_whose_inner_condition_no_index_answers_is_400_too_costly_search_chaining(
        fhir):
    """A chain (search.html#chaining) runs its inner query first and alone: over a
    large type it must be answered from an index, as a search of its own must."""
    for n in range(5):
        fhir.create(f.patient(f"Family{n}", gender="female"))
    r = fhir.get("Observation?code=http://loinc.org|15074-8&patient.gender=female")
    assert r.status_code == 400 and r.get_json()["issue"][0]["code"] == "too-costly"
    assert fhir.get("Observation?code=http://loinc.org|15074-8"
                    "&patient.family=Family1").status_code == 200




def test_revinclude_reads_the_referrers_through_an_index_search_revinclude(report_finds, fhir):
    """``_revinclude`` (search.html#revinclude) finds the referring resources by an
    indexed equality per page resource, never by a list the database cannot look up
    (which read every DiagnosticReport): each of its finds is pinned by ``refs``."""
    pid = fhir.create(f.patient())["id"]
    obs = [fhir.create(f.observation(pid))["id"] for _ in range(3)]
    reports = [fhir.create(_report(pid, obs[:2]))["id"], fhir.create(_report(pid, [obs[2]]))["id"]]
    fhir.create(_report(fhir.create(f.patient())["id"], []))  # refers to none of them
    for rev in ("DiagnosticReport:result", "*"):
        report_finds.active, report_finds.filters = True, []
        r = fhir.get(f"Observation?patient={pid}&_revinclude={rev}")
        report_finds.active = False
        assert r.status_code == 200
        got = sorted(e["resource"]["id"] for e in r.get_json()["entry"]
                     if e["search"]["mode"] == "include")
        assert got == sorted(reports), rev
        assert report_finds.filters
        assert all(isinstance(flt.get("refs"), str) for flt in report_finds.filters), \
            report_finds.filters


def paged(get, url: str | None) -> list[str]:  # type: ignore[no-untyped-def]
    """The ids of every page from ``url`` on, following next links (http.html#paging)."""
    seen: list[str] = []
    while url:
        r = get(url)
        assert r.status_code == 200, r.get_json()
        page = r.get_json()
        seen += [e["resource"]["id"] for e in page.get("entry", [])]
        url = next((link["url"].split("/fhir/", 1)[1] for link in page["link"]
                    if link["relation"] == "next"), None)
    return seen




def test_a_clinicians_patient_list_reads_their_patients_not_every_patient(
        patient_finds, fhir, app):
    """``Patient?_count=N`` from a clinician (the clinician app's first screen) is
    limited to the patients they treat or registered, a list FerretDB cannot look up
    in one query: it read every Patient of the server (5 s at 20,000). It is read
    patient by patient, each an equality an index answers, and pages, counts
    (search.html#count) and sorts (search.html#sort) come out as they did."""
    from datetime import UTC, datetime, timedelta

    from fhirserver.auth.access import record_care
    from tests.api.test_access import clinician

    db = app.extensions["fhirserver"].repo.db
    treated = [fhir.create(f.patient(f"Treated{n}", birthDate=f"19{50 + n}-01-01"))["id"]
               for n in range(5)]
    for n in range(4):
        fhir.create(f.patient(f"Stranger{n}"))
    for pid in treated:
        record_care(db, "Practitioner/dr-li", pid, datetime.now(UTC) + timedelta(hours=2), "test")
    dr = clinician(app, fhir)
    registered = dr.post("Patient", f.patient("Registered", birthDate="1949-01-01"))
    assert registered.status_code == 201, registered.get_json()
    mine = [*treated, registered.get_json()["id"]]
    patient_finds.active = True
    seen = paged(dr.get, "Patient?_count=2&_sort=-birthdate")
    counted = dr.get("Patient?_summary=count").get_json()["total"]
    patient_finds.active = False
    assert seen == [*reversed(treated), mine[-1]]  # newest birth date first
    assert counted == len(mine)
    assert patient_finds.filters
    for flt in patient_finds.filters:
        assert isinstance(flt.get("_id") or flt.get("by"), str), flt


def test_a_listing_without_conditions_pages_by_shards_and_a_count_of_all_is_refused(
        patient_finds, fhir):
    """``GET Patient`` (http.html#search, no parameters) pages through the type at
    the cost of each page: every record matches, so it is read shard by shard
    (search/shards.py), finest shards first, each pinned by an indexed equality.
    Counting them all, or sorting them all, would read every record: refused on a
    large type (search.html#errors)."""
    made = {fhir.create(f.patient(f"Listed{n}"))["id"] for n in range(7)}
    patient_finds.active = True
    seen = paged(fhir.get, "Patient?_count=2")
    patient_finds.active = False
    assert sorted(seen) == sorted(made)
    # read in the walk's order: finest shards first (on a type this small each page
    # goes on to the coarsest, which a large one fills long before)
    assert isinstance(patient_finds.filters[0].get("ps"), str), patient_finds.filters
    for refused in ("Patient?_summary=count", "Patient?_total=accurate", "Patient?_count=0",
                    "Patient?_sort=family"):
        r = fhir.get(refused)
        assert r.status_code == 400 and r.get_json()["issue"][0]["code"] == "too-costly", refused




def test_a_listing_cursor_made_up_to_look_old_reads_no_more_than_a_page(
        observation_finds, sent, fhir):
    """A one-value cursor is an older version's link of an unsorted page, and goes on
    in ``_id`` order, which reads the whole type: on a listing with no condition (read
    shard by shard otherwise) it is bounded as a search no index answers
    (search.html#errors), and ``_total=estimate`` (search.html#total) never counts
    every record: the type's size is the estimate."""
    from fhirserver.interactions.bundles import encode_cursor

    pid = fhir.create(f.patient())["id"]
    for day in range(1, 8):
        fhir.create(f.observation(pid, effectiveDateTime=f"2024-01-0{day}"))
    r = fhir.get(f"Observation?_count=2&_cursor={encode_cursor({'a': ['0']})}")
    assert r.status_code == 400 and r.get_json()["issue"][0]["code"] == "too-costly"
    observation_finds.active = sent.active = True
    r = fhir.get("Observation?_count=2&_total=estimate")
    observation_finds.active = sent.active = False
    assert r.status_code == 200 and r.get_json()["total"] >= 2
    assert not [c for c in sent.sent if c[0] in ("count", "aggregate") and c[1] == "Observation"]
    assert isinstance(observation_finds.filters[0].get("ps"), str)


def test_a_clinicians_chain_runs_its_inner_query_over_their_patients_search_chaining(
        fhir, app):
    """The inner query of a chain is limited to what the caller may see: for a
    clinician, the patients they treat, read one by one, so it is answered however
    many Patients the server holds (search.html#chaining)."""
    from datetime import UTC, datetime, timedelta

    from fhirserver.auth.access import record_care
    from tests.api.test_access import clinician

    db = app.extensions["fhirserver"].repo.db
    mine = fhir.create(f.patient("Mine", gender="female"))["id"]
    for n in range(4):
        fhir.create(f.observation(fhir.create(f.patient(f"Other{n}", gender="female"))["id"]))
    record_care(db, "Practitioner/dr-li", mine, datetime.now(UTC) + timedelta(hours=2), "test")
    wanted = fhir.create(f.observation(mine))["id"]
    r = clinician(app, fhir).get("Observation?code=http://loinc.org|15074-8&patient.gender=female")
    assert r.status_code == 200, r.get_json()
    assert [e["resource"]["id"] for e in r.get_json()["entry"]] == [wanted]
    r = fhir.get("Observation?code=http://loinc.org|15074-8&patient.gender=female")
    assert r.status_code == 400  # the operator's inner query is every female Patient
