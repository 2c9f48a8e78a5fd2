"""date parameters (search.html#date).

Stored: ``sp[p] = [lo]`` and ``sp[p:hi] = [hi]``, the half-open instant range
``[lo, hi)`` covering every value of the parameter (one range: the spec's examples
are single-valued, and one range keeps the two bounds of a comparison on the same
value without ``$elemMatch``, which FerretDB v1 lacks). A Timing covers its events.

Prefixes against a search range ``[qlo, qhi)`` (search.html#prefix), where the
resource range must be ``[lo, hi)``:

==== ===================================================== ==========================
eq   the search range contains the resource range          ``lo >= qlo, hi <= qhi``
ne   not eq                                                ``lo < qlo or hi > qhi``
gt   the resource range reaches above the search range     ``hi > qhi``
lt   the resource range reaches below the search range     ``lo < qlo``
ge   the resource range reaches into ``[qlo, ∞)``           ``hi > qlo``
le   the resource range reaches into ``(-∞, qhi)``          ``lo < qhi``
sa   the resource range starts after the search range      ``lo >= qhi``
eb   the resource range ends before the search range       ``hi <= qlo``
ap   the ranges overlap once the search range is widened   ``lo < qhi', hi > qlo'``
==== ===================================================== ==========================
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any

from ..dates import approximate, parse_range, period_range
from ..parameters import SearchParameter
from .base import Filter, ParseContext, Values, invalid

PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
_POINTS = ("date", "dateTime", "instant")
_PREFIXED = re.compile(r"^(eq|ne|gt|lt|ge|le|sa|eb|ap)?(.*)$", re.DOTALL)


@dataclass(frozen=True)
class DateValue:
    prefix: str
    lo: datetime
    hi: datetime


def split_prefix(raw: str) -> tuple[str, str]:
    m = _PREFIXED.match(raw)
    assert m is not None
    return m[1] or "eq", m[2]


def _ranges(node: Any, datatype: str, tz: tzinfo) -> list[tuple[datetime, datetime]]:
    if isinstance(node, str) and datatype in _POINTS:
        rng = parse_range(node, tz)
        return [rng] if rng else []
    if not isinstance(node, dict):
        return []
    if datatype == "Period":
        rng = period_range(node, tz)
        return [rng] if rng else []
    if datatype == "Timing":
        events = node.get("event") or []
        found = [parse_range(e, tz) for e in events if isinstance(e, str)]
        return [r for r in found if r]
    return []


class DateHandler:
    modifiers = frozenset({"missing"})

    def extract(self, param: SearchParameter, items: list[tuple[Any, str]],
                tz: tzinfo) -> Values:
        ranges = [r for node, datatype in items for r in _ranges(node, datatype, tz)]
        if not ranges:
            return {}
        return {"": [min(r[0] for r in ranges)], ":hi": [max(r[1] for r in ranges)]}

    def parse(self, param: SearchParameter, modifier: str | None, raw: str,
              ctx: ParseContext) -> DateValue:
        prefix, rest = split_prefix(raw)
        rng = parse_range(rest, ctx.tz)
        if rng is None:
            raise invalid("date", raw, param)
        if prefix == "ap":
            rng = approximate(rng, ctx.now)
        return DateValue(prefix, *rng)

    def condition(self, field: str, modifier: str | None, value: DateValue) -> Filter:
        lo, hi = field, f"{field}:hi"
        q_lo, q_hi = value.lo, value.hi
        match value.prefix:
            case "ne":
                return {"$or": [{lo: {"$lt": q_lo}}, {hi: {"$gt": q_hi}}]}
            case "gt":
                return {hi: {"$gt": q_hi}}
            case "lt":
                return {lo: {"$lt": q_lo}}
            case "ge":
                return {hi: {"$gt": q_lo}}
            case "le":
                return {lo: {"$lt": q_hi}}
            case "sa":
                return {lo: {"$gte": q_hi}}
            case "eb":
                return {hi: {"$lte": q_lo}}
            case "ap":
                return {lo: {"$lt": q_hi}, hi: {"$gt": q_lo}}
            case _:
                return {lo: {"$gte": q_lo}, hi: {"$lte": q_hi}}
