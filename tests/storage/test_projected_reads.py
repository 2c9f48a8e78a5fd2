"""A read of some fields answers as the same read in full, projected.

The embedded FerretDB does not decode the fields a find's projection drops
(scripts/ferretdb/patches/skip-projected-fields.patch): the server's searches drop
their search values (storage/repository.py ``_KEYED``) while filtering on them
(``sp.date:hi``) and sorting on them (``so.-date``), and its existence checks keep
only ``del`` or ``_id``, so a field the filter or the sort reads must still be
decoded for them. Compared here against the same find decoding every field, over
the query shapes the server sends and others."""

from __future__ import annotations

import struct
from typing import Any

import bson
from bson.raw_bson import RawBSONDocument
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymongo import MongoClient

FIELDS = ("a", "b", "c", "d")
_SCALARS = st.integers(min_value=0, max_value=4) | st.sampled_from(["x", "y", "z"])
_VALUES = (_SCALARS | st.lists(_SCALARS, max_size=3)
           | st.fixed_dictionaries({"lo": _SCALARS, "hi": _SCALARS}))
_DOCUMENTS = st.lists(st.dictionaries(st.sampled_from(FIELDS), _VALUES), min_size=1,
                      max_size=8)

_CONDITIONS = st.one_of(
    st.builds(lambda f, v: {f: v}, st.sampled_from(FIELDS), _SCALARS),
    st.builds(lambda f, v: {f + ".lo": {"$gte": v}}, st.sampled_from(FIELDS),
              st.integers(min_value=0, max_value=4)),
    st.builds(lambda f: {f: {"$exists": True}}, st.sampled_from(FIELDS)),
)
_FILTERS = st.one_of(
    st.just({}),
    _CONDITIONS,
    st.builds(lambda a, b: {"$and": [a, {"$or": [b, {"zz": 1}]}]}, _CONDITIONS, _CONDITIONS),
    st.builds(lambda a, b: {"$nor": [a], **b}, _CONDITIONS, _CONDITIONS),
    st.builds(lambda f: {"$expr": "$" + f}, st.sampled_from(FIELDS)),  # $expr reads any field
)
_EXCLUSIONS = st.lists(st.sampled_from(FIELDS), min_size=1, unique=True).map(
    lambda fs: {f: 0 for f in fs})
_INCLUSIONS = st.builds(
    lambda fs, ids: {**{f: 1 for f in fs}, **ids},
    st.lists(st.sampled_from([*FIELDS, "a.lo", "b.hi"]), unique=True, max_size=3),
    st.sampled_from([{}, {"_id": 0}, {"_id": 1}]),
).filter(lambda p: p and p != {"_id": 0})
_PROJECTIONS = _EXCLUSIONS | _INCLUSIONS | st.just({"a.lo": 0, "b": 0})
#: Always true, and read whole by FerretDB (it cannot tell the fields an $expr reads):
#: the same find decoding every field, for comparison.
_WHOLE = {"$expr": {"$type": "$_id"}}
_SORTS = st.lists(st.tuples(st.sampled_from([*FIELDS, "a.lo", "b.hi"]), st.sampled_from([1, -1])),
                  max_size=2, unique_by=lambda s: s[0])


def _projected(doc: dict[str, Any], projection: dict[str, int]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in projection}


def _same(a: Any, b: Any) -> bool:
    return bson.encode({"v": a}) == bson.encode({"v": b})


def _compare(col: Any, flt: dict[str, Any], projection: dict[str, int],
             sort: list[tuple[str, int]]) -> None:
    order = [*sort, ("_id", 1)]
    lean = list(col.find(flt, projection).sort(order))
    whole = list(col.find({"$and": [flt, _WHOLE]}, projection).sort(order))
    assert _same(lean, whole), (flt, projection, sort)
    if all(v == 0 and "." not in k for k, v in projection.items()):
        full = list(col.find(flt).sort(order))
        assert _same(lean, [_projected(d, projection) for d in full]), (flt, projection, sort)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(docs=_DOCUMENTS, flt=_FILTERS, projection=_PROJECTIONS, sort=_SORTS)
def test_a_find_of_some_fields_selects_orders_and_projects_as_the_full_find(
        mongo_uri: str, docs: list[dict], flt: dict, projection: dict,
        sort: list[tuple[str, int]]) -> None:
    with MongoClient(mongo_uri, serverSelectionTimeoutMS=5000) as client:
        col = client["test_projected_reads"]["docs"]
        col.delete_many({})
        col.insert_many([{"_id": f"d{i}", **doc} for i, doc in enumerate(docs)])
        _compare(col, flt, projection, sort)


def test_the_servers_search_read_filters_and_sorts_on_fields_it_leaves_out(
        mongo_uri: str) -> None:
    """The shape of a patient's sorted, date-bounded page (search/buckets.py): the
    projection drops ``sp`` and ``k`` while the filter reads them (top level and
    under ``$and``), and the sort reads ``so`` beside them."""
    docs = [{"_id": f"o{i}", "pat": "p1" if i % 3 else "p2", "del": i == 7,
             "k": ["code=a" if i % 2 else "code=b", "patient=Patient/p1"],
             "sp": {"date:hi": f"2024-05-{i + 1:02d}"}, "so": {"-date": f"2024-05-{i + 1:02d}"},
             "b": ["date>2024-05"], "res": f"resource {i}", "refs": [], "h": "x", "ps": ["4"]}
            for i in range(12)]
    flt = {"pat": "p1", "k": "code=a", "del": False, "b": "date>2024-05",
           "$and": [{"$and": [{"k": "patient=Patient/p1"}, {"sp.date:hi": {"$gt": "2024-05-03"}}]}]}
    projection = {"sp": 0, "refs": 0, "h": 0, "k": 0, "b": 0, "ps": 0}
    with MongoClient(mongo_uri, serverSelectionTimeoutMS=5000) as client:
        col = client["test_projected_reads"]["search"]
        col.delete_many({})
        col.insert_many(docs)
        got = list(col.find(flt, projection).sort([("so.-date", -1), ("_id", 1)]).limit(3))
        assert [d["_id"] for d in got] == ["o11", "o5"]  # p1, code a, live, after the 3rd
        assert all(set(d) == {"_id", "pat", "del", "so", "res"} for d in got)
        _compare(col, flt, projection, [("so.-date", -1)])


def _raw(pairs: list[tuple[str, Any]]) -> RawBSONDocument:
    """A BSON document that may repeat a key (a dict cannot)."""
    body = b"".join(bson.encode({k: v})[4:-1] for k, v in pairs)
    return RawBSONDocument(struct.pack("<i", len(body) + 5) + body + b"\x00")


def test_a_find_whose_projection_or_filter_repeats_a_key_is_answered(mongo_uri: str) -> None:
    """A client can send a key twice in a projection or a filter: the answer is the
    same as without the projection, not a dropped connection."""
    docs = [{"_id": f"d{i}", "owner": "alice" if i % 2 else "bob", "sec": f"s{i}"}
            for i in range(6)]
    with MongoClient(mongo_uri, serverSelectionTimeoutMS=5000, retryReads=False) as client:
        col = client["test_projected_reads"]["repeated"]
        col.delete_many({})
        col.insert_many(docs)
        got = list(col.find({"owner": "alice"}, _raw([("sec", 0), ("sec", 0)])).sort("_id", 1))
        assert got == [{"_id": d["_id"], "owner": "alice"} for d in docs if d["owner"] == "alice"]
        flt = _raw([("$or", [{"sec": "s1"}, {"sec": "s2"}]), ("$or", [{"sec": "s2"}])])
        full = list(col.find(flt).sort("_id", 1))
        assert list(col.find(flt, {"sec": 0}).sort("_id", 1)) == [
            _projected(d, {"sec": 0}) for d in full]
