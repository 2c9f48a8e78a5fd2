"""Masked identity numbers, pure (security-labels.html: the v3 ObservationValue
MASKED label; http.html#update: a masked value sent back keeps the stored one)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhirserver.model.identifier_systems import load_registry
from fhirserver.model.masking import (
    MASKED,
    carries_masks,
    labelled,
    mask,
    masked,
    masked_paths,
    restore,
    unlabelled,
)

REGISTRY = load_registry()
RID = "https://fhirserver.example/sid/resident-id"
PASSPORT = "https://fhirserver.example/sid/passport/CHN"
MRN = "https://fhirserver.example/sid/mrn/hospital-1"
CARD = "https://fhirserver.example/sid/health-card"


def entry(system: str):  # type: ignore[no-untyped-def]
    found = REGISTRY.match(system)
    assert found is not None
    return found.entry


@pytest.mark.parametrize(("system", "value", "shown"), [
    (RID, "110101199003071233", "110101********1233"),
    ("https://fhirserver.example/sid/residence-permit-hk", "810000199001010019",
     "810000********0019"),
    ("https://fhirserver.example/sid/foreign-permanent-resident-id", "911560199001010017",
     "911560********0017"),
    ("https://fhirserver.example/sid/foreign-permanent-resident-id", "USA110101012345",
     "***********2345"),  # the 2017 form is no GB 11643 number
    (PASSPORT, "E12345678", "*****5678"),
    (CARD, "12345678901234567890", "****************7890"),
    (MRN, "A1234567", "****4567"),
    (MRN, "A123456", "*******"),  # under 8 characters: nothing shown
    (MRN, "7", "*"),
])
def test_mask_keeps_the_length_and_shows_only_the_allowed_characters(system, value, shown):
    assert mask(value, entry(system)) == shown
    assert len(shown) == len(value)


PATIENT = {
    "resourceType": "Patient", "id": "p1",
    "meta": {"versionId": "4"},
    "identifier": [{"system": RID, "value": "110101199003071233"},
                   {"system": "urn:other", "value": "free-text-1234"}],
    "telecom": [{"system": "phone", "value": "13800001111"}],
    "contained": [{"resourceType": "Patient", "id": "c",
                   "identifier": [{"system": MRN, "value": "A1234567"}]}],
    "generalPractitioner": [{"identifier": {"system": PASSPORT, "value": "E12345678"}}],
}


def test_masked_copies_masks_every_registered_identifier_and_labels_it():
    out, changed = masked(PATIENT, REGISTRY)
    assert changed
    assert out["identifier"] == [{"system": RID, "value": "110101********1233"},
                                 {"system": "urn:other", "value": "free-text-1234"}]
    assert out["contained"][0]["identifier"][0]["value"] == "****4567"
    assert out["generalPractitioner"][0]["identifier"]["value"] == "*****5678"
    assert out["telecom"] == PATIENT["telecom"]  # contacts are not masked
    assert out["meta"] == {"versionId": "4", "security": [MASKED]}
    assert PATIENT["identifier"][0]["value"] == "110101199003071233"  # the input is untouched
    assert "security" not in PATIENT["meta"]


def test_nothing_to_mask_is_the_same_object_and_unlabelled():
    plain = {"resourceType": "Observation", "status": "final",
             "valueQuantity": {"value": 1, "system": "http://unitsofmeasure.org", "code": "g"}}
    assert masked(plain, REGISTRY) == (plain, False)


def test_kept_systems_stay_whole():
    card = {"resourceType": "Patient", "identifier": [{"system": CARD, "value": "1" * 20}]}
    assert masked(card, REGISTRY, keep=frozenset({CARD})) == (card, False)


def test_label_is_added_once_and_removed_leaving_the_other_labels():
    other = {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}
    twice = labelled(labelled({"resourceType": "Patient", "meta": {"security": [other]}}))
    assert twice["meta"]["security"] == [other, MASKED]
    assert unlabelled(twice) == {"resourceType": "Patient", "meta": {"security": [other]}}
    assert unlabelled(labelled({"resourceType": "Patient"})) == {"resourceType": "Patient"}
    untouched = {"resourceType": "Patient", "meta": {"security": [other]}}
    assert unlabelled(untouched) is untouched


def test_restore_puts_back_the_stored_value_a_mask_stands_for():
    shown, _ = masked(PATIENT, REGISTRY)
    shown["name"] = [{"family": "Edited"}]
    restored, forged = restore(shown, PATIENT, REGISTRY)
    assert forged == []
    assert restored["identifier"] == PATIENT["identifier"]
    assert restored["contained"] == PATIENT["contained"]
    assert restored["generalPractitioner"] == PATIENT["generalPractitioner"]
    assert restored["name"] == [{"family": "Edited"}]


def test_restore_reports_masks_of_nothing_stored_at_their_fhirpath():
    forged_body = {"resourceType": "Patient", "identifier": [
        {"system": "urn:other", "value": "a*b"},  # not an identity number: left alone
        {"system": RID, "value": "110101********9999"}]}
    restored, forged = restore(forged_body, PATIENT, REGISTRY)
    assert forged == ["Patient.identifier[1].value"]
    assert restore(forged_body, None, REGISTRY)[1] == ["Patient.identifier[1].value"]
    # a mask of the same number under another system masks nothing stored
    other = {"resourceType": "Patient", "identifier": [
        {"system": "https://fhirserver.example/sid/mrn/hospital-2", "value": "****4567"}]}
    assert restore(other, PATIENT, REGISTRY)[1] == ["Patient.identifier[0].value"]
    assert restored["identifier"][1]["value"] == "110101********9999"


def test_restore_gives_two_values_of_one_mask_back_in_stored_order():
    stored = {"resourceType": "Patient", "identifier": [
        {"system": MRN, "value": "AA001234"}, {"system": MRN, "value": "BB001234"}]}
    sent = {"resourceType": "Patient", "identifier": [
        {"system": MRN, "value": "****1234"}, {"system": MRN, "value": "****1234"}]}
    restored, forged = restore(sent, stored, REGISTRY)
    assert forged == [] and restored == stored


def test_carries_masks_looks_at_identity_numbers_only():
    assert not carries_masks(PATIENT, REGISTRY)
    assert carries_masks(masked(PATIENT, REGISTRY)[0], REGISTRY)
    assert not carries_masks({"identifier": [{"system": "urn:x", "value": "**"}],
                              "telecom": [{"system": "phone", "value": "*"}]}, REGISTRY)


def test_masked_paths_name_the_masked_identity_numbers():
    """What a write's masks stand for, by FHIRPath (security-labels.html MASKED)."""
    shown, _ = masked(PATIENT, REGISTRY)
    assert sorted(masked_paths(shown, REGISTRY)) == [
        "Patient.contained[0].identifier[0].value", "Patient.generalPractitioner[0].identifier.value",
        "Patient.identifier[0].value"]
    assert masked_paths(PATIENT, REGISTRY) == []


def test_masks_are_found_in_resources_the_json_serializer_cannot_write_whole():
    """A write's masks are found whatever else its body holds: exact decimals
    (model/json_text.py reads numbers as Decimal), an integer past 64 bits, keys
    that are no strings. A body without any ``*`` has none."""
    from decimal import Decimal

    shown, _ = masked(PATIENT, REGISTRY)
    for extra in ({"multipleBirthInteger": Decimal("2.0")}, {"multipleBirthInteger": 2**70},
                  {"extension": [{1: "odd key"}]}):
        body = {**shown, **extra}
        assert carries_masks(body, REGISTRY), extra
        assert "Patient.identifier[0].value" in masked_paths(body, REGISTRY), extra
        plain = {**PATIENT, **extra}
        assert not carries_masks(plain, REGISTRY) and masked_paths(plain, REGISTRY) == []


# -- the pre-filter: a record naming no registered system is not walked -------------

def _holds_registered(value, registry) -> bool:  # type: ignore[no-untyped-def]
    """The definition: an Identifier-shaped element whose system is registered."""
    if isinstance(value, list):
        return any(_holds_registered(v, registry) for v in value)
    if not isinstance(value, dict):
        return False
    system, number = value.get("system"), value.get("value")
    if isinstance(system, str) and isinstance(number, str) and registry.match(system):
        return True
    return any(_holds_registered(v, registry) for v in value.values())


def _registry_with(system: str):  # type: ignore[no-untyped-def]
    import json

    from fhirserver.model.identifier_systems import DEFAULT_FILE, Registry

    data = json.loads(Path(DEFAULT_FILE).read_text(encoding="utf-8"))
    data["systems"].append({**data["systems"][-1], "key": "odd", "system": system})
    return Registry(data)


SYSTEMS = st.sampled_from([
    RID, PASSPORT, MRN, CARD, "https://fhirserver.example/sid/passport/chn",  # not a country
    "https://fhirserver.example/sid/mrn/", "http://loinc.org", "https://fhirserver.example/sid",
    'urn:odd:"quoted"\\back/slash\u00e9\x01/x-1', 'urn:odd:"quoted"\\back/slash\u00e9\x01/',
]) | st.text(max_size=8)
IDENTIFIER = st.fixed_dictionaries({"system": SYSTEMS, "value": st.text(min_size=1, max_size=6)})
BODIES = st.recursive(
    st.none() | st.integers() | st.text(max_size=6) | IDENTIFIER,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                  max_size=3),
    max_leaves=12)


@given(BODIES)
def test_a_record_holding_a_registered_identifier_is_never_passed_over(body) -> None:  # type: ignore[no-untyped-def]
    """``may_hold`` answers False only for bodies without any identifier of a
    registered system, exact or templated, including a system whose text JSON escapes
    (quotes, backslashes, control characters); and masking agrees with a walk."""
    registry = _registry_with('urn:odd:"quoted"\\back/slash\u00e9\x01/{organization}')
    if _holds_registered(body, registry):
        assert registry.may_hold(body)
    resource = {"resourceType": "Observation", "contained": [body]}
    shown, changed = masked(resource, registry)
    if not _holds_registered(body, registry):
        assert shown is resource and not changed


def test_an_observation_naming_no_registered_system_is_answered_as_it_is() -> None:
    observation = {"resourceType": "Observation", "status": "final",
                   "code": {"coding": [{"system": "http://loinc.org", "code": "8310-5"}]},
                   "identifier": [{"system": "urn:lab", "value": "110101199003071233"}]}
    assert not REGISTRY.may_hold(observation)
    assert masked(observation, REGISTRY) == (observation, False)
    with_rid = {**observation, "identifier": [{"system": RID, "value": "110101199003071233"}]}
    assert REGISTRY.may_hold(with_rid) and masked(with_rid, REGISTRY)[1]


def test_a_registered_system_json_cannot_write_still_loads_and_masks() -> None:
    """A custom registry may name a system holding a lone surrogate: the server
    still starts, and its identifiers are still found by the walk."""
    registry = _registry_with("urn:odd:\ud800")
    body = {"resourceType": "Patient", "identifier": [{"system": "urn:odd:\ud800",
                                                       "value": "A1234567"}]}
    assert registry.may_hold({"resourceType": "Observation"})  # cannot tell: walks
    assert masked(body, registry)[1]
