"""uri parameters (search.html#uri).

Stored: ``sp[p]`` lists the URIs as written. Matching is exact; ``:below`` matches
URIs that start with the value, ``:above`` URIs the value starts with, cut at path
segments (search.html#uri: ``:above`` on ``http://acme.org/fhir/ValueSet/123``
matches ``http://acme.org/fhir``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import tzinfo
from typing import Any

from ..parameters import SearchParameter
from ..text import prefix_regex, unescape
from .base import Filter, ParseContext, Values, add, invalid


@dataclass(frozen=True)
class UriValue:
    value: str


def ancestors(uri: str) -> list[str]:
    """``uri`` and each prefix of it ending before a ``/`` of its path."""
    scheme_end = uri.find("//")
    start = scheme_end + 2 if scheme_end >= 0 else 0
    out = [uri]
    cut = uri.rstrip("/")
    while (i := cut.rfind("/")) >= start and i > 0:
        cut = cut[:i]
        if cut and cut[start:]:
            out.append(cut)
    return out


class UriHandler:
    modifiers = frozenset({"missing", "below", "above"})

    def extract(self, param: SearchParameter, items: list[tuple[Any, str]],
                tz: tzinfo) -> Values:
        out: Values = {}
        for node, _datatype in items:
            if isinstance(node, str):
                add(out, "", node)
        return out

    def parse(self, param: SearchParameter, modifier: str | None, raw: str,
              ctx: ParseContext) -> UriValue:
        value = unescape(raw).strip()
        if not value:
            raise invalid("uri", raw, param)
        return UriValue(value)

    def condition(self, field: str, modifier: str | None, value: UriValue) -> Filter:
        if modifier == "below":
            return {field: {"$regex": prefix_regex(value.value)}}
        if modifier == "above":
            return {field: {"$in": ancestors(value.value)}}
        return {field: value.value}
