"""Field encryption under data keys, and blind indexes (crypto/fields.py, data_keys.py).

PIPL article 51 (encryption of sensitive personal information); NIST SP 800-38D
(AES-GCM, associated data); NIST SP 800-57 part 1 section 6.1.1 (a key hierarchy:
the master key wraps data keys, data keys encrypt data).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from pymongo import MongoClient

from fhirserver.crypto import SealError, WrongMasterKey
from fhirserver.crypto.data_keys import DATA_KEYS, KeyRing, UnknownDataKey
from fhirserver.crypto.fields import Blinder, FieldCipher, protected_nodes
from fhirserver.crypto.master import MasterKey
from fhirserver.crypto.sealing import Sealer

RID = "https://fhirserver.example/sid/resident-id"
NUMBER = "11010519900307123X"
PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "identifier": [{"system": RID, "value": NUMBER},
                   {"system": "http://hospital.example/visit", "value": "V-1"}],
    "telecom": [{"system": "phone", "value": "13800138000"},
                {"system": "email", "value": "wang@example.org"}],
    "contact": [{"telecom": [{"system": "phone", "value": "13900139000"}]}],
    "extension": [{"url": "http://example.org/second-phone",  # extensibility.html
                   "valueContactPoint": {"system": "phone", "value": "13700137000"}}],
    "generalPractitioner": [{"identifier": {"system": RID, "value": "110105195001011234"}}],
    "contained": [{"resourceType": "Patient", "id": "c",
                   "identifier": [{"system": RID, "value": "110105196001011235"}]}],
}
CLEAR = ("13800138000", "wang@example.org", "13900139000", "13700137000", NUMBER, "110105195001011234",
         "110105196001011235")


def is_identity(system: str) -> bool:
    return system == RID


@pytest.fixture
def db(mongo_uri: str, db_name: str) -> Iterator[Any]:
    with MongoClient(mongo_uri) as client:
        yield client[db_name]


def master() -> MasterKey:
    return MasterKey(secrets.token_bytes(32), "test")


def test_every_identity_number_and_telecom_value_is_found_wherever_it_is():
    found = {node["value"] for node, _ in protected_nodes(PATIENT, is_identity)}
    assert found == set(CLEAR)  # the visit number of another system stays in clear


def test_the_stored_form_holds_no_value_and_opens_to_the_resource(db):
    cipher = FieldCipher(KeyRing(db, Sealer(master())), is_identity)
    sealed, keys = cipher.seal(PATIENT)
    assert keys == [cipher.ring.active()[0]]
    text = str(sealed)
    assert not any(value in text for value in CLEAR)
    assert "V-1" in text
    assert cipher.open(sealed) == PATIENT
    # Encryption is randomised: the same number twice is two different ciphertexts.
    again, _ = cipher.seal(PATIENT)
    assert again["identifier"][0]["value"] != sealed["identifier"][0]["value"]


def test_a_ciphertext_moved_to_another_element_or_altered_does_not_open(db):
    """AES-GCM associated data binds a value to its element's system (SP 800-38D)."""
    cipher = FieldCipher(KeyRing(db, Sealer(master())), is_identity)
    sealed, _ = cipher.seal(PATIENT)
    moved = {**sealed, "telecom": [{"system": "email", "value": sealed["telecom"][0]["value"]}]}
    with pytest.raises(SealError):
        cipher.open(moved)
    body = sealed["identifier"][0]["value"]["e"]
    altered = body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1]
    with pytest.raises(SealError):
        cipher.decrypt({"e": altered}, RID)


def test_data_keys_are_sealed_and_only_the_master_key_opens_them(db):
    ring = KeyRing(db, Sealer(master()))
    kid, key = ring.active()
    stored = db[DATA_KEYS].find_one({"_id": kid})
    assert key.hex() not in str(stored) and stored["key"]["kid"]  # sealed, naming the master key
    with pytest.raises(WrongMasterKey):
        KeyRing(db, Sealer(master())).active()


def test_a_rotation_keeps_every_older_key_so_old_values_still_open(db):
    """Old backups stay readable: no data key is ever deleted."""
    m = master()
    ring = KeyRing(db, Sealer(m))
    cipher = FieldCipher(ring, is_identity)
    old, _ = cipher.seal(PATIENT)
    first = ring.active()[0]
    second = ring.rotate()
    assert ring.active()[0] == second != first and ring.ids() == [first, second]
    # Another process (its own ring) learns the new key and still opens the old values.
    other = FieldCipher(KeyRing(db, Sealer(m)), is_identity)
    assert other.ring.active()[0] == second
    assert other.open(old) == PATIENT
    assert cipher.reseal(old, second) is True and cipher.reseal(old, second) is False
    assert {cipher.kid_of(n["value"]) for n, _ in cipher._sealed_nodes(old)} == {second}
    assert cipher.open(old) == PATIENT


def test_a_value_under_a_key_the_database_lacks_says_so(db):
    cipher = FieldCipher(KeyRing(db, Sealer(master())), is_identity)
    with pytest.raises(UnknownDataKey):
        cipher.decrypt({"e": "1.0123456789abcdef.AAAA"}, RID)


def test_workers_starting_together_agree_on_one_first_key(db):
    from concurrent.futures import ThreadPoolExecutor

    m = master()
    with ThreadPoolExecutor(8) as pool:
        kids = set(pool.map(lambda _: KeyRing(db, Sealer(m)).active()[0], range(8)))
    assert len(kids) == 1


def test_blind_indexes_are_keyed_and_normalised():
    blinder = Blinder(b"a" * 32, is_identity)
    assert blinder.value("identifier", NUMBER) == blinder.value("identifier", NUMBER.lower())
    assert blinder.value("identifier", NUMBER) == \
        blinder.value("identifier", f"{NUMBER[:6]} {NUMBER[6:14]}-{NUMBER[14:]}")
    assert blinder.value("telecom", "+86 138-0013-8000") == blinder.value("telecom", "+8613800138000")
    # Another key, another index: without the key a number's index cannot be computed.
    assert Blinder(b"b" * 32, is_identity).value("identifier", NUMBER) != \
        blinder.value("identifier", NUMBER)
    # The kind is part of the input: a phone number is not an identifier's index.
    assert blinder.value("telecom", "13800138000") != blinder.value("identifier", "13800138000")
    blinded = blinder.blinded(PATIENT)
    assert not any(value in str(blinded) for value in CLEAR)
    assert PATIENT["identifier"][0]["value"] == NUMBER  # the resource itself is untouched


def test_a_ciphertext_copied_into_another_resource_does_not_open_there(db):
    """The associated data names the resource: whoever can write the database but
    lacks the key cannot move patient A's number into patient B's record, where B's
    own login would read it whole."""
    cipher = FieldCipher(KeyRing(db, Sealer(master())), is_identity)
    a, _ = cipher.seal({**PATIENT, "id": "a"})
    b, _ = cipher.seal({**PATIENT, "id": "b"})
    b["identifier"][0]["value"] = a["identifier"][0]["value"]
    with pytest.raises(SealError):
        cipher.open(b)


def test_a_narrative_that_shows_a_protected_value_is_kept_encrypted(db):
    """narrative.html: a generated narrative renders the identifiers; it would keep
    in clear what the elements keep encrypted, and its content hash would be an
    unkeyed hash of the number."""
    spaced = f"{NUMBER[:6]} {NUMBER[6:14]} {NUMBER[14:].lower()}"
    div = f'<div xmlns="http://www.w3.org/1999/xhtml">Wang, ID {spaced}, tel 138-0013-8000</div>'
    resource = {**PATIENT, "id": "n", "text": {"status": "generated", "div": div},
                "contained": [{**PATIENT["contained"][0], "text": {
                    "status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">'
                    "110105196001011235</div>"}}]}
    cipher = FieldCipher(KeyRing(db, Sealer(master())), is_identity)
    sealed, _ = cipher.seal(resource)
    assert "138-0013" not in str(sealed) and "19900307" not in str(sealed)
    assert "196001011235" not in str(sealed)
    assert cipher.open(sealed) == resource
    blinded = Blinder(b"a" * 32, is_identity).blinded(resource)
    assert "19900307" not in str(blinded) and "196001011235" not in str(blinded)
    plain = {**resource, "text": {"status": "generated",
                                  "div": '<div xmlns="http://www.w3.org/1999/xhtml">Wang</div>'}}
    assert cipher.seal(plain)[0]["text"] == plain["text"]  # nothing shown: left as written


def test_a_record_with_nothing_encrypted_is_answered_as_it_is_and_every_value_still_opens(db):
    """Reading a record looks for encrypted values in one pass over its JSON text: a
    record holding none (an Observation) is the stored object itself; one holding
    some opens wherever they are, also when its values are not plain JSON (exact
    decimals, integers past 64 bits, which that pass cannot write)."""
    from decimal import Decimal

    cipher = FieldCipher(KeyRing(db, Sealer(master())), is_identity)
    observation = {"resourceType": "Observation", "id": "o", "status": "final",
                   "valueQuantity": {"value": 36.5, "unit": "Cel"},
                   "note": [{"text": '"e": not a sealed value'}]}
    assert cipher.open(observation) is observation
    for odd in ({}, {"multipleBirthInteger": 2**70}, {"extension": [{"url": "x",
                                                                  "valueDecimal": Decimal("2.50")}]}):
        resource = {**PATIENT, "id": "p", **odd}
        sealed, _ = cipher.seal(resource)
        assert cipher.open(sealed) == resource, odd
