"""FHIR JSON text with its numbers kept exactly as written (R4 datatypes.html#decimal).

A FHIR decimal is arbitrary precision and its precision is significant: "0.010 is
regarded as different to 0.01, and the original precision should be preserved", and
R4's regex for it allows an exponent (``1e2``). An integer in JSON may also be larger
than anything a 64-bit machine word or BSON holds. Parsed as floats (orjson, and JSON
decoders generally), ``1.50`` would come back as ``1.5``, ``12345678901234567890.123``
would lose digits and ``9223372036854775808`` could not be stored at all.

So :func:`loads` keeps every number a float or an int would change as a
:class:`Number`: a :class:`~decimal.Decimal` (what the models validate) that also
remembers its text, and :func:`dumps` writes that text back verbatim. Numbers that
round-trip through float or int unchanged, nearly all of them, stay plain floats and
ints, so nothing else sees a difference.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, Self

import orjson

__all__ = ["Number", "dumps", "has_numbers", "loads", "number"]

INT64 = (-(2**63), 2**63 - 1)


class Number(Decimal):
    """A JSON number kept as its text (its value is the Decimal it spells)."""

    __slots__ = ("text",)
    text: str

    def __new__(cls, text: str) -> Self:
        self = super().__new__(cls, text)
        self.text = text
        return self

    def __repr__(self) -> str:
        return f"Number({self.text!r})"

    def __reduce__(self) -> tuple[type[Number], tuple[str]]:
        return (Number, (self.text,))

    def __copy__(self) -> Number:
        return self

    def __deepcopy__(self, memo: Any) -> Number:
        return self


def _float(text: str) -> float | Number:
    value = float(text)
    return value if orjson.dumps(value) == text.encode() else Number(text)


def _int(text: str) -> int | Number:
    if len(text) > 20:  # beyond int64 whatever its digits; int() refuses over 4,300
        return Number(text)
    value = int(text)
    return value if INT64[0] <= value <= INT64[1] else Number(text)


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object whose names are unique (RFC 8259 section 4: they "SHOULD be"): with
    a name twice, which value counts would depend on the reader, and a check in front
    of this server could pass one that this server reads otherwise."""
    found = dict(pairs)
    if len(found) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise ValueError(f"the name '{name[:100]}' appears twice in one object")
            seen.add(name)
    return found


def loads(raw: bytes | str, *, trusted: bool = False) -> Any:
    """Parse JSON text, keeping numbers exact (see the module docstring).

    orjson checks the text first: it is strict where the standard library is lax
    (lone surrogates, ``NaN``), so the API refuses the same documents as before, but
    for numbers beyond a double's range (``1e400``), which are JSON and FHIR decimals.
    The standard library's parser, which hands each number's text to a hook, then
    builds the value, refusing an object with a name twice. Every refusal is a
    :class:`ValueError`. ``trusted`` text (written by :func:`dumps`) skips the checks.
    """
    recheck = False
    if not trusted:
        try:
            orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            if not str(exc).startswith("number is infinity"):
                raise
            recheck = True  # orjson stopped there: what follows is checked below
    try:
        value = json.loads(raw, parse_float=_float, parse_int=_int, parse_constant=_constant,
                           object_pairs_hook=None if trusted else _unique)
    except RecursionError as exc:
        raise ValueError("the JSON is nested too deeply") from exc
    if recheck:
        try:
            dumps(value)
        except TypeError as exc:
            raise ValueError(str(exc)) from exc
    return value


def _fragment(value: Any) -> orjson.Fragment:
    if isinstance(value, Number):
        return orjson.Fragment(value.text)
    if isinstance(value, Decimal):
        return orjson.Fragment(str(value))
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(value: Any, option: int = 0) -> bytes:
    """JSON text of ``value``; a :class:`Number` is written as it was read."""
    return orjson.dumps(value, default=_fragment, option=option)


def has_numbers(value: Any) -> bool:
    """Whether ``value`` holds a number only :func:`dumps` can write (a :class:`Number`
    or an int beyond 64 bits), that is one that BSON cannot hold exactly either."""
    try:
        orjson.dumps(value)
    except TypeError:
        return True
    return False


def number(text: str) -> int | float | Number:
    """The value :func:`loads` gives the JSON number ``text`` (already checked to be
    one): what FHIR XML's ``value="0.50"`` means in the JSON form."""
    if "." in text or "e" in text or "E" in text:
        return _float(text)
    return _int(text)
