"""The one-time pass that lets months written before day buckets be read by day.

Records stored before day buckets existed carry only their months (search/buckets.py),
and their months are registered without ``v``: a walk reads them whole, which is right
but costs every record of the month. Only crowded months make that costly, so only
those are rewritten: their records get their days, the days are registered, and then
(never before: a walk trusts ``v`` to mean "every record has its days") the month gets
its count and ``v``. Months with few records stay as they are.

``serve`` runs it before its workers start, as the other one-time passes, but
another server answering on the same database may still write: a record gets the
buckets of the version read, only if that version is still current (a newer one has
its days already). Updates go one per command: FerretDB 1.24 can hang on an
``update`` command of many statements.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from pymongo.database import Database
from pymongo.errors import BulkWriteError

from ..search.buckets import (
    BUCKET_FIELD,
    BUCKETED,
    DAYS,
    DENSE,
    REGISTRY,
    buckets_of,
    is_month,
    registry_docs,
)
from .documents import Collections

Progress = Callable[[str, int, int], None]
BATCH = 500


def _crowded(collection: Any, rtype: str, progress: Progress | None) -> Counter[tuple[str, str]]:
    """(patient, month bucket) of every month holding more than DENSE records."""
    counts: Counter[tuple[str, str]] = Counter()
    total, seen = collection.estimated_document_count(), 0
    for seen, doc in enumerate(collection.find({}, {"so": 1, "pat": 1}), 1):
        if doc.get("pat"):
            for bucket in buckets_of(rtype, doc.get("so") or {})[:2]:
                counts[(doc["pat"], bucket)] += 1
        if progress and seen % 1000 == 0:
            progress(f"{collection.name} (counting)", seen, max(total, seen))
    if progress:
        progress(f"{collection.name} (counting)", seen, max(total, seen))
    return Counter({key: n for key, n in counts.items() if n > DENSE})


def add_day_buckets(db: Database[Any], cols: Collections,
                    progress: Progress | None = None) -> int:
    """Give the records of every crowded month their day buckets; returns how many
    records changed."""
    changed = 0
    for rtype in BUCKETED:
        collection = cols.current[rtype]
        crowded = _crowded(collection, rtype, progress)
        for done, ((patient, bucket), n) in enumerate(sorted(crowded.items()), 1):
            registry: dict[str, dict[str, Any]] = {}
            for doc in collection.find({"pat": patient, BUCKET_FIELD: bucket},
                                       {"so": 1, "v": 1, BUCKET_FIELD: 1}):
                buckets = buckets_of(rtype, doc.get("so") or {})
                if doc.get(BUCKET_FIELD) != buckets:
                    # The filter keeps a version written meanwhile (by a server still
                    # answering on the same database), which has its days already, from
                    # getting the buckets of the version read here.
                    changed += collection.update_one(
                        {"_id": doc["_id"], "v": doc["v"]},
                        {"$set": {BUCKET_FIELD: buckets}}).modified_count
                for entry in registry_docs(rtype, patient, buckets):
                    if not is_month(entry):
                        registry[entry.pop("_id")] = entry
            days = [{"_id": key, **entry} for key, entry in registry.items()]
            for i in range(0, len(days), BATCH):
                try:
                    db[REGISTRY].insert_many(days[i:i + BATCH], ordered=False)
                except BulkWriteError as exc:  # days registered already, and only those
                    if any(e.get("code") != 11000 for e in exc.details.get("writeErrors", ())):
                        raise
            month = registry_docs(rtype, patient, [bucket])[0]
            db[REGISTRY].update_one({"_id": month.pop("_id")},
                                    {"$set": {**month, "v": DAYS, "n": n}}, upsert=True)
            if progress:
                progress(f"{collection.name} (crowded months)", done, len(crowded))
    return changed
