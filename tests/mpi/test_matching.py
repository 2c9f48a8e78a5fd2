"""Scoring for ``Patient/$match`` (R4 patient-operation-match.html): realistic
near-duplicates from a Chinese master patient index, graded certain / probable /
possible / certainly-not, and ranked best first."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from fhirserver.model.identifier_systems import load_registry
from fhirserver.mpi.matching import (
    POSSIBLE,
    PROBABLE,
    WEIGHTED_CAP,
    Candidate,
    blocking_keys,
    rank,
    score,
)

from .numbers import gb11643

RESIDENT_ID = "https://fhirserver.example/sid/resident-id"
MRN_A = "https://fhirserver.example/sid/mrn/hospital-a"
PASSPORT_CHN = "https://fhirserver.example/sid/passport/CHN"
INSURANCE = "https://example.org/sid/insurance-card"  # not registered: not unique

REGISTRY = load_registry()


def unique(system: str) -> bool:
    """As a caller builds it: the registry says which systems identify one person."""
    found = REGISTRY.match(system)
    return found is not None and found.entry.unique


def patient(
    *,
    pid: str = "p",
    family: str | None = "Zhang",
    given: str | None = "Wei",
    text: str | None = None,
    born: str | None = "1985-06-15",
    gender: str | None = "male",
    phone: str | None = "13800138000",
    address: dict[str, Any] | None = None,
    ids: Sequence[tuple[str, str]] = (),
) -> dict[str, Any]:
    name: dict[str, Any] = {}
    if family is not None:
        name["family"] = family
    if given is not None:
        name["given"] = [given]
    if text is not None:
        name["text"] = text
    out: dict[str, Any] = {"resourceType": "Patient", "id": pid}
    if name:
        out["name"] = [name]
    if born is not None:
        out["birthDate"] = born
    if gender is not None:
        out["gender"] = gender
    if phone is not None:
        out["telecom"] = [{"system": "phone", "value": phone, "use": "mobile"}]
    if address is not None:
        out["address"] = [address]
    if ids:
        out["identifier"] = [{"system": s, "value": v} for s, v in ids]
    return out


HOME = {"city": "北京市", "district": "朝阳区", "line": ["建国路88号院3号楼1单元502"]}
ZHANG_WEI_ID = gb11643("110105", "19850615", "013")  # male, born 1985-06-15


def transposed(number: str, at: int) -> str:
    """``number`` with the characters at ``at`` and ``at + 1`` swapped."""
    assert number[at] != number[at + 1]
    return number[:at] + number[at + 1] + number[at] + number[at + 2:]


# --- identifiers ------------------------------------------------------------------------


def test_same_resident_id_is_certain_even_written_differently() -> None:
    """R4 patient-operation-match.html: "certain" -- the same GB 11643 number, here
    with spaces and a different name spelling, is the same person."""
    stored = patient(ids=[(RESIDENT_ID, ZHANG_WEI_ID)], address=HOME)
    spaced = " ".join((ZHANG_WEI_ID[:6], ZHANG_WEI_ID[6:14], ZHANG_WEI_ID[14:])).lower()
    query = patient(family=None, given=None, text="张伟", phone=None,
                    ids=[(RESIDENT_ID, spaced)])
    assert score(query, stored, unique) == (1.0, "certain")


def test_lower_case_check_character_x_is_the_same_number() -> None:
    stored = patient(ids=[(RESIDENT_ID, "11010519491231002X")], born="1949-12-31",
                     gender="female")
    query = patient(ids=[(RESIDENT_ID, "11010519491231002x")], born=None, gender=None)
    assert score(query, stored, unique)[1] == "certain"


def test_shared_number_is_certain_despite_a_second_record_number() -> None:
    """A duplicate registration holds two hospital record numbers; the shared resident
    ID still decides -- finding such duplicates is what the MPI is for."""
    stored = patient(ids=[(RESIDENT_ID, ZHANG_WEI_ID), (MRN_A, "MRN-0001")])
    query = patient(ids=[(RESIDENT_ID, ZHANG_WEI_ID), (MRN_A, "MRN-0937")])
    assert score(query, stored, unique) == (1.0, "certain")


def test_identifier_of_a_non_unique_system_is_not_certain() -> None:
    stored = patient(ids=[(INSURANCE, "A123456")], phone=None)
    query = patient(ids=[(INSURANCE, "A123456")], phone=None)
    value, grade = score(query, stored, unique)
    assert grade != "certain" and value < 0.95


def test_same_value_in_a_different_system_is_not_certain() -> None:
    stored = patient(ids=[(PASSPORT_CHN, "E12345678")], phone=None)
    query = patient(ids=[(MRN_A, "E12345678")], phone=None)
    assert score(query, stored, unique)[1] != "certain"


@pytest.mark.parametrize("at", [6, 11, 16])  # in the birth year, the day, sequence/check
def test_transposed_resident_id_with_same_name_and_birth_date_is_probable(at: int) -> None:
    """A clerk swapped two adjacent digits: strong evidence, but never certain."""
    stored = patient(ids=[(RESIDENT_ID, ZHANG_WEI_ID)], phone=None, gender=None)
    query = patient(ids=[(RESIDENT_ID, transposed(ZHANG_WEI_ID, at))], phone=None,
                    gender=None)
    value, grade = score(query, stored, unique)
    assert grade == "probable"
    assert PROBABLE <= value < 0.95


def test_transposed_resident_id_without_agreeing_demographics_is_not_probable() -> None:
    stored = patient(ids=[(RESIDENT_ID, ZHANG_WEI_ID)], phone=None)
    query = patient(ids=[(RESIDENT_ID, transposed(ZHANG_WEI_ID, 11))], given="Li",
                    born="1990-01-02", phone=None)
    assert score(query, stored, unique)[1] in ("possible", "certainly-not")


def test_two_swaps_apart_is_a_conflict_not_a_transposition() -> None:
    other = transposed(transposed(ZHANG_WEI_ID, 8), 12)
    stored = patient(ids=[(RESIDENT_ID, ZHANG_WEI_ID)], phone=None)
    query = patient(ids=[(RESIDENT_ID, other)], phone=None)
    assert score(query, stored, unique)[1] == "certainly-not"


def test_conflicting_resident_id_is_certainly_not() -> None:
    """Same common name and birth date, different resident IDs: two people."""
    stored = patient(ids=[(RESIDENT_ID, ZHANG_WEI_ID)], phone=None)
    query = patient(ids=[(RESIDENT_ID, gb11643("440106", "19850615", "031"))], phone=None)
    assert score(query, stored, unique)[1] == "certainly-not"


def test_conflicting_resident_id_with_everything_else_agreeing_is_at_most_possible() -> None:
    stored = patient(ids=[(RESIDENT_ID, ZHANG_WEI_ID)], address=HOME)
    query = patient(ids=[(RESIDENT_ID, gb11643("440106", "19850615", "031"))], address=HOME)
    value, grade = score(query, stored, unique)
    assert grade == "possible"
    assert value < PROBABLE


def test_old_and_new_passport_share_the_new_one() -> None:
    stored = patient(ids=[(PASSPORT_CHN, "E12345678"), (PASSPORT_CHN, "EA7654321")])
    query = patient(ids=[(PASSPORT_CHN, "EA7654321")])
    assert score(query, stored, unique)[1] == "certain"


# --- names ------------------------------------------------------------------------------

FULL = {"address": HOME}  # name + birth date + gender + phone + address all present


def test_all_demographics_agreeing_is_probable_never_certain() -> None:
    """R4 patient-operation-match.html: only a shared document number is certain."""
    value, grade = score(patient(**FULL), patient(**FULL), unique)
    assert (value, grade) == (WEIGHTED_CAP, "probable")


@pytest.mark.parametrize("variant", [
    {"family": "ZHANG", "given": "Wei"},
    {"family": "zhang", "given": "WEI"},
    {"family": None, "given": None, "text": "Zhang Wei"},
    {"family": None, "given": None, "text": "ZHANG Wei"},
    {"family": None, "given": None, "text": "Zhangwei"},
    {"family": None, "given": None, "text": "Wei Zhang"},
    {"family": None, "given": None, "text": "Zhāng Wěi"},
    {"family": None, "given": None, "text": "ＺＨＡＮＧ　Ｗｅｉ"},  # full-width, ideographic space
    {"family": "Zhang", "given": "Wei", "text": "张伟"},
])
def test_pinyin_case_spacing_order_and_tone_marks_agree_fully(variant: dict[str, Any]) -> None:
    exact = score(patient(), patient(), unique)
    assert score(patient(**variant), patient(), unique) == exact
    assert score(patient(), patient(**variant), unique) == exact


def test_han_text_and_split_family_given_agree() -> None:
    stored = patient(family="张", given="伟")
    for query in (patient(family=None, given=None, text="张伟"),
                  patient(family="张伟", given=None),  # whole name in family, as some HIS do
                  patient(family=None, given=None, text="张 伟")):
        assert score(query, stored, unique) == score(stored, stored, unique)


def test_compound_surname_is_split_after_two_characters() -> None:
    stored = patient(family="欧阳", given="娜娜")
    query = patient(family=None, given=None, text="欧阳娜娜")
    assert score(query, stored, unique) == score(stored, stored, unique)


def test_transposed_letters_in_the_given_name_score_partially() -> None:
    """"Zhang Wie" is a typing error for "Zhang Wei": less than exact, more than a
    different given name."""
    exact = score(patient(**FULL), patient(**FULL), unique)[0]
    typo = score(patient(given="Wie", **FULL), patient(**FULL), unique)
    unsplit = score(patient(family=None, given=None, text="Zhangwie", **FULL),
                    patient(**FULL), unique)
    other = score(patient(given="Li", **FULL), patient(**FULL), unique)[0]
    assert typo[1] == "probable" and unsplit == typo
    assert other < typo[0] < exact


def test_one_letter_wrong_in_a_surname_scores_partially() -> None:
    exact = score(patient(**FULL), patient(**FULL), unique)[0]
    value = score(patient(family="Zhnag", **FULL), patient(**FULL), unique)[0]
    assert POSSIBLE <= value < exact


def test_a_shared_surname_alone_is_no_name_agreement() -> None:
    """Zhang is the surname of ~7% of China: Zhang Li is not Zhang Wei."""
    base = dict(phone=None)
    other = score(patient(given="Li", **base), patient(**base), unique)
    assert other[1] == "certainly-not"


def test_han_against_pinyin_is_not_counted_as_a_disagreement() -> None:
    """No transliteration data: 张伟 vs Zhang Wei is no evidence either way."""
    han = patient(family=None, given=None, text="张伟")
    no_name = patient(family=None, given=None)
    assert score(han, patient(), unique) == score(no_name, patient(), unique)


def test_siblings_sharing_a_generation_character_do_not_match() -> None:
    """张小明 and 张小红: same surname, same generation character, same home."""
    stored = patient(family="张", given="小明", born="2010-04-01", address=HOME)
    query = patient(family="张", given="小红", born="2012-09-30", gender="female",
                    address=HOME)
    assert score(query, stored, unique)[1] == "certainly-not"


# --- birth date, gender, phone, address -------------------------------------------------


def test_transposed_birth_month_and_day_scores_partially() -> None:
    stored = patient(born="1985-03-07", **FULL)
    exact = score(stored, stored, unique)[0]
    value, grade = score(patient(born="1985-07-03", **FULL), stored, unique)
    assert grade == "probable" and value < exact
    no_phone = score(patient(born="1985-07-03", phone=None, **FULL), stored, unique)
    assert no_phone[1] == "possible"


@pytest.mark.parametrize("typo", ["1985-06-16", "1986-06-15", "1958-06-15"])
def test_one_digit_birth_date_typo_scores_partially(typo: str) -> None:
    exact = score(patient(**FULL), patient(**FULL), unique)[0]
    other_day = score(patient(born="1991-11-23", **FULL), patient(**FULL), unique)[0]
    value = score(patient(born=typo, **FULL), patient(**FULL), unique)[0]
    assert other_day < value < exact


def test_birth_year_only_agrees_weakly() -> None:
    full = score(patient(), patient(), unique)[0]
    year = score(patient(born="1985"), patient(), unique)[0]
    none = score(patient(born=None), patient(), unique)[0]
    assert none < year < full


@pytest.mark.parametrize(("mine", "theirs"), [
    ("+86 138-0013-8000", "13800138000"),
    ("0086 138 0013 8000", "138 0013 8000"),
    ("(+86)13800138000", "138-0013-8000"),
    ("+86 10 8888 6666", "010-88886666"),  # Beijing landline, international and domestic
])
def test_phone_formatting_does_not_matter(mine: str, theirs: str) -> None:
    same = score(patient(phone="13800138000"), patient(phone="13800138000"), unique)
    assert score(patient(phone=mine), patient(phone=theirs), unique) == same


def test_different_phone_adds_nothing_but_removes_nothing() -> None:
    different = score(patient(phone="13912345678"), patient(), unique)
    missing = score(patient(phone=None), patient(), unique)
    assert different == missing
    assert different[0] < score(patient(), patient(), unique)[0]


def test_name_birth_date_and_gender_alone_are_only_possible() -> None:
    """~300,000 people are called 张伟: these three alone do not make a probable match."""
    assert score(patient(phone=None), patient(phone=None), unique)[1] == "possible"


def test_gender_disagreement_lowers_strongly() -> None:
    agree = score(patient(**FULL), patient(**FULL), unique)
    differ = score(patient(gender="female", **FULL), patient(**FULL), unique)
    assert agree[1] == "probable" and differ[1] == "possible"
    assert agree[0] - differ[0] >= 0.25  # a whole grade
    unknown = score(patient(gender="unknown", **FULL), patient(**FULL), unique)
    assert unknown[0] > differ[0]  # "unknown" is no evidence, not a disagreement


def test_same_address_written_differently_agrees() -> None:
    other_form = {"city": "北京", "district": "朝阳区", "line": ["建国路 88号院 3号楼 1单元 502"]}
    moved = {"city": "上海市", "district": "浦东新区", "line": ["世纪大道100号"]}
    text_only = {"text": "北京市朝阳区建国路88号院3号楼1单元502"}
    base = score(patient(address=HOME), patient(address=HOME), unique)[0]
    assert score(patient(address=other_form), patient(address=HOME), unique)[0] == base
    assert score(patient(address=text_only), patient(address=HOME), unique)[0] > \
        score(patient(address=moved), patient(address=HOME), unique)[0]
    assert score(patient(address=moved), patient(address=HOME), unique) == \
        score(patient(), patient(address=HOME), unique)


def test_a_different_person_with_the_same_common_name_is_not_matched() -> None:
    """Another 张伟 (Zhang Wei): other birth date, other gender."""
    stored = patient(address=HOME)
    query = patient(born="1992-11-03", gender="female", phone="13911112222")
    assert score(query, stored, unique)[1] == "certainly-not"
    # Even sharing phone and address (a relative), at most possible.
    relative = patient(born="1992-11-03", gender="female", address=HOME)
    assert score(relative, stored, unique)[1] in ("possible", "certainly-not")


def test_scoring_is_symmetric() -> None:
    pairs = [
        (patient(given="Wie", **FULL), patient(**FULL)),
        (patient(family=None, given=None, text="Zhangwei", born="1985-15-06"), patient()),
        (patient(ids=[(RESIDENT_ID, transposed(ZHANG_WEI_ID, 9))]),
         patient(ids=[(RESIDENT_ID, ZHANG_WEI_ID)])),
        (patient(phone="+86 138-0013-8000", gender="female"), patient(address=HOME)),
    ]
    for a, b in pairs:
        assert score(a, b, unique) == score(b, a, unique)


def test_malformed_or_empty_patients_score_without_error() -> None:
    broken = {"resourceType": "Patient", "name": "Zhang Wei", "identifier": [None, {}],
              "telecom": [{"system": "phone"}], "birthDate": "15/06/1985",
              "address": [{"line": "not a list"}], "gender": 1}
    assert score(broken, patient(), unique)[1] == "certainly-not"
    assert score({"resourceType": "Patient"}, {"resourceType": "Patient"}, unique) == \
        (0.0, "certainly-not")


# --- ranking ----------------------------------------------------------------------------


def stored_population() -> list[dict[str, Any]]:
    return [
        patient(pid="other-zhang-wei", born="1992-11-03", gender="female",
                phone="13911112222"),
        patient(pid="typo", given="Wie", address=HOME),
        patient(pid="same-id", family=None, given=None, text="张伟",
                ids=[(RESIDENT_ID, ZHANG_WEI_ID)]),
        patient(pid="no-phone", phone=None),
        patient(pid="exact", address=HOME),
    ]


def ids_of(result: list[Candidate]) -> list[str]:
    return [c.resource["id"] for c in result]


def test_rank_orders_best_first_and_drops_certainly_not() -> None:
    """R4 patient-operation-match.html: ordered from most likely to least likely."""
    query = patient(ids=[(RESIDENT_ID, ZHANG_WEI_ID)], address=HOME)
    result = rank(query, stored_population(), unique)
    assert ids_of(result) == ["same-id", "exact", "typo", "no-phone"]
    assert [c.grade for c in result] == ["certain", "probable", "probable", "possible"]
    assert all(isinstance(c, Candidate) for c in result)
    assert [c.score for c in result] == sorted((c.score for c in result), reverse=True)


def test_rank_keeps_input_order_for_equal_scores() -> None:
    twins = [patient(pid="first"), patient(pid="second"), patient(pid="third")]
    assert ids_of(rank(patient(), twins, unique)) == ["first", "second", "third"]


def test_count_limits_the_number_of_results() -> None:
    query = patient(ids=[(RESIDENT_ID, ZHANG_WEI_ID)], address=HOME)
    assert ids_of(rank(query, stored_population(), unique, count=2)) == ["same-id", "exact"]
    assert rank(query, stored_population(), unique, count=0) == []
    assert len(rank(query, stored_population(), unique, count=50)) == 4
    with pytest.raises(ValueError, match="count"):
        rank(query, stored_population(), unique, count=-1)


def test_only_certain_matches() -> None:
    """onlyCertainMatches=true: probable and possible matches are not returned."""
    query = patient(ids=[(RESIDENT_ID, ZHANG_WEI_ID)], address=HOME)
    result = rank(query, stored_population(), unique, only_certain=True)
    assert ids_of(result) == ["same-id"]
    no_id = patient(address=HOME)
    assert rank(no_id, stored_population(), unique, only_certain=True) == []
    assert ids_of(rank(no_id, stored_population(), unique, only_certain=False, count=1)) == \
        ["exact"]


def test_rank_accepts_any_iterable() -> None:
    result = rank(patient(), (p for p in stored_population()), unique, count=1)
    assert len(result) == 1


# --- blocking keys ----------------------------------------------------------------------


def test_blocking_keys_cover_identifier_birth_date_family_and_phone() -> None:
    query = patient(family="Zhang", given="Wei", born="1985-06-07",
                    phone="+86 138-0013-8000",
                    ids=[(RESIDENT_ID, " " + ZHANG_WEI_ID.lower() + " ")])
    keys = blocking_keys(query)
    assert keys == [
        ("identifier", f"{RESIDENT_ID}|{ZHANG_WEI_ID}"),
        ("birthdate", "1985-06-07"),
        ("birthdate", "1985-07-06"),  # the day/month swap
        ("family", "zhang"),
        ("phone", "13800138000"),
    ]


def test_blocking_keys_for_han_text_names_and_escaping() -> None:
    query = {"resourceType": "Patient",
             "name": [{"text": "欧阳娜娜"}, {"text": "Nana Ouyang"}, {"family": "张伟"}],
             "identifier": [{"system": "urn:x", "value": "a|b,c$d"}],
             "birthDate": "1985-06-15"}
    assert blocking_keys(query) == [
        ("identifier", "urn:x|A\\|B\\,C\\$D"),
        ("birthdate", "1985-06-15"),  # 15 is no month: no swap
        ("family", "欧阳"),
        ("family", "nana"),
        ("family", "ouyang"),
        ("family", "张"),
    ]


def test_blocking_keys_find_the_near_duplicates() -> None:
    """Each near-duplicate shares at least one blocking key with the query, so a
    candidate fetch by these keys would score it."""
    query = patient(ids=[(RESIDENT_ID, transposed(ZHANG_WEI_ID, 11))], born="1985-03-07")
    keys = set(blocking_keys(query))
    assert ("birthdate", "1985-07-03") in keys  # finds a stored swapped date, surname "Zhnag"
    assert ("family", "zhang") in keys and ("phone", "13800138000") in keys
    assert blocking_keys({"resourceType": "Patient"}) == []
