"""The scanner behind the privacy-at-rest proof (issue 12) finds a value in every form
it is written in, and nothing in what is no such form: a proof that cannot fail, or
that fails on ciphertext, proves nothing. Pure tests, no server."""

from __future__ import annotations

import base64
import json
import os
import socket
from pathlib import Path

import bson
import pytest
from bson.binary import Binary
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tests.mpi.numbers import gb11643
from tests.privacy_scan import (
    Secret,
    needles,
    report,
    scan_bytes,
    scan_document,
    scan_file,
    scan_tree,
)

RID = "https://fhirserver.example/sid/resident-id"
NUMBER = gb11643("110105", "19850312", "008")  # ends in X
RESIDENT = Secret(NUMBER, RID, "resident")
PHONE = Secret("13912345678", "phone", "phone")
FOUND = needles([RESIDENT, PHONE])


def found_in(data: bytes) -> set[str]:
    return {hit.needle.secret.label for hit in scan_bytes(data, FOUND)}


def noisy(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    return os.urandom(37) + b'{"x": "' + data + b'"}' + os.urandom(41)


def test_the_number_is_an_x_case() -> None:
    assert NUMBER.endswith("X")


@pytest.mark.parametrize("written", [
    NUMBER, NUMBER.lower(), "110105 19850312 008X", "110105-19850312-008x",
    f"{RID}|{NUMBER}", f"identifier={RID}%7C{NUMBER}",
    "identifier=https%3A%2F%2Ffhirserver.example%2Fsid%2Fresident-id%7C" + NUMBER,
    f"sourceIdentifier={RID}|{NUMBER}", f"{RID}|{NUMBER}".replace("/", "\\/"),
    NUMBER.encode().hex(), NUMBER.encode().hex().upper(),
])
def test_a_resident_id_is_found_however_it_is_written(written: str) -> None:
    assert found_in(noisy(written)) == {"resident"}


def test_a_resident_id_is_found_in_utf16() -> None:
    assert found_in(noisy(NUMBER.encode("utf-16-le"))) == {"resident"}


@pytest.mark.parametrize("written", [
    "13912345678", "139 1234 5678", "139-1234-5678", "+8613912345678", "+86 139 1234 5678",
    "0086-139-1234-5678", "(+86) 139 1234 5678", "8613912345678", "phone=13912345678",
    "telecom=13912345678", "telecom=phone%7C13912345678", "phone=%2B8613912345678",
])
def test_a_phone_is_found_however_it_is_written(written: str) -> None:
    assert found_in(noisy(written)) == {"phone"}


@pytest.mark.parametrize("prefix", range(6))
@pytest.mark.parametrize("encode", [base64.b64encode, base64.urlsafe_b64encode])
@pytest.mark.parametrize("inner", [NUMBER, f"identifier={RID}|{NUMBER}",
                                   json.dumps({"identifier": [{"system": RID, "value": NUMBER}]})])
def test_base64_of_a_longer_string_is_found_at_any_offset(prefix: int, encode, inner: str) -> None:
    """A value inside a string encoded as a whole: its base64 depends on the value's
    offset modulo 3; the alignment-shifted cores catch every offset."""
    data = encode(b"k" * prefix + inner.encode() + b"&_count=5")
    assert found_in(noisy(data.rstrip(b"="))) == {"resident"}


def test_ciphertext_masked_values_and_other_numbers_are_not_hits() -> None:
    key = AESGCM.generate_key(bit_length=256)
    sealed = AESGCM(key).encrypt(os.urandom(12), NUMBER.encode(), None)
    other = gb11643("110105", "19850312", "010")
    clean = [sealed, base64.b64encode(sealed), base64.urlsafe_b64encode(sealed),
             sealed.hex().encode(), b"110105********008X", other.encode(), b"139****5678",
             os.urandom(1 << 16)]
    assert [found_in(data) for data in clean] == [set()] * len(clean)


def test_a_tree_is_scanned_without_links_sockets_or_the_key_file(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_text(NUMBER)
    root = tmp_path / "data"
    (root / "pg" / "base").mkdir(parents=True)
    (root / "pg" / "base" / "16384").write_bytes(os.urandom(5000) + NUMBER.encode())
    (root / "server.log").write_text("GET /Patient?phone=13912345678 200\n")
    (root / "clean").write_bytes(os.urandom(3000))
    (root / "master.key").write_text(NUMBER)
    (root / "link").symlink_to(outside)
    (root / "dirlink").symlink_to(tmp_path, target_is_directory=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(root / "s"))
        hits = scan_tree(root, FOUND)
    finally:
        sock.close()
    assert sorted((h.where, h.offset, h.needle.secret.label) for h in hits) == [
        ("pg/base/16384", 5000, "resident"), ("server.log", 13, "phone")]


def test_a_value_across_chunk_boundaries_is_found_once(tmp_path: Path) -> None:
    path = tmp_path / "wal"
    path.write_bytes(b"\0" * 1000 + f"{RID}|{NUMBER}".encode() + b"\0" * 100)
    for size in (7, 64, 1010, 1 << 20):
        hits = scan_file(path, FOUND, chunk_size=size)
        assert [(h.offset, h.needle.form) for h in hits] == [(1000, "system|value")], size


def test_a_document_names_the_field_that_holds_a_value() -> None:
    doc = {"_id": f"{RID}|{NUMBER}", "res": {"telecom": [{"value": 13912345678}]},
           "k": {NUMBER.lower(): 1}, "b": Binary(NUMBER.encode("utf-16-le"))}
    hits = scan_document(bson.encode(doc), FOUND, "fhir.Patient #0")
    assert sorted((h.where, h.needle.form) for h in hits) == [
        ("fhir.Patient #0 _id", "system|value"),
        ("fhir.Patient #0 b", "UTF-16-LE"),
        ("fhir.Patient #0 k{key}", "lower case"),
        ("fhir.Patient #0 res.telecom[0].value", "as given"),
    ]


def test_the_report_names_places_and_forms_not_values() -> None:
    hits = scan_bytes(noisy(f"{RID}|{NUMBER} +86 139 1234 5678"), FOUND, "pg_wal/0001")
    text = report(hits)
    assert "pg_wal/0001 [system|value]" in text and "[+86 grouped ' ']" in text
    assert NUMBER not in text and "13912345678" not in text and "1234 5678" not in text
