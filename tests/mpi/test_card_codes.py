"""Card codes without a database (issue point 8): what a code's first use is
recorded under, and who may use it again."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

from fhirserver.mpi.card_tokens import fingerprint, issue_token, read_code
from fhirserver.mpi.code_uses import may_reuse

SECRET = "s" * 43
NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def respelled(payload: str) -> str:
    """The same code with a spare low bit of the signature set: an HS256 signature is
    32 bytes, 43 base64url characters carrying 258 bits, and RFC 4648 section 3.5
    lets decoders ignore the 2 left over (joserfc refuses them; a lenient decoder
    would accept the code)."""
    head, sig = payload.rsplit(".", 1)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    assert len(base64.urlsafe_b64decode(sig + "=")) == 32 and len(sig) == 43
    return f"{head}.{sig[:-1]}{alphabet[alphabet.index(sig[-1]) ^ 1]}"


def test_a_code_has_one_fingerprint_however_its_signature_is_spelled() -> None:
    """RFC 7515 section 5.1: the signing input is what the signature protects."""
    code = issue_token("card-1", NOW, 300, SECRET)
    other = respelled(code)
    assert other != code
    assert fingerprint(other) == fingerprint(code)
    assert fingerprint(issue_token("card-1", NOW, 300, SECRET)) != fingerprint(code)  # nonce


def test_the_fingerprint_does_not_contain_the_code() -> None:
    code = issue_token("card-1", NOW, 300, SECRET)
    assert len(fingerprint(code)) == 64 and fingerprint(code) not in code
    assert read_code(code, NOW, SECRET).exp == int(NOW.timestamp()) + 300


def test_only_the_first_party_uses_a_code_again() -> None:
    assert may_reuse("Organization/a", "Organization/a")
    assert not may_reuse("Organization/a", "Organization/b")
