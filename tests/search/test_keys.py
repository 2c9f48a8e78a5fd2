"""Index keys and lifted filters (search/keys.py): every equality a search implies
reaches the top level of the filter, where FerretDB pushes it down to PostgreSQL
(DESIGN.md section 5) and MongoDB matches it to a declared index; nothing is lifted
that the filter does not imply (search.html#combining: the results do not change)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from fhirserver.search.catalog import parameters_for
from fhirserver.search.compile import compile_filter
from fhirserver.search.dates import parse_range
from fhirserver.search.extract import extract
from fhirserver.search.keys import day_condition, is_indexed, keys_of, lifted
from fhirserver.search.parse import parse_query

OBS = {
    "resourceType": "Observation", "id": "o1", "status": "final",
    "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                              "code": "laboratory"}]}],
    "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
    "subject": {"reference": "Patient/p1"},
    "effectiveDateTime": "2024-05-02T08:00:00+08:00",
}
PATIENT = {"resourceType": "Patient", "id": "p1", "name": [{"family": "Zhang", "given": ["Wei"]}],
           "identifier": [{"system": "urn:sys", "value": "123"}], "birthDate": "1960-03-04"}


def _lift(rtype: str, query: str) -> dict:
    items = [tuple(p.split("=", 1)) for p in query.split("&")]
    return lifted(rtype, compile_filter(parse_query(rtype, items, tz=UTC)), {"del": False})


def test_keys_hold_every_token_and_reference_and_name_prefixes_search_token_string() -> None:
    obs = keys_of("Observation", extract(OBS, UTC))
    assert "code=http://loinc.org|2345-7" in obs and "code=2345-7" in obs
    assert "patient=Patient/p1" in obs and "subject=Patient/p1" in obs
    pat = keys_of("Patient", extract(PATIENT, UTC))
    assert {"family^z", "family^zh", "family^zhang", "identifier=urn:sys|123"} <= set(pat)


def test_patient_and_code_lift_the_compartment_and_the_code_search_reference_token() -> None:
    flt = _lift("Observation", "patient=p1&code=http://loinc.org|2345-7")
    assert flt["pat"] == "p1"
    assert flt["k"] == "code=http://loinc.org|2345-7"  # the narrower key, not the patient
    assert flt["del"] is False
    assert flt["$and"]  # the full filter still decides


def test_category_gives_way_to_code_and_identifier_is_lifted_search_token() -> None:
    assert _lift("Observation", "category=laboratory&code=2345-7")["k"] == "code=2345-7"
    assert _lift("Patient", "identifier=urn:sys|123")["k"] == "identifier=urn:sys|123"


def test_a_name_prefix_is_lifted_at_most_eight_characters_long_search_string() -> None:
    assert _lift("Patient", "family=Zha&gender=female")["k"] == "family^zha"
    assert _lift("Patient", "family=Abcdefghijk")["k"] == "family^abcdefgh"


def test_nothing_is_lifted_from_alternatives_or_negations_search_combining() -> None:
    for query in ("code=a,b", "code:not=a", "family:contains=zh", "date=ge2020-01-01",
                  "code:text=glucose"):
        rtype = "Patient" if query.startswith("family") else "Observation"
        flt = _lift(rtype, query)
        assert "k" not in flt and "pat" not in flt, (query, flt)


def test_a_lifted_filter_matches_what_the_original_matches() -> None:
    """Soundness: each lifted equality holds for every resource the filter selects."""
    sp = extract(OBS, UTC)
    keys = set(keys_of("Observation", sp))
    for query in ("patient=p1&code=2345-7", "subject=Patient/p1&category=laboratory",
                  "code=http://loinc.org|2345-7&status=final"):
        flt = _lift("Observation", query)
        assert flt["k"] in keys
        assert flt.get("pat", "p1") == "p1"


def test_one_allowed_value_is_an_equality_and_broad_keys_are_not_selective() -> None:
    from fhirserver.search.keys import is_indexed

    assert lifted("Observation", {"pat": {"$in": ["p1"]}})["pat"] == "p1"  # a patient's own reach
    assert "pat" not in lifted("Observation", {"pat": {"$in": ["p1", "p2"]}})
    status = compile_filter(parse_query("Observation", [("status", "final")], tz=UTC))
    assert not is_indexed("Observation", status)
    code = compile_filter(parse_query("Observation", [("code", "2345-7")], tz=UTC))
    assert is_indexed("Observation", code)


def test_a_birth_day_is_lifted_before_a_name_prefix_but_not_before_an_identifier_search_date(
) -> None:
    """search.html#date: ``birthdate=D`` (``eq``) matches a birth date within day D.
    A ``date`` within one day starts where that day starts, so the day's key is
    implied; the registration desk's name and birth date search reads that day's
    Patients, not every Patient of the family prefix."""
    assert "birthdate@1960-03-04T00:00:00.000" in keys_of("Patient", extract(PATIENT, UTC))
    assert _lift("Patient", "family=Zha&birthdate=1960-03-04")["k"] \
        == "birthdate@1960-03-04T00:00:00.000"
    assert is_indexed("Patient", compile_filter(parse_query("Patient", [("birthdate", "1960-03-04")],
                                                            tz=UTC)))
    assert _lift("Patient", "birthdate=1960-03-04&identifier=urn:sys|123")["k"] \
        == "identifier=urn:sys|123"
    # A month, a range or an alternative implies no one day.
    for query in ("family=Zha&birthdate=1960-03", "family=Zha&birthdate=ge1960-03-04",
                  "family=Zha&birthdate=1960-03-04,1960-03-05",
                  "family=Zha&birthdate=sa1960-03-03T22:59&birthdate=eb1960-03-05"):
        assert _lift("Patient", query)["k"] == "family^zha", query


def test_an_email_address_is_an_exact_key_not_a_day_search_token() -> None:
    flt = _lift("Patient", "email=zhang@example.org&family=Zha")
    assert flt["k"] == "email=zhang@example.org"


_ZONES = st.sampled_from([UTC, ZoneInfo("Asia/Shanghai"), ZoneInfo("America/New_York"),
                          ZoneInfo("Europe/Berlin"), ZoneInfo("Pacific/Chatham")])
_DAYS = st.dates(min_value=datetime(1900, 1, 1).date(), max_value=datetime(2030, 12, 31).date())


def _written(day: object, precision: int) -> str:
    return str(day)[:precision]


@settings(max_examples=400, deadline=None)
@given(zone=_ZONES, born=_DAYS, born_precision=st.sampled_from([4, 7, 10]),
       searched=_DAYS, search_precision=st.sampled_from([4, 7, 10, 16]),
       shift=st.integers(min_value=-3, max_value=3))
def test_every_birth_date_an_eq_search_matches_holds_the_key_it_implies_search_date(
        zone: ZoneInfo, born: object, born_precision: int, searched: object,
        search_precision: int, shift: int) -> None:
    """Soundness of the day key (search.html#date, ``eq``: the search range contains
    the resource's): whenever a stored birth date of any precision lies within a
    searched date of any precision, in any server zone, across summer time changes,
    the record holds the key the search tests; so the key never loses a match."""
    near = datetime.combine(searched, datetime.min.time()) + timedelta(days=shift)  # type: ignore[arg-type]
    stored_text = _written(near.date() if shift else born, born_precision)
    search_text = _written(searched, min(search_precision, 10)) + (
        "T00:00" if search_precision == 16 else "")
    stored = parse_range(stored_text, zone)
    window = parse_range(search_text, zone)
    assert stored is not None and window is not None
    record = {"resourceType": "Patient", "id": "p", "birthDate": stored_text}
    keys = set(keys_of("Patient", extract(record, zone)))
    implied = day_condition(parameters_for("Patient")["birthdate"], "eq", *window)
    matches = stored[0] >= window[0] and stored[1] <= window[1]
    if matches and implied:
        assert implied["k"] in keys, (stored_text, search_text, zone)
