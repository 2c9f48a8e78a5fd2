"""Filters read branch by branch (search/keys.py ``indexed_branches``) and rows merged
in sort order (search/sorting.py ``compare_rows``, MongoDB's order: missing lowest)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from fhirserver.search.keys import ID_LOOKUPS_MAX, indexed_branches
from fhirserver.search.sorting import compare_rows

REACH = {"$or": [{"_id": {"$in": ["b", "a", "b"]}}, {"by": "Practitioner/x"}]}


def test_a_reach_limited_search_splits_into_one_branch_per_id_and_the_authored_ones():
    flt = {"$and": [{"sp.gender": "male"}, REACH]}
    assert indexed_branches("Patient", flt) == [
        {"$and": [{"sp.gender": "male"}, {"_id": "a"}]},
        {"$and": [{"sp.gender": "male"}, {"_id": "b"}]},
        {"$and": [{"sp.gender": "male"}, {"by": "Practitioner/x"}]},
    ]
    assert indexed_branches("Patient", REACH) == [{"_id": "a"}, {"_id": "b"},
                                                  {"by": "Practitioner/x"}]


def test_a_filter_an_index_answers_or_that_cannot_split_is_left_whole():
    assert indexed_branches("Patient", {"$and": [{"_id": "a"}, REACH]}) is None
    assert indexed_branches("Patient", {"sp.gender": "male"}) is None
    # an alternative no index answers: the union would read everything anyway
    assert indexed_branches("Patient", {"$or": [{"_id": {"$in": ["a"]}},
                                                {"sp.gender": "male"}]}) is None
    many = {"_id": {"$in": [str(i) for i in range(ID_LOOKUPS_MAX + 1)]}}
    assert indexed_branches("Patient", many) is None


def test_rows_compare_as_mongodb_sorts_them_missing_lowest_either_direction():
    sort = [("so.birthdate", -1), ("_id", 1)]
    early = datetime(1950, 1, 1, tzinfo=UTC)
    late = datetime(1950, 1, 1, 9, tzinfo=timezone(timedelta(hours=8)))  # 01:00 UTC
    assert compare_rows(sort, [late, "a"], [early, "a"]) == -1  # newer first
    assert compare_rows(sort, [None, "a"], [early, "a"]) == 1  # missing last descending
    assert compare_rows([("so.birthdate", 1)], [None], [early]) == -1  # first ascending
    assert compare_rows(sort, [early, "a"], [early, "b"]) == -1
    assert compare_rows(sort, [early, "a"], [early, "a"]) == 0
