"""SearchQuery -> MongoDB filter and sort (search.html#combining, search.html#sort).

Pure: the filter names only ``_id`` and ``sp.*`` fields. Parameters are ANDed, the
values of one parameter ORed; ``:not`` on a token is a ``$nor`` of its values, so a
resource without the element matches too (search.html#token: "not" includes
resources that have no value). Only operators FerretDB v1 evaluates are used:
equality, ranges, ``$in``/``$nin``, ``$regex``, ``$exists``, ``$or``/``$nor``/``$and``.
"""

from __future__ import annotations

from typing import Any

from ..errors import Invalid
from .parameters import parameters_for
from .query import Clause, Missing, SearchQuery
from .types import HANDLERS

Filter = dict[str, Any]


def _any_of(conds: list[Filter]) -> Filter:
    """OR of conditions; equalities on one field become ``$in``."""
    if len(conds) == 1:
        return conds[0]
    keys = {next(iter(c)) for c in conds if len(c) == 1}
    if len(keys) == 1 and all(len(c) == 1 for c in conds):
        key = keys.pop()
        if not key.startswith("$") and all(not isinstance(c[key], dict) for c in conds):
            return {key: {"$in": [c[key] for c in conds]}}
    return {"$or": conds}


def _all_of(conds: list[Filter]) -> Filter:
    """AND of conditions, merged into one document when no field repeats."""
    if not conds:
        return {}
    if len(conds) == 1:
        return conds[0]
    keys = [k for c in conds for k in c]
    if len(keys) == len(set(keys)) and not any(k.startswith("$") for k in keys):
        return {k: v for c in conds for k, v in c.items()}
    return {"$and": conds}


def _id_filter(clause: Clause) -> Filter:
    ids = [v.code for v in clause.values]
    if clause.modifier == "not":
        return {"_id": {"$nin": ids}}
    return {"_id": ids[0]} if len(ids) == 1 else {"_id": {"$in": ids}}


def compile_clause(clause: Clause) -> Filter:
    """One parameter occurrence as a MongoDB condition."""
    param = clause.param
    if clause.modifier == "missing":
        return _any_of([{param.field: {"$exists": not v.missing}}
                        for v in clause.values if isinstance(v, Missing)])
    if param.field == "_id":
        return _id_filter(clause)
    handler = HANDLERS[param.type]
    conds = [handler.condition(param.field, clause.modifier, v) for v in clause.values]
    if clause.modifier == "not":
        return {"$nor": conds}
    return _any_of(conds)


def compile_filter(query: SearchQuery) -> Filter:
    """The MongoDB filter selecting the resources that match every clause of ``query``."""
    return _all_of([compile_clause(c) for c in query.clauses])


def compile_sort(query: SearchQuery) -> list[tuple[str, int]]:
    """The pymongo sort for ``_sort`` (search.html#sort); empty when none was asked.

    Over a list of values MongoDB sorts ascending by the smallest and descending by
    the largest, which is what the spec asks of repeating elements. ``_sort=_id``
    sorts on ``_id`` itself, so a caller adding ``_id`` as tie-breaker must skip it
    when it is already there.
    """
    params = parameters_for(query.resource_type)
    out: list[tuple[str, int]] = []
    for name, descending in query.sort:
        param = params[name]
        direction = -1 if descending else 1
        if param.field == "_id":
            out.append(("_id", direction))
            continue
        if param.type == "composite":
            raise Invalid(f"Cannot sort on composite parameter '{name}'", expression="_sort")
        out.append((HANDLERS[param.type].sort_field(param.field, descending), direction))
    return out


def index_keys(resource_type: str) -> list[list[tuple[str, int]]]:
    """The indexes to declare on ``resource_type``'s collection: at least one per
    parameter, leading with the field its conditions test (``_id`` is always indexed)."""
    out: list[list[tuple[str, int]]] = []
    for param in parameters_for(resource_type).values():
        if param.field == "_id":
            continue
        for keys in HANDLERS[param.type].indexes(param.field):
            if keys not in out:
                out.append(keys)
    return out
