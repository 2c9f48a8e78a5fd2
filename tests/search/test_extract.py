"""Index values computed at write time (search.html#ptypes, one section per type)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from fhirserver.search.dates import HIGHEST, LOWEST
from fhirserver.search.extract import extract

from .conftest import SHANGHAI, example

UCUM = "http://unitsofmeasure.org"


def test_observation_f001_by_hand() -> None:
    """Observation-f001: glucose 6.3 mmol/L, effectivePeriod with a start only."""
    sp = extract(example("Observation", "f001"), SHANGHAI)
    units = [f"{UCUM}|mmol/L", "mmol/L", "mmol/l"]
    expected: dict[str, list[Any]] = {
        "identifier": ["http://www.bmc.nl/zorgportal/identifiers/observations|6323", "6323"],
        "status": ["http://hl7.org/fhir/observation-status|final", "final"],
        "code": ["http://loinc.org|15074-8", "15074-8"],
        "code:text": ["glucose [moles/volume] in blood"],
        "combo-code": ["http://loinc.org|15074-8", "15074-8"],
        "combo-code:text": ["glucose [moles/volume] in blood"],
        "subject": ["Patient/f001"],
        "patient": ["Patient/f001"],
        "performer": ["Practitioner/f005"],
        # search.html#date: 09:30:10+01:00 is 08:30:10 UTC; no end = open (Period).
        "date": [datetime(2013, 4, 2, 8, 30, 10)],
        "date:hi": [HIGHEST],
        "value-quantity": [6.3],
        "value-quantity:unit": units,
        "combo-value-quantity": [6.3],
        "combo-value-quantity:unit": units,
    }
    for name in ("code-value-quantity", "combo-code-value-quantity"):
        expected[name] = [{
            "http://loinc%2Eorg|15074-8": [6.3], "http://loinc%2Eorg|15074-8:unit": units,
            "15074-8": [6.3], "15074-8:unit": units,
        }]
        expected[name + ":a"] = ["http://loinc.org|15074-8", "15074-8"]
    assert sp == expected


def test_patient_example_names_addresses_telecom() -> None:
    """Patient-example: HumanName and Address parts (search.html#string), ContactPoint,
    Identifier with type (token :of-type), boolean, code with implicit system."""
    sp = extract(example("Patient", "example"), SHANGHAI)
    assert sp["name"] == ["chalmers", "peter", "james", "jim", "windsor"]
    assert sp["name:exact"] == ["Chalmers", "Peter", "James", "Jim", "Windsor"]
    assert sp["family"] == ["chalmers", "windsor"]
    assert sp["given"] == ["peter", "james", "jim"]
    assert sp["address"] == ["534 erewhon st peasantville, rainbow, vic 3999", "534 erewhon st",
                             "pleasantville", "rainbow", "vic", "3999"]
    assert sp["address-city"] == ["pleasantville"]
    assert sp["address-postalcode"] == ["3999"]
    assert sp["address-use"] == ["http://hl7.org/fhir/address-use|home", "home"]
    assert sp["identifier"] == ["urn:oid:1.2.36.146.595.217.0.1|12345", "12345"]
    assert sp["identifier:of-type"] == ["http://terminology.hl7.org/CodeSystem/v2-0203|MR|12345"]
    assert sp["phone"] == ["|(03) 5555 6473", "(03) 5555 6473", "|(03) 3410 5613",
                           "(03) 3410 5613", "|(03) 5555 8834", "(03) 5555 8834"]
    assert "email" not in sp
    assert sp["active"] == ["|true", "true"]
    assert sp["deceased"] == ["|false", "false"]
    assert sp["gender"] == ["http://hl7.org/fhir/administrative-gender|male", "male"]
    # A date is read in the server zone: 1974-12-25 in Shanghai starts 16:00 UTC the day before.
    assert sp["birthdate"] == [datetime(1974, 12, 24, 16)]
    assert sp["birthdate:hi"] == [datetime(1974, 12, 25, 16)]
    assert sp["organization"] == ["Organization/1"]


def test_diagnostic_report_f201() -> None:
    sp = extract(example("DiagnosticReport", "f201"), SHANGHAI)
    assert sp["category"] == ["http://snomed.info/sct|394914008", "394914008",
                              "http://terminology.hl7.org/CodeSystem/v2-0074|RAD", "RAD"]
    assert sp["code:text"] == ["computed tomography (ct) of head and neck", "ct of head-neck"]
    assert sp["conclusion"] == ["http://snomed.info/sct|188340000", "188340000"]
    # 12:00:00+01:00 is a one-second range at 11:00:00 UTC.
    assert sp["date"] == [datetime(2012, 12, 1, 11)]
    assert sp["date:hi"] == [datetime(2012, 12, 1, 11, 0, 1)]
    assert sp["issued"] == sp["date"]
    assert sp["patient"] == ["Patient/f201"]
    assert sp["performer"] == ["Organization/f203"]


def test_blood_pressure_composite_keeps_components_paired() -> None:
    """search.html#composite: each component's code is stored with its own value."""
    sp = extract(example("Observation", "blood-pressure"), SHANGHAI)
    entry = sp["component-code-value-quantity"][0]
    assert entry["http://loinc%2Eorg|8480-6"] == [107.0]
    assert entry["http://loinc%2Eorg|8462-4"] == [60.0]
    assert "code-value-quantity" not in sp  # the panel itself has no value
    assert sp["component-value-quantity"] == [107.0, 60.0]


@pytest.mark.parametrize(("resource", "key", "expected"), [
    ({"effectiveDateTime": "2013"}, "date",
     ([datetime(2012, 12, 31, 16)], [datetime(2013, 12, 31, 16)])),
    ({"effectiveDateTime": "2013-02"}, "date",
     ([datetime(2013, 1, 31, 16)], [datetime(2013, 2, 28, 16)])),
    ({"effectiveDateTime": "2013-02-01T10:00:00Z"}, "date",
     ([datetime(2013, 2, 1, 10)], [datetime(2013, 2, 1, 10, 0, 1)])),
    ({"effectiveInstant": "2013-02-01T10:00:00.25Z"}, "date",
     ([datetime(2013, 2, 1, 10, 0, 0, 250000)], [datetime(2013, 2, 1, 10, 0, 0, 260000)])),
    ({"effectivePeriod": {"end": "2013-02-01"}}, "date",
     ([LOWEST], [datetime(2013, 2, 1, 16)])),
    ({"effectiveTiming": {"event": ["2013-02-01T10:00:00Z", "2013-01-01T10:00:00Z"]}}, "date",
     ([datetime(2013, 1, 1, 10)], [datetime(2013, 2, 1, 10, 0, 1)])),
    ({"valuePeriod": {"start": "2020-01-01T00:00:00+08:00", "end": "2020-01-01T01:00:00+08:00"}},
     "value-date", ([datetime(2019, 12, 31, 16)], [datetime(2019, 12, 31, 17, 0, 1)])),
])
def test_date_ranges(resource: dict[str, Any], key: str,
                     expected: tuple[list[datetime], list[datetime]]) -> None:
    """search.html#date: each value is the range its precision covers, in the server zone
    when it has none; a Period spans start..end with open ends."""
    sp = extract({"resourceType": "Observation", **resource}, SHANGHAI)
    assert (sp[key], sp[key + ":hi"]) == expected


@pytest.mark.parametrize(("patient", "expected"), [
    ({}, ["|false", "false"]),
    ({"deceasedBoolean": True}, ["|true", "true"]),
    ({"deceasedDateTime": "2020-01-01"}, ["|true", "true"]),
])
def test_patient_deceased(patient: dict[str, Any], expected: list[str]) -> None:
    """patient.html#search: deceased = ``Patient.deceased.exists() and deceased != false``."""
    assert extract({"resourceType": "Patient", **patient}, SHANGHAI)["deceased"] == expected


def test_meta_parameters() -> None:
    """search.html#all: _lastUpdated, _tag, _security, _profile, _source from meta."""
    sp = extract({"resourceType": "Patient", "id": "x", "meta": {
        "lastUpdated": "2024-05-01T01:02:03.456Z", "source": "urn:lab#1",
        "profile": ["http://example.org/p"], "tag": [{"system": "urn:t", "code": "a"}],
        "security": [{"system": "urn:s", "code": "R", "display": "Restricted"}],
    }}, SHANGHAI)
    assert sp["_lastUpdated"] == [datetime(2024, 5, 1, 1, 2, 3, 456000)]
    assert sp["_lastUpdated:hi"] == [datetime(2024, 5, 1, 1, 2, 3, 457000)]
    assert sp["_tag"] == ["urn:t|a", "a"]
    assert sp["_security"] == ["urn:s|R", "R"]
    assert sp["_security:text"] == ["restricted"]
    assert sp["_profile"] == ["http://example.org/p"]
    assert sp["_source"] == ["urn:lab#1"]
    assert "_id" not in sp


def test_references_drop_versions_keep_absolute_skip_contained() -> None:
    sp = extract({"resourceType": "Observation", "subject": {"reference": "Patient/1/_history/3"},
                  "performer": [{"reference": "http://other.org/fhir/Practitioner/9"},
                                {"reference": "#c1"},
                                {"identifier": {"system": "urn:npi", "value": "77"}}]},
                 SHANGHAI)
    assert sp["subject"] == sp["patient"] == ["Patient/1"]
    assert sp["performer"] == ["http://other.org/fhir/Practitioner/9"]
    assert sp["performer:identifier"] == ["urn:npi|77", "77"]


def test_patient_restriction_skips_group_subjects() -> None:
    sp = extract({"resourceType": "Observation", "subject": {"reference": "Group/1"}}, SHANGHAI)
    assert sp["subject"] == ["Group/1"] and "patient" not in sp


def test_accents_and_case_are_folded() -> None:
    sp = extract({"resourceType": "Patient", "name": [{"family": "du Marché", "given": ["Ǆemal"]}]},
                 SHANGHAI)
    assert sp["family"] == ["du marche"]
    assert sp["given"] == ["dzemal"]
    assert sp["family:exact"] == ["du Marché"]


@pytest.mark.parametrize("resource", [
    {"resourceType": "Patient", "birthDate": "not a date", "name": "oops", "gender": 3},
    {"resourceType": "Observation", "valueQuantity": {"value": "x"}, "effectivePeriod": "2013",
     "code": {"coding": "bad"}, "subject": "Patient/1", "component": [None, 3]},
    {"resourceType": "Observation", "effectiveDateTime": "2013-02-30"},
    {"resourceType": "Nothing"},
    {},
])
def test_never_raises_on_unreadable_values(resource: dict[str, Any]) -> None:
    sp = extract(resource, SHANGHAI)
    assert "birthdate" not in sp and "date" not in sp and "value-quantity" not in sp


def test_missing_elements_have_no_key() -> None:
    """search.html#missing: a parameter without values is absent, so ``$exists`` tests it."""
    assert extract({"resourceType": "Observation", "status": "final"}, SHANGHAI) == {
        "status": ["http://hl7.org/fhir/observation-status|final", "final"],
    }
