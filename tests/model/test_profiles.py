"""Profiles: rules the models do not check give 422 Unprocessable Entity
(http.html#create: "422 Unprocessable Entity - the proposed resource violated
applicable FHIR profiles or server business rules"), one issue per violation with
the FHIRPath of the element at fault."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fhirserver.errors import Unprocessable
from fhirserver.model.validation import PROFILES_DIR, load_profiles, validate_resource


def obs(**extra: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]}, **extra}


def patient(**extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", **extra}


def report(**extra: Any) -> dict[str, Any]:
    return {"resourceType": "DiagnosticReport", "status": "final", "code": {"text": "x"}, **extra}


def unprocessable(data: dict[str, Any]) -> Unprocessable:
    with pytest.raises(Unprocessable) as caught:
        validate_resource(data)
    assert caught.value.status == 422
    return caught.value


LOINC = {"system": "http://loinc.org", "code": "85354-9"}
SYSTOLIC = {"system": "http://loinc.org", "code": "8480-6"}

#: (id, resource, expected expressions, issue code, words in the diagnostics)
CASES = [
    # required bindings (terminologies.html#required)
    ("Observation.status", obs(status="done"), ["Observation.status"], "code-invalid",
     "ObservationStatus"),
    ("DiagnosticReport.status", report(status="done"), ["DiagnosticReport.status"],
     "code-invalid", "DiagnosticReportStatus"),
    ("Patient.gender", patient(gender="M"), ["Patient.gender"], "code-invalid",
     "AdministrativeGender"),
    ("Patient.contact.gender", patient(contact=[{"name": {"text": "x"}, "gender": "F"}]),
     ["Patient.contact[0].gender"], "code-invalid", "AdministrativeGender"),
    ("Patient.link.type", patient(link=[{"other": {"reference": "Patient/1"}, "type": "same"}]),
     ["Patient.link[0].type"], "code-invalid", "LinkType"),
    ("Identifier.use", patient(identifier=[{"value": "1"}, {"use": "main", "value": "2"}]),
     ["Patient.identifier[1].use"], "code-invalid", "IdentifierUse"),
    ("Identifier.use in Reference.identifier",
     obs(subject={"identifier": {"use": "main", "value": "1"}}),
     ["Observation.subject.identifier.use"], "code-invalid", "IdentifierUse"),
    ("HumanName.use", patient(name=[{"use": "legal", "family": "x"}]), ["Patient.name[0].use"],
     "code-invalid", "NameUse"),
    ("ContactPoint.system", patient(telecom=[{"system": "mobile", "value": "1"}]),
     ["Patient.telecom[0].system"], "code-invalid", "ContactPointSystem"),
    ("ContactPoint.use", patient(telecom=[{"system": "phone", "use": "cell", "value": "1"}]),
     ["Patient.telecom[0].use"], "code-invalid", "ContactPointUse"),
    ("Address.use", patient(address=[{"use": "office", "city": "x"}]),
     ["Patient.address[0].use"], "code-invalid", "AddressUse"),
    ("Address.type", patient(address=[{"type": "mail", "city": "x"}]),
     ["Patient.address[0].type"], "code-invalid", "AddressType"),
    ("Quantity.comparator", obs(valueQuantity={"value": 1, "comparator": "=="}),
     ["Observation.value.ofType(Quantity).comparator"], "code-invalid", "QuantityComparator"),
    ("Quantity.comparator in referenceRange",
     obs(referenceRange=[{"low": {"value": 1, "comparator": "~"}}]),
     ["Observation.referenceRange[0].low.comparator"], "code-invalid", "QuantityComparator"),
    ("Narrative.status", obs(text={"status": "done", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">x</div>"}),
     ["Observation.text.status"], "code-invalid", "NarrativeStatus"),
    # the id rule (datatypes.html#id): 1..64 characters, which the model does not limit
    ("Resource.id length", obs(id="a" * 65), ["Observation.id"], "value", "does not match"),
    # invariants (the spec's keys and texts)
    ("obs-3", obs(valueQuantity={"value": 1}, referenceRange=[{"appliesTo": [{"text": "x"}]}]),
     ["Observation.referenceRange[0]"], "business-rule", "obs-3"),
    ("obs-6", obs(valueQuantity={"value": 1}, dataAbsentReason={"text": "x"}), ["Observation"],
     "business-rule", "obs-6"),
    ("obs-6 with a primitive value", obs(valueString="x", dataAbsentReason={"text": "x"}),
     ["Observation"], "business-rule", "obs-6"),
    ("obs-7", obs(valueQuantity={"value": 1},
                  component=[{"code": {"coding": [SYSTOLIC]}, "valueQuantity": {"value": 2}},
                             {"code": {"coding": [LOINC]}, "valueQuantity": {"value": 3}}]),
     ["Observation.value.ofType(Quantity)"], "business-rule", "component[1]"),
    ("pat-1", patient(contact=[{"relationship": [{"text": "mother"}]}]),
     ["Patient.contact[0]"], "business-rule", "pat-1"),
    ("cpt-2", patient(telecom=[{"value": "555-1234"}]), ["Patient.telecom[0]"],
     "business-rule", "cpt-2"),
    ("qty-3", obs(valueQuantity={"value": 1, "code": "mg"}),
     ["Observation.value.ofType(Quantity)"], "business-rule", "qty-3"),
    ("ext-1 neither", obs(extension=[{"url": "http://x"}]), ["Observation.extension[0]"],
     "business-rule", "ext-1"),
    ("ext-1 both", patient(extension=[{"url": "http://x", "valueString": "a",
                                       "extension": [{"url": "y", "valueString": "b"}]}]),
     ["Patient.extension[0]"], "business-rule", "ext-1"),
    ("att-1", report(presentedForm=[{"data": "aGVsbG8="}]), ["DiagnosticReport.presentedForm[0]"],
     "business-rule", "att-1"),
    ("dom-2", obs(contained=[{"resourceType": "Patient", "id": "p",
                              "contained": [{"resourceType": "Patient", "id": "q"}]}]),
     ["Observation.contained[0]"], "business-rule", "dom-2"),
    ("dom-4", obs(contained=[{"resourceType": "Patient", "id": "p",
                              "meta": {"lastUpdated": "2020-01-01T00:00:00Z"}}]),
     ["Observation.contained[0].meta"], "business-rule", "dom-4"),
    ("dom-5", obs(contained=[{"resourceType": "Patient", "id": "p",
                              "meta": {"security": [{"code": "R"}]}}]),
     ["Observation.contained[0].meta"], "business-rule", "dom-5"),
    ("profiles apply inside contained resources",
     obs(contained=[{"resourceType": "Patient", "id": "p", "gender": "M"}]),
     ["Observation.contained[0].gender"], "code-invalid", "AdministrativeGender"),
]


@pytest.mark.parametrize(("resource", "paths", "code", "words"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_profile_rule_is_enforced(resource: dict[str, Any], paths: list[str], code: str,
                                  words: str) -> None:
    error = unprocessable(resource)
    assert [e for i in error.issues for e in i.expression] == paths
    assert [i.code for i in error.issues] == [code]
    assert words in error.issues[0].diagnostics


def test_every_violation_is_reported() -> None:
    error = unprocessable(patient(gender="M", telecom=[{"value": "1", "use": "cell"}]))
    assert sorted(e for i in error.issues for e in i.expression) == [
        "Patient.gender", "Patient.telecom[0]", "Patient.telecom[0].use"]


@pytest.mark.parametrize("resource", [
    obs(valueQuantity={"value": 1, "code": "mg", "system": "http://unitsofmeasure.org"}),
    obs(dataAbsentReason={"text": "x"}),  # obs-6: no value, so allowed
    # obs-7: a component with a different code, or the same code without a value
    obs(valueQuantity={"value": 1}, component=[{"code": {"coding": [SYSTOLIC]}}]),
    obs(component=[{"code": {"coding": [LOINC]}, "valueQuantity": {"value": 1}}]),
    obs(referenceRange=[{"text": "normal"}]),
    patient(contact=[{"organization": {"reference": "Organization/1"}}], gender="other"),
    patient(telecom=[{"_value": {"extension": [{"url": "http://x", "valueString": "y"}]},
                      "system": "phone"}]),
    obs(contained=[{"resourceType": "Patient", "id": "p", "meta": {"profile": ["http://x"]}}]),
], ids=["qty-3 ok", "obs-6 ok", "obs-7 other code", "obs-7 no value", "obs-3 text",
        "pat-1 organization", "cpt-2 system", "dom-4 no version"])
def test_conforming_resources_pass(resource: dict[str, Any]) -> None:
    validate_resource(resource)


def test_every_profile_is_a_valid_schema_with_a_description() -> None:
    files = sorted(PROFILES_DIR.glob("*.schema.json"))
    assert {f.name.split(".")[0] for f in files} >= {"Patient", "Observation", "DiagnosticReport"}
    for file in files:
        schema = json.loads(file.read_text(encoding="utf-8"))
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["title"] and "hl7.org/fhir/R4/" in schema["description"]
    assert set(load_profiles().schemas) == {f.name.split(".")[0] for f in files}


def test_missing_profiles_mean_no_extra_rules(tmp_path: Path) -> None:
    body = patient(gender="M")
    validate_resource(body, profiles=load_profiles(tmp_path))
    validate_resource(body, profiles=load_profiles(tmp_path / "absent"))


def test_a_profile_file_adds_rules_for_its_type(tmp_path: Path) -> None:
    (tmp_path / "Patient.schema.json").write_text(json.dumps({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "local rule", "description": "a birth date is required here",
        "required": ["birthDate"]}))
    rules = load_profiles(tmp_path)
    with pytest.raises(Unprocessable) as caught:
        validate_resource(patient(), profiles=rules)
    assert caught.value.issues[0].expression == ("Patient",)
    validate_resource(obs(status="done"), profiles=rules)  # no Observation profile there


def test_a_broken_profile_fails_loudly(tmp_path: Path) -> None:
    (tmp_path / "Patient.schema.json").write_text('{"type": 5}')
    with pytest.raises(Exception, match="5"):
        load_profiles(tmp_path)
