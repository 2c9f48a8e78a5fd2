"""Resource types and ids: R4 resourcelist.html, datatypes.html#id."""

from __future__ import annotations

import pytest

from fhirserver.model.types import ALL_R4_TYPES, ID_PATTERN, SUPPORTED_TYPES, is_valid_id


def test_supported_types_are_r4_types() -> None:
    assert SUPPORTED_TYPES == ("Patient", "Observation", "DiagnosticReport", "CareTeam",
                               "Practitioner", "Organization", "PractitionerRole", "Group")
    assert set(SUPPORTED_TYPES) <= ALL_R4_TYPES


def test_all_r4_types_is_the_r4_resource_list() -> None:
    """R4 valueset-resource-types.html without the abstract Resource and DomainResource."""
    assert len(ALL_R4_TYPES) == 146
    assert {"Bundle", "OperationOutcome", "Encounter", "MedicinalProduct",
            "EffectEvidenceSynthesis", "VisionPrescription"} <= ALL_R4_TYPES
    # abstract types, R5-only types and R3 names are not R4 resource types
    assert not {"Resource", "DomainResource", "ProcedureRequest", "Citation",
                "SubscriptionTopic", "patient"} & ALL_R4_TYPES


@pytest.mark.parametrize("value", ["a", "123", "example-1.2", "A" * 64, "urn-uuid-x"])
def test_valid_ids(value: str) -> None:
    """datatypes.html#id: [A-Za-z0-9\\-\\.]{1,64}."""
    assert is_valid_id(value)
    assert ID_PATTERN.fullmatch(value)


@pytest.mark.parametrize("value", ["", "A" * 65, "a b", "a/b", "a_b", "é", "x\n", 12, None])
def test_invalid_ids(value: object) -> None:
    assert not is_valid_id(value)
