"""composite parameters (search.html#composite), e.g. ``code-value-quantity``.

The components of one match must come from the same element (the same Observation,
or the same Observation.component): ``8480-6$gt100`` must not match a blood pressure
whose systolic code sits next to a diastolic value above 100. Without ``$elemMatch``
(FerretDB v1 has none over subdocuments) the pairing is kept in the stored shape:

``sp[p] = [{<token>: [...], <token>:hi: [...], ...}]`` — one subdocument whose keys
are the first component's stored tokens (made field-safe by ``text.field_key``) and
whose values are the second component's stored values under that token, with the
second component's companion suffixes; ``sp[p:a]`` lists the tokens, so the index on
it serves the query. Every R4 composite of the supported types is token + one value.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import tzinfo
from typing import Any

from .. import paths
from ..parameters import SearchParameter
from ..text import field_key, split_escaped
from .base import Filter, Handler, ParseContext, Values, add, invalid
from .token import TokenHandler, TokenValue

_TOKENS = TokenHandler()


@dataclass(frozen=True)
class CompositeValue:
    token: str
    value: Any


class CompositeHandler:
    modifiers = frozenset({"missing"})

    def __init__(self, registry: dict[str, Handler]) -> None:
        self._registry = registry

    def _second(self, param: SearchParameter) -> Handler:
        return self._registry[param.components[1].type]

    def extract(self, param: SearchParameter, items: list[tuple[Any, str]],
                tz: tzinfo) -> Values:
        first, second = param.components[0], param.components[1]
        entry: dict[str, list[Any]] = {}
        tokens: Values = {}
        roots = [node for node, _datatype in items]
        for base in param.bases:
            for node in (n for root in roots for n in paths.select(root, base)):
                codes = _TOKENS.extract(param, paths.values(node, first.paths), tz).get("", [])
                found = self._second(param).extract(param, paths.values(node, second.paths), tz)
                if not codes or not any(found.values()):
                    continue
                add(tokens, "", *codes)
                for code in codes:
                    for suffix, vals in found.items():
                        add(entry, field_key(code) + suffix, *vals)
        if not entry:
            return {}
        return {"": [entry], ":a": tokens[""]}

    def parse(self, param: SearchParameter, modifier: str | None, raw: str,
              ctx: ParseContext) -> CompositeValue:
        parts = split_escaped(raw, "$")
        if len(parts) != len(param.components):
            raise invalid("composite", raw, param,
                          f"expected {len(param.components)} components separated by '$'")
        first: TokenValue = _TOKENS.parse(param, None, parts[0], ctx)
        stored = first.stored()
        if stored is None:
            raise invalid("composite", raw, param, "the first component needs a code")
        return CompositeValue(stored, self._second(param).parse(param, None, parts[1], ctx))

    def condition(self, field: str, modifier: str | None, value: CompositeValue) -> Filter:
        handler = self._registry[_type_of(value.value)]
        inner = handler.condition(f"{field}.{field_key(value.token)}", None, value.value)
        return {f"{field}:a": value.token, **inner}


def _type_of(value: Any) -> str:
    from .date import DateValue
    from .quantity import QuantityValue
    from .string import StringValue

    kinds: dict[type, str] = {TokenValue: "token", DateValue: "date",
                              QuantityValue: "quantity", StringValue: "string"}
    return kinds[type(value)]
