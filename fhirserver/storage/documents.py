"""The MongoDB collections, declared as mongoengine documents.

DESIGN.md section 4: one collection per resource type for current versions
(``Patient``), one for history (``Patient_history``). A current document holds the
FHIR JSON exactly as accepted (``res``, with server-managed ``meta``; as text when
it holds numbers BSON cannot keep exactly, see stored_form.py) next to what
search needs (``sp``, extracted at write time) and the compartment key ``pat`` (the
patient the record belongs to; also the shard key once one machine is outgrown).

History documents hold every version, including the current one, keyed
``"<id>/<version>"`` so that inserting a version twice fails on the primary key.
Search values are not kept in history: they are a pure function of ``res`` and are
recomputed when a current document has to be rebuilt from history.

Hot paths use the pymongo collections behind these classes directly; the classes
give the collections their names, their indexes and a connection alias, so several
apps (and test databases) can live in one process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mongoengine import (
    BooleanField,
    DateTimeField,
    DictField,
    Document,
    DynamicField,
    IntField,
    ListField,
    StringField,
)
from pymongo.collection import Collection

from ..model.types import SUPPORTED_TYPES
from ..search.sorting import sort_index_keys

HISTORY_SUFFIX = "_history"
JOURNAL_COLLECTION = "_journal"
CLAIMS_COLLECTION = "_identifier_claims"
#: Conditional criteria being written (storage/search_claims.py).
SEARCH_CLAIMS_COLLECTION = "_search_claims"


def current_indexes(resource_type: str) -> list[list[tuple[str, int]]]:
    """The indexes of a type's current collection: one led by each top-level field a
    lifted filter pins (search/keys.py), then those that serve sorts."""
    out: list[list[tuple[str, int]]] = [
        [("pat", 1), ("k", 1)],
        [("pat", 1), ("lu", 1)],
        [("k", 1), ("_id", 1)],
        # A patient's records of one month, for sorted pages (search/buckets.py).
        [("b", 1), ("pat", 1)],
        [("lu", 1), ("_id", 1)],
        [("refs", 1)],
        # What a clinician or an organisation wrote stays in their reach.
        [("by", 1), ("lu", 1)],
        [("org", 1), ("lu", 1)],
        # Unsorted population pages, shard by shard (search/shards.py).
        [("ps", 1), ("sh", 1), ("_id", 1)],
        [("k", 1), ("ps", 1), ("sh", 1), ("_id", 1)],
    ]
    for keys in sort_index_keys(resource_type):
        out.append(keys)
        out.append([("pat", 1), *keys])
    return out


def _current_class(resource_type: str, alias: str) -> type[Document]:
    indexes: list[Any] = [{"fields": [("+" if d > 0 else "-") + f for f, d in keys]}
                          for keys in current_indexes(resource_type)]
    attrs = {
        "id": StringField(primary_key=True),
        "v": IntField(required=True),
        "lu": DateTimeField(required=True),
        "deleted": BooleanField(db_field="del", default=False),
        "res": DynamicField(),  # a document, or JSON text: storage/stored_form.py
        "pat": StringField(),
        "sp": DictField(),
        "k": ListField(StringField()),
        "b": ListField(StringField()),
        "so": DictField(),
        "h": StringField(),
        "refs": ListField(StringField()),
        "org": StringField(),
        "by": StringField(),
        "sh": StringField(),
        "ps": ListField(StringField()),
        "meta": {
            "collection": resource_type,
            "db_alias": alias,
            "indexes": indexes,
            "auto_create_index": False,
        },
    }
    return type(f"{resource_type}Current_{alias}", (Document,), attrs)


def _history_class(resource_type: str, alias: str) -> type[Document]:
    attrs = {
        "id": StringField(primary_key=True),
        "rid": StringField(required=True),
        "v": IntField(required=True),
        "lu": DateTimeField(required=True),
        "deleted": BooleanField(db_field="del", default=False),
        "res": DynamicField(),  # a document, or JSON text: storage/stored_form.py
        "pat": StringField(),
        "method": StringField(),
        "meta": {
            "collection": resource_type + HISTORY_SUFFIX,
            "db_alias": alias,
            "indexes": [
                {"fields": ["rid", "-v"]},
                {"fields": ["-lu", "-_id"]},
            ],
            "auto_create_index": False,
        },
    }
    return type(f"{resource_type}History_{alias}", (Document,), attrs)


def _journal_class(alias: str) -> type[Document]:
    attrs = {
        "id": StringField(primary_key=True),
        "state": StringField(required=True),
        "started": DateTimeField(required=True),
        "writes": ListField(DictField()),
        "meta": {
            "collection": JOURNAL_COLLECTION,
            "db_alias": alias,
            "indexes": [{"fields": ["state", "started"]}],
            "auto_create_index": False,
        },
    }
    return type(f"Journal_{alias}", (Document,), attrs)


def _claims_class(alias: str) -> type[Document]:
    """Unique identifiers held by active Patients: ``_id`` is ``system|value``, so the
    primary key itself refuses a second holder (master patient index uniqueness)."""
    attrs = {
        "id": StringField(primary_key=True),
        "rid": StringField(required=True),
        "meta": {
            "collection": CLAIMS_COLLECTION,
            "db_alias": alias,
            "indexes": [{"fields": ["rid"]}],
            "auto_create_index": False,
        },
    }
    return type(f"Claims_{alias}", (Document,), attrs)


@dataclass(frozen=True)
class Collections:
    """The pymongo collections of one database, by resource type."""

    current: dict[str, Collection[Any]]
    history: dict[str, Collection[Any]]
    journal: Collection[Any]
    claims: Collection[Any]
    documents: tuple[type[Document], ...]

    def declared_indexes(self) -> list[tuple[str, list[tuple[str, int]]]]:
        """(collection, keys) of every index the documents declare."""
        out: list[tuple[str, list[tuple[str, int]]]] = []
        for doc in self.documents:
            name = doc._get_collection_name()  # type: ignore[attr-defined]
            for spec in doc._meta["index_specs"]:  # type: ignore[attr-defined]
                out.append((name, [(f, int(d)) for f, d in spec["fields"]]))
        return out


def build_collections(alias: str) -> Collections:
    docs: list[type[Document]] = []
    current: dict[str, Collection[Any]] = {}
    history: dict[str, Collection[Any]] = {}
    for rtype in SUPPORTED_TYPES:
        cur, hist = _current_class(rtype, alias), _history_class(rtype, alias)
        docs += [cur, hist]
        current[rtype] = cur._get_collection()  # type: ignore[attr-defined]
        history[rtype] = hist._get_collection()  # type: ignore[attr-defined]
    journal, claims = _journal_class(alias), _claims_class(alias)
    docs += [journal, claims]
    return Collections(
        current, history,
        journal._get_collection(),  # type: ignore[attr-defined]
        claims._get_collection(),  # type: ignore[attr-defined]
        tuple(docs),
    )
