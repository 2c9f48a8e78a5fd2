"""The one-time pass that gives records an earlier version stored their day keys.

A search for a birth date lifts the key of that day (search/keys.py, ``day_condition``):
a Patient stored before such keys existed would not be found by it. So ``serve``
adds them once, before its workers start, as the other one-time passes: to the
version read only while it is still current (a newer one has its keys already),
and one update per command (FerretDB 1.24 can hang on an ``update`` command of
many statements).
"""

from __future__ import annotations

from collections.abc import Callable

from ..search.keys import KEY_FIELD, day_keyed, day_keys
from .documents import Collections

Progress = Callable[[str, int, int], None]
EVERY = 200  # documents between progress reports


def add_date_keys(cols: Collections, progress: Progress | None = None) -> int:
    """Add the day keys current records lack; returns how many records changed."""
    changed = 0
    for rtype, collection in cols.current.items():
        names = day_keyed(rtype)
        if not names:
            continue
        total, seen = collection.estimated_document_count(), 0
        dated = {"$or": [{f"sp.{name}": {"$exists": True}} for name in sorted(names)]}
        for seen, doc in enumerate(collection.find(dated, {"sp": 1, KEY_FIELD: 1, "v": 1}), 1):
            have = set(doc.get(KEY_FIELD) or [])
            missing = [key for key in day_keys(rtype, doc.get("sp") or {}) if key not in have]
            if missing:
                changed += collection.update_one(
                    {"_id": doc["_id"], "v": doc["v"]},
                    {"$addToSet": {KEY_FIELD: {"$each": missing}}}).modified_count
            if progress and seen % EVERY == 0:
                progress(collection.name, seen, max(total, seen))
        if progress:
            progress(collection.name, seen, max(total, seen))
    return changed
