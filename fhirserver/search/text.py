"""String normalisation and the escaping rules of search values (search.html#escaping).

Stored tokens are strings ``system|code`` with ``\\`` and ``|`` escaped inside each
part, so one string comparison is one token comparison and no ``$elemMatch`` over
subdocuments is needed (FerretDB v1 evaluates ``$elemMatch`` only on scalars).
"""

from __future__ import annotations

import re
import unicodedata

_ESCAPABLE = frozenset("\\,$|")

#: Index values keep at most this many characters (HAPI keeps 200 of a string too), so
#: a resource's search values stay small however long its strings: a 1.5 MB name is
#: indexed by its first 200 characters, not copied into several index lists.
INDEX_CHARS = 200
#: Ends a cut index value. ``fold`` maps it to "..." (NFKD), so no folded value ends
#: with it unless it was cut: ``:contains`` can find every cut value.
CUT = "\u2026"
#: Parameter types whose index values are strings a resource may make arbitrarily long.
BOUNDED_TYPES = frozenset({"string", "token", "uri", "reference"})


def fold(value: str) -> str:
    """Case- and accent-insensitive form (search.html#string): NFKD, no marks, casefold."""
    if value.isascii():  # the same, without a call per character
        return " ".join(value.lower().split())
    decomposed = unicodedata.normalize("NFKD", value)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(stripped.casefold().split())


def fold_index(value: str) -> str:
    """``bound(fold(value))``, folding no more of a long ``value`` than its index value
    needs: ``fold`` works character by character (whitespace runs collapse), so the
    fold of a head of ``value`` is a head of its fold."""
    size = 4 * INDEX_CHARS
    while size < len(value):
        head = fold(value[:size])
        if len(head) > INDEX_CHARS + 1:  # the last word of the head may be cut short
            return head[:INDEX_CHARS] + CUT
        size *= 4
    return bound(fold(value))


def split_escaped(value: str, separator: str) -> list[str]:
    """Split on ``separator`` where it is not preceded by a backslash; escapes are kept."""
    if "\\" not in value:
        return value.split(separator)
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
    if "\\" not in value:
        return value
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


def bound(value: str) -> str:
    """An index value as stored: ``value``, or its first INDEX_CHARS characters and CUT.

    Applied alike to stored values and to search values: two values at most
    INDEX_CHARS long compare as themselves, and a longer search value matches every
    stored value that shares its first INDEX_CHARS characters (more matches, never
    fewer)."""
    return value if len(value) <= INDEX_CHARS else value[:INDEX_CHARS] + CUT


def prefix_regex(value: str) -> str:
    """An anchored regular expression matching index values that start with ``value``
    (with its first INDEX_CHARS characters, which is all a cut value keeps)."""
    return "^" + re.escape(value[:INDEX_CHARS])


def contains_regex(value: str) -> str:
    """A regular expression matching folded index values that contain ``value``, or
    that were cut (the part they lost may contain it: more matches, never fewer)."""
    if len(value) > INDEX_CHARS:
        return re.escape(CUT) + "$"
    return f"{re.escape(value)}|{re.escape(CUT)}$"


def field_key(value: str) -> str:
    """``value`` made usable as a MongoDB field name (no ``.``, no leading ``$``)."""
    return value.replace("%", "%25").replace(".", "%2E").replace("$", "%24")
