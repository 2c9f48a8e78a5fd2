"""The one-time passes that bring current records an earlier version stored up to
today's shape: their resource as JSON text, their day keys, their population shards,
no values of union parameters.

``serve`` runs each once, before its workers start (FerretDB reads a document and
then writes it back, so a pass must not race a request), and marks it done
(Repository._once); a new database is marked at once. Each record is updated on its
own, to the version read only while it is still current (a newer one has the new
shape already), one update per command: FerretDB 1.24 can hang on an ``update``
command of many statements while a cursor of the same client is open.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..search.catalog import parameters_for
from ..search.keys import KEY_FIELD, day_keyed, day_keys, stored_values
from ..search.shards import ORDER_FIELD, shard_fields
from .documents import Collections
from .stored_form import needs_text, stored_form

Progress = Callable[[str, int, int], None]
EVERY = 200  # documents between progress reports
#: The filter of the records a pass reads in a type (None: none of that type).
Select = Callable[[str], Mapping[str, Any] | None]
#: The update of one record (None: it is in shape already).
Change = Callable[[str, dict[str, Any]], dict[str, Any] | None]


def rewrite_current(cols: Collections, select: Select, fields: Mapping[str, int],
                    change: Change, progress: Progress | None = None) -> int:
    """Apply ``change`` to every current record ``select`` picks; returns how many
    records changed."""
    changed = 0
    for rtype, collection in cols.current.items():
        chosen = select(rtype)
        if chosen is None:
            continue
        total, seen = collection.estimated_document_count(), 0
        for seen, doc in enumerate(collection.find(dict(chosen), {**fields, "v": 1}), 1):
            update = change(rtype, doc)
            if update:
                changed += collection.update_one(
                    {"_id": doc["_id"], "v": doc["v"]}, update).modified_count
            if progress and seen % EVERY == 0:
                progress(collection.name, seen, max(total, seen))
        if progress:
            progress(collection.name, seen, max(total, seen))
    return changed


def store_as_text(cols: Collections, progress: Progress | None = None) -> int:
    """Resources an earlier version stored as BSON documents become JSON text
    (stored_form.py says why). Only current versions: they are what searches and
    reads decode; history keeps its documents, which read unchanged."""
    def change(_rtype: str, doc: dict[str, Any]) -> dict[str, Any] | None:
        return {"$set": {"res": stored_form(doc["res"])}} if needs_text(doc.get("res")) else None
    return rewrite_current(cols, lambda _rtype: {}, {"res": 1}, change, progress)


def add_date_keys(cols: Collections, progress: Progress | None = None) -> int:
    """Records get the day keys of their ``date`` parameters (search/keys.py,
    ``day_condition``): a search for a birth date tests its day's key, and would not
    find a Patient stored without it."""
    def select(rtype: str) -> Mapping[str, Any] | None:
        names = day_keyed(rtype)
        return {"$or": [{f"sp.{name}": {"$exists": True}} for name in sorted(names)]} \
            if names else None

    def change(rtype: str, doc: dict[str, Any]) -> dict[str, Any] | None:
        have = set(doc.get(KEY_FIELD) or [])
        missing = [key for key in day_keys(rtype, doc.get("sp") or {}) if key not in have]
        return {"$addToSet": {KEY_FIELD: {"$each": missing}}} if missing else None
    return rewrite_current(cols, select, {"sp": 1, KEY_FIELD: 1}, change, progress)


def add_population_shards(cols: Collections, progress: Progress | None = None) -> int:
    """Records get their population shards (search/shards.py). Population pages are
    read shard by shard only once this pass is marked done: until then they are read
    whole, and complete."""
    return rewrite_current(cols, lambda _rtype: {ORDER_FIELD: {"$exists": False}}, {},
                           lambda _rtype, doc: {"$set": shard_fields(doc["_id"])}, progress)


def drop_union_values(cols: Collections, progress: Progress | None = None) -> int:
    """Records lose the values of union parameters (``combo-code``...) an earlier
    version stored in ``sp``: their parts hold them, and a search tests those
    (search/keys.py, ``stored_values``). A third of a stored Observation's search
    values were such copies, and FerretDB decodes every value of a record it reads."""
    def select(rtype: str) -> Mapping[str, Any] | None:
        return {} if any(p.union for p in parameters_for(rtype).values()) else None

    def change(rtype: str, doc: dict[str, Any]) -> dict[str, Any] | None:
        sp = doc.get("sp") or {}
        kept = stored_values(rtype, sp)
        gone = [f"sp.{name}" for name in sp if name not in kept]
        return {"$unset": dict.fromkeys(gone, "")} if gone else None
    return rewrite_current(cols, select, {"sp": 1}, change, progress)
