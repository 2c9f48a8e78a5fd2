"""reference parameters (search.html#reference).

Stored: ``sp[p]`` lists literal references as ``Type/id`` (relative; a version
``/_history/n`` is dropped) or as written when absolute (``http://other/Patient/1``,
``urn:uuid:...``); contained references (``#x``) are not searchable. Logical
references go to ``sp[p:identifier]`` as tokens, for ``:identifier``.

Search values: ``Type/id``; a bare ``id``, which means any of the parameter's target
types; an absolute URL, which is made relative when it starts with the server's base
URL; ``:Type`` restricts a bare id to one type.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import tzinfo
from typing import Any

from ..parameters import SearchParameter
from ..text import unescape
from .base import Filter, ParseContext, Values, add, invalid, text_of
from .token import TokenHandler, TokenValue

TYPE_MODIFIER = re.compile(r"^[A-Z][A-Za-z]+$")
_TOKENS = TokenHandler()


@dataclass(frozen=True)
class ReferenceValue:
    refs: tuple[str, ...] = ()
    any_type_id: str | None = None
    identifier: TokenValue | None = None


def without_version(ref: str) -> str:
    return ref.split("/_history/")[0]


class ReferenceHandler:
    modifiers = frozenset({"missing", "identifier"})

    def extract(self, param: SearchParameter, items: list[tuple[Any, str]],
                tz: tzinfo) -> Values:
        out: Values = {}
        for node, _datatype in items:
            if not isinstance(node, dict):
                continue
            ref = text_of(node, "reference")
            if ref is not None and not ref.startswith("#"):
                add(out, "", without_version(ref))
            ident = node.get("identifier")
            if isinstance(ident, dict):
                tokens = _TOKENS.extract(param, [(ident, "Identifier")], tz)
                add(out, ":identifier", *tokens.get("", []))
        return out

    def parse(self, param: SearchParameter, modifier: str | None, raw: str,
              ctx: ParseContext) -> ReferenceValue:
        if modifier == "identifier":
            return ReferenceValue(identifier=_TOKENS.parse(param, None, raw, ctx))
        value = unescape(raw).strip()
        base = ctx.base_url.rstrip("/")
        if base and value.startswith(base + "/"):
            value = value[len(base) + 1 :]
        value = without_version(value)
        if not value or value.endswith("/"):
            raise invalid("reference", raw, param)
        if modifier is not None:
            if "/" in value and not value.startswith(modifier + "/"):
                raise invalid("reference", raw, param, f"not a {modifier} reference")
            return ReferenceValue((value if "/" in value else f"{modifier}/{value}",))
        if "/" in value or ":" in value:
            return ReferenceValue((value,))
        if param.targets:
            return ReferenceValue(tuple(f"{t}/{value}" for t in param.targets))
        return ReferenceValue(any_type_id=value)

    def condition(self, field: str, modifier: str | None, value: ReferenceValue) -> Filter:
        if value.identifier is not None:
            return _TOKENS.condition(f"{field}:identifier", None, value.identifier)
        if value.any_type_id is not None:
            return {field: {"$regex": "^[A-Z][A-Za-z]+/" + re.escape(value.any_type_id) + "$"}}
        if len(value.refs) == 1:
            return {field: value.refs[0]}
        return {field: {"$in": list(value.refs)}}
