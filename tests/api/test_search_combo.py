"""Observation's ``combo-*`` parameters (R4 observation.html#search): each searches the
values of the Observation itself and of its components together: ``combo-code`` is
``code`` and ``component-code``, ``combo-value-quantity`` is ``value-quantity`` and
``component-value-quantity``, and so on. Their values are stored once, by those
parts (search/keys.py, ``stored_values``); every kind of condition on them, modifiers,
negations and ``_sort`` included, must find what the union of the parts holds, and so
must a database an older version wrote with its own copies, before and after the
one-time pass that drops them (storage/record_passes.py)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from tests import factories as f
from tests.conftest import FhirClient, make_app

LOINC, UCUM = "http://loinc.org", "http://unitsofmeasure.org"


def _quantity(value: float, unit: str) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": UCUM, "code": unit}


def _concept(code: str, text: str) -> dict[str, Any]:
    return {"coding": [{"system": "http://snomed.info/sct", "code": code}], "text": text}


def _records(pid: str) -> dict[str, dict[str, Any]]:
    """A blood pressure measured as components, a temperature measured as a value, a
    test result given as a concept, and one without a value (absent for a reason)."""
    absent = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/data-absent-reason",
                          "code": "not-performed"}], "text": "Not performed"}
    bp = f.observation(pid, code="85354-9")
    del bp["valueQuantity"]
    bp["code"]["text"] = "Blood pressure panel"
    bp["component"] = [
        {"code": {"coding": [{"system": LOINC, "code": "8480-6"}], "text": "Systolic"},
         "valueQuantity": _quantity(120, "mm[Hg]")},
        {"code": {"coding": [{"system": LOINC, "code": "8462-4"}], "text": "Diastolic"},
         "valueQuantity": _quantity(80, "mm[Hg]")},
        {"code": {"coding": [{"system": LOINC, "code": "8867-4"}], "text": "Heart rate"},
         "dataAbsentReason": absent},
    ]
    temperature = f.observation(pid, code="8310-5", valueQuantity=_quantity(37.8, "Cel"))
    temperature["code"]["text"] = "Body temperature"
    culture = f.observation(pid, code="600-7", valueCodeableConcept=_concept("10828004", "Positive"))
    del culture["valueQuantity"]
    skipped = f.observation(pid, code="2345-7", dataAbsentReason=absent)
    del skipped["valueQuantity"]
    return {"bp": bp, "temperature": temperature, "culture": culture, "skipped": skipped}


#: search -> the records it finds, by the union of the Observation's and its components' values.
EXPECTED: dict[str, set[str]] = {
    "combo-code=8480-6": {"bp"},
    "combo-code=85354-9": {"bp"},
    f"combo-code={LOINC}|8310-5": {"temperature"},
    "combo-code:text=systolic": {"bp"},
    "combo-code:text=body": {"temperature"},
    "combo-code:not=8480-6": {"temperature", "culture", "skipped"},
    "combo-value-quantity=gt100": {"bp"},
    "combo-value-quantity=lt90": {"bp", "temperature"},
    "combo-value-quantity=37.8": {"temperature"},
    f"combo-value-quantity=120|{UCUM}|mm[Hg]": {"bp"},
    f"combo-value-quantity=37.8|{UCUM}|mm[Hg]": set(),
    "combo-value-quantity:missing=true": {"culture", "skipped"},
    "combo-value-quantity:missing=false": {"bp", "temperature"},
    f"combo-code-value-quantity={LOINC}|8480-6$gt100": {"bp"},
    f"combo-code-value-quantity={LOINC}|8462-4$gt100": set(),
    f"combo-code-value-quantity={LOINC}|8310-5$37.8": {"temperature"},
    "combo-code-value-quantity=8462-4$80": {"bp"},
    "combo-code-value-concept=600-7$10828004": {"culture"},
    "combo-code-value-concept=8480-6$10828004": set(),
    "combo-value-concept=10828004": {"culture"},
    "combo-value-concept:text=posit": {"culture"},
    "combo-value-concept:missing=true": {"bp", "temperature", "skipped"},
    "combo-data-absent-reason=not-performed": {"bp", "skipped"},
    "combo-data-absent-reason:text=not": {"bp", "skipped"},
    "combo-data-absent-reason:missing=true": {"temperature", "culture"},
}


def _found(fhir: FhirClient, pid: str, query: str) -> list[str]:
    pairs = [item.partition("=") for item in query.split("&")]
    encoded = "&".join(f"{quote(k, safe=':-')}={quote(v, safe='|,$-')}" for k, _, v in pairs)
    r = fhir.get(f"Observation?patient={pid}&{encoded}")
    assert r.status_code == 200, (query, r.get_json())
    return [e["resource"]["id"] for e in r.get_json().get("entry", [])]


def _check(fhir: FhirClient, pid: str, ids: dict[str, str]) -> None:
    for query, names in EXPECTED.items():
        assert sorted(_found(fhir, pid, query)) == sorted(ids[n] for n in names), query
    # search.html#sort: ascending by each record's lowest value, descending by its highest.
    with_values = [ids["temperature"], ids["bp"]]  # lowest 37.8 and 80; highest 37.8 and 120
    assert _found(fhir, pid, "combo-value-quantity:missing=false&_sort=combo-value-quantity") \
        == with_values
    assert _found(fhir, pid, "combo-value-quantity:missing=false&_sort=-combo-value-quantity") \
        == with_values[::-1]


def _create(fhir: FhirClient) -> tuple[str, dict[str, str], dict[str, dict[str, Any]]]:
    pid = fhir.create(f.patient())["id"]
    stored = {name: fhir.create(res) for name, res in _records(pid).items()}
    return pid, {name: res["id"] for name, res in stored.items()}, stored


def test_combo_parameters_search_the_observation_and_its_components_observation_search(
        fhir: FhirClient) -> None:
    pid, ids, _ = _create(fhir)
    _check(fhir, pid, ids)


def test_combo_values_are_stored_by_their_parts_only(settings: Any) -> None:
    """What a record stores of a union parameter is its keys, which the index needs;
    the rest its parts hold already, and FerretDB decodes all a record stores."""
    app = make_app(settings)
    _, ids, _ = _create(FhirClient(app.test_client()))
    db = app.extensions["fhirserver"].repo.db
    for doc in db["Observation"].find({"_id": {"$in": list(ids.values())}}, {"sp": 1, "k": 1}):
        assert not [name for name in doc["sp"] if name.startswith("combo-")], doc["sp"]
    bp = db["Observation"].find_one({"_id": ids["bp"]}, {"sp": 1, "k": 1})
    assert "combo-code=8480-6" in bp["k"]
    assert bp["sp"]["component-value-quantity"] == [120.0, 80.0]
    app.extensions["fhirserver"].repo.close()


def test_combo_searches_find_the_same_before_and_after_the_pass_that_drops_old_copies(
        settings: Any) -> None:
    """A database an older version wrote holds the combo values in ``sp`` as well; the
    searches are the same on it, and after ``serve``'s one-time pass has dropped them."""
    from fhirserver.cli import _recover
    from fhirserver.search.extract import extract
    from fhirserver.search.keys import EXACT_TYPES
    from fhirserver.search.catalog import parameters_for

    app = make_app(settings)
    fhir = FhirClient(app.test_client())
    pid, ids, stored = _create(fhir)
    repo = app.extensions["fhirserver"].repo
    observations = repo.db["Observation"]
    params = parameters_for("Observation")
    for res in stored.values():
        # What the older version stored: every value but those of exact-match parameters.
        copies = {f"sp.{name}": values
                  for name, values in extract(res, ZoneInfo(settings.timezone)).items()
                  if name.startswith("combo-")
                  and (name not in params or params[name].type not in EXACT_TYPES)}
        observations.update_one({"_id": res["id"]}, {"$set": copies})
    repo.db["_schema"].delete_many({"_id": "union-values"})
    assert repo.union_values_pending()
    assert observations.find_one({"_id": ids["bp"]})["sp"].get("combo-value-quantity") == [120.0, 80.0]
    _check(fhir, pid, ids)
    repo.close()

    _recover(settings)  # what ``fhirserver serve`` does before its workers start

    app = make_app(settings)
    repo = app.extensions["fhirserver"].repo
    assert not repo.union_values_pending()
    for doc in repo.db["Observation"].find({"_id": {"$in": list(ids.values())}}, {"sp": 1}):
        assert not [name for name in doc["sp"] if name.startswith("combo-")], doc["sp"]
    _check(FhirClient(app.test_client()), pid, ids)
    repo.close()


def test_a_combo_value_matches_within_one_element_not_across_the_observation_and_a_component(
        fhir: FhirClient) -> None:
    """search.html#quantity: ``100`` is [99.5, 100.5), a value some element holds, with
    its own unit. An Observation of 200 kg whose component holds 1 mg has no such value:
    200 is not below 100.5 and 1 is not above 99.5, and nothing it holds is 1 kg. (When
    the combo values were stored in one list, one bound was met by each and it matched.)"""
    pid = fhir.create(f.patient())["id"]
    obs = f.observation(pid, code="9999-1", valueQuantity=_quantity(200, "kg"))
    obs["component"] = [{"code": {"coding": [{"system": LOINC, "code": "9999-2"}]},
                         "valueQuantity": _quantity(1, "mg")}]
    oid = fhir.create(obs)["id"]
    for query, found in {"combo-value-quantity=100": [], "combo-value-quantity=ap100": [],
                         "combo-value-quantity=1||kg": [], "combo-value-quantity=200||mg": [],
                         "combo-value-quantity=200||kg": [oid], "combo-value-quantity=1||mg": [oid],
                         "combo-value-quantity=ne1": [oid], "combo-value-quantity=gt150": [oid],
                         "combo-value-quantity=lt2": [oid]}.items():
        assert _found(fhir, pid, query) == found, query
