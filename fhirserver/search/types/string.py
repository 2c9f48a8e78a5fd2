"""string parameters (search.html#string).

Stored: ``sp[p]`` is the list of folded values (NFKD, combining marks removed,
casefolded, whitespace collapsed) for the default starts-with and ``:contains``
matches; ``sp[p:exact]`` keeps the values as written for ``:exact``. HumanName
contributes every part (search.html#string: "name" searches family, given, prefix,
suffix and text), Address every part and its text.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import tzinfo
from typing import Any

from ..parameters import SearchParameter
from ..text import bound, contains_regex, fold_index, prefix_regex, unescape
from .base import Filter, ParseContext, Values, add, invalid

_PARTS = {
    "HumanName": ("text", "family", "given", "prefix", "suffix"),
    "Address": ("text", "line", "city", "district", "state", "postalCode", "country"),
}


@dataclass(frozen=True)
class StringValue:
    value: str


def _strings(node: Any, datatype: str) -> list[str]:
    if isinstance(node, str):
        return [node]
    if not isinstance(node, dict) or datatype not in _PARTS:
        return []
    out: list[str] = []
    for part in _PARTS[datatype]:
        v = node.get(part)
        out.extend(x for x in (v if isinstance(v, list) else [v]) if isinstance(x, str))
    return out


class StringHandler:
    modifiers = frozenset({"missing", "exact", "contains"})

    def extract(self, param: SearchParameter, items: list[tuple[Any, str]],
                tz: tzinfo) -> Values:
        out: Values = {}
        for node, datatype in items:
            for s in _strings(node, datatype):
                if s.strip():
                    add(out, "", fold_index(s))
                    add(out, ":exact", bound(s))
        return out

    def parse(self, param: SearchParameter, modifier: str | None, raw: str,
              ctx: ParseContext) -> StringValue:
        value = unescape(raw)
        if not value.strip():
            raise invalid("string", raw, param)
        return StringValue(value)

    def condition(self, field: str, modifier: str | None, value: StringValue) -> Filter:
        folded = fold_index(value.value)  # a longer value compares on its head (text.bound)
        if modifier == "exact":
            # The folded equality is implied; it lets the index on ``field`` serve.
            return {field: bound(folded), f"{field}:exact": bound(value.value)}
        if modifier == "contains":
            return {field: {"$regex": contains_regex(folded)}}
        return {field: {"$regex": prefix_regex(folded)}}
