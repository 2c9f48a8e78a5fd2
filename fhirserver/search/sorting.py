"""``_sort`` (search.html#sort) and the keyset cursors that page sorted results.

A parameter can hold several values, and the spec sorts ascending by the lowest and
descending by the highest. MongoDB does the same over an array, but a keyset cursor
("everything after this row") cannot be written against arrays: ``{f: {$gt: v}}``
matches when *any* value is greater. So at write time each sortable parameter also
gets two scalars in the ``so`` subdocument, ``so[name]`` (its lowest value) and
``so["-" + name]`` (its highest); sorting and cursors use those, which makes the
order total (with ``_id`` as the last key) and exactly reversible for ``previous``
links.

Pure: values in, values and MongoDB documents out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from ..errors import Invalid
from .catalog import parameters_for
from .dates import utc
from .query import SearchQuery
from .results import UNSORTABLE

SortKey = tuple[str, int]  # (MongoDB field, 1 | -1)


def sort_values(resource_type: str, sp: Mapping[str, list[Any]]) -> dict[str, Any]:
    """The ``so`` subdocument for a resource whose search values are ``sp``."""
    out: dict[str, Any] = {}
    for param in parameters_for(resource_type).values():
        if param.type in UNSORTABLE or param.field == "_id":
            continue
        values = sp.get(param.name)
        if not values:
            continue
        if param.type == "date":
            # [lo, hi) ranges: earliest start ascending, latest end descending.
            highs = sp.get(param.name + ":hi") or values
            out[param.name], out["-" + param.name] = min(values), max(highs)
            continue
        if param.type == "token":
            # Tokens are stored as ``system|code`` and bare ``code``; order by the former.
            values = [v for v in values if "|" in v] or values
        out[param.name], out["-" + param.name] = min(values), max(values)
    return out


def sort_index_keys(resource_type: str) -> list[list[SortKey]]:
    """Indexes that serve the common sorts without a blocking sort: every date
    parameter (``_lastUpdated``, ``date``, ``birthdate``...), both directions."""
    out: list[list[SortKey]] = []
    for param in parameters_for(resource_type).values():
        if param.type == "date":
            out.append([(f"so.{param.name}", 1), ("_id", 1)])
            out.append([(f"so.-{param.name}", -1), ("_id", 1)])
    return out


#: The order of a search without ``_sort``, but for a population page (search/shards.py)
#: and one patient's dated records (search/buckets.py ``newest_first``).
DEFAULT_SORT: list[SortKey] = [("_id", 1)]


def compile_sort(query: SearchQuery) -> list[SortKey]:
    """The pymongo sort for ``_sort``, ``_id`` last as tie-breaker, so the order is total."""
    params = parameters_for(query.resource_type)
    out: list[SortKey] = []
    for name, descending in query.sort:
        param = params[name]
        if param.type in UNSORTABLE:
            raise Invalid(f"Cannot sort on {param.type} parameter '{name}'", expression="_sort")
        if param.field == "_id":
            out.append(("_id", -1 if descending else 1))
            break  # _id is unique: later keys cannot change the order
        out.append((f"so.-{name}", -1) if descending else (f"so.{name}", 1))
    if not out or out[-1][0] != "_id":
        out.append(("_id", 1))
    return out


def reverse(sort: Sequence[SortKey]) -> list[SortKey]:
    """The same order backwards (for ``previous`` pages): same fields, flipped directions."""
    return [(f, -d) for f, d in sort]


def row_key(sort: Sequence[SortKey], doc: Mapping[str, Any]) -> list[Any]:
    """The values of ``sort``'s fields in a raw document (None where absent)."""
    out: list[Any] = []
    for field, _ in sort:
        node: Any = doc
        for part in field.split(".", 1) if field.startswith("so.") else (field,):
            node = node.get(part) if isinstance(node, Mapping) else None
        out.append(node)
    return out


def _after_one(field: str, direction: int, value: Any) -> dict[str, Any] | None:
    """Rows strictly after ``value`` on one key. Missing values sort lowest (MongoDB
    orders null/missing before everything), so they come first ascending, last descending."""
    if direction > 0:
        return {field: {"$ne": None}} if value is None else {field: {"$gt": value}}
    if value is None:
        return None  # nothing sorts below missing
    return {"$or": [{field: {"$lt": value}}, {field: None}]}


def after(sort: Sequence[SortKey], key: Sequence[Any]) -> dict[str, Any]:
    """The filter for rows strictly after the row whose sort values are ``key``:
    (k1 > v1) or (k1 = v1 and k2 > v2) or ... — the lexicographic keyset condition."""
    if len(key) != len(sort):
        raise Invalid("Invalid paging cursor", expression="_cursor")
    branches: list[dict[str, Any]] = []
    for i, (field, direction) in enumerate(sort):
        strictly = _after_one(field, direction, key[i])
        if strictly is not None:
            equal = [{f: v} for (f, _), v in zip(sort[:i], key[:i], strict=True)]
            branches.append({"$and": [*equal, strictly]} if equal else strictly)
    if not branches:
        return {"_id": {"$exists": False}}  # matches nothing
    return branches[0] if len(branches) == 1 else {"$or": branches}


def encode_key(key: Sequence[Any]) -> list[Any]:
    """A sort key as JSON (for a cursor): datetimes tagged so they come back as such."""
    return [{"t": v.isoformat()} if isinstance(v, datetime) else v for v in key]


def decode_key(raw: Any) -> list[Any]:
    if not isinstance(raw, list):
        raise Invalid("Invalid paging cursor", expression="_cursor")
    out: list[Any] = []
    for v in raw:
        if isinstance(v, dict):
            try:
                t = datetime.fromisoformat(v["t"])
                out.append(utc(t) if t.tzinfo is not None else t)
            except (KeyError, TypeError, ValueError) as exc:
                raise Invalid("Invalid paging cursor", expression="_cursor") from exc
        elif v is None or isinstance(v, (str, float)) or (
                isinstance(v, int) and -2**63 <= v < 2**63):  # what BSON holds
            out.append(v)
        else:
            raise Invalid("Invalid paging cursor", expression="_cursor")
    return out


#: MongoDB's order of the kinds of value a sort field holds (null and missing first).
_KIND_ORDER = ((type(None), 0), (bool, 5), (int, 1), (float, 1), (str, 2), (datetime, 6))


def _kind(value: Any) -> int:
    for kind, rank in _KIND_ORDER:
        if isinstance(value, kind):
            return rank
    return 9


def compare_rows(sort: Sequence[SortKey], a: Sequence[Any], b: Sequence[Any]) -> int:
    """-1, 0 or 1 as the row keys ``a`` and ``b`` (:func:`row_key`) come in ``sort``
    order, as MongoDB orders them (missing lowest): for rows read in several queries
    and merged."""
    for (_, direction), x, y in zip(sort, a, b, strict=True):
        kx, ky = _kind(x), _kind(y)
        if kx != ky:
            order = (kx > ky) - (kx < ky)
        elif x is None:
            order = 0
        else:
            if isinstance(x, datetime) and isinstance(y, datetime):
                x, y = utc(x), utc(y)
            order = (x > y) - (x < y)
        if order:
            return order * (1 if direction > 0 else -1)
    return 0
