"""Envelope, structure and datatypes: 400 Bad Request (http.html#create, #update:
"400 Bad Request - resource could not be parsed or failed basic FHIR validation
rules"), each problem one OperationOutcome issue with a FHIRPath expression
(operationoutcome.html)."""

from __future__ import annotations

from typing import Any

import pytest

from fhirserver.errors import Invalid, Unprocessable
from fhirserver.model.validation import validate_resource


def obs(**extra: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "15074-8"}]}, **extra}


def invalid(data: object, expected_type: str | None = None) -> Invalid:
    with pytest.raises(Invalid) as caught:
        validate_resource(data, expected_type)
    assert not isinstance(caught.value, Unprocessable), caught.value.issues
    assert caught.value.status == 400
    return caught.value


def expressions(error: Invalid) -> list[str]:
    return [e for issue in error.issues for e in issue.expression]


def test_valid_resources_pass() -> None:
    validate_resource(obs(valueQuantity={"value": 6.3, "unit": "mmol/l"}), "Observation")
    validate_resource({"resourceType": "Patient", "name": [{"family": "Chalmers"}]})
    validate_resource({"resourceType": "DiagnosticReport", "status": "final",
                       "code": {"text": "CBC"}, "result": [{"reference": "Observation/1"}]})


# -- envelope --------------------------------------------------------------------------


@pytest.mark.parametrize("body", [[], "Patient", 3, None, True])
def test_body_must_be_a_json_object(body: object) -> None:
    """json.html#resources: a resource is a JSON object."""
    assert "JSON object" in invalid(body).message


def test_missing_resource_type() -> None:
    error = invalid({"id": "x"}, "Patient")
    assert expressions(error) == ["Patient.resourceType"]
    assert error.issues[0].code == "required"


def test_resource_type_must_match_the_url() -> None:
    """http.html#update: the body's type is the URL's type."""
    error = invalid({"resourceType": "Patient"}, "Observation")
    assert error.message == "Resource type Patient does not match the URL type Observation"
    assert expressions(error) == ["Patient.resourceType"]


@pytest.mark.parametrize(("rtype", "words"), [("Encounter", "not supported"),
                                              ("Foo", "unknown")])
def test_unsupported_and_unknown_types(rtype: str, words: str) -> None:
    error = invalid({"resourceType": rtype})
    assert words in error.message and "Patient, Observation, DiagnosticReport" in error.message


# -- structure and datatypes (fhir.resources models) ------------------------------------


def test_wrong_type_in_nested_element_gives_its_fhirpath() -> None:
    error = invalid(obs(code={"coding": [{"system": 5, "code": "x"}]}))
    assert expressions(error) == ["Observation.code.coding[0].system"]
    assert error.issues[0].code == "structure"
    assert "must be a JSON string, got number 5" in error.issues[0].diagnostics


def test_unknown_element() -> None:
    """json.html: unknown properties are an error (no open content without extensions)."""
    error = invalid(obs(foo=1, subject={"reference": "Patient/1", "bar": 2}))
    assert sorted(expressions(error)) == ["Observation.foo", "Observation.subject.bar"]
    assert {i.code for i in error.issues} == {"structure"}
    assert "unknown element 'foo'" in error.message


def test_missing_required_element() -> None:
    """observation.html: Observation.status is 1..1."""
    body = obs()
    del body["status"]
    error = invalid(body)
    assert expressions(error) == ["Observation.status"]
    assert error.issues[0].code == "required"


def test_all_problems_are_reported() -> None:
    error = invalid(obs(effectiveDateTime="2020-13-01", issued="2020",
                        valueQuantity={"value": "abc"}, subject={"reference": 7}))
    assert sorted(expressions(error)) == [
        "Observation.effective.ofType(dateTime)", "Observation.issued",
        "Observation.subject.reference", "Observation.value.ofType(Quantity).value"]


@pytest.mark.parametrize(("extra", "path", "words"), [
    ({"effectiveDateTime": "2020-02-30T10:00:00Z"}, "Observation.effective.ofType(dateTime)",
     "dateTime"),
    ({"effectiveDateTime": "2020-01-01T10:00:00"}, "Observation.effective.ofType(dateTime)",
     "not a valid dateTime"),  # datatypes.html#dateTime: a time needs a zone
    ({"issued": "2020-01-01"}, "Observation.issued", "not a valid instant"),
    ({"valueInteger": 1.5}, "Observation.value.ofType(integer)", "integer"),
    ({"id": "a b"}, "Observation.id", "a b"),
    ({"category": {"text": "lab"}}, "Observation.category", "JSON array"),
    ({"code": "15074-8"}, "Observation.code", "JSON object"),
    ({"component": [{"code": {"text": "x"}, "valueQuantity": {"value": "1,5"}}]},
     "Observation.component[0].value.ofType(Quantity).value", "decimal"),
    ({"_status": {"extension": [{"url": 1}]}}, "Observation.status.extension[0].url",
     "JSON string"),
    ({"contained": [{"resourceType": "Patient", "gender": 5}]},
     "Observation.contained[0].gender", "JSON string"),
    ({"extension": [{"url": "http://x", "valueFoo": 1}]}, "Observation.extension[0].valueFoo",
     "unknown element"),
])
def test_malformed_datatypes(extra: dict[str, Any], path: str, words: str) -> None:
    """datatypes.html: each primitive's regex and JSON representation."""
    error = invalid(obs(**extra))
    assert expressions(error) == [path]
    assert words in error.issues[0].diagnostics
    assert error.issues[0].diagnostics.startswith(path + ": ")


def test_choice_element_takes_one_type() -> None:
    """formats.html#choice: only one value[x] may be present."""
    error = invalid(obs(valueQuantity={"value": 1}, valueString="x"))
    assert expressions(error) == ["Observation.value.ofType(Quantity)",
                                  "Observation.value.ofType(string)"]


def test_long_values_are_shortened_in_messages() -> None:
    error = invalid(obs(issued="x" * 500))
    assert len(error.issues[0].diagnostics) < 150 and "…" in error.issues[0].diagnostics


# -- JSON representation the model's lax parsing lets through (json.html) -----------------


@pytest.mark.parametrize(("extra", "path", "words"), [
    ({"valueQuantity": {"value": "6.3"}}, "Observation.value.ofType(Quantity).value",
     "must be a JSON number, got string"),
    ({"valueBoolean": "true"}, "Observation.value.ofType(boolean)", "JSON boolean"),
    ({"valueInteger": "3"}, "Observation.value.ofType(integer)", "JSON number"),
    ({"valueInteger": True}, "Observation.value.ofType(integer)", "JSON number"),
    ({"valueString": None}, "Observation.value.ofType(string)", "null"),
    ({"note": []}, "Observation.note", "empty arrays"),
    ({"subject": {}}, "Observation.subject", "ele-1"),
    ({"fhir_comments": ["x"]}, "Observation.fhir_comments", "unknown element"),
    ({"implicitRules__ext": {"id": "x"}}, "Observation.implicitRules__ext", "unknown element"),
    ({"contained": [{"id": "x"}]}, "Observation.contained[0].resourceType", "resourceType"),
    ({"contained": [{"resourceType": "Foo"}]}, "Observation.contained[0].resourceType",
     "unknown resource type"),
])
def test_json_representation(extra: dict[str, Any], path: str, words: str) -> None:
    """json.html#primitive: numbers and booleans are JSON numbers and booleans; null
    only keeps primitive arrays aligned; no empty objects or arrays (ele-1)."""
    error = invalid(obs(**extra))
    assert expressions(error) == [path]
    assert words in error.issues[0].diagnostics


def test_patient_active_must_be_boolean() -> None:
    error = invalid({"resourceType": "Patient", "active": 1})
    assert expressions(error) == ["Patient.active"]


def test_null_aligns_primitive_arrays_with_their_extensions() -> None:
    """json.html#primitive: ``"given": ["a", null], "_given": [null, {...}]``."""
    validate_resource({"resourceType": "Patient", "name": [{
        "given": ["Peter", None],
        "_given": [None, {"extension": [{"url": "http://x", "valueString": "y"}]}]}]})


def test_r4_only_contained_type_is_accepted() -> None:
    """R4B dropped MedicinalProduct; as a contained resource it is still valid R4."""
    validate_resource(obs(contained=[{"resourceType": "MedicinalProduct", "id": "m"}]))
    error = invalid(obs(contained=[{"resourceType": "MedicinalProduct", "id": "m"},
                                   {"resourceType": "Patient", "gender": 1}]))
    assert expressions(error) == ["Observation.contained[1].gender"]


def test_structure_errors_come_before_profile_rules() -> None:
    error = invalid(obs(status="bogus", issued="x"))
    assert expressions(error) == ["Observation.issued"]


def test_the_input_is_not_modified() -> None:
    body = obs(contained=[{"resourceType": "MedicinalProduct", "id": "m"}])
    before = repr(body)
    validate_resource(body)
    assert repr(body) == before


def test_outcome_is_an_operation_outcome() -> None:
    outcome = invalid(obs(foo=1)).outcome()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["expression"] == ["Observation.foo"]
