"""Index values of a resource, computed at write time (search.html#ptypes).

The result is the ``sp`` subdocument stored next to the resource: one list per
parameter under its name, plus companion lists ``name:suffix`` described in each
type's module. A parameter without values has no key at all, which is what
``:missing`` (search.html#missing) tests. ``_id`` is not copied: it is the document's
own ``_id``.
"""

from __future__ import annotations

from datetime import UTC, tzinfo
from typing import Any

from . import paths
from .catalog import parameters_for
from .parameters import SearchParameter
from .text import BOUNDED_TYPES, bound
from .types import HANDLERS


def _values(param: SearchParameter, resource: dict[str, Any], tz: tzinfo) -> dict[str, list[Any]]:
    handler = HANDLERS[param.type]
    if param.type == "composite":
        return handler.extract(param, [(resource, "Resource")], tz)
    return handler.extract(param, paths.values(resource, param.paths), tz)


def references(param: SearchParameter, resource: dict[str, Any]) -> list[str]:
    """The literal references a reference parameter finds in ``resource`` ("Type/id"
    when relative), read from the resource itself, as ``_include`` needs them."""
    handler = HANDLERS["reference"]
    try:
        found = handler.extract(param, paths.values(resource, param.paths), UTC)
    except (TypeError, ValueError, AttributeError, KeyError):
        return []
    return list(found.get("", []))


def _bounded(values: list[Any]) -> list[Any]:
    """Index values cut to text.INDEX_CHARS characters."""
    return [bound(v) if isinstance(v, str) else v for v in values]


def _unique(values: list[Any]) -> list[Any]:
    """``values`` without repeats, in order (types.base.add leaves those of long lists)."""
    try:
        return list(dict.fromkeys(values))
    except TypeError:  # unhashable (a composite's entries): as they are
        return values


def extract(resource: dict[str, Any], tz: tzinfo) -> dict[str, list[Any]]:
    """The search values of ``resource``; never raises on a resource it cannot read."""
    out: dict[str, list[Any]] = {}
    rtype = resource.get("resourceType") if isinstance(resource, dict) else None
    if not isinstance(rtype, str):
        return out
    for param in parameters_for(rtype).values():
        if param.field == "_id" or param.type not in HANDLERS:
            continue
        try:
            found = _values(param, resource, tz)
        except (TypeError, ValueError, AttributeError, KeyError, OverflowError):
            continue  # malformed element: the resource stays storable, just not findable
        cut = param.type in BOUNDED_TYPES
        for suffix, values in found.items():
            if values:
                out[param.name + suffix] = _unique(_bounded(values) if cut else values)
    return out
