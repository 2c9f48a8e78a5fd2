"""Identity document numbers (DESIGN.md section 3: GB 11643 with ISO 7064 MOD 11-2;
WS/T 364.2 document types): each validator on valid numbers and on each way of
being invalid."""

from __future__ import annotations

import pytest

from fhirserver.model.identity_numbers import VALIDATORS, InvalidNumber, gb11643_facts, normalise
from tests.mpi.numbers import check_char, gb11643, luhn_complete


def check(validator: str, value: str, param: str | None = None) -> str:
    return VALIDATORS[validator](normalise(value), param)


def test_the_standard_example_and_independent_check_characters() -> None:
    """GB 11643's own example 11010519491231002X; check characters computed here."""
    assert check("resident-id", "11010519491231002X") == "11010519491231002X"
    assert check_char("11010519491231002") == "X"
    for seq in ("001", "002", "017", "998"):
        number = gb11643("440106", "19850615", seq)
        assert check("resident-id", number) == number


def test_lower_case_x_and_spaces_are_normalised() -> None:
    assert check("resident-id", " 110105 19491231 002x ") == "11010519491231002X"


@pytest.mark.parametrize(("value", "why"), [
    ("11010519491231002", "18 characters"),
    ("110105194912310021X", "18 characters"),
    ("1101051949123100AX", "17 digits"),
    ("110105194912310023", "check character"),  # valid form, wrong check digit
    (gb11643("110105", "19491331", "002"), "no valid birth date"),
    (gb11643("110105", "21991231", "002"), "future"),
    (gb11643("110105", "19491231", "000"), "000"),
    (gb11643("999999", "19491231", "002"), "unknown area code"),
    (gb11643("449999", "19491231", "002"), "unknown area code"),
    (gb11643("810000", "19491231", "002"), "residence permit"),
])
def test_invalid_resident_ids(value: str, why: str) -> None:
    with pytest.raises(InvalidNumber, match=why):
        check("resident-id", value)


def test_area_codes_created_after_the_birth_date_are_valid() -> None:
    """The area code is where the number was issued: Guangzhou's Tianhe district
    (440106) dates from 1985, and people born before that carry it."""
    number = gb11643("440106", "19500504", "001")
    assert check("resident-id", number) == number


def test_birth_date_and_gender_encoded() -> None:
    born, gender = gb11643_facts("11010519491231002X")
    assert (born.isoformat(), gender) == ("1949-12-31", "female")
    assert gb11643_facts(gb11643(seq="001"))[1] == "male"


@pytest.mark.parametrize(("validator", "area"), [
    ("residence-permit-hk", "810000"), ("residence-permit-mo", "820000"),
    ("residence-permit-tw", "830000"),
])
def test_residence_permits(validator: str, area: str) -> None:
    number = gb11643(area, "19900101", "031")
    assert check(validator, number) == number
    with pytest.raises(InvalidNumber, match="area code"):
        check(validator, gb11643("110105", "19900101", "031"))
    with pytest.raises(InvalidNumber, match="check character"):
        check(validator, number[:-1] + ("0" if number[-1] != "0" else "1"))


@pytest.mark.parametrize(("validator", "good", "bad"), [
    ("travel-permit-hkmo", ["H12345678", "M87654321", "h1234567890"], ["12345678", "H1234567", "X12345678"]),
    ("travel-permit-tw", ["12345678", "1234567890", "1234567890B"], ["1234567", "T12345678"]),
    ("hospital-record", ["MRN-0001", "a12"], ["-1", "x" * 33, "MRN 1/2"]),
])
def test_permit_and_record_formats(validator: str, good: list[str], bad: list[str]) -> None:
    for value in good:
        assert check(validator, value) == normalise(value)
    for value in bad:
        with pytest.raises(InvalidNumber):
            check(validator, value)


def test_passports_per_country() -> None:
    assert check("passport", "E12345678", "CHN") == "E12345678"
    assert check("passport", "ea1234567", "CHN") == "EA1234567"
    for bad in ("EI1234567", "12345678", "E1234567"):
        with pytest.raises(InvalidNumber, match="Chinese passport"):
            check("passport", bad, "CHN")
    assert check("passport", "123456789", "USA") == "123456789"
    for bad in ("1234", "1234567890", "AB-12345"):
        with pytest.raises(InvalidNumber, match="ICAO"):
            check("passport", bad, "GBR")


def test_foreign_permanent_resident_both_forms() -> None:
    assert check("foreign-permanent-resident", "USA310801150001") == "USA310801150001"
    new = gb11643("931840", "19800101", "012")
    assert check("foreign-permanent-resident", new) == new
    for bad in ("US3108011500011", "USA310813150001", "11010519491231002X", "USA31080115001"):
        with pytest.raises(InvalidNumber):
            check("foreign-permanent-resident", bad)


def test_health_card_number_luhn() -> None:
    number = luhn_complete("6" + "0" * 17 + "1")
    assert check("health-card", number) == number
    with pytest.raises(InvalidNumber, match="Luhn"):
        check("health-card", number[:-1] + str((int(number[-1]) + 1) % 10))
    with pytest.raises(InvalidNumber, match="20 digits"):
        check("health-card", number[:-1])
