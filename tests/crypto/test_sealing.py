"""Sealed values (AES-256-GCM, NIST SP 800-38D): they open only in the document they
were sealed for, unaltered, under the key that sealed them."""

from __future__ import annotations

import os

import pytest

from fhirserver.crypto import SealError, WrongMasterKey
from fhirserver.crypto.master import MasterKey
from fhirserver.crypto.sealing import FORMAT, Sealer, is_sealed

MASTER = MasterKey(os.urandom(32), "test")


def test_seal_and_open():
    s = Sealer(MASTER)
    sealed = s.seal_json({"d": "private"}, "_auth_keys/k1/jwk")
    assert is_sealed(sealed) and sealed["sealed"] == FORMAT and sealed["kid"] == MASTER.kid
    assert "private" not in repr(sealed)
    assert s.open_json(sealed, "_auth_keys/k1/jwk") == {"d": "private"}
    assert s.seal(b"x", "a")["iv"] != s.seal(b"x", "a")["iv"]


def test_a_value_moved_to_another_document_does_not_open():
    s = Sealer(MASTER)
    sealed = s.seal(b"secret", "_auth_keys/k1/jwk")
    with pytest.raises(SealError, match="moved"):
        s.open(sealed, "_auth_keys/k2/jwk")


@pytest.mark.parametrize("change", [
    {"ct": "AAAA"},
    {"iv": "AAAAAAAAAAAAAAAA"},
    {"sealed": 2},
    {"alg": "A128GCM"},
])
def test_an_altered_value_does_not_open(change):
    s = Sealer(MASTER)
    sealed = {**s.seal(b"secret", "id"), **change}
    with pytest.raises(SealError):
        s.open(sealed, "id")


def test_another_master_key_is_named_not_guessed_at():
    sealed = Sealer(MASTER).seal(b"secret", "id")
    other = Sealer(MasterKey(os.urandom(32), "FHIR_MASTER_KEY"))
    with pytest.raises(WrongMasterKey, match=f"sealed under master key {MASTER.kid}.*{other.kid}"):
        other.open(sealed, "id")
    forged = {**sealed, "kid": other.kid}  # claiming the other key does not help
    with pytest.raises(SealError):
        other.open(forged, "id")
