"""JSON text with exact numbers (R4 datatypes.html#decimal, json.html): what the API
and the importer parse request bodies and files with, and render responses with."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest

from fhirserver.model import json_text
from fhirserver.model.json_text import Number


@pytest.mark.parametrize("text", [
    "1.50", "0.010", "1e2", "1E+2", "100e-2", "0.0000001", "1e400", "-1E+400",
    "9223372036854775808", "-9223372036854775809", "12345678901234567890.123456789",
])
def test_numbers_a_float_or_int64_would_change_round_trip_verbatim(text: str) -> None:
    """datatypes.html#decimal: "0.010 is regarded as different to 0.01"; the text
    comes back as sent, and the value is the exact decimal."""
    value = json_text.loads(f'{{"v": {text}}}')["v"]
    assert isinstance(value, Number) and value == Decimal(text)
    assert json_text.dumps({"v": value}) == f'{{"v":{text}}}'.encode()


def test_an_integer_of_any_length_round_trips_verbatim() -> None:
    """json.html, datatypes.html#decimal: a JSON number has no size limit; one of
    5,000 digits is kept exactly like one of 5,000 digits with a fraction (Python's
    int() refuses more than 4,300 digits, which was a 400 naming a Python setting)."""
    for text in ("1" + "0" * 5000, "-" + "9" * 100_000):
        value = json_text.loads(f"[{text}]")[0]
        assert isinstance(value, Number) and value == Decimal(text)
        assert json_text.dumps([value]) == f"[{text}]".encode()


@pytest.mark.parametrize(("text", "value"), [
    ("5.4", 5.4), ("100.0", 100.0), ("-0.0", -0.0), ("7", 7), ("9223372036854775807", 2**63 - 1),
    ("-9223372036854775808", -(2**63)),
])
def test_numbers_that_round_trip_stay_plain_floats_and_ints(text: str, value: object) -> None:
    parsed = json_text.loads(f"[{text}]")[0]
    assert type(parsed) is type(value) and parsed == value
    assert not json_text.has_numbers([parsed])


@pytest.mark.parametrize("text", [
    "NaN", "Infinity", "-Infinity", '"\\ud800"', "[1,]", "", "[" * 2000 + "]" * 2000,
    '[1e400, "\\ud800"]',
])
def test_what_is_not_json_is_refused_as_a_value_error(text: str) -> None:
    """json.html: JSON as RFC 8259 defines it; no NaN, no lone surrogates."""
    with pytest.raises(ValueError):
        json_text.loads(text)


def test_exact_numbers_cannot_be_written_as_plain_json() -> None:
    """Only :func:`json_text.dumps` writes them, so nothing stores or sends a rounded copy."""
    doc = json_text.loads('{"a": [1.50]}')
    assert json_text.has_numbers(doc)
    with pytest.raises(TypeError):
        orjson.dumps(doc)
