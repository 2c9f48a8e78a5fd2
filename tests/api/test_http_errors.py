"""Content negotiation and bad input: every failure is a 4xx OperationOutcome.

FHIR R4 http.html#mime-type (formats, _format, _pretty), http.html#summary (status
codes), operationoutcome.html (issues with FHIRPath expressions).
"""

from __future__ import annotations

import json

import pytest

from tests.factories import patient


def outcome(r) -> dict:
    body = r.get_json()
    assert body["resourceType"] == "OperationOutcome", body
    assert body["issue"] and all(i["severity"] and i["code"] for i in body["issue"])
    return body


@pytest.mark.parametrize("fmt,mime", [
    ("json", "application/fhir+json"),
    ("application/fhir+json", "application/fhir+json"),
    ("application/json", "application/json"),
])
def test_format_parameter_selects_json_flavour_http_mime_type(fhir, fmt, mime):
    r = fhir.get(f"metadata?_format={fmt}")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith(mime)


@pytest.mark.parametrize("accept,mime", [
    ("application/fhir+json", "application/fhir+json"),
    ("application/json", "application/json"),
    ("*/*", "application/fhir+json"),
    ("text/html,application/xhtml+xml,*/*;q=0.8", "application/fhir+json"),
])
def test_accept_header_negotiation_http_mime_type(fhir, accept, mime):
    r = fhir.get("metadata", headers={"Accept": accept})
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith(mime)


@pytest.mark.parametrize("how", [
    {"url": "metadata?_format=yaml"},
    {"url": "metadata?_format=text/turtle"},
    {"url": "metadata", "headers": {"Accept": "text/turtle"}},
    {"url": "Patient/x", "headers": {"Accept": "image/png"}},
    {"url": "metadata", "headers": {"Accept": "text/plain"}},
])
def test_unknown_format_is_406_operation_outcome(fhir, how):
    r = fhir.get(how["url"], headers=how.get("headers"))
    assert r.status_code == 406
    outcome(r)


def test_pretty_indents(fhir):
    compact = fhir.get("metadata").data
    pretty = fhir.get("metadata?_pretty=true").data
    assert b"\n  " in pretty and b"\n  " not in compact
    assert json.loads(pretty)["resourceType"] == "CapabilityStatement"


def test_malformed_json_is_400(fhir):
    r = fhir.post("Patient", '{"resourceType": "Patient", ')
    assert r.status_code == 400
    assert "JSON" in outcome(r)["issue"][0]["diagnostics"]


@pytest.mark.parametrize("body", ['[]', '"x"', '42', 'null', '{}', '{"resourceType": 3}'])
def test_json_that_is_no_resource_is_400(fhir, body):
    r = fhir.post("Patient", body)
    assert r.status_code == 400
    outcome(r)


def test_body_type_must_match_url_type_400(fhir):
    r = fhir.post("Patient", {"resourceType": "Observation", "status": "final", "code": {"text": "x"}})
    assert r.status_code == 400
    outcome(r)


def test_invalid_datatype_is_400_with_fhirpath(fhir):
    r = fhir.post("Patient", patient(birthDate="not-a-date", active="yes"))
    assert r.status_code == 400
    issues = outcome(r)["issue"]
    expressions = {e for i in issues for e in i.get("expression", [])}
    assert "Patient.birthDate" in expressions
    assert "Patient.active" in expressions


def test_unknown_element_is_400_with_fhirpath(fhir):
    r = fhir.post("Patient", patient(favouriteColour="blue"))
    assert r.status_code == 400
    assert outcome(r)["issue"][0]["expression"] == ["Patient.favouriteColour"]


def test_unknown_type_404_unsupported_type_404(fhir):
    r = fhir.get("Banana/1")
    assert r.status_code == 404
    assert "Unknown resource type" in outcome(r)["issue"][0]["diagnostics"]
    r = fhir.get("Encounter/1")
    assert r.status_code == 404
    assert "not supported" in outcome(r)["issue"][0]["diagnostics"]


def test_wrong_method_is_405(fhir):
    r = fhir.client.open("metadata", method="DELETE")
    assert r.status_code == 405
    outcome(r)
    r = fhir.client.open("Patient/x/_history/1", method="PUT", data="{}",
                         content_type="application/fhir+json")
    assert r.status_code == 405
    outcome(r)


@pytest.mark.parametrize("ctype", ["application/xml-patch+xml", "text/plain",
                                   "application/x-www-form-urlencoded"])
def test_unsupported_media_type_is_415(fhir, ctype):
    r = fhir.post("Patient", json.dumps(patient()), content_type=ctype)
    assert r.status_code == 415
    outcome(r)


def test_body_over_limit_is_413(fhir, app):
    app.config["MAX_CONTENT_LENGTH"] = 2000
    big = patient(text={"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">"
                        + "x" * 5000 + "</div>"})
    r = fhir.post("Patient", big)
    assert r.status_code == 413
    outcome(r)
    assert fhir.get("Patient?_summary=count").get_json()["total"] == 0


def test_no_500_for_garbage_bodies(fhir):
    for body in [b"\xff\xfe\x00", b"{" * 10000, b'{"resourceType":"Patient","name":[[[]]]}',
                 b'{"resourceType":"Patient","id":"' + b"x" * 100 + b'"}']:
        r = fhir.post("Patient", body)
        assert 400 <= r.status_code < 500, r.data[:200]
        outcome(r)
