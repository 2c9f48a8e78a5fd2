"""Population shards (search/shards.py): a walk reads every position from its start
once, in order, finest shards first (http.html#paging: pages hold every match once)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from fhirserver.search.shards import (
    DIGITS,
    ORDER_FIELD,
    SHARD_FIELD,
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
