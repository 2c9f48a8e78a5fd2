"""number parameters (search.html#number), also the numeric part of quantities.

Stored: ``sp[p]`` is the list of values as floats, each the double nearest the
exact value (R4 datatypes.html#decimal: stored values are exact decimals of any size,
model/json_text.py). A search value stands for its implicit precision range
(search.html#number: ``100`` is [99.5, 100.5), ``1.0`` is [0.95, 1.05)); ``eq`` and
``ne`` use that range, the other prefixes the value. ``ap`` is within 10% of the
value (search.html#prefix recommends 10%), and never narrower than the precision
range.

Comparing doubles decides comparisons of decimals exactly while both sides are
decimals a double spells (its shortest form, up to 15 significant digits always):
rounding to nearest keeps their order. A bound with more digits than that
(``9223372036854775808.5``) may share its double with stored values on either side
of it, so a strict comparison with it becomes inclusive: a value the float cannot
tell from the bound is found rather than missed (``eq9223372036854775808`` finds
9223372036854775808, whose range [..807.5, ..808.5) is one double wide).
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass
from datetime import tzinfo
from decimal import MAX_EMAX, MIN_EMIN, Context, Decimal, InvalidOperation
from typing import Any

from ..parameters import SearchParameter
from .base import Filter, ParseContext, Values, add, invalid
from .date import split_prefix

_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


@dataclass(frozen=True)
class NumberValue:
    prefix: str
    value: Decimal
    lo: Decimal
    hi: Decimal


def parse_number(raw: str, param: SearchParameter, kind: str = "number") -> NumberValue:
    prefix, rest = split_prefix(raw.strip())
    if not _NUMBER.match(rest):
        raise invalid(kind, raw, param)
    try:
        d = Decimal(rest)
    except InvalidOperation as e:
        raise invalid(kind, raw, param) from e
    digits, exponent = d.as_tuple()[1:]
    assert isinstance(exponent, int)
    # Exact: enough digits for d +- half a unit of its last place, any exponent.
    ctx = Context(prec=len(digits) + 5, Emax=MAX_EMAX, Emin=MIN_EMIN)
    half = Decimal(5).scaleb(exponent - 1, ctx)
    lo, hi = ctx.subtract(d, half), ctx.add(d, half)
    if prefix == "ap":
        spread = ctx.divide(d.copy_abs(), 10)  # abs() would use the default context
        lo, hi = min(lo, ctx.subtract(d, spread)), max(hi, ctx.add(d, spread))
    return NumberValue(prefix, d, lo, hi)


def to_float(d: Decimal | float) -> float:
    """The double nearest ``d``; beyond the largest double, the largest double (so
    the order stays and no infinity is stored)."""
    f = float(d)
    return f if math.isfinite(f) else math.copysign(sys.float_info.max, f)


def _above(d: Decimal, inclusive: bool) -> tuple[str, float]:
    """Stored values above ``d`` (or equal, ``inclusive``), as an operator and a double."""
    f = to_float(d)
    return ("$gte" if inclusive or Decimal(repr(f)) != d else "$gt"), f


def _below(d: Decimal, inclusive: bool) -> tuple[str, float]:
    f = to_float(d)
    return ("$lte" if inclusive or Decimal(repr(f)) != d else "$lt"), f


_NOT = {"$lt": "$gte", "$lte": "$gt", "$gt": "$lte", "$gte": "$lt"}


def number_condition(field: str, value: NumberValue) -> Filter:
    match value.prefix:
        case "gt" | "sa":
            bounds = [_above(value.value, False)]
        case "lt" | "eb":
            bounds = [_below(value.value, False)]
        case "ge":
            bounds = [_above(value.value, True)]
        case "le":
            bounds = [_below(value.value, True)]
        case "ap":
            bounds = [_above(value.lo, True), _below(value.hi, True)]
        case _:
            bounds = [_above(value.lo, True), _below(value.hi, False)]
    if value.prefix == "ne":  # outside the range eq finds, to the same double
        return {"$or": [{field: {_NOT[op]: f}} for op, f in bounds]}
    return {field: dict(bounds)}


def as_number(node: Any) -> float | None:
    """The stored search value of a JSON number (an exact one too, see json_text)."""
    if isinstance(node, bool):
        return None
    if isinstance(node, int | float | Decimal):
        return to_float(node)
    if isinstance(node, str):
        try:
            return to_float(Decimal(node))
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
