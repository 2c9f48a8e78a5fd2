"""What the database returns is what was stored, value for value: the embedded
FerretDB is built to decode stored documents with goccy/go-json in place of
encoding/json (scripts/ferretdb/patches), so every kind of value a record holds
(escaped and astral text, numbers at their limits, dates, nesting) is read back
through the decoder unchanged, by one read and by a batch of reads."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import bson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymongo import MongoClient

from fhirserver.config import PROJECT_ROOT

PATCHES = PROJECT_ROOT / "scripts" / "ferretdb" / "patches"

_KEYS = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="$.\x00"),
                min_size=1, max_size=12)
_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                max_size=40)
_SCALARS = (
    _TEXT
    | st.sampled_from(["\"quoted\"", "back\\slash", "\u2028\u2029", "\U0001F9EA emoji",
                       "\t\n\r\b\f", "</script>", "\ufeffbom", "null", "{", "]"])
    | st.integers(min_value=-(2**31), max_value=2**31 - 1)
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    # FerretDB 1.x stores -0.0 as 0.0 (unpatched too); FHIR's decimals keep their
    # sign in the resource text, which is one string.
    | st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: x != 0 or x.hex()[0] != "-")
    | st.sampled_from([0.1, 1e308, -1e308, 5e-324, 2.0**53 + 2, 6.30])
    | st.booleans()
    | st.none()
    | st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31))
      .map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000))
)
# Documents nest; arrays hold scalars and documents (FerretDB 1.x stores no array
# directly inside another, and records never hold one).
_OBJECTS = st.recursive(
    st.dictionaries(_KEYS, _SCALARS, max_size=4),
    lambda inner: st.dictionaries(
        _KEYS, _SCALARS | inner | st.lists(_SCALARS | inner, max_size=4), max_size=4),
    max_leaves=30,
)
_VALUES = _SCALARS | _OBJECTS | st.lists(_SCALARS | _OBJECTS, max_size=5)
_DOCUMENTS = st.dictionaries(_KEYS, _VALUES, min_size=1, max_size=8)


def _same(a: Any, b: Any) -> bool:
    return bson.encode({"v": a}) == bson.encode({"v": b})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(docs=st.lists(_DOCUMENTS, min_size=1, max_size=6))
def test_every_stored_value_is_read_back_unchanged(mongo_uri: str, docs: list[dict]) -> None:
    with MongoClient(mongo_uri, serverSelectionTimeoutMS=5000) as client:
        col = client["test_document_values"]["values"]
        col.delete_many({})
        stored = [{"_id": f"d{i}", "doc": doc} for i, doc in enumerate(docs)]
        col.insert_many(stored)
        assert _same(col.find_one({"_id": "d0"}), stored[0])
        read = list(col.find({}).sort("_id", 1))
        assert len(read) == len(stored)
        for got, want in zip(read, stored, strict=True):
            assert _same(got, want), (got, want)


def test_a_large_document_of_many_levels_is_read_back_unchanged(mongo_uri: str) -> None:
    deep: Any = {"leaf": "\u00e9\U0001F9EA\"\\"}
    for level in range(40):
        deep = {f"l{level}": [deep, level, -level * 1.5, f"s{level}"]}
    doc = {"_id": "big", "deep": deep, "text": "x\u2028" * 50_000,
           "when": datetime(2024, 3, 1, 7)
           + timedelta(milliseconds=123)}
    with MongoClient(mongo_uri, serverSelectionTimeoutMS=5000) as client:
        col = client["test_document_values"]["large"]
        col.delete_many({})
        col.insert_one(doc)
        assert _same(col.find_one({"_id": "big"}), doc)


def test_a_long_string_of_many_escapes_reads_back_unchanged(mongo_uri: str) -> None:
    """A resource is stored as one JSON text string (storage/stored_form.py), so a large
    note full of quotes and line breaks is a string of half a megabyte of which one
    byte in three is escaped in the database's JSON: it reads back unchanged."""
    note = "\"quoted\"\n\t\\ " * 40_000
    with MongoClient(mongo_uri, serverSelectionTimeoutMS=5000) as client:
        col = client["test_document_values"]["escapes"]
        col.delete_many({})
        col.insert_one({"_id": "escaped", "res": note})
        got = col.find_one({"_id": "escaped"})
        assert got is not None and got["res"] == note


def test_the_decoder_patch_never_uses_goccys_stream_decoder() -> None:
    """goccy's stream Decoder moves the rest of its buffer at each escape in a string:
    reading the note above took 1.5 s with it (12 s at 1 MB, against 0.02 s), so one
    record written once would slow every read and search that selects it. The patch
    decodes with goccy's Unmarshal only."""
    patch = PATCHES / "goccy-json-decoding.patch"
    added = [line for line in patch.read_text().splitlines() if line.startswith("+")]
    assert any("gojson.Unmarshal(" in line for line in added)
    assert not [line for line in added if "gojson.NewDecoder" in line]
