"""The one-time pass that gives records an earlier version stored their population
shards (search/shards.py).

Unsorted population pages are read shard by shard only once this pass is marked
done, so until then they are read as before (whole, but complete). ``serve`` runs it
before its workers start, as the other one-time passes: to the version read only
while it is still current (a newer one has its shards already), one update per
command (FerretDB 1.24 can hang on an ``update`` command of many statements).
"""

from __future__ import annotations

from collections.abc import Callable

from ..search.shards import ORDER_FIELD, shard_fields
from .documents import Collections

Progress = Callable[[str, int, int], None]
EVERY = 200  # documents between progress reports


def add_population_shards(cols: Collections, progress: Progress | None = None) -> int:
    """Give every current record that lacks them its shard fields; returns how many."""
    changed = 0
    for collection in cols.current.values():
        total, seen = collection.estimated_document_count(), 0
        for seen, doc in enumerate(collection.find({ORDER_FIELD: {"$exists": False}},
                                                   {"v": 1}), 1):
            changed += collection.update_one(
                {"_id": doc["_id"], "v": doc["v"]},
                {"$set": shard_fields(doc["_id"])}).modified_count
            if progress and seen % EVERY == 0:
                progress(collection.name, seen, max(total, seen))
        if progress:
            progress(collection.name, seen, max(total, seen))
    return changed
