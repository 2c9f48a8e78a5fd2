"""SearchQuery -> MongoDB filter and sort (search.html#combining, search.html#sort).

Pure: the filter names only ``_id``, ``k`` and ``sp.*`` fields (exact-match
parameters are tested on their keys, ``k``: search/keys.py). Parameters are ANDed, the
values of one parameter ORed; ``:not`` on a token is a ``$nor`` of its values, so a
resource without the element matches too (search.html#token: "not" includes
resources that have no value). A union parameter's values other than its keys are
stored by its parts only, and tested there (:func:`_union_clause`). Only operators
FerretDB v1 evaluates are used: equality, ranges, ``$in``/``$nin``, ``$regex``,
``$exists``, ``$or``/``$nor``/``$and``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from .keys import EXACT_TYPES, day_condition, key_condition
from .parameters import SearchParameter
from .query import Chain, Clause, Condition, Has, Missing, SearchQuery
from .text import BOUNDED_TYPES, bound
from .types import HANDLERS

Filter = dict[str, Any]
#: Turns a join (chain or _has) into a condition on this collection: it needs the
#: database, so the executor supplies it and compilation itself stays pure.
Resolver = Callable[[Chain | Has], Filter]


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


def _bounded(cond: Any) -> Any:
    """The string values a condition compares for equality, cut as stored values are
    (text.bound); regular expressions cut their own literal (text.prefix_regex)."""
    if isinstance(cond, str):
        return bound(cond)
    if isinstance(cond, list):
        return [_bounded(c) for c in cond]
    if isinstance(cond, dict):
        return {k: v if k == "$regex" else _bounded(v) for k, v in cond.items()}
    return cond


def param_condition(param: SearchParameter, cond: Any) -> Filter:
    """The filter testing ``cond`` (a value, ``$in``, an anchored ``$regex`` or
    ``$exists``) on the values of ``param``, wherever they are stored."""
    return _keyed(param, {param.field: cond})


def _keyed(param: SearchParameter, cond: Filter) -> Filter:
    """A condition on an exact-match parameter's own values, as one on its keys;
    conditions on its companion lists (``:text``, ``:identifier``...) as they are."""
    if param.type in EXACT_TYPES and set(cond) == {param.field}:
        return key_condition(param.name, cond[param.field])
    return cond


def _tests_stored(flt: Any, field: str) -> bool:
    """Does ``flt`` test ``field`` or a companion of it (``field:unit``, ``field.<key>``)?"""
    if isinstance(flt, list):
        return any(_tests_stored(part, field) for part in flt)
    return isinstance(flt, dict) and any(
        name == field or name.startswith((field + ":", field + "."))
        or _tests_stored(cond, field) for name, cond in flt.items())


def _union_clause(clause: Clause) -> Filter:
    """A condition on a union parameter's values, tested on each of its parts (which
    hold them: keys.stored_values). A value matches when it matches in some part, so
    a positive condition matches when some part does; ``:not`` (no value matches) and
    ``:missing=true`` (no value at all) when every part does."""
    parts = [replace(clause, param=part) for part in clause.param.parts]
    if clause.modifier == "missing":
        return _any_of([(_all_of if v.missing else _any_of)(
            [compile_clause(replace(part, values=(v,))) for part in parts])
            for v in clause.values if isinstance(v, Missing)])
    return (_all_of if clause.modifier == "not" else _any_of)(
        [compile_clause(part) for part in parts])


def compile_clause(clause: Clause) -> Filter:
    """One parameter occurrence as a MongoDB condition."""
    own = _own_clause(clause)
    if clause.param.parts and _tests_stored(own, clause.param.field):
        return _union_clause(clause)
    return own


def _own_clause(clause: Clause) -> Filter:
    """A clause as a condition on its parameter's own stored values and keys."""
    param = clause.param
    if clause.modifier == "missing":
        return _any_of([_keyed(param, {param.field: {"$exists": not v.missing}})
                        for v in clause.values if isinstance(v, Missing)])
    if param.field == "_id":
        return _id_filter(clause)
    handler = HANDLERS[param.type]
    conds = [handler.condition(param.field, clause.modifier, v) for v in clause.values]
    if param.type == "date":
        conds = [{**c, **day_condition(param, v.prefix, v.lo, v.hi)}
                 for c, v in zip(conds, clause.values, strict=True)]
    if param.type in BOUNDED_TYPES:
        conds = [_bounded(c) for c in conds]
    conds = [_keyed(param, c) for c in conds]
    if clause.modifier == "not":
        return {"$nor": conds}
    return _any_of(conds)


def compile_condition(condition: Condition, resolve: Resolver | None = None) -> Filter:
    if isinstance(condition, Clause):
        return compile_clause(condition)
    if resolve is None:
        raise TypeError("a search with chained or _has parameters needs a resolver")
    return resolve(condition)


def compile_filter(query: SearchQuery, resolve: Resolver | None = None) -> Filter:
    """The MongoDB filter selecting the resources that match every clause of ``query``."""
    return _all_of([compile_condition(c, resolve) for c in query.clauses])


def chain_condition(chain: Chain, targets: dict[str, list[str]]) -> Filter:
    """A chain as a condition, given the ids that matched its inner condition, by type."""
    refs = [f"{t}/{i}" for t, ids in targets.items() for i in ids]
    return param_condition(chain.param, {"$in": refs})


def has_condition(has: Has, referenced: list[str]) -> Filter:
    """A ``_has`` as a condition, given the references its matching sources hold."""
    prefix = has.target + "/"
    ids = sorted({r[len(prefix):] for r in referenced if r.startswith(prefix)})
    return {"_id": {"$in": ids}}
