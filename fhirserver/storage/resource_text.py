"""The one-time pass that stores as JSON text the resources earlier versions stored as
BSON documents (stored_form.py says why).

Only current versions are rewritten: they are what searches and reads decode. History
keeps its documents, which read unchanged. ``serve`` runs it before its workers start,
as the other one-time passes, one update per document: FerretDB 1.24 can hang on an
``update`` command of many statements while a cursor of the same client is open.
"""

from __future__ import annotations

from collections.abc import Callable

from .documents import Collections
from .stored_form import needs_text, stored_form

Progress = Callable[[str, int, int], None]
EVERY = 200  # documents between progress reports


def store_as_text(cols: Collections, progress: Progress | None = None) -> int:
    """Rewrite every current ``res`` held as a document; returns how many changed."""
    changed = 0
    for collection in cols.current.values():
        total, seen = collection.estimated_document_count(), 0
        for seen, doc in enumerate(collection.find({}, {"res": 1, "v": 1}), 1):
            if needs_text(doc.get("res")):
                # The filter keeps a version written meanwhile from being overwritten.
                changed += collection.update_one(
                    {"_id": doc["_id"], "v": doc["v"]},
                    {"$set": {"res": stored_form(doc["res"])}}).modified_count
            if progress and seen % EVERY == 0:
                progress(collection.name, seen, max(total, seen))
        if progress:
            progress(collection.name, seen, max(total, seen))
    return changed
