"""A search's query as the audit log keeps it (R4 auditevent.html: entity.query and
entity.description): the shape stays, identity values become keyed hashes of the
normalised value, and a description in plain words names the identifier system as
the registry (``GET NamingSystem``) names it."""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import quote

import pytest

from fhirserver.audit.queries import Pseudonyms, describe, is_identity, pseudonymise, split_values, target
from fhirserver.model.identifier_systems import load_registry

KEY = b"k" * 32
RESIDENT = "https://fhirserver.example/sid/resident-id"
NUMBER = "11010519491231002X"


def h(value: str) -> str:
    return "hmac-sha256:" + hmac.new(KEY, value.encode(), hashlib.sha256).hexdigest()


@pytest.mark.parametrize(("name", "tested"), [
    ("identifier", "identifier"),
    ("identifier:of-type", "identifier"),
    ("subject:Patient.identifier", "identifier"),
    ("subject:identifier", "identifier"),  # search.html#modifiers: a reference by identifier
    ("subject:Patient.general-practitioner:identifier", "identifier"),
    ("subject.name:contains", "name"),
    ("_has:Observation:patient:identifier", "identifier"),
    ("_has:Observation:subject:_has:AuditEvent:entity:phone", "phone"),
    ("_has:broken", "_has:broken"),
    ("code", "code"),
])
def test_the_parameter_a_chain_finally_tests(name, tested):
    assert target(name) == tested


@pytest.mark.parametrize("name", ["identifier", "telecom", "phone", "email", "name", "family",
                                  "given", "address", "address-city", "address-postalcode",
                                  "sourceIdentifier", "subject:Patient.identifier",
                                  "_has:Observation:patient:identifier", "name:exact"])
def test_identity_parameters(name):
    assert is_identity(name)


@pytest.mark.parametrize("name", ["code", "subject", "patient", "_id", "date", "_count", "birthdate"])
def test_other_parameters(name):
    assert not is_identity(name)


@pytest.mark.parametrize(("query", "kept"), [
    ("code=1-1&_count=10", "code=1-1&_count=10"),
    (f"identifier={RESIDENT}|{NUMBER.lower()}", f"identifier={RESIDENT}|{h(NUMBER)}"),
    (f"identifier={quote(RESIDENT + '|' + NUMBER[:6] + ' ' + NUMBER[6:], safe='')}",
     f"identifier={RESIDENT}|{h(NUMBER)}"),  # percent-encoded, a space typed in it
    (f"identifier={NUMBER}", f"identifier={h(NUMBER)}"),
    (f"subject:identifier={RESIDENT}|{NUMBER}", f"subject:identifier={RESIDENT}|{h(NUMBER)}"),
    (f"identifier=|{NUMBER}", f"identifier=|{h(NUMBER)}"),
    (f"identifier={RESIDENT}|", f"identifier={RESIDENT}|"),
    ("identifier:of-type=http://t|PPN|E1234567", f"identifier:of-type=http://t|PPN|{h('E1234567')}"),
    ("phone=138 0013 8000&_sort=name", f"phone={h('13800138000')}&_sort=name"),
    ("telecom=phone|13800138000", f"telecom=phone|{h('13800138000')}"),
    ("name=wang,li", f"name={h('WANG')},{h('LI')}"),
    ("family:exact=Wang", f"family:exact={h('WANG')}"),
    ("address-city=Beijing&code=x", f"address-city={h('BEIJING')}&code=x"),
    ("name:missing=true", "name:missing=true"),
    (f"subject:Patient.identifier={RESIDENT}|{NUMBER}&code=75622-1",
     f"subject:Patient.identifier={RESIDENT}|{h(NUMBER)}&code=75622-1"),
    (f"_has:Observation:patient:identifier=x|{NUMBER}",
     f"_has:Observation:patient:identifier=x|{h(NUMBER)}"),
    ("_cursor=eyJhIjpbIldhbmciXX0", f"_cursor={h('EYJHIJPBILDHBMCIXX0')}"),
    ("_summary", "_summary"),
])
def test_identity_values_become_keyed_hashes_of_the_normalised_value(query, kept):
    out = pseudonymise(query, Pseudonyms(KEY))
    assert out == kept
    assert NUMBER not in out and "13800138000" not in out


def test_escaped_commas_stay_in_one_value():
    assert split_values(r"a\,b,c") == [r"a\,b", "c"]


def test_another_key_gives_other_hashes():
    one = pseudonymise(f"identifier={NUMBER}", Pseudonyms(KEY))
    other = pseudonymise(f"identifier={NUMBER}", Pseudonyms(b"o" * 32))
    assert one != other


@pytest.mark.parametrize(("rtype", "query", "words"), [
    ("Patient", f"identifier={RESIDENT}|{NUMBER}&_count=1",
     "Search for Patient by identifier (National resident identity card number (GB 11643))"),
    ("Patient", "identifier=https://fhirserver.example/sid/passport/USA|E1&phone=1",
     "Search for Patient by identifier (Passport number, per issuing country (ISO 3166-1 "
     "alpha-3): USA), phone number"),
    ("Patient", f"identifier=urn:unknown|{NUMBER}", "Search for Patient by identifier"),
    ("Observation", f"subject:Patient.identifier={RESIDENT}|{NUMBER}&code=1",
     "Search for Observation by subject's identifier (National resident identity card number "
     "(GB 11643)), code"),
    ("Patient", "_has:Observation:subject:code=75622-1",
     "Search for Patient by linked Observation code"),
    ("Observation", "patient=Patient/someone-else&_sort=date&_cursor=abc",
     "Search for Observation by patient"),
    ("Patient", "13800138000=1&x13800138000=2", "Search for Patient by other criteria"),
    ("Observation", "", "Search for Observation"),
    (None, "_type=Patient", "Search"),
])
def test_a_search_in_plain_words(rtype, query, words):
    assert describe(rtype, query, load_registry()) == words
