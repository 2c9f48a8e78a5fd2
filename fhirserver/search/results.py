"""Result parameters (search.html#return): ``_count``, ``_sort``, ``_total``,
``_summary``, ``_elements``, ``_include`` and ``_revinclude``.

Each parser takes the raw value and returns the typed form or raises
:class:`~fhirserver.errors.Invalid`; a sort key the server cannot honour is
reported to the caller, who either ignores it or refuses (``strict``).
"""

from __future__ import annotations

import re

from ..errors import Invalid
from .catalog import parameters_for
from .definitions import TABLES
from .query import Include

TOTALS = ("none", "estimate", "accurate")
SUMMARIES = ("true", "false", "text", "data", "count")
UNSORTABLE = ("composite", "special")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")


_WHOLE = re.compile(r"[0-9]{1,18}")


def whole_number(raw: str) -> int | None:
    """``raw`` as a non-negative integer, or None: ASCII digits only (``str.isdigit``
    also accepts "²", which ``int`` refuses), at most 18 of them (a count, a
    version), so no integer is too long to convert."""
    text = raw.strip()
    return int(text) if _WHOLE.fullmatch(text) else None


def parse_whole(raw: str, name: str, *, least: int = 0) -> int:
    """A whole-number parameter (``_count``, ``max``): 400 naming it otherwise."""
    value = whole_number(raw)
    if value is None or value < least:
        kind = "a positive" if least > 0 else "a non-negative"
        raise Invalid(f"Invalid '{name}' value '{raw[:40]}': expected {kind} integer",
                      expression=name)
    return value


def parse_count(raw: str, max_count: int) -> int:
    """search.html#count: a non-negative integer; the server may return fewer."""
    return min(parse_whole(raw, "_count"), max_count)


def parse_sort(resource_type: str, raw: str) -> tuple[list[tuple[str, bool]], list[str]]:
    """search.html#sort: ``a,-b``. Returns the keys and the names that cannot be sorted on."""
    params = parameters_for(resource_type)
    keys: list[tuple[str, bool]] = []
    rejected: list[str] = []
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        descending = item.startswith("-")
        name = item[1:] if descending else item
        param = params.get(name)
        if param is None or param.type in UNSORTABLE:
            rejected.append(name)
        else:
            keys.append((name, descending))
    return keys, rejected


def parse_choice(name: str, raw: str, allowed: tuple[str, ...]) -> str:
    if raw not in allowed:
        raise Invalid(f"Invalid '{name}' value '{raw}': expected one of {', '.join(allowed)}",
                      expression=name)
    return raw


def parse_elements(raw: str) -> tuple[str, ...]:
    """search.html#elements: top-level element names, comma separated."""
    names = tuple(n.strip() for n in raw.split(",") if n.strip())
    bad = [n for n in names if not _NAME.match(n)]
    if bad:
        raise Invalid(f"Invalid '_elements' value '{raw}'", expression="_elements")
    return names


def parse_include(key: str, raw: str) -> Include:
    """search.html#include: ``Source:param[:Target]`` or ``*``; ``:iterate`` (and R3's
    ``:recurse``) on the parameter name asks for iteration."""
    name, _, modifier = key.partition(":")
    if modifier not in ("", "iterate", "recurse"):
        raise Invalid(f"Unknown modifier ':{modifier}' on '{name}'", expression=name)
    iterate = bool(modifier)
    if raw == "*":
        return Include("*", "*", None, iterate)
    parts = raw.split(":")
    if len(parts) not in (2, 3) or not all(parts):
        raise Invalid(f"Invalid '{name}' value '{raw}': expected Type:parameter[:Target]",
                      expression=name)
    source, param_name = parts[0], parts[1]
    target = parts[2] if len(parts) == 3 else None
    if source not in TABLES:
        raise Invalid(f"Invalid '{name}' value '{raw}': unknown resource type '{source}'",
                      expression=name)
    if param_name != "*":
        param = parameters_for(source).get(param_name)
        if param is None or param.type != "reference":
            raise Invalid(f"Invalid '{name}' value '{raw}': '{param_name}' is not a reference "
                          f"search parameter of {source}", expression=name)
        if target is not None and param.targets and target not in param.targets:
            raise Invalid(f"Invalid '{name}' value '{raw}': {source}.{param_name} cannot "
                          f"point to {target}", expression=name)
    return Include(source, param_name, target, iterate)
