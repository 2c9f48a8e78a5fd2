"""Search results on real data, checked against answers computed here from the raw
JSON of the shared Synthea bundles (R4 search.html), not by the code under test.

One import of every fourth bundle (10 patients, ~1500 Observations) serves the
module. Expected sets are computed with plain Python over the source resources;
the server is asked over HTTP, following ``next`` links through every page.
"""

from __future__ import annotations

import gzip
import json
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlsplit

import pytest
from pymongo import MongoClient

from fhirserver.cli import run_import
from fhirserver.config import Settings
from tests.conftest import SHARED, FhirClient, make_app

FILES = sorted((SHARED / "synthea").glob("*.json.gz"))[::4]
LOINC = "http://loinc.org"
SHANGHAI = timezone(timedelta(hours=8))  # the server's default zone (FHIR_TIMEZONE)

Resources = dict[str, list[dict[str, Any]]]


@pytest.fixture(scope="module")
def raw() -> Resources:
    """The source resources by type, references made relative as the importer does."""
    out: Resources = {"Patient": [], "Observation": [], "DiagnosticReport": []}
    for path in FILES:
        with gzip.open(path) as fh:
            bundle = json.load(fh)
        for entry in bundle["entry"]:
            res = entry["resource"]
            if res["resourceType"] in out:
                out[res["resourceType"]].append(res)
    return out


@pytest.fixture(scope="module")
def fhir(database_server: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[FhirClient]:
    uri, pg_url = database_server
    name = f"test_synthea_{uuid.uuid4().hex[:12]}"
    settings = Settings(mongodb_uri=uri, mongodb_db=name, ferretdb_postgresql_url=pg_url,
                        data_dir=tmp_path_factory.mktemp("synthea"),
                        base_url="http://fhir.test/fhir")
    stats = run_import(settings, FILES)
    assert not stats.problems
    app = make_app(settings)
    yield FhirClient(app.test_client())
    app.extensions["fhirserver"].repo.close()
    with MongoClient(uri) as client:
        client.drop_database(name)


def subject_id(res: dict[str, Any]) -> str:
    return res.get("subject", {}).get("reference", "").removeprefix("urn:uuid:")


def codings(concept: dict[str, Any] | None) -> set[tuple[str, str]]:
    return {(c.get("system", ""), c["code"]) for c in (concept or {}).get("coding", [])}


def effective(res: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(res["effectiveDateTime"])


def search_all(fhir: FhirClient, url: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every match over all pages, and the first page's bundle."""
    r = fhir.get(url)
    assert r.status_code == 200, r.get_json()
    first = bundle = r.get_json()
    found: list[dict[str, Any]] = []
    while True:
        found += [e["resource"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]
        nxt = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
        if not nxt:
            return found, first
        parts = urlsplit(nxt[0])
        r = fhir.get(parts.path.removeprefix("/fhir") + "?" + parts.query)
        assert r.status_code == 200, r.get_json()
        bundle = r.get_json()


def ids_of(fhir: FhirClient, url: str) -> set[str]:
    """Every match over all pages; ``_total=accurate`` (search.html#total) counts them
    exactly (a population page's default total is an estimate)."""
    found, first = search_all(fhir, url + ("&" if "?" in url else "?") + "_total=accurate")
    got = [r["id"] for r in found]
    assert len(got) == len(set(got)), "a resource was returned twice across pages"
    assert first["total"] == len(got)
    return set(got)


def test_token_code_system_and_category_search_token(fhir, raw):
    """search.html#token: system|code on CodeableConcept; category by bare code."""
    height = {o["id"] for o in raw["Observation"] if (LOINC, "8302-2") in codings(o["code"])}
    assert height and ids_of(fhir, f"Observation?code={LOINC}|8302-2&_count=50") == height
    vital = {o["id"] for o in raw["Observation"]
             if any(c[1] == "vital-signs" for cat in o.get("category", []) for c in codings(cat))}
    assert ids_of(fhir, "Observation?category=vital-signs&_count=200") == vital
    not_final = {o["id"] for o in raw["Observation"] if o["status"] != "final"}
    assert ids_of(fhir, "Observation?status:not=final") == not_final


def test_date_range_in_server_time_zone_search_date(fhir, raw):
    """search.html#date: ge/lt on dates without zone read in Asia/Shanghai; the
    element's instant (seconds precision) against the day boundaries."""
    lo, hi = datetime(2015, 1, 1, tzinfo=SHANGHAI), datetime(2016, 1, 1, tzinfo=SHANGHAI)
    expected = {o["id"] for o in raw["Observation"]
                if "effectiveDateTime" in o and lo <= effective(o) < hi}
    assert expected
    assert ids_of(fhir, "Observation?date=ge2015-01-01&date=lt2016-01-01&_count=200") == expected
    born = {p["id"] for p in raw["Patient"] if p["birthDate"] < "1970"}
    assert ids_of(fhir, "Patient?birthdate=lt1970-01-01") == born


def test_quantity_with_unit_search_quantity(fhir, raw):
    """search.html#quantity: [prefix]number|system|code."""
    expected = {o["id"] for o in raw["Observation"]
                if (LOINC, "8302-2") in codings(o["code"]) and o["valueQuantity"]["value"] > 170
                and o["valueQuantity"]["code"] == "cm"}
    got = ids_of(fhir, f"Observation?code={LOINC}|8302-2"
                       "&value-quantity=gt170|http://unitsofmeasure.org|cm")
    assert got == expected


def test_composite_code_value_quantity_search_composite(fhir, raw):
    """search.html#composite: component-code-value-quantity pairs code and value of one
    component (systolic blood pressure above 130)."""
    expected = set()
    for o in raw["Observation"]:
        for comp in o.get("component", []):
            if (LOINC, "8480-6") in codings(comp["code"]) and comp.get("valueQuantity", {}).get("value", 0) > 130:
                expected.add(o["id"])
    assert expected
    got = ids_of(fhir, f"Observation?component-code-value-quantity={LOINC}|8480-6$gt130")
    assert got == expected


def test_string_and_gender_search_string(fhir, raw):
    """search.html#string: starts-with, case-insensitive, on HumanName family."""
    family = raw["Patient"][0]["name"][0]["family"]
    prefix = family[:3].lower()
    expected = {p["id"] for p in raw["Patient"]
                if any(n.get("family", "").lower().startswith(prefix) for n in p["name"])}
    assert ids_of(fhir, f"Patient?family={prefix}") == expected
    female = {p["id"] for p in raw["Patient"] if p["gender"] == "female"}
    assert ids_of(fhir, "Patient?gender=female") == female


def test_reference_chain_and_has_search_reference_chaining_has(fhir, raw):
    """search.html#reference, #chaining, #has, checked against the raw references."""
    patient = raw["Patient"][1]
    mine = {o["id"] for o in raw["Observation"] if subject_id(o) == patient["id"]}
    assert ids_of(fhir, f"Observation?patient={patient['id']}&_count=100") == mine
    assert ids_of(fhir, f"Observation?subject=Patient/{patient['id']}&_count=100") == mine
    female = {p["id"] for p in raw["Patient"] if p["gender"] == "female"}
    glucose = {o["id"] for o in raw["Observation"]
               if (LOINC, "2339-0") in codings(o["code"]) and subject_id(o) in female}
    assert ids_of(fhir, f"Observation?code={LOINC}|2339-0&patient.gender=female") == glucose
    with_glucose = {subject_id(o) for o in raw["Observation"] if (LOINC, "2339-0") in codings(o["code"])}
    assert ids_of(fhir, f"Patient?_has:Observation:patient:code={LOINC}|2339-0") == with_glucose


def test_sorted_paging_matches_independent_order_search_sort(fhir, raw):
    """search.html#sort: -date then _id; every page in order, none skipped."""
    patient = raw["Patient"][2]["id"]
    mine = [o for o in raw["Observation"] if subject_id(o) == patient and "effectiveDateTime" in o]
    expected = [o["id"] for o in sorted(sorted(mine, key=lambda o: o["id"]),
                                        key=effective, reverse=True)]
    found, _ = search_all(fhir, f"Observation?patient={patient}&_sort=-date&_count=20")
    assert [o["id"] for o in found] == expected


def test_include_results_of_reports_search_include(fhir, raw):
    patient = raw["Patient"][3]["id"]
    reports = [d for d in raw["DiagnosticReport"] if subject_id(d) == patient]
    results = {r["reference"].removeprefix("urn:uuid:") for d in reports for r in d.get("result", [])}
    r = fhir.get(f"DiagnosticReport?patient={patient}&_include=DiagnosticReport:result&_count=1000")
    bundle = r.get_json()
    included = {e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "include"}
    assert {e["resource"]["id"] for e in bundle.get("entry", [])
            if e["search"]["mode"] == "match"} == {d["id"] for d in reports}
    assert included == results


def test_everything_and_lastn_per_patient(fhir, raw):
    """$everything holds the patient and exactly their records; $lastn the newest of
    each code."""
    patient = raw["Patient"][4]["id"]
    obs = [o for o in raw["Observation"] if subject_id(o) == patient]
    reports = {d["id"] for d in raw["DiagnosticReport"] if subject_id(d) == patient}
    found, first = search_all(fhir, f"Patient/{patient}/$everything?_count=40")
    assert "total" not in first or first["total"] == 1 + len(obs) + len(reports)
    assert {(r["resourceType"], r["id"]) for r in found} == (
        {("Patient", patient)} | {("Observation", o["id"]) for o in obs}
        | {("DiagnosticReport", d) for d in reports})

    newest: dict[frozenset[tuple[str, str]], datetime] = {}
    for o in obs:
        key = frozenset(codings(o["code"]))
        newest[key] = max(newest.get(key, effective(o)), effective(o))
    r = fhir.get(f"Observation/$lastn?patient={patient}")
    got = [e["resource"] for e in r.get_json().get("entry", [])]
    assert len(got) == len(newest)
    for o in got:
        assert effective(o) == newest[frozenset(codings(o["code"]))]
