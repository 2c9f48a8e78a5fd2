"""The parameter tables (patient.html#search, observation.html#search,
diagnosticreport.html#search, search.html#all) and their indexes."""

from __future__ import annotations

import pytest

from fhirserver.search.catalog import parameters_for
from fhirserver.search.definitions import TABLES
from fhirserver.search.parameters import TYPES
from fhirserver.search.types import HANDLERS

R4_NAMES = {
    "Patient": {
        "active", "address", "address-city", "address-country", "address-postalcode",
        "address-state", "address-use", "birthdate", "death-date", "deceased", "email",
        "family", "gender", "general-practitioner", "given", "identifier", "language", "link",
        "name", "organization", "phone", "phonetic", "telecom",
    },
    "Observation": {
        "based-on", "category", "code", "code-value-concept", "code-value-date",
        "code-value-quantity", "code-value-string", "combo-code", "combo-code-value-concept",
        "combo-code-value-quantity", "combo-data-absent-reason", "combo-value-concept",
        "combo-value-quantity", "component-code", "component-code-value-concept",
        "component-code-value-quantity", "component-data-absent-reason",
        "component-value-concept", "component-value-quantity", "data-absent-reason", "date",
        "derived-from", "device", "encounter", "focus", "has-member", "identifier", "method",
        "part-of", "patient", "performer", "specimen", "status", "subject", "value-concept",
        "value-date", "value-quantity", "value-string",
    },
    "DiagnosticReport": {
        "based-on", "category", "code", "conclusion", "date", "encounter", "identifier",
        "issued", "media", "patient", "performer", "result", "results-interpreter",
        "specimen", "status", "subject",
    },
}
COMMON = {"_id", "_lastUpdated", "_tag", "_profile", "_security", "_source"}


@pytest.mark.parametrize("rtype", sorted(R4_NAMES))
def test_table_is_the_r4_table_plus_common_parameters(rtype: str) -> None:
    assert set(parameters_for(rtype)) == R4_NAMES[rtype] | COMMON


@pytest.mark.parametrize("rtype", sorted(TABLES))
def test_every_parameter_has_a_known_type_and_a_definition(rtype: str) -> None:
    for p in parameters_for(rtype).values():
        assert p.type in TYPES and p.type in HANDLERS
        if p.type == "composite":
            assert p.bases and len(p.components) == 2
            assert p.components[0].type == "token"
        else:
            assert p.paths and all(":" in path for path in p.paths)


def test_unknown_type_has_the_common_parameters() -> None:
    assert set(parameters_for("Encounter")) == COMMON


def test_observation_patient_is_subject_restricted_to_patient() -> None:
    p = parameters_for("Observation")["patient"]
    assert (p.type, p.paths, p.targets) == ("reference", ("subject[is=Patient]:Reference",),
                                            ("Patient",))
