"""String normalisation and the escaping rules of search values (search.html#escaping).

Stored tokens are strings ``system|code`` with ``\\`` and ``|`` escaped inside each
part, so one string comparison is one token comparison and no ``$elemMatch`` over
subdocuments is needed (FerretDB v1 evaluates ``$elemMatch`` only on scalars).
"""

from __future__ import annotations

import re
import unicodedata

_ESCAPABLE = frozenset("\\,$|")


def fold(value: str) -> str:
    """Case- and accent-insensitive form (search.html#string): NFKD, no marks, casefold."""
    decomposed = unicodedata.normalize("NFKD", value)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(stripped.casefold().split())


def split_escaped(value: str, separator: str) -> list[str]:
    """Split on ``separator`` where it is not preceded by a backslash; escapes are kept."""
    parts: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(value):
        c = value[i]
        if c == "\\" and i + 1 < len(value):
            current.append(value[i : i + 2])
            i += 2
            continue
        if c == separator:
            parts.append("".join(current))
            current = []
        else:
            current.append(c)
        i += 1
    parts.append("".join(current))
    return parts


def unescape(value: str) -> str:
    """Remove the backslash from ``\\,``, ``\\$``, ``\\|`` and ``\\\\``."""
    out: list[str] = []
    i = 0
    while i < len(value):
        if value[i] == "\\" and i + 1 < len(value) and value[i + 1] in _ESCAPABLE:
            out.append(value[i + 1])
            i += 2
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def esc(part: str) -> str:
    """Escape one part of a stored token string."""
    return part.replace("\\", "\\\\").replace("|", "\\|")


def token(system: str | None, code: str) -> str:
    """The stored form of a system-qualified token: ``system|code`` or ``|code``."""
    return f"{esc(system or '')}|{esc(code)}"


def token_forms(system: str | None, code: str) -> list[str]:
    """Every stored form of one token: qualified (``s|c`` or ``|c``) and bare (``c``)."""
    return [token(system, code), esc(code)]


def prefix_regex(value: str) -> str:
    """An anchored regular expression matching strings that start with ``value``."""
    return "^" + re.escape(value)


def field_key(value: str) -> str:
    """``value`` made usable as a MongoDB field name (no ``.``, no leading ``$``)."""
    return value.replace("%", "%25").replace(".", "%2E").replace("$", "%24")
