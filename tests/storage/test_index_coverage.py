"""Every search the server sends to a large collection is served by a declared index
(DESIGN.md section 5: on MongoDB each query shape needs a compound index; on the
embedded FerretDB the same leading fields get GIN indexes). Pure: the query shapes are
compiled here exactly as the search interaction compiles them."""

from __future__ import annotations

from datetime import UTC

import pytest

from fhirserver.model.types import SUPPORTED_TYPES
from fhirserver.search.catalog import parameters_for
from fhirserver.search.compile import compile_filter
from fhirserver.search.keys import INDEXED, is_indexed, lifted
from fhirserver.search.parse import parse_query
from fhirserver.search.sorting import compile_sort
from fhirserver.storage.documents import current_indexes
from fhirserver.storage.postgres_indexes import PINNED, gin_fields

SAMPLE = {
    "token": "http://loinc.org|1234-5", "reference": "Patient/p1", "string": "zhang",
    "date": "2024-01-01", "number": "5", "quantity": "5", "uri": "http://x.org/a",
    "composite": None, "special": None,
}


def shapes(rtype: str):  # type: ignore[no-untyped-def]
    """(query items, sort) for every parameter alone and with the patient, unsorted and
    sorted by each date parameter both ways."""
    params = parameters_for(rtype)
    dates = [n for n, p in params.items() if p.type == "date"]
    sorts = [None, *dates, *("-" + d for d in dates)]
    for name, param in params.items():
        value = SAMPLE.get(param.type)
        if value is None or name == "_id":
            continue
        bases = [[(name, value)]]
        if rtype != "Patient":
            bases.append([("patient", "p1"), (name, value)])
        for base in bases:
            for sort in sorts:
                yield base + ([("_sort", sort)] if sort else []), sort


@pytest.mark.parametrize("rtype", SUPPORTED_TYPES)
def test_every_indexed_query_shape_has_an_index_led_by_one_of_its_equalities(rtype: str) -> None:
    indexes = current_indexes(rtype)
    checked = 0
    for items, _sort in shapes(rtype):
        query = parse_query(rtype, items, tz=UTC)
        flt = lifted(rtype, compile_filter(query), {"del": False})
        if not is_indexed(rtype, compile_filter(query)):
            continue  # refused as too-costly on a large collection (test_search_bounds.py)
        equal = {f for f, v in flt.items() if f in INDEXED and isinstance(v, str)}
        sort = compile_sort(query)
        led = [ix for ix in indexes if ix[0][0] in equal]
        assert led, (items, flt)
        if "pat" in equal and sort[0][0].startswith("so."):
            assert [("pat", 1), *sort] in indexes or \
                [("b", 1), ("pat", 1)] in indexes, (items, sort)
        checked += 1
    assert checked > 10


@pytest.mark.parametrize("rtype", SUPPORTED_TYPES)
def test_every_field_a_filter_can_pin_leads_an_index_and_gets_a_gin_index(rtype: str) -> None:
    """The embedded database indexes the leading field of every declared index."""
    gin = set(gin_fields(current_indexes(rtype), PINNED))
    assert INDEXED <= gin


@pytest.mark.parametrize("rtype", SUPPORTED_TYPES)
def test_unsorted_population_pages_have_an_index_for_their_shards(rtype: str) -> None:
    """search/shards.py: a population page asks for ``k`` and a shard ``ps``, sorted by
    ``(sh, _id)``; MongoDB needs that compound index, FerretDB a GIN index on ``ps``."""
    from fhirserver.search.shards import POPULATION_SORT, SHARD_FIELD, walked

    indexes = current_indexes(rtype)
    walked_shapes = 0
    for items, sort in shapes(rtype):
        if sort is not None or any(name == "patient" for name, _ in items):
            continue
        flt = lifted(rtype, compile_filter(parse_query(rtype, items, tz=UTC)))
        if walked(flt.get("k")):
            assert [("k", 1), (SHARD_FIELD, 1), *POPULATION_SORT] in indexes, items
            walked_shapes += 1
    assert SHARD_FIELD in gin_fields(indexes, PINNED)
    assert walked_shapes > 0 or rtype not in ("Observation", "DiagnosticReport")
