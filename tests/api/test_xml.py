"""FHIR XML: reads, searches, writes, Bundles and OperationOutcomes in
application/fhir+xml (R4 xml.html, http.html#mime-type).

The XML a client sends is made here from the JSON form by the server's own writer
and checked independently with ``fhir.resources``, which must read it into the same
model as the JSON; XML that ``fhir.resources`` itself writes is read too.
"""

from __future__ import annotations

import json

import pytest
from fhir.resources.R4B import get_fhir_model_class
from lxml import etree

from fhirserver.model import json_text, xml_text
from tests import factories as f
from tests.api.test_disclosure import As, assert_masked, world  # noqa: F401  (fixture)
from tests.api.test_spec_examples import examples, stand_ins, strip_server_meta

XML = "application/fhir+xml"
ACCEPT_XML = {"Accept": XML}


def canonical(value):
    """The JSON form with each narrative div as canonical XML: the same XHTML may be
    spelt differently (``&quot;`` or ``"``) once it has been an XML element."""
    if isinstance(value, dict):
        return {k: etree.tostring(etree.fromstring(v), method="c14n")
                if k == "div" and isinstance(v, str) else canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        return [canonical(v) for v in value]
    return value


def from_xml(response) -> dict:
    assert response.headers["Content-Type"] == f"{XML}; charset=utf-8", response.data[:200]
    return xml_text.loads(response.data)


def post_xml(fhir, url: str, resource: dict | bytes, **kw):
    body = resource if isinstance(resource, bytes) else xml_text.dumps(resource)
    return fhir.post(url, body, content_type=XML, **kw)


def xml_outcome(response) -> dict:
    body = from_xml(response)
    assert body["resourceType"] == "OperationOutcome" and body["issue"], body
    return body


def test_writer_output_is_the_model_fhir_resources_reads_from_the_json():
    """xml.html: an independent reader gets the same resource from our XML as from the
    JSON (narratives aside, whose markup may be spelt differently)."""
    for example in examples():
        cls = get_fhir_model_class(example["resourceType"])
        from_json = json.loads(cls.model_validate(example).model_dump_json())
        from_ours = json.loads(cls.model_validate_xml(xml_text.dumps(example)).model_dump_json())
        from_json.pop("text", None), from_ours.pop("text", None)
        assert from_ours == from_json, example["id"]


@pytest.fixture
def loaded(fhir):
    """Every example PUT by one transaction sent in XML, answered in XML."""
    resources = examples()
    entries = [
        {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
        for r in resources + stand_ins(resources)
    ]
    r = post_xml(fhir, "", {"resourceType": "Bundle", "type": "transaction", "entry": entries},
                 headers=ACCEPT_XML)
    assert r.status_code == 200, r.data[:500]
    answer = get_fhir_model_class("Bundle").model_validate_xml(r.data)
    assert answer.type == "transaction-response" and len(answer.entry) == len(entries)
    return resources


def test_every_spec_example_sent_in_xml_reads_back_as_its_json(fhir, loaded):
    """xml.html, json.html: the same resource in either format; read back as JSON and
    as XML it equals the JSON example (server-set meta aside)."""
    for example in loaded:
        url = f"{example['resourceType']}/{example['id']}"
        as_json = fhir.get(url)
        assert canonical(strip_server_meta(as_json.get_json())) == \
            canonical(strip_server_meta(example)), example["id"]
        as_xml = fhir.get(url, headers=ACCEPT_XML)
        assert as_xml.status_code == 200
        assert canonical(strip_server_meta(from_xml(as_xml))) == \
            canonical(strip_server_meta(example)), example["id"]
        assert as_xml.headers["ETag"] == as_json.headers["ETag"]


def test_every_spec_example_posted_in_xml_is_created(fhir, loaded):
    """http.html#create with Content-Type application/fhir+xml; the answer in JSON."""
    for example in loaded:
        r = post_xml(fhir, example["resourceType"], example)
        assert r.status_code == 201, (example["id"], r.get_json())
        got = fhir.get(f"{example['resourceType']}/{r.get_json()['id']}").get_json()
        assert canonical(strip_server_meta({**got, "id": example["id"]})) == \
            canonical(strip_server_meta(example))


def test_xml_written_by_fhir_resources_is_read_as_fhir_resources_reads_it(fhir, loaded):
    """xml.html: another writer's XML (``fhir.resources`` spells dates and numbers in
    its own way) is read into the resource that XML says."""
    for example in loaded:
        cls = get_fhir_model_class(example["resourceType"])
        sent = cls.model_validate(example).model_dump_xml()
        r = post_xml(fhir, example["resourceType"], sent.encode() if isinstance(sent, str) else sent)
        assert r.status_code == 201, (example["id"], r.get_json())
        got = strip_server_meta(r.get_json())
        got["id"] = example["id"]
        expected = json.loads(cls.model_validate_xml(sent).model_dump_json())
        assert canonical(json.loads(cls.model_validate(got).model_dump_json())) == \
            canonical(strip_server_meta(expected)), example["id"]


def test_decimals_keep_their_precision_in_xml(fhir):
    """datatypes.html#decimal: 0.50 stays 0.50 whichever way it travels."""
    obs = f.observation(None, value=1.0)
    obs["valueQuantity"]["value"] = json_text.Number("0.50")
    obs["referenceRange"] = [{"low": {"value": json_text.Number("1.0e2")},
                              "high": {"value": json_text.Number("12345678901234567890.120")}}]
    r = post_xml(fhir, "Observation", obs)
    assert r.status_code == 201, r.get_json()
    rid = r.get_json()["id"]
    text = fhir.get(f"Observation/{rid}").data
    assert b'"value":0.50' in text and b"1.0e2" in text and b"12345678901234567890.120" in text
    xml = fhir.get(f"Observation/{rid}", headers=ACCEPT_XML).data
    assert b'<value value="0.50"/>' in xml and b'value="1.0e2"' in xml
    assert b'value="12345678901234567890.120"' in xml
    # JSON in, XML out.
    r = fhir.post("Observation", json_text.dumps(obs), headers=ACCEPT_XML)
    assert r.status_code == 201 and b'<value value="0.50"/>' in r.data


def test_xml_specifics_round_trip(fhir):
    """xml.html: element ids and extension urls as attributes, primitive extensions
    (``_birthDate``), contained resources, the XHTML narrative, the FHIR namespace."""
    patient = f.patient("Chalmers", birthDate="1974-12-25", id="xml-1") | {
        "_birthDate": {"id": "bd", "extension": [{
            "url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime",
            "valueDateTime": "1974-12-25T14:35:45-05:00"}]},
        "text": {"status": "generated",
                 "div": '<div xmlns="http://www.w3.org/1999/xhtml"><p>Peter <b>Chalmers</b>'
                        " &amp; co</p></div>"},
        "contained": [{"resourceType": "Organization", "id": "org", "name": "Clinic"}],
        "managingOrganization": {"reference": "#org", "id": "ref-1"},
    }
    patient["name"][0]["given"] = ["Peter", "James"]
    patient["name"][0]["text"] = 'O"Brien & <Sons>\n\tline two, 王'  # escaped, kept whole
    patient["name"][0]["_given"] = [None, {"extension": [{"url": "http://example.org/x",
                                                          "valueString": "y"}]}]
    sent = xml_text.dumps(patient)
    tree = etree.fromstring(sent)
    ns = {"f": xml_text.FHIR_NS, "h": xml_text.XHTML_NS}
    assert tree.tag == "{http://hl7.org/fhir}Patient"
    assert tree.find("f:birthDate", ns).get("id") == "bd"
    assert tree.find("f:managingOrganization", ns).get("id") == "ref-1"
    assert tree.find("f:text/h:div/h:p/h:b", ns).text == "Chalmers"
    assert tree.find("f:contained/f:Organization/f:name", ns).get("value") == "Clinic"
    r = fhir.put("Patient/xml-1", sent, content_type=XML, headers=ACCEPT_XML)
    assert r.status_code == 201, r.data
    assert canonical(strip_server_meta(from_xml(r))) == canonical(patient)
    assert strip_server_meta(fhir.get("Patient/xml-1").get_json()) == patient


@pytest.mark.parametrize("how", [
    {"url": "Patient?_format=xml"},
    {"url": "Patient?_format=application/fhir%2Bxml"},
    {"url": "Patient?_format=application/fhir+xml"},  # an unescaped "+" reads as a space
    {"url": "Patient", "headers": {"Accept": XML}},
    {"url": "Patient", "headers": {"Accept": "application/xml"}, "type": "application/xml"},
    {"url": "Patient", "headers": {"Accept": "text/xml"}, "type": "text/xml"},
    {"url": "Patient", "headers": {"Accept": "application/fhir+xml, application/json;q=0.5"}},
])
def test_search_answers_an_xml_bundle_fhir_resources_reads(fhir, how):
    """http.html#mime-type: _format and Accept; the searchset Bundle with resources of
    several types (an _include) is one XML document."""
    pid = fhir.create(f.patient("Xml"))["id"]
    fhir.create(f.observation(pid))
    url = how["url"] + ("&" if "?" in how["url"] else "?") + "_include=Observation:subject"
    r = fhir.get(url.replace("Patient", "Observation", 1), headers=how.get("headers"))
    assert r.status_code == 200, r.data
    assert r.headers["Content-Type"] == f"{how.get('type', XML)}; charset=utf-8"
    bundle = get_fhir_model_class("Bundle").model_validate_xml(r.data)
    assert {e.resource.get_resource_type() for e in bundle.entry} == {"Observation", "Patient"}


def test_json_still_wins_a_tie_and_406_stays_json(fhir):
    """http.html#mime-type: */* gets JSON; a 406 is an OperationOutcome in JSON."""
    assert fhir.get("metadata", headers={"Accept": "*/*"}).headers["Content-Type"].startswith(
        "application/fhir+json")
    r = fhir.get("Patient/x", headers={"Accept": "text/plain"})
    assert r.status_code == 406 and r.get_json()["resourceType"] == "OperationOutcome"
    r = fhir.get("Patient?_format=yaml")
    assert r.status_code == 406 and "xml" in r.get_json()["issue"][0]["diagnostics"]


@pytest.mark.parametrize("asked,answered", [
    ("application/fhir+json", "application/fhir+json"), ("application/json", "application/json"),
    ("application/json+fhir", "application/fhir+json"), ("application/fhir+xml", XML),
    ("application/xml", "application/xml"), ("text/xml", "text/xml"),
    ("application/xml+fhir", XML)])
def test_each_media_type_asked_alone_or_among_others_is_the_one_answered(fhir, asked, answered):
    """http.html#mime-type: a client naming one media type gets it, whether Accept
    names it alone or weighted beside one it likes less, for the 406 check before
    the work and for the answer itself."""
    for accept in (asked, f"{asked}, text/plain;q=0.1", f"text/plain;q=0.2, {asked};q=0.9"):
        r = fhir.get("metadata", headers={"Accept": accept})
        assert r.status_code == 200, (accept, r.data[:200])
        assert r.headers["Content-Type"] == f"{answered}; charset=utf-8", accept


def test_metadata_history_and_vread_in_xml(fhir):
    """http.html#capabilities: format lists XML; history and vread in XML; _pretty."""
    r = fhir.get("metadata?_format=xml&_pretty=true")
    assert r.status_code == 200 and b"\n  <" in r.data
    cs = from_xml(r)
    assert XML in cs["format"] and "application/fhir+json" in cs["format"]
    pid = fhir.create(f.patient("Hist"))["id"]
    history = fhir.get(f"Patient/{pid}/_history", headers=ACCEPT_XML)
    assert from_xml(history)["type"] == "history"
    vread = from_xml(fhir.get(f"Patient/{pid}/_history/1", headers=ACCEPT_XML))
    assert vread["id"] == pid and vread["meta"]["versionId"] == "1"
    assert b"\n" not in fhir.get(f"Patient/{pid}", headers=ACCEPT_XML).data.strip().split(
        b"?>", 1)[1].strip()


def test_errors_to_an_xml_client_are_xml_operation_outcomes(fhir):
    """http.html#return: errors are OperationOutcomes, in the format asked for."""
    r = fhir.get("Patient/missing", headers=ACCEPT_XML)
    assert r.status_code == 404
    xml_outcome(r)
    bad = f.patient("X") | {"gender": "robot"}
    r = post_xml(fhir, "Patient", bad, headers=ACCEPT_XML)
    assert r.status_code in (400, 422)
    assert xml_outcome(r)["issue"][0]["expression"] == ["Patient.gender"]
    r = fhir.get("Nope", headers=ACCEPT_XML)
    assert r.status_code == 404
    xml_outcome(r)


BAD_XML = {
    "malformed": (b"<Patient xmlns='http://hl7.org/fhir'><id value='x'/>", "well-formed"),
    "no namespace": (b"<Patient><id value='x'/></Patient>", "no namespace"),
    "wrong namespace": (b"<Patient xmlns='http://example.org'/>", "namespace 'http://example.org'"),
    "wrong root": (b"<Observation xmlns='http://hl7.org/fhir'><status value='final'/>"
                   + b"<code><text value='x'/></code></Observation>", "does not match"),
    "unknown root": (b"<Foo xmlns='http://hl7.org/fhir'/>", "Foo"),
    "unknown element": (b"<Patient xmlns='http://hl7.org/fhir'><colour value='x'/></Patient>",
                        "unknown element 'colour'"),
    "text content": (b"<Patient xmlns='http://hl7.org/fhir'><gender>male</gender></Patient>",
                     "value"),
    "repeated singleton": (b"<Patient xmlns='http://hl7.org/fhir'><gender value='male'/>"
                           + b"<gender value='female'/></Patient>", "more than once"),
    "bad boolean": (b"<Patient xmlns='http://hl7.org/fhir'><active value='yes'/></Patient>",
                    "not a boolean"),
    "empty": (b"   ", "empty"),
    "utf-16": ('<?xml version="1.0" encoding="UTF-16"?><Patient xmlns="http://hl7.org/fhir"/>'
               .encode("utf-16"), "XML"),
}


@pytest.mark.parametrize("case", list(BAD_XML))
def test_bad_xml_is_400_naming_the_problem(fhir, case):
    """xml.html: FHIR elements in the FHIR namespace, values in value attributes; the
    resource type must be the URL's (http.html#update)."""
    body, words = BAD_XML[case]
    r = fhir.put("Patient/x", body, content_type=XML)
    assert r.status_code == 400, (case, r.data)
    assert words in r.get_json()["issue"][0]["diagnostics"], r.get_json()


XXE = [
    (b'<?xml version="1.0"?><!DOCTYPE Patient [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
     b'<Patient xmlns="http://hl7.org/fhir"><name><family value="&x;"/></name></Patient>'),
    (b'<!DOCTYPE Patient [<!ENTITY % p SYSTEM "http://127.0.0.1:1/x.dtd"> %p;]>'
     b'<Patient xmlns="http://hl7.org/fhir"/>'),
    (b'<!DOCTYPE Patient [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
     b'<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">'
     b'<!ENTITY e "&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;"><!ENTITY g "&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;">]>'
     b'<Patient xmlns="http://hl7.org/fhir"><name><family value="&g;"/></name></Patient>'),
    ('<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE Patient [<!ENTITY x SYSTEM '
     '"file:///etc/passwd">]><Patient xmlns="http://hl7.org/fhir"><name><family value="&x;"/>'
     '</name></Patient>').encode("utf-16"),
    b'<Patient xmlns="http://hl7.org/fhir"><name><family value="&x;"/></name></Patient>',
    (b'<Patient xmlns="http://hl7.org/fhir" xmlns:xi="http://www.w3.org/2001/XInclude">'
     b'<xi:include href="file:///etc/passwd" parse="text"/></Patient>'),
]


@pytest.mark.parametrize("index", range(len(XXE)))
def test_entities_dtds_and_xinclude_are_refused_and_nothing_leaks(fhir, index):
    """xml.html (security: XML entities): no DTD, no external or internal entities,
    no entity expansion, nothing fetched; a 400, never a file's content."""
    for method in ("post", "put"):
        url = "Patient" if method == "post" else "Patient/xxe"
        r = getattr(fhir, method)(url, XXE[index], content_type=XML, headers=ACCEPT_XML)
        assert r.status_code == 400, r.data
        assert b"root:" not in r.data and b"aaaaaaaaaa" not in r.data
        xml_outcome(r)
    assert fhir.get("Patient?_summary=count").get_json()["total"] == 0


def test_deep_and_huge_xml_is_refused_without_a_500(fhir, app):
    """The body limit (FHIR_MAX_BODY_BYTES) applies to XML as to JSON; nesting beyond
    what the parser or FHIR_MAX_JSON_DEPTH allows is a 400."""
    deep = (b"<Patient xmlns='http://hl7.org/fhir'>" + b"<extension url='u'>" * 5000
            + b"</extension>" * 5000 + b"</Patient>")
    r = fhir.post("Patient", deep, content_type=XML)
    assert r.status_code == 400, r.data[:300]
    app.config["MAX_CONTENT_LENGTH"] = 2000
    big = xml_text.dumps(f.patient("X" * 5000))
    r = fhir.post("Patient", big, content_type=XML)
    assert r.status_code == 413
    assert fhir.get("Patient?_summary=count").get_json()["total"] == 0


def test_patch_with_xml_is_415_saying_json_patch(fhir):
    """http.html#patch: this server takes JSON Patch only."""
    pid = fhir.create(f.patient("P"))["id"]
    r = fhir.patch(f"Patient/{pid}", b"<diff/>", content_type="application/xml-patch+xml")
    assert r.status_code == 415
    assert "JSON Patch" in r.get_json()["issue"][0]["diagnostics"]
    r = fhir.patch(f"Patient/{pid}", b"<Parameters xmlns='http://hl7.org/fhir'/>",
                   content_type=XML)
    assert r.status_code == 415


def test_conditional_create_batch_and_operations_in_xml(fhir):
    """http.html#ccreate, http.html#transaction (batch), operations.html#request: a
    Parameters body in XML."""
    body = f.patient("Cond", identifier=[{"system": "http://example.org/mrn", "value": "m1"}])
    ine = {"If-None-Exist": "identifier=http://example.org/mrn|m1"}
    first = post_xml(fhir, "Patient", body, headers=ine)
    second = post_xml(fhir, "Patient", body, headers=ine)
    assert first.status_code == 201 and second.status_code == 200
    pid = first.get_json()["id"]
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": f"Patient/{pid}"}},
        {"request": {"method": "GET", "url": "Patient/nobody"}}]}
    r = post_xml(fhir, "", batch, headers=ACCEPT_XML)
    answer = from_xml(r)
    assert answer["type"] == "batch-response"
    assert answer["entry"][0]["resource"]["id"] == pid
    assert answer["entry"][1]["response"]["status"].startswith("404")
    assert answer["entry"][1]["response"]["outcome"]["resourceType"] == "OperationOutcome"
    fhir.create(f.observation(pid))
    params = {"resourceType": "Parameters", "parameter": [{"name": "max", "valueInteger": 1},
                                                          {"name": "patient",
                                                           "valueString": f"Patient/{pid}"}]}
    r = post_xml(fhir, "Observation/$lastn", params, headers=ACCEPT_XML)
    assert r.status_code == 200, r.data
    assert from_xml(r)["resourceType"] == "Bundle"
    r = post_xml(fhir, "Observation/$lastn", f.patient("Not parameters"))
    assert r.status_code == 400
    consent = {"resourceType": "Parameters", "parameter": [{"name": "optOut",
                                                            "valueBoolean": True}]}
    r = post_xml(fhir, f"Patient/{pid}/$consent", consent, headers=ACCEPT_XML)
    assert r.status_code == 200, r.data
    assert {"name": "optOut", "valueBoolean": True} in from_xml(r)["parameter"]


def test_masking_applies_to_xml_as_to_json(fhir, world):  # noqa: F811
    """Minimum disclosure: a clinician without the identity scope reads the same masked
    numbers and MASKED label in XML as in JSON (security-labels.html)."""
    dr, pid = world["dr"], world["pid"]
    as_json = dr.get(f"Patient/{pid}").get_json()
    as_xml = dr.get(f"Patient/{pid}", headers=ACCEPT_XML)
    assert as_xml.status_code == 200
    assert from_xml(as_xml) == as_json
    assert_masked(from_xml(as_xml), world)
    assert b"110101199003071233" not in as_xml.data
    found = dr.get(f"Patient?_id={pid}&_format=xml")
    assert_masked(from_xml(found)["entry"][0]["resource"], world)
    assert b"110101199003071233" not in found.data


def test_non_fhir_bodies_stay_as_they_are_and_openapi_lists_xml(fhir):
    """The OpenAPI document and OAuth metadata are JSON whatever Accept says; the
    document lists FHIR XML wherever a FHIR body is."""
    r = fhir.get("openapi.json", headers=ACCEPT_XML)
    assert r.status_code == 200 and r.get_json()["openapi"]
    paths = r.get_json()["paths"]
    assert XML in paths["/Patient"]["post"]["requestBody"]["content"]
    assert XML in paths["/Patient/{id}"]["get"]["responses"]["200"]["content"]
    assert XML in paths["/"]["post"]["requestBody"]["content"]
    assert XML in r.get_json()["components"]["responses"]["Error"]["content"]
    assert "application/fhir+xml" not in paths["/Patient/{id}"]["patch"]["requestBody"]["content"]
    r = fhir.get(".well-known/smart-configuration", headers=ACCEPT_XML)
    assert r.status_code == 200 and r.get_json() is not None
