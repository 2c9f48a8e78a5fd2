"""Bad input is a 4xx OperationOutcome, never a 500, and writes nothing.

FHIR R4 http.html#summary ("the server SHALL return ... an OperationOutcome" for
errors), operationoutcome.html (issue.expression is the FHIRPath of the element at
fault), http.html#transaction and #trules (Bundle processing rules), search.html
(dates, errors), operations.html#request (Parameters bodies).
"""

from __future__ import annotations

import json

import pytest

from tests.factories import observation, patient


def outcome(r, status: int = 400) -> dict:
    assert r.status_code == status, r.get_data(as_text=True)[:500]
    body = r.get_json()
    assert body["resourceType"] == "OperationOutcome", body
    assert body["issue"] and all(i["severity"] and i["code"] and i.get("diagnostics")
                                 for i in body["issue"])
    return body


def expressions(body: dict) -> list[str]:
    return [e for i in body["issue"] for e in i.get("expression", ())]


def total(fhir, rtype: str) -> int:
    r = fhir.get(f"{rtype}?_summary=count")
    assert r.status_code == 200, r.get_json()
    return r.get_json()["total"]


def tx(*entries: dict, kind: str = "transaction") -> dict:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def post(resource: dict, **request: object) -> dict:
    return {"resource": resource, "request": {"method": "POST", "url": resource["resourceType"],
                                              **request}}


# -- 1. resourceType that is not a string (json.html#resources) -----------------------------


@pytest.mark.parametrize("rtype", [{"a": 1}, ["Patient"]])
@pytest.mark.parametrize("how", ["post", "put", "conditional-put"])
def test_non_string_resource_type_is_400_naming_it_json_resources(fhir, rtype, how):
    existing = fhir.create(patient())["id"]
    body = {"resourceType": rtype, "name": [{"family": "X"}]}
    if how == "post":
        r = fhir.post("Patient", body)
    elif how == "put":
        r = fhir.put(f"Patient/{existing}", {**body, "id": existing})
    else:
        r = fhir.put("Patient?family=Nobody", body)
    assert "Patient.resourceType" in expressions(outcome(r))
    assert total(fhir, "Patient") == 1


@pytest.mark.parametrize("rtype", [{"a": 1}, ["Observation"], 5])
def test_non_string_contained_resource_type_is_400_json_resources(fhir, rtype):
    body = patient(contained=[{"resourceType": rtype, "id": "c1"}])
    r = fhir.post("Patient", body)
    assert "Patient.contained[0].resourceType" in expressions(outcome(r))
    assert total(fhir, "Patient") == 0


@pytest.mark.parametrize("kind", ["transaction", "batch"])
def test_non_string_resource_type_in_bundle_entry_is_400_http_transaction(fhir, kind):
    bad = {"resourceType": {"x": 1}, "name": [{"family": "X"}]}
    bundle = tx(post(patient()), post(patient()),
                {"resource": bad, "request": {"method": "POST", "url": "Patient"}}, kind=kind)
    r = fhir.post("", bundle)
    if kind == "transaction":
        assert "Bundle.entry[2].resource.resourceType" in expressions(outcome(r))
        assert total(fhir, "Patient") == 0
    else:
        assert r.status_code == 200
        entry = r.get_json()["entry"][2]["response"]
        assert entry["status"].startswith("400")
        assert "Bundle.entry[2].resource.resourceType" in expressions(entry["outcome"])
        assert total(fhir, "Patient") == 2


# -- 5. operation bodies that are JSON but no Parameters (operations.html#request) ----------

NOT_PARAMETERS = ["[]", '"x"', "42", "null", "true",
                  '{"resourceType": "Parameters", "parameter": 5}',
                  '{"resourceType": "Parameters", "parameter": {"name": "x"}}',
                  '{"resourceType": ["Parameters"]}',
                  '{"resourceType": "Parameters", "parameter": [{"name": 5, "valueString": "a"}]}',
                  '{"resourceType": "Parameters", "parameter": [{"name": "x", "valueString": {}}]}']

OPERATIONS = ["Patient/{pid}/$everything", "Observation/$lastn", "Patient/$ihe-pix",
              "Patient/$merge", "Patient/$match", "Patient/{pid}/$break-glass",
              "Patient/{pid}/$consent", "Patient/{pid}/$care-team", "Patient/$scan-card",
              "Patient/{pid}/$bind-family", "Patient/{pid}/$accept-family",
              "Patient/{pid}/$unbind-family"]


@pytest.mark.parametrize("body", NOT_PARAMETERS)
def test_operation_body_that_is_no_parameters_is_400_operations_request(fhir, body):
    pid = fhir.create(patient())["id"]
    for url in OPERATIONS:
        r = fhir.post(url.format(pid=pid), body)
        assert 400 <= r.status_code < 500, (url, r.status_code, r.get_data(as_text=True)[:300])
        assert r.get_json()["resourceType"] == "OperationOutcome", url
    assert total(fhir, "Patient") == 1


@pytest.mark.parametrize("body", ["[]", '"x"', "42", "null", '{"patient": 5, "client_id": []}'])
def test_launch_with_json_that_is_no_object_is_400(client, body):
    r = client.post("/oauth/launch", data=body, content_type="application/json")
    assert 400 <= r.status_code < 500, r.get_data(as_text=True)
    assert r.get_json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize("body", ["[]", '"x"', "42", "null", '{"grant_type": 5}'])
def test_token_with_json_body_is_oauth_error_rfc6749_5_2(client, body):
    r = client.post("/oauth/token", data=body, content_type="application/json")
    assert r.status_code == 400
    assert r.get_json()["error"] == "invalid_request"


def test_match_count_must_be_a_positive_integer_not_a_boolean(fhir):
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": patient()}, {"name": "count", "valueInteger": True}]}
    r = fhir.post("Patient/$match", body)
    assert "Parameters.parameter[1]" in expressions(outcome(r))
