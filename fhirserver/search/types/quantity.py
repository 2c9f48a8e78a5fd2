"""quantity parameters (search.html#quantity).

Stored: ``sp[p]`` is the list of values as floats (compared as numbers, see
:mod:`.number`); ``sp[p:unit]`` holds each unit as ``system|code``, bare ``code``
and bare ``unit``, so ``5.4|http://unitsofmeasure.org|mg`` compares the coded unit
and ``5.4||mg`` matches the code or the display unit. Units are not converted
(no UCUM canonicalisation). SampledData is not indexed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import tzinfo
from typing import Any

from ..parameters import SearchParameter
from ..text import esc, split_escaped, token, unescape
from .base import Filter, ParseContext, Values, add, invalid, text_of
from .number import NumberValue, as_number, number_condition, parse_number


@dataclass(frozen=True)
class QuantityValue:
    number: NumberValue
    unit: str | None = None
    """The stored unit string to match, None for any unit."""


class QuantityHandler:
    modifiers = frozenset({"missing"})

    def extract(self, param: SearchParameter, items: list[tuple[Any, str]],
                tz: tzinfo) -> Values:
        out: Values = {}
        for node, _datatype in items:
            if not isinstance(node, dict):
                continue
            value = as_number(node.get("value"))
            if value is None:
                continue
            add(out, "", value)
            code, unit = text_of(node, "code"), text_of(node, "unit")
            if code is not None:
                add(out, ":unit", token(text_of(node, "system"), code), esc(code))
            if unit is not None:
                add(out, ":unit", esc(unit))
        return out

    def parse(self, param: SearchParameter, modifier: str | None, raw: str,
              ctx: ParseContext) -> QuantityValue:
        parts = split_escaped(raw, "|")
        if len(parts) not in (1, 3):
            raise invalid("quantity", raw, param)
        number = parse_number(parts[0], param, "quantity")
        if len(parts) == 1:
            return QuantityValue(number)
        system, code = unescape(parts[1]), unescape(parts[2])
        if not code:
            if system:
                raise invalid("quantity", raw, param, "a system needs a code")
            return QuantityValue(number)
        return QuantityValue(number, token(system, code) if system else esc(code))

    def condition(self, field: str, modifier: str | None, value: QuantityValue) -> Filter:
        out = number_condition(field, value.number)
        if value.unit is not None:
            out = {**out, f"{field}:unit": value.unit}
        return out
