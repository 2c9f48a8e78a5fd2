"""Search values of identity numbers and telecom become blind indexes (search/blinding.py).

The database holds only blind indexes of these values, so a search that did not blind
its value would find nothing; one that blinded a value of another kind would miss
identifiers stored in clear. R4 search.html#token (``[system]|[code]``, ``|[code]``,
``[code]``, ``:of-type``, ``:text``) and search.html#combining (comma = OR).
"""

from __future__ import annotations

from zoneinfo import ZoneInfo

from fhirserver.crypto.fields import Blinder
from fhirserver.search.compile import compile_filter
from fhirserver.search.parse import parse_query

RID = "https://fhirserver.example/sid/resident-id"
OTHER = "http://hospital.example/visit"
NUMBER = "11010519900307123X"
BLINDER = Blinder(b"k" * 32, lambda s: s == RID)


def values(rtype: str, key: str, raw: str) -> tuple:
    query = parse_query(rtype, [(key, raw)], tz=ZoneInfo("UTC"), blinder=BLINDER)
    return query.clauses[0].values


def test_an_identity_number_with_its_system_is_searched_by_its_blind_index_only():
    (value,) = values("Patient", "identifier", f"{RID}|{NUMBER}")
    assert value.system == RID and value.code == BLINDER.value("identifier", NUMBER)
    assert NUMBER not in str(compile_filter(parse_query(
        "Patient", [("identifier", f"{RID}|{NUMBER}")], tz=ZoneInfo("UTC"), blinder=BLINDER)))


def test_a_number_written_with_spaces_or_a_lower_case_x_finds_the_same_index():
    spaced = f"{NUMBER[:6]} {NUMBER[6:14]} {NUMBER[14:].lower()}"
    assert values("Patient", "identifier", f"{RID}|{spaced}")[0].code == \
        BLINDER.value("identifier", NUMBER)


def test_an_identifier_of_another_system_stays_as_given():
    (value,) = values("Patient", "identifier", f"{OTHER}|V-1")
    assert (value.system, value.code) == (OTHER, "V-1")


def test_a_value_without_a_system_matches_either_stored_form():
    """``identifier=V`` may name an identity number (stored blinded) or another
    identifier (stored in clear): both are alternatives."""
    codes = {v.code for v in values("Patient", "identifier", NUMBER)}
    assert codes == {NUMBER, BLINDER.value("identifier", NUMBER)}
    # ``|V`` is an identifier without a system: never an identity number.
    assert [v.code for v in values("Patient", "identifier", f"|{NUMBER}")] == [NUMBER]


def test_telecom_values_are_always_blinded_whatever_their_spelling():
    blind = BLINDER.value("telecom", "13800138000")
    for key in ("phone", "telecom"):
        assert [v.code for v in values("Patient", key, "138-0013-8000")] == [blind]
    assert [v.code for v in values("Patient", "email", "A.Wang@Example.org")] == \
        [BLINDER.value("telecom", "a.wang@example.org")]


def test_system_only_and_text_searches_compare_no_value():
    (system_only,) = values("Patient", "identifier", f"{RID}|")
    assert system_only.code is None and system_only.system == RID
    (text,) = values("Patient", "identifier:text", "passport")
    assert text.text == "passport"


def test_of_type_and_reference_identifier_are_blinded_too():
    of_type = values("Patient", "identifier:of-type",
                     f"http://terminology.hl7.org/CodeSystem/v2-0203|NI|{NUMBER}")
    assert {v.code for v in of_type} == {NUMBER, BLINDER.value("identifier", NUMBER)}
    refs = values("Observation", "subject:identifier", f"{RID}|{NUMBER}")
    assert [r.identifier.code for r in refs] == [BLINDER.value("identifier", NUMBER)]


def test_chains_and_has_blind_the_inner_parameter():
    query = parse_query("Observation", [("subject:Patient.identifier", f"{RID}|{NUMBER}")],
                        tz=ZoneInfo("UTC"), blinder=BLINDER)
    inner = query.clauses[0].inner[0][1]
    assert inner.values[0].code == BLINDER.value("identifier", NUMBER)


def test_without_a_blinder_values_are_compared_as_given():
    query = parse_query("Patient", [("phone", "13800138000")], tz=ZoneInfo("UTC"))
    assert query.clauses[0].values[0].code == "13800138000"
