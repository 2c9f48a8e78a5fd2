"""The kick-off parameters (Bulk Data Access IG 2.0.0, export.html#query-parameters),
checked without a server."""

from __future__ import annotations

import pytest

from fhirserver import errors
from fhirserver.bulk.request import parse

TYPES = ("Patient", "Observation", "DiagnosticReport")


def run(params, *, lenient=False, allowed=lambda t: True, level="system"):
    return parse(level, params, lenient=lenient, candidates=TYPES, allowed=allowed)


def test_defaults_every_type_the_scopes_allow_as_fhir_ndjson():
    req = run([], allowed=lambda t: t != "DiagnosticReport")
    assert req.types == ("Patient", "Observation")
    assert req.output_format == "application/fhir+ndjson"
    assert req.queries("Patient") == ((),)


@pytest.mark.parametrize("fmt", ["application/fhir+ndjson", "application/ndjson", "ndjson"])
def test_output_format_abbreviations_are_accepted(fmt):
    assert run([("_outputFormat", fmt)]).output_format == fmt


def test_type_is_comma_separated_and_repeatable_in_the_order_asked():
    req = run([("_type", "Observation, Patient"), ("_type", "Observation")])
    assert req.types == ("Observation", "Patient")


def test_type_filters_or_within_a_type_and_since_is_last_updated_gt():
    req = run([("_type", "Observation"), ("_since", "2024-01-02T03:04:05+08:00"),
               ("_typeFilter", "Observation?code=a%2Cb&status=final,Observation?category=lab")])
    assert req.queries("Observation") == (
        (("code", "a,b"), ("status", "final"), ("_lastUpdated", "gt2024-01-02T03:04:05+08:00")),
        (("category", "lab"), ("_lastUpdated", "gt2024-01-02T03:04:05+08:00")))


def test_since_may_name_a_leap_second():
    """Bulk Data Export: ``_since`` is an instant, and datatypes.html#instant allows a
    leap second; the search reads it as the last second of its minute."""
    req = run([("_type", "Observation"), ("_since", "2016-12-31T23:59:60Z")])
    assert req.queries("Observation") == ((("_lastUpdated", "gt2016-12-31T23:59:60Z"),),)


def test_a_type_the_scopes_do_not_allow_is_403_naming_type():
    with pytest.raises(errors.Forbidden) as caught:
        run([("_type", "Observation")], allowed=lambda t: t == "Patient")
    assert caught.value.issues[0].expression == ("_type",)
    with pytest.raises(errors.Forbidden):
        run([], allowed=lambda t: False)


@pytest.mark.parametrize(("params", "name"), [
    ([("_since", "2024-01-01")], "_since"),  # a date, no instant
    ([("_since", "2024-02-30T00:00:00Z")], "_since"),
    ([("_outputFormat", "application/fhir+json")], "_outputFormat"),
    ([("_type", "Group")], "_type"),
    ([("_typeFilter", "Observation")], "_typeFilter"),
    ([("_typeFilter", "Observation?_sort=date")], "_typeFilter"),
    ([("_elements", "id")], "_elements"),
    ([("includeAssociatedData", "LatestProvenanceResources")], "includeAssociatedData"),
    ([("patient", "Patient/1")], "patient"),  # system level
])
def test_what_is_not_supported_or_malformed_is_400_naming_it(params, name):
    with pytest.raises(errors.Invalid) as caught:
        run(params)
    assert caught.value.status == 400
    assert caught.value.issues[0].expression == (name,)


def test_lenient_handling_ignores_unsupported_parameters_and_says_so():
    req = run([("_elements", "id"), ("_type", "Group,Patient")], lenient=True)
    assert req.types == ("Patient",)
    assert len(req.ignored) == 2 and "_elements" in req.ignored[1]


def test_patient_level_takes_patient_references():
    req = run([("patient", "Patient/1"), ("patient", "2"), ("patient", "Patient/1")],
              level="patient")
    assert req.patients == ("1", "2")
    with pytest.raises(errors.Invalid):
        run([("patient", "Observation/1/x")], level="patient")
