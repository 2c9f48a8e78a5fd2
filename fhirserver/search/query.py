"""The typed intermediate form of a search (search.html): what ``parse`` produces and
``compile`` consumes. Frozen, so a query can be shared, compared and hashed in tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .parameters import SearchParameter


@dataclass(frozen=True)
class Missing:
    """``:missing=true|false`` (search.html#missing)."""

    missing: bool


@dataclass(frozen=True)
class Clause:
    """One search parameter occurrence: its values are alternatives (search.html#combining:
    comma = OR); separate clauses are all required (repeating a parameter = AND)."""

    param: SearchParameter
    modifier: str | None
    values: tuple[Any, ...]


@dataclass(frozen=True)
class Chain:
    """A chained parameter (search.html#chaining), ``subject:Patient.name=x``: resources
    whose reference ``param`` points at a resource of one of the listed types that
    matches that type's inner condition (the alternatives are ORed)."""

    param: SearchParameter
    inner: tuple[tuple[str, Condition], ...]


@dataclass(frozen=True)
class Has:
    """Reverse chaining (search.html#has), ``_has:Observation:patient:code=x``: resources
    of ``target`` type that some ``source`` resource matching ``inner`` points at
    through its reference parameter ``param``."""

    target: str
    source: str
    param: SearchParameter
    inner: Condition


#: One AND-ed element of a search: a plain parameter, or a join through references.
Condition = Clause | Chain | Has


@dataclass(frozen=True)
class Include:
    """One ``_include`` or ``_revinclude`` (search.html#include): ``source:param[:target]``.

    ``param == "*"`` is the wildcard; ``iterate`` is the ``:iterate`` modifier.
    """

    source: str
    param: str
    target: str | None = None
    iterate: bool = False


@dataclass(frozen=True)
class SearchQuery:
    """A parsed search: the filter (an AND of OR-clauses) and the result parameters.

    ``ignored`` lists the parameters that were not applied, with the reason, so the
    searchset can say so (search.html#errors); ``applied`` is what the self link
    reports (search.html#conformance: the self link holds the parameters used).
    """

    resource_type: str
    clauses: tuple[Condition, ...] = ()
    count: int = 20
    sort: tuple[tuple[str, bool], ...] = ()
    total: str | None = None
    summary: str | None = None
    elements: tuple[str, ...] | None = None
    includes: tuple[Include, ...] = ()
    revincludes: tuple[Include, ...] = ()
    ignored: tuple[tuple[str, str], ...] = ()
    applied: tuple[tuple[str, str], ...] = ()
