"""The one-time pass that stores as JSON text the resources earlier versions stored as
BSON documents (stored_form.py says why).

Only current versions are rewritten: they are what searches and reads decode. History
keeps its documents, which read unchanged. ``serve`` runs it before its workers start,
as the other one-time passes, in batches of :data:`BATCH` updates per command.
"""

from __future__ import annotations

from collections.abc import Callable

from pymongo import UpdateOne

from .documents import Collections
from .stored_form import needs_text, stored_form

Progress = Callable[[str, int, int], None]
BATCH = 200


def store_as_text(cols: Collections, progress: Progress | None = None) -> int:
    """Rewrite every current ``res`` held as a document; returns how many changed."""
    changed = 0
    for collection in cols.current.values():
        total, seen = collection.estimated_document_count(), 0
        ops: list[UpdateOne] = []
        for doc in collection.find({}, {"res": 1, "v": 1}):
            seen += 1
            if needs_text(doc.get("res")):
                # The filter keeps a version written meanwhile from being overwritten.
                ops.append(UpdateOne({"_id": doc["_id"], "v": doc["v"]},
                                     {"$set": {"res": stored_form(doc["res"])}}))
            if len(ops) == BATCH:
                changed += collection.bulk_write(ops, ordered=False).modified_count
                ops = []
            if progress and seen % BATCH == 0:
                progress(collection.name, seen, max(total, seen))
        if ops:
            changed += collection.bulk_write(ops, ordered=False).modified_count
        if progress:
            progress(collection.name, seen, max(total, seen))
    return changed
