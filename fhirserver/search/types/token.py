"""token parameters (search.html#token).

Stored: ``sp[p]`` is a list of strings, each token as ``system|code`` (``|code`` when
there is no system) and as bare ``code``; ``sp[p:text]`` holds the folded
Coding.display / CodeableConcept.text / Identifier.type.text for ``:text``, and
``sp[p:of-type]`` holds ``type-system|type-code|value`` for ``:of-type``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import tzinfo
from typing import Any

from ..parameters import SearchParameter
from ..text import esc, fold, fold_index, prefix_regex, split_escaped, token, token_forms, unescape
from .base import Filter, ParseContext, Values, add, invalid, text_of


@dataclass(frozen=True)
class TokenValue:
    """``code``, ``system|code``, ``|code`` (system "") or ``system|`` (code None)."""

    code: str | None = None
    system: str | None = None
    text: str | None = None
    of_type: tuple[str, str] | None = None

    def stored(self) -> str | None:
        """The stored string this value equals, or None when it is not an equality."""
        if self.code is None or self.text is not None or self.of_type is not None:
            return None
        return esc(self.code) if self.system is None else token(self.system, self.code)


def _coding(out: Values, coding: Any) -> None:
    code = text_of(coding, "code")
    if code is not None:
        add(out, "", *token_forms(text_of(coding, "system"), code))
    display = text_of(coding, "display")
    if display:
        add(out, ":text", fold_index(display))


def _identifier(out: Values, ident: dict[str, Any]) -> None:
    value = text_of(ident, "value")
    if value is None:
        return
    add(out, "", *token_forms(text_of(ident, "system"), value))
    kind = ident.get("type")
    if isinstance(kind, dict):
        for coding in kind.get("coding") or ():
            tcode = text_of(coding, "code")
            if tcode is not None:
                add(out, ":of-type", f"{token(text_of(coding, 'system'), tcode)}|{esc(value)}")
        if text_of(kind, "text"):
            add(out, ":text", fold_index(kind["text"]))


class TokenHandler:
    modifiers = frozenset({"missing", "text", "not", "of-type"})

    def extract(self, param: SearchParameter, items: list[tuple[Any, str]],
                tz: tzinfo) -> Values:
        out: Values = {}
        for node, datatype in items:
            if datatype == "Coding":
                _coding(out, node)
            elif datatype == "CodeableConcept" and isinstance(node, dict):
                for coding in node.get("coding") or ():
                    _coding(out, coding)
                if text_of(node, "text"):
                    add(out, ":text", fold_index(node["text"]))
            elif datatype == "Identifier" and isinstance(node, dict):
                _identifier(out, node)
            elif datatype == "ContactPoint":
                value = text_of(node, "value")
                if value is not None:
                    add(out, "", *token_forms(None, value))
            elif datatype == "boolean" and isinstance(node, bool):
                add(out, "", *token_forms(None, "true" if node else "false"))
            elif datatype == "present":
                add(out, "", *token_forms(None, "true"))
            elif isinstance(node, str) and node:
                add(out, "", *token_forms(param.system, node))
        if not out.get("") and param.absent is not None:
            add(out, "", *token_forms(None, param.absent))
        return out

    def parse(self, param: SearchParameter, modifier: str | None, raw: str,
              ctx: ParseContext) -> TokenValue:
        if modifier == "text":
            return TokenValue(text=fold(unescape(raw)))
        parts = [unescape(p) for p in split_escaped(raw, "|")]
        if modifier == "of-type":
            if len(parts) != 3 or not all(parts):
                raise invalid("token", raw, param, "':of-type' needs type-system|type-code|value")
            return TokenValue(code=parts[2], of_type=(parts[0], parts[1]))
        if len(parts) == 1:
            return TokenValue(code=parts[0])
        if len(parts) != 2 or parts == ["", ""]:
            raise invalid("token", raw, param)
        system, code = parts
        return TokenValue(code=code or None, system=system)

    def condition(self, field: str, modifier: str | None, value: TokenValue) -> Filter:
        if value.text is not None:
            return {f"{field}:text": {"$regex": prefix_regex(value.text)}}
        if value.of_type is not None and value.code is not None:
            ts, tc = value.of_type
            return {f"{field}:of-type": f"{token(ts, tc)}|{esc(value.code)}"}
        stored = value.stored()
        if stored is not None:
            return {field: stored}
        return {field: {"$regex": prefix_regex(esc(value.system or "") + "|")}}
