"""What an AuditEvent stores of the caller's text: every character a database of
ours refuses (NUL, a lone UTF-16 surrogate) is replaced by U+FFFD, and nothing
else changes, whether the value takes the fast path or is walked."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from fhirserver.audit.events import storable

#: Text weighted towards what matters here: NUL, surrogates, backslashes, "u0000".
TEXT = st.text(alphabet=st.sampled_from(["a", "\x00", "\ud800", "\udfff", "\\", "u", "0", "é", "😀"])
               | st.characters(), max_size=12)
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=20)


def _walked(value: Any) -> Any:
    """The definition: each string with NUL and lone surrogates replaced."""
    if isinstance(value, str):
        return "".join("\ufffd" if c == "\x00" or 0xD800 <= ord(c) <= 0xDFFF else c
                       for c in value)
    if isinstance(value, dict):
        return {_walked(k): _walked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_walked(v) for v in value]
    return value


@given(VALUES)
def test_every_unstorable_character_is_replaced_and_nothing_else_changes(value: Any) -> None:
    assert storable(value) == _walked(value)


def test_the_cases_the_fast_path_must_not_miss() -> None:
    """A NUL in a value and in a key, a surrogate deep in a list, a literal backslash-u0000 (not a
    NUL, kept), integers past 64 bits (orjson refuses them) and nesting past orjson's
    depth limit."""
    assert storable({"path": "/Patient/a\x00b"}) == {"path": "/Patient/a\ufffdb"}
    assert storable({"k\x00": ["x", ["\ud83d"]]}) == {"k\ufffd": ["x", ["\ufffd"]]}
    assert storable({"q": "a\\u0000b"}) == {"q": "a\\u0000b"}
    assert storable({"n": 2**70, "s": "\x00"}) == {"n": 2**70, "s": "\ufffd"}
    deep: Any = "\x00"
    for _ in range(300):
        deep = [deep]
    out = storable(deep)
    for _ in range(300):
        out = out[0]
    assert out == "\ufffd"
    plain = {"resourceType": "AuditEvent", "entity": [{"what": {"reference": "Patient/1"}}]}
    assert storable(plain) == plain
