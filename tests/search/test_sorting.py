"""Sort keys and keyset cursors (search.html#sort, http.html#paging), data in, data out.

The keyset filter is checked by evaluating it in plain Python over rows and
comparing with a sort of the same rows: rows strictly after a row's key must be
exactly the rows that follow it in the sorted order.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from fhirserver.errors import Invalid
from fhirserver.search.extract import extract
from fhirserver.search.sorting import after, decode_key, encode_key, reverse, row_key, sort_values

from .conftest import SHANGHAI


def test_sort_values_take_lowest_and_highest() -> None:
    """search.html#sort: ascending uses a resource's lowest value, descending its highest;
    dates use the start and end of their range; tokens their system|code form."""
    patient = {"resourceType": "Patient", "id": "p", "birthDate": "1974-12-25",
               "gender": "male", "name": [{"family": "Zed", "given": ["Peter", "Adam"]}]}
    so = sort_values("Patient", extract(patient, SHANGHAI))
    assert (so["given"], so["-given"]) == ("adam", "peter")
    assert so["birthdate"] == datetime(1974, 12, 24, 16)
    assert so["-birthdate"] == datetime(1974, 12, 25, 16)
    assert so["gender"] == so["-gender"] == "http://hl7.org/fhir/administrative-gender|male"
    assert "address" not in so and "-address" not in so


# -- keyset filters, evaluated over rows in Python ----------------------------------


def _get(row: dict[str, Any], field: str) -> Any:
    return row.get(field)


def _matches(row: dict[str, Any], flt: dict[str, Any]) -> bool:
    """The subset of MongoDB query semantics the keyset filter uses."""
    for key, cond in flt.items():
        if key == "$or":
            if not any(_matches(row, c) for c in cond):
                return False
        elif key == "$and":
            if not all(_matches(row, c) for c in cond):
                return False
        elif isinstance(cond, dict):
            value = _get(row, key)
            for op, arg in cond.items():
                if op == "$ne" and not (value != arg):
                    return False
                if op == "$gt" and (value is None or not value > arg):
                    return False
                if op == "$lt" and (value is None or not value < arg):
                    return False
                if op == "$exists" and (key in row) != arg:
                    return False
        elif _get(row, key) != cond:
            return False
    return True


def _mongo_order(rows: list[dict[str, Any]], sort: list[tuple[str, int]]) -> list[dict[str, Any]]:
    """MongoDB's order: missing (None) below every value."""
    out = list(rows)
    for field, direction in reversed(sort):
        out.sort(key=lambda r: (r.get(field) is not None, "" if r.get(field) is None else r.get(field)),
                 reverse=direction < 0)
    return out


ROWS = [
    {"_id": "a", "x": 2, "y": "b"},
    {"_id": "b", "x": 1, "y": "b"},
    {"_id": "c", "x": 2, "y": "a"},
    {"_id": "d", "x": None, "y": "a"},
    {"_id": "e", "x": 2, "y": "b"},
    {"_id": "f", "x": None, "y": None},
    {"_id": "g", "x": 3, "y": None},
]


@pytest.mark.parametrize("sort", [
    [("x", 1), ("_id", 1)],
    [("x", -1), ("_id", 1)],
    [("x", 1), ("y", -1), ("_id", 1)],
    [("y", -1), ("x", -1), ("_id", 1)],
    [("_id", -1)],
])
def test_after_selects_exactly_the_following_rows(sort: list[tuple[str, int]]) -> None:
    ordered = _mongo_order(ROWS, sort)
    for i, row in enumerate(ordered):
        flt = after(sort, row_key(sort, row))
        following = [r["_id"] for r in ordered if _matches(r, flt)]
        assert following == [r["_id"] for r in ordered[i + 1:]], (sort, row)
        # And backwards: the reversed order after this row is what precedes it.
        back = reverse(sort)
        before = [r["_id"] for r in ordered if _matches(r, after(back, row_key(back, row)))]
        assert sorted(before) == sorted(r["_id"] for r in ordered[:i])


def test_row_key_reads_sort_fields_and_missing_as_none() -> None:
    doc = {"_id": "x", "so": {"date": datetime(2024, 1, 1)}}
    assert row_key([("so.date", 1), ("so.-code", -1), ("_id", 1)], doc) == [
        datetime(2024, 1, 1), None, "x"]


def test_cursor_keys_round_trip_and_reject_garbage() -> None:
    key = [datetime(2024, 1, 1, 8, 30), "abc", 1.5, None]
    assert decode_key(encode_key(key)) == key
    for bad in ("x", [{"t": "not a date"}], [[1]], [{"nope": 1}]):
        with pytest.raises(Invalid):
            decode_key(bad)
    with pytest.raises(Invalid):
        after([("_id", 1)], ["a", "b"])
