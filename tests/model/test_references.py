"""References (R4 references.html): finding every Reference.reference, telling local
references from the rest, and rewriting them for transactions (bundle.html#references,
http.html#trules)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from fhirserver.model.references import (
    LocalRef,
    is_conditional_reference,
    iter_references,
    parse_reference,
    rewrite_references,
)

BASE = "https://fhir.example.org/r4"

REPORT: dict[str, Any] = {
    "resourceType": "DiagnosticReport",
    "status": "final",
    "code": {"text": "CBC"},
    "subject": {"reference": "Patient/p1", "display": "Peter"},
    "performer": [{"reference": "Organization/o1",
                   "identifier": {"value": "1", "assigner": {"reference": "Organization/o2"}}}],
    "result": [{"reference": "Observation/a"}, {"display": "no reference"},
               {"reference": "urn:uuid:7f2a3c1e-0000-4000-8000-000000000001"}],
    "extension": [{"url": "http://x", "valueReference": {"reference": "Encounter/e1"}}],
    "contained": [{"resourceType": "Observation", "id": "c1", "status": "final",
                   "code": {"text": "x"}, "subject": {"reference": "#p"}}],
    "presentedForm": [{"url": "Binary/b1"}],
    "identifier": [{"system": "http://x", "value": "reference"}],
}


def test_iter_references_finds_every_reference_with_its_path() -> None:
    assert list(iter_references(REPORT)) == [
        ("DiagnosticReport.subject.reference", "Patient/p1"),
        ("DiagnosticReport.performer[0].reference", "Organization/o1"),
        ("DiagnosticReport.performer[0].identifier.assigner.reference", "Organization/o2"),
        ("DiagnosticReport.result[0].reference", "Observation/a"),
        ("DiagnosticReport.result[2].reference", "urn:uuid:7f2a3c1e-0000-4000-8000-000000000001"),
        ("DiagnosticReport.extension[0].valueReference.reference", "Encounter/e1"),
        ("DiagnosticReport.contained[0].subject.reference", "#p"),
    ]


def test_iter_references_on_a_resource_without_any() -> None:
    assert list(iter_references({"resourceType": "Patient", "name": [{"family": "x"}]})) == []


@pytest.mark.parametrize(("ref", "expected"), [
    ("Patient/123", LocalRef("Patient", "123")),
    ("Observation/a.b-c", LocalRef("Observation", "a.b-c")),
    ("Patient/123/_history/2", LocalRef("Patient", "123", "2")),
    ("Organization/1", LocalRef("Organization", "1")),  # any R4 type, not only stored ones
    (f"{BASE}/Patient/123", LocalRef("Patient", "123")),
    (f"{BASE}/Patient/123/_history/4", LocalRef("Patient", "123", "4")),
    ("#p1", None),  # contained (references.html#contained)
    ("urn:uuid:7f2a3c1e-0000-4000-8000-000000000001", None),
    ("urn:oid:1.2.3.4", None),
    ("https://other.example.org/fhir/Patient/123", None),  # another server
    (f"{BASE}x/Patient/123", None),  # a base that merely starts the same
    ("Patient?identifier=http://x|1", None),  # conditional (http.html#trules)
    ("Patient", None),
    ("Patient/", None),
    ("Patient/a b", None),
    ("Patient/" + "a" * 65, None),
    ("Foo/1", None),  # not an R4 resource type
    ("patient/1", None),
    ("Patient/1/_history", None),
    ("Patient/1/extra", None),
    ("", None),
])
def test_parse_reference(ref: str, expected: LocalRef | None) -> None:
    assert parse_reference(ref, BASE) == expected


def test_absolute_urls_are_local_only_under_the_base() -> None:
    assert parse_reference(f"{BASE}/Patient/1") is None
    assert parse_reference(f"{BASE}/Patient/1", BASE + "/") == LocalRef("Patient", "1")


def test_local_ref_renders_as_a_relative_reference() -> None:
    assert str(LocalRef("Patient", "1")) == "Patient/1"
    assert str(LocalRef("Patient", "1", "3")) == "Patient/1/_history/3"


@pytest.mark.parametrize(("ref", "expected"), [
    ("Patient?identifier=http://x|1", True),
    ("Patient?name=peter&birthdate=1974-12-25", True),
    ("Patient?", True),
    ("Patient/1", False),
    ("Foo?x=1", False),
    ("urn:uuid:1?x", False),
    ("https://x/Patient?x=1", False),
])
def test_is_conditional_reference(ref: str, expected: bool) -> None:
    assert is_conditional_reference(ref) is expected


def test_rewrite_references_replaces_where_the_mapping_answers() -> None:
    original = copy.deepcopy(REPORT)
    mapping = {"urn:uuid:7f2a3c1e-0000-4000-8000-000000000001": "Observation/new",
               "Encounter/e1": "Encounter/e2", "#p": "#q"}
    out = rewrite_references(REPORT, mapping.get)
    assert REPORT == original  # the input is left alone
    assert [r for _, r in iter_references(out)] == [
        "Patient/p1", "Organization/o1", "Organization/o2", "Observation/a",
        "Observation/new", "Encounter/e2", "#q"]
    assert out["subject"]["display"] == "Peter"
    assert out["presentedForm"] == [{"url": "Binary/b1"}]  # Attachment.url is no Reference
    assert out["identifier"] == REPORT["identifier"]


def test_rewrite_references_with_nothing_to_change_is_an_equal_copy() -> None:
    out = rewrite_references(REPORT, lambda ref: None)
    assert out == REPORT and out is not REPORT
    out["result"][0]["reference"] = "changed"
    assert REPORT["result"][0]["reference"] == "Observation/a"


def test_rewrite_references_lets_the_mapping_reject() -> None:
    def strict(ref: str) -> str | None:
        if ref.startswith("urn:uuid:"):
            raise LookupError(ref)
        return None

    with pytest.raises(LookupError):
        rewrite_references(REPORT, strict)
