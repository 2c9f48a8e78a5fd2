"""Query string -> MongoDB filter, one table per parameter type (search.html#ptypes)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from fhirserver.search.dates import HIGHEST
from fhirserver.search.parse import parse_query
from fhirserver.search.sorting import compile_sort

from .conftest import NOW, SHANGHAI, flt

D = datetime
DAY = (D(2013, 1, 13, 16), D(2013, 1, 14, 16))  # 2013-01-14 in Asia/Shanghai, as UTC

CASES: list[tuple[str, str, str, dict[str, Any]]] = [
    # search.html#id: _id stays a top-level filter (FerretDB pushes it down).
    ("id", "Patient", "_id=abc", {"_id": "abc"}),
    ("id-or", "Patient", "_id=a,b", {"_id": {"$in": ["a", "b"]}}),
    ("id-and-more", "Patient", "_id=a&gender=male",
     {"_id": "a", "k": "gender=male"}),
    # search.html#string
    ("string-starts", "Patient", "name=Pét", {"sp.name": {"$regex": "^pet"}}),
    ("string-contains", "Patient", "family:contains=al", {"sp.family": {"$regex": "al|\u2026$"}}),
    ("string-exact", "Patient", "family:exact=Chalmers",
     {"sp.family": "chalmers", "sp.family:exact": "Chalmers"}),
    ("string-regex-escaped", "Patient", "address=3999 (x)",
     {"sp.address": {"$regex": r"^3999\ \(x\)"}}),
    ("string-or", "Patient", "given=pe,ja",
     {"$or": [{"sp.given": {"$regex": "^pe"}}, {"sp.given": {"$regex": "^ja"}}]}),
    ("string-and", "Patient", "given=pe&given=ja",
     {"$and": [{"sp.given": {"$regex": "^pe"}}, {"sp.given": {"$regex": "^ja"}}]}),
    ("escaped-comma", "Patient", r"family=a\,b", {"sp.family": {"$regex": "^a,b"}}),
    # search.html#token: exact-match values are tested on their keys (search/keys.py)
    ("token-code", "Observation", "code=15074-8", {"k": "code=15074-8"}),
    ("token-system-code", "Observation", "code=http://loinc.org|15074-8",
     {"k": "code=http://loinc.org|15074-8"}),
    ("token-no-system", "Observation", "code=|x", {"k": "code=|x"}),
    ("token-system-only", "Observation", "code=http://loinc.org|",
     {"k": {"$regex": r"^code=http://loinc\.org\|"}}),
    ("token-or-is-in", "Observation", "status=final,amended",
     {"k": {"$in": ["status=final", "status=amended"]}}),
    ("token-not", "Observation", "status:not=final,amended",
     {"$nor": [{"k": "status=final"}, {"k": "status=amended"}]}),
    ("token-text", "Observation", "code:text=Glucose",
     {"sp.code:text": {"$regex": "^glucose"}}),
    ("token-of-type", "Patient",
     "identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|MR|12345",
     {"sp.identifier:of-type": "http://terminology.hl7.org/CodeSystem/v2-0203|MR|12345"}),
    ("token-escaped-pipe", "Patient", r"identifier=urn:x|a\|b", {"k": r"identifier=urn:x|a\|b"}),
    ("token-boolean", "Patient", "active=true", {"k": "active=true"}),
    ("token-email", "Patient", "email=a@b.org", {"k": "email=a@b.org"}),
    ("meta-tag", "Patient", "_tag=urn:t|a", {"k": "_tag=urn:t|a"}),
    ("token-missing", "Patient", "gender:missing=true", {"$nor": [{"k": {"$regex": "^gender="}}]}),
    ("ref-present", "Observation", "subject:missing=false", {"k": {"$regex": "^subject="}}),
    # search.html#missing on every type
    ("missing-true", "Patient", "birthdate:missing=true", {"sp.birthdate": {"$exists": False}}),
    ("missing-false", "Observation", "code-value-quantity:missing=false",
     {"sp.code-value-quantity": {"$exists": True}}),
    # search.html#date and search.html#prefix
    # A birth date is a date: one within the day starts at its start (search/keys.py).
    ("date-eq", "Patient", "birthdate=2013-01-14",
     {"sp.birthdate": {"$gte": DAY[0]}, "sp.birthdate:hi": {"$lte": DAY[1]},
      "k": "birthdate@2013-01-13T16:00:00.000"}),
    ("date-eq-month", "Patient", "birthdate=2013-01",
     {"sp.birthdate": {"$gte": D(2012, 12, 31, 16)}, "sp.birthdate:hi": {"$lte": D(2013, 1, 31, 16)}}),
    ("date-eq-datetime", "Observation", "date=2013-01-14",
     {"sp.date": {"$gte": DAY[0]}, "sp.date:hi": {"$lte": DAY[1]}}),
    ("date-ne", "Patient", "birthdate=ne2013-01-14",
     {"$or": [{"sp.birthdate": {"$lt": DAY[0]}}, {"sp.birthdate:hi": {"$gt": DAY[1]}}]}),
    ("date-gt", "Patient", "birthdate=gt2013-01-14", {"sp.birthdate:hi": {"$gt": DAY[1]}}),
    ("date-lt", "Patient", "birthdate=lt2013-01-14", {"sp.birthdate": {"$lt": DAY[0]}}),
    ("date-ge", "Patient", "birthdate=ge2013-01-14", {"sp.birthdate:hi": {"$gt": DAY[0]}}),
    ("date-le", "Patient", "birthdate=le2013-01-14", {"sp.birthdate": {"$lt": DAY[1]}}),
    ("date-sa", "Observation", "date=sa2013-01-14", {"sp.date": {"$gte": DAY[1]}}),
    ("date-eb", "Observation", "date=eb2013-01-14", {"sp.date:hi": {"$lte": DAY[0]}}),
    ("date-zone", "Observation", "date=2013-01-14T10:00Z",
     {"sp.date": {"$gte": D(2013, 1, 14, 10)}, "sp.date:hi": {"$lte": D(2013, 1, 14, 10, 1)}}),
    ("date-year-range", "Observation", "date=ge2012&date=lt2013",
     {"sp.date:hi": {"$gt": D(2011, 12, 31, 16)}, "sp.date": {"$lt": D(2012, 12, 31, 16)}}),
    # ap: 10% of the distance from the value's middle (2013-01-14T04:00Z) to NOW
    # (2024-01-01): 4004 days - 4 h, so 400 days 9 h 12 min either side.
    ("date-ap", "Patient", "birthdate=ap2013-01-14",
     {"sp.birthdate": {"$lt": D(2014, 2, 19, 1, 12)},
      "sp.birthdate:hi": {"$gt": D(2011, 12, 10, 6, 48)}}),
    ("lastupdated", "Patient", "_lastUpdated=gt2024-05-01T00:00:00Z",
     {"sp._lastUpdated:hi": {"$gt": D(2024, 5, 1, 0, 0, 1)}}),
    # search.html#quantity and search.html#number (precision ranges)
    ("quantity-eq-precision", "Observation", "value-quantity=6.3",
     {"sp.value-quantity": {"$gte": 6.25, "$lt": 6.35}}),
    ("quantity-system-code", "Observation", "value-quantity=gt6|http://unitsofmeasure.org|mmol/L",
     {"sp.value-quantity": {"$gt": 6.0}, "sp.value-quantity:unit": "http://unitsofmeasure.org|mmol/L"}),
    ("quantity-unit-only", "Observation", "value-quantity=le6.3||mmol/l",
     {"sp.value-quantity": {"$lte": 6.3}, "sp.value-quantity:unit": "mmol/l"}),
    ("quantity-ne", "Observation", "value-quantity=ne100",
     {"$or": [{"sp.value-quantity": {"$lt": 99.5}}, {"sp.value-quantity": {"$gte": 100.5}}]}),
    ("quantity-ap", "Observation", "value-quantity=ap100",
     {"sp.value-quantity": {"$gte": 90.0, "$lte": 110.0}}),
    ("quantity-exponent", "Observation", "value-quantity=1e2",
     {"sp.value-quantity": {"$gte": 50.0, "$lt": 150.0}}),
    # Stored values are the doubles nearest exact decimals (datatypes.html#decimal): a
    # bound no double spells exactly compares inclusively, so what its double holds is
    # found. 9223372036854775808 is [..807.5, ..808.5): one double wide, not empty.
    ("quantity-beyond-int64", "Observation", "value-quantity=9223372036854775808",
     {"sp.value-quantity": {"$gte": 2.0**63, "$lte": 2.0**63}}),
    ("quantity-gt-long", "Observation", "value-quantity=gt9223372036854775807",
     {"sp.value-quantity": {"$gte": 2.0**63}}),
    ("quantity-lt-long", "Observation", "value-quantity=lt-9223372036854775809",
     {"sp.value-quantity": {"$lte": -(2.0**63)}}),
    ("quantity-ne-long", "Observation", "value-quantity=ne9223372036854775808",
     {"$or": [{"sp.value-quantity": {"$lt": 2.0**63}}, {"sp.value-quantity": {"$gt": 2.0**63}}]}),
    ("quantity-beyond-double", "Observation", "value-quantity=1e400",
     {"sp.value-quantity": {"$gte": 1.7976931348623157e308, "$lte": 1.7976931348623157e308}}),
    ("quantity-beyond-decimal-context", "Observation", "value-quantity=1e999999999",
     {"sp.value-quantity": {"$gte": 1.7976931348623157e308, "$lte": 1.7976931348623157e308}}),
    # ``ap`` widens by 10% of a value beyond the default decimal context too (a 500)
    ("quantity-ap-beyond-decimal-context", "Observation", "value-quantity=ap1e999999999",
     {"sp.value-quantity": {"$gte": 1.7976931348623157e308, "$lte": 1.7976931348623157e308}}),
    ("quantity-ap-below-decimal-context", "Observation", "value-quantity=ap-1e999999999",
     {"sp.value-quantity": {"$gte": -1.7976931348623157e308, "$lte": -1.7976931348623157e308}}),
    ("quantity-many-digits", "Observation", "value-quantity=" + "9" * 40,
     {"sp.value-quantity": {"$gte": 1e40, "$lte": 1e40}}),
    # search.html#reference
    ("ref-typed", "Observation", "subject=Patient/1", {"k": "subject=Patient/1"}),
    ("ref-id-targets", "Observation", "subject=1",
     {"k": {"$in": ["subject=Group/1", "subject=Device/1", "subject=Patient/1",
                   "subject=Location/1"]}}),
    ("ref-id-one-target", "Observation", "patient=1", {"k": "patient=Patient/1"}),
    ("ref-type-modifier", "Observation", "subject:Patient=1", {"k": "subject=Patient/1"}),
    ("ref-own-base", "Observation", "subject=http://fhir.example.org/fhir/Patient/1",
     {"k": "subject=Patient/1"}),
    ("ref-other-base", "Observation", "subject=http://other.org/Patient/1",
     {"k": "subject=http://other.org/Patient/1"}),
    ("ref-version", "Observation", "subject=Patient/1/_history/2", {"k": "subject=Patient/1"}),
    ("ref-any-type", "Observation", "focus=x.1",
     {"k": {"$regex": r"^focus=[A-Z][A-Za-z]+/x\.1$"}}),
    ("ref-identifier", "Observation", "subject:identifier=urn:oid:1|123",
     {"sp.subject:identifier": "urn:oid:1|123"}),
    # search.html#uri
    ("uri", "Patient", "_profile=http://a.org/fhir/P", {"k": "_profile=http://a.org/fhir/P"}),
    ("uri-below", "Patient", "_profile:below=http://a.org/fhir",
     {"k": {"$regex": r"^_profile=http://a\.org/fhir"}}),
    ("uri-above", "Patient", "_profile:above=http://a.org/fhir/P",
     {"k": {"$in": ["_profile=http://a.org/fhir/P", "_profile=http://a.org/fhir",
                   "_profile=http://a.org"]}}),
    # search.html#composite: the token picks the key, the value is compared under it.
    ("composite-quantity", "Observation",
     "component-code-value-quantity=http://loinc.org|8480-6$gt100",
     {"sp.component-code-value-quantity:a": "http://loinc.org|8480-6",
      "sp.component-code-value-quantity.http://loinc%2Eorg|8480-6": {"$gt": 100.0}}),
    ("composite-concept", "Observation", "code-value-concept=x$http://snomed.info/sct|123",
     {"sp.code-value-concept:a": "x", "sp.code-value-concept.x": "http://snomed.info/sct|123"}),
    ("composite-date", "Observation", "code-value-date=x$lt2013-01-14",
     {"sp.code-value-date:a": "x", "sp.code-value-date.x": {"$lt": DAY[0]}}),
    ("composite-string", "Observation", "code-value-string=x$Pos",
     {"sp.code-value-string:a": "x", "sp.code-value-string.x": {"$regex": "^pos"}}),
    ("composite-or", "Observation", "code-value-quantity=a$1,b$2",
     {"$or": [{"sp.code-value-quantity:a": "a", "sp.code-value-quantity.a": {"$gte": 0.5, "$lt": 1.5}},
              {"sp.code-value-quantity:a": "b", "sp.code-value-quantity.b": {"$gte": 1.5, "$lt": 2.5}}]}),
    # search.html#combining: no parameters, no filter.
    ("empty", "Patient", "", {}),
]


@pytest.mark.parametrize(("rtype", "query", "expected"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_compile_filter(rtype: str, query: str, expected: dict[str, Any]) -> None:
    assert flt(rtype, query) == expected


SORTS = [
    ("birthdate", [("so.birthdate", 1), ("_id", 1)]),
    ("-birthdate", [("so.-birthdate", -1), ("_id", 1)]),
    ("family,-_lastUpdated", [("so.family", 1), ("so.-_lastUpdated", -1), ("_id", 1)]),
    ("-_id", [("_id", -1)]),
    ("_id,family", [("_id", 1)]),
    ("identifier", [("so.identifier", 1), ("_id", 1)]),
]


@pytest.mark.parametrize(("sort", "expected"), SORTS)
def test_compile_sort(sort: str, expected: list[tuple[str, int]]) -> None:
    """search.html#sort: ``-`` for descending, on the lowest value ascending and the
    highest descending (the ``so`` scalars); ``_id`` ends every order so it is total."""
    q = parse_query("Patient", [("_sort", sort)], tz=SHANGHAI, now=NOW)
    assert compile_sort(q) == expected


def test_no_sort_is_id_order() -> None:
    assert compile_sort(parse_query("Patient", [], tz=SHANGHAI)) == [("_id", 1)]


def test_date_ap_tolerance_has_a_minimum_of_one_day() -> None:
    q = parse_query("Patient", [("birthdate", "ap2024-01-01")], tz=SHANGHAI, now=NOW)
    assert flt("Patient", "birthdate=ap2024-01-01") == {
        "sp.birthdate": {"$lt": D(2024, 1, 1, 16) + (D(2024, 1, 2) - D(2024, 1, 1))},
        "sp.birthdate:hi": {"$gt": D(2023, 12, 31, 16) - (D(2024, 1, 2) - D(2024, 1, 1))},
    }
    assert q.clauses[0].values[0].prefix == "ap"


def test_open_ended_period_is_matched_by_gt() -> None:
    """An open Period end is HIGHEST, so ``gt`` any date matches it."""
    assert HIGHEST > D(9000, 1, 1)
