"""What every parameter type provides, so parse, extract and compile dispatch on type
alone (the registry in :mod:`fhirserver.search.types`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any, Protocol

from ...errors import Invalid
from ..parameters import SearchParameter

Values = dict[str, list[Any]]
Filter = dict[str, Any]


@dataclass(frozen=True)
class ParseContext:
    """What parsing a value may depend on besides the value itself."""

    tz: tzinfo
    base_url: str
    now: datetime
    #: blind indexes of identity numbers and telecom values (search/blinding.py);
    #: None compares values as given
    blinder: Any = None


class Handler(Protocol):
    """One search parameter type (search.html#ptypes).

    ``extract`` returns stored values keyed by a suffix of the parameter's field
    (``""`` for the main list, e.g. ``":exact"`` for a companion list); ``condition``
    is a MongoDB condition for one value, on ``field`` and its companions.
    """

    modifiers: frozenset[str]

    def extract(self, param: SearchParameter, items: list[tuple[Any, str]],
                tz: tzinfo) -> Values: ...

    def parse(self, param: SearchParameter, modifier: str | None, raw: str,
              ctx: ParseContext) -> Any: ...

    def condition(self, field: str, modifier: str | None, value: Any) -> Filter: ...


def invalid(kind: str, raw: str, param: SearchParameter, why: str = "") -> Invalid:
    """The error for a malformed value, naming the parameter (search.html#errors)."""
    detail = f": {why}" if why else ""
    return Invalid(
        f"Invalid {kind} value '{raw}' for search parameter '{param.name}'{detail}",
        expression=param.name,
    )


_SCANNED = 32


def add(out: Values, suffix: str, *values: Any) -> None:
    """Append values to ``out[suffix]``, skipping None, empty strings and duplicates.

    Only short lists are searched for duplicates here: a search per value would make a
    resource with many values quadratic to index; extract.py deduplicates the rest."""
    bucket = out.setdefault(suffix, [])
    for v in values:
        if v is not None and v != "" and (len(bucket) >= _SCANNED or v not in bucket):
            bucket.append(v)


def text_of(node: Any, key: str) -> str | None:
    value = node.get(key) if isinstance(node, dict) else None
    return value if isinstance(value, str) and value else None
