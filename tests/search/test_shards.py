"""Population shards (search/shards.py): a walk reads every position from its start
once, in order, finest shards first (http.html#paging: pages hold every match once)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from fhirserver.search.shards import (
    DIGITS,
    ORDER_FIELD,
    SHARD_FIELD,
    SPACE,
    estimate,
    order_of,
    plan,
    resume_position,
    shard_fields,
    walked,
)

_HASHES = st.text(alphabet="0123456789abcdef", min_size=DIGITS, max_size=DIGITS)


def _selects(condition: dict, h: str) -> bool:
    shards = shard_fields("x") | {ORDER_FIELD: h, SHARD_FIELD: [h[:1], h[:2]]}
    if SHARD_FIELD in condition and condition[SHARD_FIELD] not in shards[SHARD_FIELD]:
        return False
    bound = condition.get(ORDER_FIELD, {})
    return all(h >= v if op == "$gte" else h <= v for op, v in bound.items())


@settings(max_examples=300, deadline=None)
@given(start=st.none() | _HASHES, ascending=st.booleans(),
       hashes=st.lists(_HASHES, min_size=1, max_size=60))
def test_a_walk_selects_every_position_from_its_start_exactly_once_in_order(
        start: str | None, ascending: bool, hashes: list[str]) -> None:
    steps = list(plan(start, ascending))
    assert [s.level for s in steps] == sorted((s.level for s in steps), reverse=True)
    for h in hashes:
        ahead = start is None or (h >= start if ascending else h <= start)
        chosen = [i for i, s in enumerate(steps) if _selects(s.condition(ascending), h)]
        assert len(chosen) == (1 if ahead else 0), (h, start, ascending, steps)
    # Each step reads positions after (ascending) or before the previous step's.
    firsts = [s.start for s in steps]
    assert firsts == sorted(firsts, reverse=not ascending)


def test_shards_are_prefixes_of_an_even_hash_of_the_id() -> None:
    fields = shard_fields("Observation-1")
    h = fields[ORDER_FIELD]
    assert h == order_of("Observation-1") and len(h) == DIGITS
    assert fields[SHARD_FIELD] == [h[:1], h[:2]]
    firsts = {order_of(f"obs-{i}")[0] for i in range(400)}
    assert len(firsts) == 16  # similar ids spread over every shard


def test_only_keys_that_select_a_population_share_are_walked() -> None:
    assert walked("code=http://loinc.org|8867-4") and walked("value-concept=a|b")
    assert not walked("identifier=urn:sys|1") and not walked("subject=Patient/p1")
    assert not walked("family^zha") and not walked(None) and not walked("code")


def test_a_cursor_resumes_from_its_hash_and_a_forged_one_from_the_start() -> None:
    assert resume_position(["3fa0bc12", "id"]) == "3fa0bc12"
    for forged in (None, [], [None, "id"], ["zz", "id"], ["xyz12345", "id"], [7, "id"],
                   ["3FA0BC12", "id"]):
        assert resume_position(forged) is None


def _spread(n: int, offset: int = 0) -> list[str]:
    """``n`` matches spaced evenly over the walk, as ``sh`` values in walk order."""
    return [f"{(i * SPACE // n + offset) % SPACE:0{DIGITS}x}" for i in range(n)]


def test_an_estimate_from_a_full_page_extrapolates_the_stretch_it_read_search_total() -> None:
    """search.html#total (_total=estimate): a page of 21 of 3,000 evenly spread matches
    stretches about 21/3,000 of the walk, from the start or from a cursor, either way."""
    matches = _spread(3000, offset=7)

    def near(value: int | None) -> bool:
        return value is not None and abs(value - 3000) <= 150

    assert near(estimate(None, True, matches[:21], reached_end=False))
    assert near(estimate(matches[1000], True, matches[1001:1022], reached_end=False))
    backwards = list(reversed(matches[:2000]))
    assert near(estimate(matches[2000], False, backwards[:21], reached_end=False))
    assert near(estimate(None, False, list(reversed(matches))[:21], reached_end=False))
    # A page that had to walk twice as far found half as many matches per position.
    assert near(2 * estimate(None, True, matches[:41:2], reached_end=False))  # type: ignore[operator]


def test_a_walk_that_reached_the_end_counts_what_it_read_search_total() -> None:
    matches = _spread(40)
    assert estimate(None, True, matches, reached_end=True) == 40
    assert estimate(None, False, list(reversed(matches)), reached_end=True) == 40
    # From a cursor halfway: the 19 matches after it stand for the whole walk.
    assert 36 <= estimate(matches[20], True, matches[21:], reached_end=True) <= 40  # type: ignore[operator]


def test_an_estimate_is_never_below_what_was_read_and_never_from_unhashed_rows() -> None:
    close = ["00000001", "00000002", "00000003"]
    assert estimate(None, True, close, reached_end=False) >= 3
    assert estimate(None, True, ["xyz", "00000002"], reached_end=False) is None
    assert estimate(None, True, [], reached_end=True) is None


def test_an_estimate_from_matches_on_the_wrong_side_of_its_start_is_none_search_total() -> None:
    """Matches walked from a start all lie on its far side; a start that does not fit
    them (a forged cursor) gives no estimate rather than one from a negative or
    one-position stretch (5 matches "in" 1 position: 21 billion)."""
    behind = ["00000003", "00000002", "00000001", "00000000"]
    assert estimate("00000000", False, behind, reached_end=True) is None
    assert estimate("80000000", True, ["7fffffff", "90000000"], reached_end=False) is None
    assert estimate("80000000", False, ["80000001", "70000000"], reached_end=False) is None


def test_an_estimate_fits_bundle_total_an_unsigned_int_search_total() -> None:
    """Bundle.total is an unsignedInt (R4 datatypes.html#unsignedInt: at most
    2,147,483,647): matches crowded at the start of the walk (ids chosen to hash
    there) must not extrapolate past it."""
    crowded = ["00000000", "00000000", "00000001"]
    assert estimate(None, True, crowded, reached_end=False) == 2**31 - 1
    assert estimate("fffffffe", True, ["ffffffff"], reached_end=True) == 2**31 - 1
