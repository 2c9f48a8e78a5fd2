"""Narratives clients render are safe XHTML with content: txt-1 and txt-2 (R4
narrative.html#Narrative) on create, update and transaction, in JSON and XML
(http.html#create: "400 Bad Request - resource could not be parsed or failed basic
FHIR validation rules"). Nothing of a refused write is stored."""

from __future__ import annotations

import pytest

from fhirserver.model import xml_text
from tests import factories as f

X = '<div xmlns="http://www.w3.org/1999/xhtml">'
XML = "application/fhir+xml"
ATTACKS = {
    "script": X + "<p>Peter</p><script>alert(document.cookie)</script></div>",
    "iframe": X + '<iframe src="https://evil.example/"/>Peter</div>',
    "onclick": X + '<p onclick="alert(1)">Peter</p></div>',
    "javascript-url": X + '<a href=" javascript:alert(1)">Peter</a></div>',
    "empty": X + " <p/> </div>",
}
RICH = (X + '<p><b>Peter Chalmers</b> <a name="n"/><a href="#n">self</a></p><table border="1">'
        '<tr><td style="color:red">MRN</td><td>12345</td></tr></table>'
        '<img src="data:image/png;base64,iVBORw0KGgo=" alt="logo"/></div>')


def total(fhir) -> int:
    return fhir.get("Patient?_summary=count").get_json()["total"]


def assert_refused(r, expression: str = "Patient.text.div") -> None:
    assert r.status_code == 400, r.data[:300]
    body = r.get_json()
    assert body["resourceType"] == "OperationOutcome", body
    assert [i["code"] for i in body["issue"]] == ["value"] * len(body["issue"]), body
    assert expression in [e for i in body["issue"] for e in i.get("expression", ())], body


@pytest.mark.parametrize("case", list(ATTACKS))
def test_unsafe_or_empty_narrative_is_400_in_json_and_xml_nothing_stored(fhir, case):
    """narrative.html txt-1/txt-2: a create, JSON or XML, naming Patient.text.div."""
    body = f.patient("Evil", text={"status": "generated", "div": ATTACKS[case]})
    assert_refused(fhir.post("Patient", body))
    assert_refused(fhir.post("Patient", xml_text.dumps(body), content_type=XML))
    assert_refused(fhir.put("Patient/evil", {**body, "id": "evil"}))
    assert total(fhir) == 0


def test_update_with_unsafe_narrative_keeps_the_stored_version(fhir):
    """http.html#update: a refused update leaves the resource as it was."""
    pid = fhir.create(f.patient("Good", text={"status": "generated", "div": RICH}))["id"]
    evil = {**f.patient("Good"), "id": pid,
            "text": {"status": "generated", "div": ATTACKS["script"]}}
    assert_refused(fhir.put(f"Patient/{pid}", evil))
    assert_refused(fhir.put(f"Patient/{pid}", xml_text.dumps(evil), content_type=XML))
    stored = fhir.get(f"Patient/{pid}").get_json()
    assert stored["meta"]["versionId"] == "1" and stored["text"]["div"] == RICH


def test_contained_resource_narrative_is_checked(fhir):
    """narrative.html: a contained resource's narrative is rendered too."""
    inner = {"resourceType": "Patient", "id": "c",
             "text": {"status": "generated", "div": ATTACKS["onclick"]}}
    r = fhir.post("Patient", f.patient("Outer", contained=[inner]))
    assert_refused(r, "Patient.contained[0].text.div")
    assert "onclick" in r.get_json()["issue"][0]["diagnostics"]
    assert total(fhir) == 0


def test_transaction_with_unsafe_narrative_writes_nothing(fhir):
    """http.html#transaction: one refused entry fails the whole Bundle."""
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": f.patient("Fine"), "request": {"method": "POST", "url": "Patient"}},
        {"resource": f.patient("Evil", text={"status": "generated", "div": ATTACKS["script"]}),
         "request": {"method": "POST", "url": "Patient"}}]}
    r = fhir.post("", bundle)
    assert r.status_code == 400, r.get_json()
    assert "<script>" in r.get_json()["issue"][0]["diagnostics"]
    assert total(fhir) == 0


def test_rich_narrative_is_stored_and_served_in_json_and_xml(fhir):
    """narrative.html: tables, anchors, links, style attributes and images are allowed."""
    body = f.patient("Rich", text={"status": "generated", "div": RICH})
    pid = fhir.create(body)["id"]
    assert fhir.get(f"Patient/{pid}").get_json()["text"]["div"] == RICH
    r = fhir.post("Patient", xml_text.dumps(body), content_type=XML)
    assert r.status_code == 201, r.data[:300]
    assert total(fhir) == 2
