"""Bringing every stored value under the active data key, while the server serves.

One pass serves two purposes:

* after ``fhirserver keys rotate-data`` (crypto/data_keys.py), values encrypted
  under an older data key are encrypted again under the new one;
* on the first start after an upgrade from a version that kept identity numbers
  and telecom in clear, those documents are encrypted, their search values,
  content hash and uniqueness claims recomputed from the blinded form
  (crypto/fields.py), and the claims collection re-keyed.

History documents are written once and never changed by requests, so they are
re-encrypted in place. A current document holds the same stored form as the
history document of its version: it is rebuilt from that history document with a
compare-and-set on its version, and read back; if a request wrote a new version
meanwhile (FerretDB 1.x does not apply two updates of one document atomically), the
current document is rebuilt from the history of the version it now holds, which is
what recovery does (storage/recovery.py). Nothing is deleted: the old data keys stay
in ``_data_keys``, so backups taken before the pass still open.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pymongo.errors import DuplicateKeyError

from ..crypto.fields import BLIND_PREFIX, protected_nodes
from .documents import Collections
from .indexing import rebuild_current
from .protection import CARD_NUMBER_FIELD, CARDS, DATA_KEYS_FIELD, Protection
from .stored_form import resource_of, stored_form

Progress = Callable[[str, int, int], None]  # (collection, done, total)


@dataclass
class Pass:
    """What one pass changed, per collection."""

    changed: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, n: int = 1) -> None:
        self.changed[name] = self.changed.get(name, 0) + n

    @property
    def total(self) -> int:
        return sum(self.changed.values())


def _needs(protection: Protection, doc: dict[str, Any], kid: str) -> bool:
    """Does this stored document hold a value not under data key ``kid``?"""
    keys = doc.get(DATA_KEYS_FIELD) or []
    if keys:
        return any(k != kid for k in keys)
    res = resource_of(doc.get("res"))
    return res is not None and bool(protected_nodes(res, protection.cipher.is_identity))


def _sealed(protection: Protection, doc: dict[str, Any], kid: str) -> tuple[Any, list[str]]:
    """The stored form of ``doc``'s resource with every protected value under ``kid``."""
    res = resource_of(doc.get("res"))
    assert res is not None
    if doc.get(DATA_KEYS_FIELD):
        protection.cipher.reseal(res, kid)
        return stored_form(res), [kid]
    sealed, keys = protection.cipher.seal(res)
    protection.cipher.reseal(sealed, kid)
    return stored_form(sealed), [kid] if keys else []


def _claim(protection: Protection, key: str) -> str:
    """A claim key in its stored form (a key an older version stored in clear, blinded)."""
    value = key.rpartition("|")[2]
    return key if value.startswith(BLIND_PREFIX) else protection.claim_key(key)


class Reencryption:
    def __init__(self, db: Any, cols: Collections, protection: Protection, tz: Any) -> None:
        self.db, self.cols, self.protection, self.tz = db, cols, protection, tz

    def run(self, progress: Progress | None = None) -> Pass:
        """One pass over every collection that holds encrypted values."""
        kid, _ = self.protection.cipher.ring.active()
        done = Pass()
        for rtype in self.cols.current:
            self._history(rtype, kid, done, progress)
            self._current(rtype, kid, done, progress)
        self._claims(done, progress)
        self._cards(kid, done, progress)
        return done

    def _history(self, rtype: str, kid: str, done: Pass, progress: Progress | None) -> None:
        col = self.cols.history[rtype]
        name = col.name
        total, seen = col.estimated_document_count(), 0
        for doc in col.find({}, {"res": 1, DATA_KEYS_FIELD: 1}):
            seen += 1
            if _needs(self.protection, doc, kid):
                res, keys = _sealed(self.protection, doc, kid)
                col.update_one({"_id": doc["_id"]}, {"$set": {"res": res, DATA_KEYS_FIELD: keys}})
                done.add(name)
            if progress and seen % 200 == 0:
                progress(name, seen, total)
        if progress:
            progress(name, seen, max(total, seen))

    def _current(self, rtype: str, kid: str, done: Pass, progress: Progress | None) -> None:
        col, history = self.cols.current[rtype], self.cols.history[rtype]
        name = col.name
        total, seen = col.estimated_document_count(), 0
        for doc in col.find({}, {"res": 1, DATA_KEYS_FIELD: 1, "v": 1, "cl": 1}):
            seen += 1
            if progress and seen % 200 == 0:
                progress(name, seen, total)
            if not _needs(self.protection, doc, kid) and \
                    all(_claim(self.protection, c) == c for c in doc.get("cl") or ()):
                continue
            self._rebuild(rtype, doc["_id"], doc["v"], doc.get("cl") or [])
            done.add(name)
            now = col.find_one({"_id": doc["_id"]}, {"v": 1})
            if now is not None and now["v"] != doc["v"]:
                # A request wrote meanwhile: make sure the current document is the
                # one its history says, whichever update was applied last.
                latest = history.find_one({"_id": f"{doc['_id']}/{now['v']}"})
                if latest is not None:
                    self._rebuild(rtype, doc["_id"], now["v"], None)
        if progress:
            progress(name, seen, max(total, seen))

    def _rebuild(self, rtype: str, rid: str, version: int, claims: list[str] | None) -> None:
        col, history = self.cols.current[rtype], self.cols.history[rtype]
        source = history.find_one({"_id": f"{rid}/{version}"})
        if source is None:  # no history kept for it: the current document is the source
            current = col.find_one({"_id": rid, "v": version})
            if current is None:
                return
            kid, _ = self.protection.cipher.ring.active()
            res, keys = _sealed(self.protection, current, kid) if current.get("res") else (None, [])
            source = {**current, "rid": rid, "res": res, DATA_KEYS_FIELD: keys}
        rebuilt = rebuild_current(rtype, source, self.tz, self.protection)
        if claims is not None:
            rebuilt["cl"] = [_claim(self.protection, c) for c in claims]
        else:
            current = col.find_one({"_id": rid}, {"cl": 1}) or {}
            rebuilt["cl"] = [_claim(self.protection, c) for c in current.get("cl") or ()]
        col.replace_one({"_id": rid, "v": version}, rebuilt)

    def _claims(self, done: Pass, progress: Progress | None) -> None:
        col = self.cols.claims
        for doc in col.find({}):
            key = _claim(self.protection, doc["_id"])
            if key == doc["_id"]:
                continue
            with contextlib.suppress(DuplicateKeyError):
                col.insert_one({**doc, "_id": key})
            col.delete_one({"_id": doc["_id"]})
            done.add(col.name)
        if progress:
            progress(col.name, 1, 1)

    def _cards(self, kid: str, done: Pass, progress: Progress | None) -> None:
        col, cipher = self.db[CARDS], self.protection.cipher
        for doc in col.find({"number": {"$exists": True}}, {"number": 1}):
            number, owner = doc["number"], f"{CARDS}/{doc['_id']}"
            if isinstance(number, dict):
                if cipher.kid_of(number) == kid:
                    continue
                number = cipher.decrypt(number, CARD_NUMBER_FIELD, owner)
            col.update_one({"_id": doc["_id"], "number": doc["number"]},
                           {"$set": {"number": cipher.encrypt(str(number), CARD_NUMBER_FIELD,
                                                              kid, owner)}})
            done.add(CARDS)
        if progress:
            progress(CARDS, 1, 1)
