"""Data keys: the keys that encrypt identity numbers and telecom values in the database.

A key hierarchy (NIST SP 800-57 part 1, section 6.1.1 key wrapping): the master key
never encrypts data itself. It seals (``sealing.py``) random 256-bit **data keys**,
each kept in ``_data_keys`` under an id, and the data keys encrypt the values
(``fields.py``). Every encrypted value names the data key that encrypted it, so:

* ``fhirserver keys rotate-data`` makes a new data key the active one and
  re-encrypts what older keys encrypted, while the server keeps serving: a value
  under an older key still opens, whenever it is read;
* no data key is ever deleted, so a backup taken before a rotation still opens with
  the master key (its own copy of ``_data_keys`` holds the keys it needs).

``_data_keys`` holds one document per key (``{_id: kid, key: <sealed>, created}``)
and the pointer ``{_id: "active", kid}``. Several workers starting on a new database
create one key each and race to insert the pointer: the primary key admits one, and
every process uses the key it names.

A process keeps the ring it read and reads it again when it meets a key id it does
not know (a key made by a rotation in another process) and every
:data:`REFRESH_SECONDS`, so a rotation reaches every worker within that time.
"""

from __future__ import annotations

import secrets
import threading
import time
from datetime import UTC, datetime
from typing import Any

from pymongo.errors import DuplicateKeyError

from . import CryptoError
from .sealing import Sealer

DATA_KEYS = "_data_keys"
ACTIVE = "active"
KEY_BYTES = 32
#: How long a process trusts the active pointer it read before reading it again.
REFRESH_SECONDS = 5.0


class UnknownDataKey(CryptoError):
    """A value names a data key this database does not hold."""


def _identity(kid: str) -> str:
    return f"{DATA_KEYS}/{kid}/key"


class KeyRing:
    """The data keys of one database, opened with the master key's sealer."""

    def __init__(self, db: Any, sealer: Sealer) -> None:
        self._col = db[DATA_KEYS]
        self._sealer = sealer
        self._keys: dict[str, bytes] = {}
        self._active: str | None = None
        self._order: list[str] = []
        self._read_at = 0.0
        self._lock = threading.Lock()

    # -- reading -----------------------------------------------------------------------
    def _load(self) -> None:
        keys: dict[str, bytes] = {}
        order: list[tuple[Any, str]] = []
        active: str | None = None
        for doc in self._col.find({}):
            if doc["_id"] == ACTIVE:
                active = doc["kid"]
            else:
                keys[doc["_id"]] = self._sealer.open(doc["key"], _identity(doc["_id"]))
                order.append((doc.get("created"), doc["_id"]))
        self._keys, self._active, self._read_at = keys, active, time.monotonic()
        self._order = [kid for _, kid in sorted(order, key=lambda o: (str(o[0]), o[1]))]

    def _fresh(self) -> None:
        if self._active is None or time.monotonic() - self._read_at > REFRESH_SECONDS:
            with self._lock:
                if self._active is None or time.monotonic() - self._read_at > REFRESH_SECONDS:
                    self._load()
                    if self._active is None:
                        self._create_first()

    def active(self) -> tuple[str, bytes]:
        """The id and key new values are encrypted under."""
        self._fresh()
        assert self._active is not None
        return self._active, self._keys[self._active]

    def key(self, kid: str) -> bytes:
        """The data key ``kid``; the ring is read again once when it is not known."""
        found = self._keys.get(kid)
        if found is None:
            with self._lock:
                self._load()
            found = self._keys.get(kid)
        if found is None:
            raise UnknownDataKey(f"data key {kid} is not in {DATA_KEYS}: the database was "
                                 "restored without the keys that encrypted it")
        return found

    def ids(self) -> list[str]:
        """Every data key id, oldest first."""
        self._fresh()
        return list(self._order)

    # -- writing -----------------------------------------------------------------------
    def _new_key(self) -> str:
        kid = secrets.token_hex(8)
        self._col.insert_one({"_id": kid, "key": self._sealer.seal(secrets.token_bytes(KEY_BYTES),
                                                                   _identity(kid)),
                              "created": datetime.now(UTC)})
        return kid

    def _create_first(self) -> None:
        kid = self._new_key()
        try:
            self._col.insert_one({"_id": ACTIVE, "kid": kid})
        except DuplicateKeyError:  # another process made the first key: use that one
            self._col.delete_one({"_id": kid})
        self._load()

    def rotate(self) -> str:
        """A new data key, made the active one; the id of the key it replaces stays
        readable (never deleted). Returns the new id."""
        kid = self._new_key()
        self._col.replace_one({"_id": ACTIVE}, {"_id": ACTIVE, "kid": kid}, upsert=True)
        with self._lock:
            self._load()
        return kid
