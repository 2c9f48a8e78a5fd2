"""number parameters (search.html#number), also the numeric part of quantities.

Stored: ``sp[p]`` is the list of values as floats. A search value stands for its
implicit precision range (search.html#number: ``100`` is [99.5, 100.5), ``1.0``
is [0.95, 1.05)); ``eq`` and ``ne`` use that range, the other prefixes the value.
``ap`` is within 10% of the value (search.html#prefix recommends 10%), and never
narrower than the precision range.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any

from ..parameters import SearchParameter
from .base import Filter, ParseContext, Values, add, invalid
from .date import split_prefix

_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


@dataclass(frozen=True)
class NumberValue:
    prefix: str
    value: float
    lo: float
    hi: float


def parse_number(raw: str, param: SearchParameter, kind: str = "number") -> NumberValue:
    prefix, rest = split_prefix(raw.strip())
    if not _NUMBER.match(rest):
        raise invalid(kind, raw, param)
    try:
        d = Decimal(rest)
    except InvalidOperation as e:
        raise invalid(kind, raw, param) from e
    exponent = d.as_tuple().exponent
    assert isinstance(exponent, int)
    half = Decimal(5).scaleb(exponent - 1)
    lo, hi = d - half, d + half
    if prefix == "ap":
        spread = abs(d) / 10
        lo, hi = min(lo, d - spread), max(hi, d + spread)
    return NumberValue(prefix, float(d), float(lo), float(hi))


def number_condition(field: str, value: NumberValue) -> Filter:
    match value.prefix:
        case "ne":
            return {"$or": [{field: {"$lt": value.lo}}, {field: {"$gte": value.hi}}]}
        case "gt" | "sa":
            return {field: {"$gt": value.value}}
        case "lt" | "eb":
            return {field: {"$lt": value.value}}
        case "ge":
            return {field: {"$gte": value.value}}
        case "le":
            return {field: {"$lte": value.value}}
        case "ap":
            return {field: {"$gte": value.lo, "$lte": value.hi}}
        case _:
            return {field: {"$gte": value.lo, "$lt": value.hi}}


def as_number(node: Any) -> float | None:
    if isinstance(node, bool):
        return None
    if isinstance(node, int | float):
        return float(node)
    if isinstance(node, str):
        try:
            return float(Decimal(node))
        except (InvalidOperation, ValueError):
            return None
    return None


class NumberHandler:
    modifiers = frozenset({"missing"})

    def extract(self, param: SearchParameter, items: list[tuple[Any, str]],
                tz: tzinfo) -> Values:
        out: Values = {}
        for node, _datatype in items:
            add(out, "", as_number(node))
        return out

    def parse(self, param: SearchParameter, modifier: str | None, raw: str,
              ctx: ParseContext) -> NumberValue:
        return parse_number(raw, param)

    def condition(self, field: str, modifier: str | None, value: NumberValue) -> Filter:
        return number_condition(field, value)

    def indexes(self, field: str) -> list[list[tuple[str, int]]]:
        return [[(field, 1)]]
