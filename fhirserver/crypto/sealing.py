"""Sealed values: secrets kept in the database, encrypted and bound to their place.

AES-256-GCM (NIST SP 800-38D) under a key derived from the master key for sealing
only. The associated data is the value's identity, what document and field it
belongs to (e.g. ``_auth_keys/<kid>/jwk``), together with the sealed value's
header: a sealed value copied into another document, or a header edited, fails to
open as surely as an altered ciphertext.

A sealed value is a small document stored in place of the secret::

    {"sealed": 1, "kid": "<key id>", "alg": "A256GCM", "iv": "<b64url>", "ct": "<b64url>"}

``sealed`` is the format version and ``kid`` names the key that sealed it (today the
master key's id), so a later key hierarchy can seal under data keys of its own and
still open what was sealed before. Pure: no I/O.
"""

from __future__ import annotations

import base64
import os
from functools import lru_cache
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from . import SealError, WrongMasterKey
from .master import MasterKey

FORMAT = 1
ALGORITHM = "A256GCM"
PURPOSE = "seal/A256GCM/v1"
NONCE_BYTES = 12  # the GCM IV length SP 800-38D recommends


def is_sealed(value: object) -> bool:
    return isinstance(value, dict) and "sealed" in value and "ct" in value


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Sealer:
    """Seals and opens values under one master key's sealing sub-key."""

    def __init__(self, master: MasterKey) -> None:
        self.kid = master.kid
        self.source = master.source
        self._aead = AESGCM(master.derive(PURPOSE))

    def _aad(self, kid: str, identity: str) -> bytes:
        return orjson.dumps([FORMAT, ALGORITHM, kid, identity])

    def seal(self, plaintext: bytes, identity: str) -> dict[str, Any]:
        """``plaintext`` sealed for the place ``identity`` names."""
        nonce = os.urandom(NONCE_BYTES)
        ct = self._aead.encrypt(nonce, plaintext, self._aad(self.kid, identity))
        return {"sealed": FORMAT, "kid": self.kid, "alg": ALGORITHM, "iv": _b64(nonce),
                "ct": _b64(ct)}

    def open(self, sealed: dict[str, Any], identity: str) -> bytes:
        """The plaintext of a value sealed for ``identity``; :class:`SealError` when it
        was altered or belongs elsewhere, :class:`WrongMasterKey` when another key
        sealed it."""
        if sealed.get("sealed") != FORMAT or sealed.get("alg") != ALGORITHM:
            raise SealError(f"{identity}: sealed in an unknown format "
                            f"({sealed.get('sealed')!r}, {sealed.get('alg')!r})")
        if sealed.get("kid") != self.kid:
            raise WrongMasterKey(f"{identity} was sealed under master key {sealed.get('kid')}, "
                                 f"but the configured key ({self.source}) is {self.kid}")
        try:
            return self._aead.decrypt(_unb64(str(sealed["iv"])), _unb64(str(sealed["ct"])),
                                      self._aad(self.kid, identity))
        except (InvalidTag, KeyError, ValueError) as exc:
            raise SealError(f"{identity} does not open: it was altered or moved from another "
                            "document") from exc

    def seal_json(self, value: Any, identity: str) -> dict[str, Any]:
        return self.seal(orjson.dumps(value), identity)

    def open_json(self, sealed: dict[str, Any], identity: str) -> Any:
        return orjson.loads(self.open(sealed, identity))


@lru_cache(maxsize=16)
def sealer(master: MasterKey) -> Sealer:
    """The one :class:`Sealer` of ``master`` in this process."""
    return Sealer(master)
