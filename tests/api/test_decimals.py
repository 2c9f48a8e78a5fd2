"""Decimals and large integers are stored and returned exactly, and searched correctly.

R4 datatypes.html#decimal: a decimal is arbitrary precision, its precision is
significant ("0.010 is regarded as different to 0.01, and the original precision
should be preserved"), and its lexical form allows an exponent
(``-?(0|[1-9][0-9]*)(\\.[0-9]+)?([eE][+-]?[0-9]+)?``). JSON numbers may also be larger
than 64 bits. search.html#number: a search value stands for its implicit precision
range (``5.4`` finds 5.35 <= v < 5.45), prefixes compare with the value.

Every check reads the raw response text: parsed as floats, ``1.50`` and ``1.5``
would look the same.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest

# Numbers a float or a 64-bit integer would change: precision, size, exponent.
EXACT = ["1.50", "0.010", "9223372036854775808", "-9223372036854775809",
         "12345678901234567890.123456789", "1e2"]
PATIENT = {"resourceType": "Patient", "id": "p1"}


def observation_text(value: str, rid: str | None = None, extra: str = "") -> str:
    """An Observation's JSON text whose valueQuantity.value is ``value`` verbatim."""
    head = f'"id": "{rid}", ' if rid else ""
    return ('{"resourceType": "Observation", ' + head + '"status": "final", '
            '"code": {"coding": [{"system": "http://loinc.org", "code": "2339-0"}]}, '
            '"subject": {"reference": "Patient/p1"}, ' + extra +
            '"valueQuantity": {"value": ' + value + ', "unit": "mg/dL", '
            '"system": "http://unitsofmeasure.org", "code": "mg/dL"}}')


def has_value(text: str, value: str) -> bool:
    """Whether a response's JSON text holds ``"value":<value>`` with the number as sent."""
    return re.search(r'"value":\s*' + re.escape(value) + r'\s*[,}]', text) is not None


@pytest.fixture
def patient(fhir: Any) -> None:
    assert fhir.put("Patient/p1", PATIENT).status_code in (200, 201)


def create(fhir: Any, value: str) -> str:
    r = fhir.post("Observation", observation_text(value))
    assert r.status_code == 201, r.get_data(as_text=True)
    assert has_value(r.get_data(as_text=True), value), r.get_data(as_text=True)
    return str(r.get_json()["id"])


@pytest.mark.parametrize("value", [*EXACT, "1e400"])
def test_read_vread_and_search_return_the_number_as_sent(fhir: Any, patient: None,
                                                         value: str) -> None:
    """datatypes.html#decimal: create, read, vread, search and _summary/_elements keep
    the number's text, so precision and size survive (no 500 for a big integer, no
    400 for a decimal beyond a double's range)."""
    rid = create(fhir, value)
    found = fhir.get(f"Observation?value-quantity={value}").get_json().get("entry", [])
    assert [e["resource"]["id"] for e in found] == [rid]
    for url in (f"Observation/{rid}", f"Observation/{rid}/_history/1",
                f"Observation?_id={rid}", f"Observation?_id={rid}&_elements=valueQuantity",
                f"Observation/{rid}?_pretty=true"):
        r = fhir.get(url)
        assert r.status_code == 200, (url, r.get_data(as_text=True))
        assert has_value(r.get_data(as_text=True), value), (url, r.get_data(as_text=True))


def test_history_and_everything_return_the_numbers_as_sent(fhir: Any, patient: None) -> None:
    """http.html#history (instance, type and system level) and Patient/$everything return
    the stored versions with their numbers verbatim (datatypes.html#decimal)."""
    ids = [create(fhir, v) for v in EXACT]
    for url in (f"Observation/{ids[0]}/_history", "Observation/_history", "_history",
                "Patient/p1/$everything", "Patient/p1/Observation"):
        r = fhir.get(url)
        assert r.status_code == 200, (url, r.get_data(as_text=True))
        text = r.get_data(as_text=True)
        wanted = EXACT[:1] if "/_history" in url and ids[0] in url else EXACT
        assert all(has_value(text, v) for v in wanted), (url, text)


def test_update_and_patch_keep_the_numbers(fhir: Any, patient: None) -> None:
    """http.html#update and http.html#patch: a PUT stores the numbers it carries, and a
    JSON Patch changes only what it names; the numbers it adds keep their text too."""
    r = fhir.put("Observation/o1", observation_text("0.010", "o1"))
    assert r.status_code == 201, r.get_data(as_text=True)
    r = fhir.put("Observation/o1", observation_text(
        "9223372036854775808", "o1",
        '"referenceRange": [{"low": {"value": 1.50}, "high": {"value": 1e2}}], '))
    assert r.status_code == 200, r.get_data(as_text=True)
    patch = ('[{"op": "add", "path": "/referenceRange/0/text", "value": "normal"},'
             ' {"op": "replace", "path": "/referenceRange/0/low/value", "value": 0.0100}]')
    r = fhir.patch("Observation/o1", patch)
    assert r.status_code == 200, r.get_data(as_text=True)
    for url in ("Observation/o1", "Observation/o1/_history/3"):
        text = fhir.get(url).get_data(as_text=True)
        for value in ("9223372036854775808", "0.0100", "1e2"):
            assert has_value(text, value), (url, text)
    assert has_value(fhir.get("Observation/o1/_history/1").get_data(as_text=True), "0.010")
    assert has_value(fhir.get("Observation/o1/_history/2").get_data(as_text=True), "1.50")


def test_an_unchanged_precision_is_no_new_version_and_a_changed_one_is(fhir: Any,
                                                                       patient: None) -> None:
    """datatypes.html#decimal: 1.50 and 1.5 are different values, so an update from one
    to the other is a new version; sending 1.50 again changes nothing."""
    assert fhir.put("Observation/o2", observation_text("1.50", "o2")).status_code == 201
    assert fhir.put("Observation/o2", observation_text("1.50", "o2")).get_json()["meta"][
        "versionId"] == "1"
    r = fhir.put("Observation/o2", observation_text("1.5", "o2"))
    assert r.get_json()["meta"]["versionId"] == "2"
    assert has_value(fhir.get("Observation/o2/_history/1").get_data(as_text=True), "1.50")


def test_a_transaction_keeps_the_numbers(fhir: Any, patient: None) -> None:
    """http.html#transaction: resources in a Bundle, and a JSON Patch in a Binary entry,
    are stored with their numbers as sent."""
    patch = base64.b64encode(b'[{"op": "replace", "path": "/valueQuantity/value", '
                             b'"value": 12345678901234567890.123456789}]').decode()
    entries = [
        f'{{"fullUrl": "urn:uuid:00000000-0000-0000-0000-00000000000{i}", '
        f'"resource": {observation_text(value)}, '
        '"request": {"method": "POST", "url": "Observation"}}' for i, value in enumerate(EXACT)]
    entries.append('{"resource": ' + observation_text("0.010", "t1") +
                   ', "request": {"method": "PUT", "url": "Observation/t1"}}')
    bundle = ('{"resourceType": "Bundle", "type": "transaction", "entry": ['
              + ", ".join(entries) + "]}")
    r = fhir.post("", bundle)
    assert r.status_code == 200, r.get_data(as_text=True)
    locations = [e["response"]["location"].split("/_history")[0]
                 for e in r.get_json()["entry"]]
    for location, value in zip(locations, [*EXACT, "0.010"], strict=True):
        assert has_value(fhir.get(location).get_data(as_text=True), value), location
    binary = {"resourceType": "Binary", "contentType": "application/json-patch+json",
              "data": patch}
    bundle2 = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": binary, "request": {"method": "PATCH", "url": "Observation/t1"}}]}
    r = fhir.post("", bundle2)
    assert r.status_code == 200, r.get_data(as_text=True)
    assert has_value(fhir.get("Observation/t1").get_data(as_text=True),
                     "12345678901234567890.123456789")


SEARCHED = [*EXACT, "5.35", "5.45", "5.4000000000000000000001"]
SEARCHES = [
    # search.html#number: implicit precision ranges
    ("5.4", ["5.35", "5.4000000000000000000001"]),
    ("1.5", ["1.50"]),
    ("1.50", ["1.50"]),
    ("0.01", ["0.010"]),
    ("0.010", ["0.010"]),
    ("100", ["1e2"]),
    ("1e2", ["1e2"]),
    ("9223372036854775808", ["9223372036854775808"]),
    ("9.2e18", ["9223372036854775808"]),
    ("-9223372036854775809", ["-9223372036854775809"]),
    ("12345678901234567890.123456789", ["12345678901234567890.123456789"]),
    ("1.2e19", ["12345678901234567890.123456789"]),
    # search.html#prefix
    ("gt9223372036854775807", ["9223372036854775808", "12345678901234567890.123456789"]),
    ("ge1e19", ["12345678901234567890.123456789"]),
    ("lt-9223372036854775808", ["-9223372036854775809"]),
    ("lt0.0100", ["-9223372036854775809"]),
    ("le0.010", ["-9223372036854775809", "0.010"]),
    ("5.4000000000000000000001", ["5.4000000000000000000001"]),
    ("gt5.35", ["5.45", "5.4000000000000000000001", "1e2", "9223372036854775808",
                "12345678901234567890.123456789"]),
    ("ap9223372036854775808", ["9223372036854775808"]),
    ("ne9223372036854775808", [v for v in SEARCHED if v != "9223372036854775808"]),
    ("5.4|http://unitsofmeasure.org|mg/dL", ["5.35", "5.4000000000000000000001"]),
]


def test_quantity_search_compares_exact_values(fhir: Any, patient: None) -> None:
    """search.html#number and search.html#quantity: eq uses the value's implicit
    precision range, the prefixes compare with the value; huge and many-digit values
    are found as well as ordinary ones (datatypes.html#decimal)."""
    by_id = {create(fhir, v): v for v in SEARCHED}
    failures = []
    for query, expected in SEARCHES:
        r = fhir.get(f"Observation?value-quantity={query.replace('+', '%2B')}&_count=50")
        assert r.status_code == 200, (query, r.get_data(as_text=True))
        found = sorted(by_id[e["resource"]["id"]] for e in r.get_json().get("entry", []))
        if found != sorted(expected):
            failures.append((query, found, sorted(expected)))
    assert failures == []


def test_sorting_by_quantity_orders_exact_values(fhir: Any, patient: None) -> None:
    """search.html#sort on a quantity orders by value, the big ones included."""
    by_id = {create(fhir, v): v for v in EXACT}
    r = fhir.get("Observation?_sort=value-quantity")
    assert r.status_code == 200, r.get_data(as_text=True)
    order = [by_id[e["resource"]["id"]] for e in r.get_json()["entry"]]
    assert order == ["-9223372036854775809", "0.010", "1.50", "1e2", "9223372036854775808",
                     "12345678901234567890.123456789"]


def test_stored_form_keeps_exact_numbers_as_written(app: Any, fhir: Any,
                                                   patient: None) -> None:
    """Resources are stored as JSON text: a number BSON cannot hold exactly as written
    (datatypes.html#decimal), others as orjson writes them after a space; and a
    current document rebuilt from history (a transaction rolled back) keeps the text
    and the search values."""
    from zoneinfo import ZoneInfo

    from fhirserver.storage.indexing import rebuild_current

    repo = app.extensions["fhirserver"].repo
    plain, exact = create(fhir, "5.4"), create(fhir, "1.50")
    stored = repo.cols.current["Observation"].find_one({"_id": plain})["res"]
    assert stored.startswith(' {"resourceType":"Observation"') and '"value":5.4' in stored
    assert fhir.get(f"Observation/{plain}").get_json()["valueQuantity"]["value"] == 5.4
    raw = repo.cols.current["Observation"].find_one({"_id": exact})
    assert isinstance(raw["res"], str) and '"value":1.50' in raw["res"]
    history = repo.cols.history["Observation"].find_one({"_id": f"{exact}/1"})
    assert history["res"] == raw["res"]
    rebuilt = rebuild_current("Observation", history, ZoneInfo("UTC"), repo.protection)
    assert rebuilt["res"] == raw["res"] and rebuilt["h"] == raw["h"]
    assert rebuilt["sp"]["value-quantity"] == raw["sp"]["value-quantity"] == [1.5]


def test_import_keeps_the_numbers(settings: Any, fhir: Any, tmp_path: Any) -> None:
    """`fhirserver import` reads NDJSON and Bundle files with the numbers exact, as the
    REST API does (datatypes.html#decimal); importing them again changes nothing."""
    from fhirserver.cli import run_import

    lines = [json.dumps(PATIENT)] + [observation_text(v, f"i{i}") for i, v in enumerate(EXACT)]
    ndjson = tmp_path / "exact.ndjson"
    ndjson.write_text("\n".join(lines) + "\n")
    stats = run_import(settings, [ndjson])
    assert stats.created["Observation"] == len(EXACT), stats.problems
    for i, value in enumerate(EXACT):
        assert has_value(fhir.get(f"Observation/i{i}").get_data(as_text=True), value)
    again = run_import(settings, [ndjson])
    assert sum(again.unchanged.values()) == len(EXACT) + 1
