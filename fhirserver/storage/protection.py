"""What the repository does to a resource on its way into and out of the database.

Identity numbers and telecom values are encrypted in the stored form and blinded in
everything search, uniqueness and change detection compute (``crypto/fields.py``);
this module puts the two together for one database: its data keys, the blind-index
key derived from the deployment's master key, and the identifier registry that says
which systems hold identity numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from ..crypto.data_keys import KeyRing
from ..crypto.fields import IDENTIFIER, Blinder, FieldCipher
from ..crypto.master import MasterKey
from ..crypto.sealing import sealer
from ..model.identifier_systems import Registry

#: The HKDF purpose of the blind-index key (never stored; the master key derives it).
BLIND_INDEX_PURPOSE = "blind-index/HMAC-SHA256/v1"
#: Top-level field of a stored document: the ids of the data keys its ``res`` uses.
DATA_KEYS_FIELD = "dk"
#: The health card registry, whose ``number`` field is encrypted (mpi/cards.py).
CARDS = "_health_cards"
#: What a card's encrypted number is bound to (associated data, crypto/fields.py).
CARD_NUMBER_FIELD = f"{CARDS}/number"


@dataclass(frozen=True)
class Protection:
    cipher: FieldCipher
    blinder: Blinder

    @classmethod
    def open(cls, db: Any, master: MasterKey, registry: Registry) -> Protection:
        @lru_cache(maxsize=4096)
        def is_identity(system: str) -> bool:
            return registry.match(system) is not None

        ring = KeyRing(db, sealer(master))
        return cls(FieldCipher(ring, is_identity),
                   Blinder(master.derive(BLIND_INDEX_PURPOSE), is_identity))

    def opened(self, res: dict[str, Any] | None, doc: dict[str, Any]) -> dict[str, Any] | None:
        """The resource of a stored document ``doc`` whose ``res`` reads as ``res``."""
        if res is not None and doc.get(DATA_KEYS_FIELD):
            return self.cipher.open(res)
        return res

    def claim_key(self, key: str) -> str:
        """The stored form of a uniqueness claim ``system|value``: the system, and the
        value's blind index."""
        system, _, value = key.rpartition("|")
        return f"{system}|{self.blinder.value(IDENTIFIER, value)}"
