"""Replace-or-insert by primary key, for the server's own small collections
(care relationships, consent choices, revoked tokens)."""

from __future__ import annotations

from typing import Any

from pymongo.errors import DuplicateKeyError


def upsert(collection: Any, doc: dict[str, Any], attempts: int = 5) -> None:
    """Replace-or-insert by primary key. Two concurrent upserts of one new key can
    both try to insert (MongoDB documents this; FerretDB does it more often): the
    loser retries, and then finds the document to replace."""
    for attempt in range(attempts):
        try:
            collection.replace_one({"_id": doc["_id"]}, doc, upsert=True)
            return
        except DuplicateKeyError:
            if attempt + 1 == attempts:
                raise
