"""Index keys: the equalities a database answers from an index, and the filter shape
that lets it.

A search filter tests ``sp.<param>`` sub-fields, range operators and ``$or``s. A
MongoDB wire-protocol engine answers from an index only what it can see at the top
level of the filter: FerretDB 1.x on PostgreSQL sends nothing but the top-level
scalar equalities to the database (DESIGN.md section 5), and a MongoDB planner does
best with one selective equality it can match to an index. So every stored resource
also carries ``k``, a flat list of keys (``code=http://loinc.org|8867-4``,
``family^smi``, ``birthdate@1960-03-04T00:00:00.000``), and every filter is sent
with the equalities it implies lifted to the top level (:func:`lifted`): at most
one ``k`` key, chosen for selectivity, plus
``pat``, ``_id`` and the other top-level fields the filter pins. Lifted equalities
are implied by the filter, never added to it, so results are unchanged; the full
filter still decides.

The keys of exact-match parameters (token, reference, uri) hold every value such a
parameter has, so their conditions test ``k`` alone (:func:`key_condition`) and
``sp`` keeps no copy of them (:func:`stored_values`). FerretDB decodes every value
of every document it reads, and those copies were a quarter of a stored
Observation: what is not stored costs no search anything. For the same reason the
values of a union parameter (``combo-code``: ``code`` and ``component-code``) are
stored as keys only; its other conditions test its parts (search/compile.py).

A birth date is a day: ``Patient?family=F&birthdate=D``, the registration desk's
search, would otherwise be answered from the family prefix alone, hundreds of
Patients in a large region. So a date parameter whose values are all of type
``date`` (:func:`day_valued`) also keys the start of its range (``birthdate@<lo>``),
and an ``eq`` search of one day tests that key too (:func:`day_condition`).

Pure: no database.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any

from ..model.types import is_valid_id
from .catalog import parameters_for
from .parameters import SearchParameter

KEY_FIELD = "k"
#: String parameters keep prefixes of this many characters at most: a longer search
#: value is found through its first characters, then matched in full.
PREFIX_MAX = 8
EXACT_TYPES = frozenset({"token", "reference", "uri"})
#: Token parameters with few distinct values: a key on them selects a large share.
_BROAD = frozenset({"status", "category", "gender", "active", "deceased", "_security",
                    "_tag", "language", "_profile", "data-absent-reason"})
_COMPARTMENT_REFS = frozenset({"patient", "subject"})
#: The longest day an ``eq`` search keys: the day summer time ends. A searched day
#: that a zone made longer still (a change of its offset by hours) gets no key, which
#: costs speed, never a match.
_LONGEST_DAY = timedelta(hours=25)
#: The longest searched dateTime (``T10:00``). It holds no date but one of a day its
#: zone skipped (Asia/Manila 1844-12-31), an instant at the day's start, which need
#: not be the minute's start (local mean time was offset by seconds).
_LONGEST_TIME = timedelta(minutes=1)
_KEY = re.compile(r"([A-Za-z_][A-Za-z0-9_-]*)([=^@])")
Filter = dict[str, Any]


def keys_of(rtype: str, sp: dict[str, list[Any]]) -> list[str]:
    """The ``k`` list of a resource, from its search values ``sp``."""
    params = parameters_for(rtype)
    out: dict[str, None] = {}
    for name, values in sp.items():
        param = params.get(name)
        if param is None:
            continue  # a companion list (``name:text``...), or not a parameter
        if param.type in EXACT_TYPES:
            for v in values:
                if isinstance(v, str):
                    out[f"{name}={v}"] = None
        elif param.type == "string":
            for v in values:
                if isinstance(v, str):
                    for n in range(1, min(len(v), PREFIX_MAX) + 1):
                        out[f"{name}^{v[:n]}"] = None
        elif day_valued(param):
            for v in values:
                if isinstance(v, datetime):
                    out[day_key(name, v)] = None
    return list(out)


def day_key(name: str, start: datetime) -> str:
    """The key of a value of day-valued parameter ``name`` whose range starts
    at ``start`` (naive UTC, as stored)."""
    return f"{name}@{start.replace(tzinfo=None).isoformat(timespec='milliseconds')}"


def day_valued(param: SearchParameter) -> bool:
    """Is every value of ``param`` a FHIR ``date`` (never a dateTime or Period)?"""
    return param.type == "date" and bool(param.paths) \
        and all(path.endswith(":date") for path in param.paths)


def day_keyed(rtype: str) -> list[str]:
    """The parameters of ``rtype`` whose values are keyed by day."""
    return [name for name, param in parameters_for(rtype).items() if day_valued(param)]


def day_keys(rtype: str, sp: Mapping[str, Any]) -> list[str]:
    """The day keys of a record whose stored search values are ``sp``."""
    return keys_of(rtype, {name: sp[name] for name in day_keyed(rtype)
                           if isinstance(sp.get(name), list)})


def day_condition(param: SearchParameter, prefix: str, lo: datetime,
                  hi: datetime) -> Filter:
    """The key condition an ``eq`` search of ``[lo, hi)`` on ``param`` implies, if any.

    A ``date`` spans a whole day, month or year of the server's zone, and so does the
    range of several (search/types/date.py stores one range). An ``eq`` search of a
    day (which has no zone of its own: the server's) holds only a range of that very
    day, which starts where the day starts. A searched minute or less may hold a day
    the zone skipped, starting within the minute, and a longer search (a month) many
    days: neither implies a key."""
    if prefix != "eq" or not day_valued(param) \
            or not _LONGEST_TIME < hi - lo <= _LONGEST_DAY:
        return {}
    return {KEY_FIELD: day_key(param.name, lo)}


def stored_values(rtype: str, sp: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """The ``sp`` stored with a resource: its search values but those ``k`` holds and
    those of union parameters (with their companions), which their parts hold."""
    params = parameters_for(rtype)

    def kept(name: str) -> bool:
        param, owner = params.get(name), params.get(name.partition(":")[0])
        return (param is None or param.type not in EXACT_TYPES) \
            and (owner is None or not owner.union)
    return {name: values for name, values in sp.items() if kept(name)}


def key_condition(name: str, cond: Any) -> Filter:
    """A condition on the values of exact-match parameter ``name`` (as a condition on
    ``sp.<name>`` would be written: a value, ``$in``, an anchored ``$regex`` or
    ``$exists``), as the same condition on its keys."""
    prefix = name + "="
    if isinstance(cond, str):
        return {KEY_FIELD: prefix + cond}
    if isinstance(cond, dict) and len(cond) == 1:
        (op, arg), = cond.items()
        if op == "$in" and all(isinstance(v, str) for v in arg):
            return {KEY_FIELD: {"$in": [prefix + v for v in arg]}}
        if op == "$regex" and isinstance(arg, str) and arg.startswith("^"):
            return {KEY_FIELD: {"$regex": "^" + re.escape(prefix) + arg[1:]}}
        if op == "$exists":
            present = {KEY_FIELD: {"$regex": "^" + re.escape(prefix)}}
            return present if arg else {"$nor": [present]}
    raise ValueError(f"no key form for the condition {cond!r} on {name}")


def key_values(name: str, keys: list[Any]) -> list[str]:
    """The values of exact-match parameter ``name`` among ``keys``."""
    prefix = name + "="
    return [k[len(prefix):] for k in keys if isinstance(k, str) and k.startswith(prefix)]


def _conjuncts(flt: Filter) -> Iterator[tuple[str, Any]]:
    """The (field, condition) pairs every match must satisfy (through nested ``$and``)."""
    for field, cond in flt.items():
        if field == "$and" and isinstance(cond, list):
            for part in cond:
                if isinstance(part, dict):
                    yield from _conjuncts(part)
        elif not field.startswith("$"):
            yield field, cond


def _positive(flt: Filter) -> Iterator[tuple[str, Any]]:
    """The (field, condition) pairs of ``flt`` and of each alternative of its ``$or``s,
    through nested ``$and``: what some match may satisfy."""
    for field, cond in flt.items():
        if field in ("$and", "$or") and isinstance(cond, list):
            for part in cond:
                if isinstance(part, dict):
                    yield from _positive(part)
        elif not field.startswith("$"):
            yield field, cond


def _prefix(cond: Any) -> str | None:
    """The literal prefix of an anchored ``^escaped`` regular expression, if that is all it is."""
    if not (isinstance(cond, dict) and set(cond) == {"$regex"} and isinstance(cond["$regex"], str)):
        return None
    pattern = cond["$regex"]
    if not pattern.startswith("^"):
        return None
    literal = re.sub(r"\\(.)", r"\1", pattern[1:])
    return literal if literal and re.escape(literal) == pattern[1:] else None


def _exact(rtype: str | None, params: Mapping[str, SearchParameter], name: str, value: str,
           top: Filter) -> tuple[int, str, bool]:
    """The candidate key of an equality on exact-match parameter ``name``; a reference
    to a Patient through the compartment's own parameter also pins ``pat``."""
    key = f"{name}={value}"
    param = params.get(name)
    pid = value[len("Patient/"):]
    compartment = param is not None and param.type == "reference" \
        and name in _COMPARTMENT_REFS and rtype != "Patient" \
        and value.startswith("Patient/") and is_valid_id(pid)
    if compartment:
        top.setdefault("pat", pid)
    return _rank(key, name), key, compartment


def named_patients(rtype: str | None, flt: Filter) -> list[str]:
    """The Patients a filter's compartment references name, in order: every value
    (an equality or each of an ``$in``'s alternatives) of ``patient`` or ``subject``
    that is ``Patient/<id>``, or of a Patient search, each ``_id``; through nested
    ``$and`` and ``$or`` (each alternative is looked for), never a negation.
    ``patient=a,b`` and an untyped ``subject=a`` name them as ``patient=a`` does
    (search.html#reference)."""
    params = parameters_for(rtype) if rtype and rtype != "Patient" else {}
    found: list[str] = []
    for field, cond in _positive(flt):
        if field not in (KEY_FIELD, "_id"):
            continue
        values = cond["$in"] if isinstance(cond, dict) and set(cond) == {"$in"} \
            and isinstance(cond["$in"], list) else [cond]
        for value in values:
            if not isinstance(value, str):
                continue
            if field == "_id":
                if rtype == "Patient" and is_valid_id(value) and value not in found:
                    found.append(value)
                continue
            name, sep, ref = split_key(value)
            param = params.get(name)
            pid = ref[len("Patient/"):]
            if sep == "=" and name in _COMPARTMENT_REFS and param is not None \
                    and param.type == "reference" and ref.startswith("Patient/") \
                    and is_valid_id(pid) and pid not in found:
                found.append(pid)
    return found


def split_key(key: str) -> tuple[str, str, str]:
    """A key's parameter, kind (``=`` exact, ``^`` prefix, ``@`` day) and value; the
    value may hold any of these characters (``email=a@b``)."""
    m = _KEY.match(key)
    return (m[1], m[2], key[m.end():]) if m else (key, "", "")


def _rank(key: str, param: str) -> int:
    """Larger is more selective."""
    sep = split_key(key)[1]
    if sep == "=":
        return 1 if param in _BROAD else 4
    if sep == "@":
        return 3  # one day of births: a handful of a region's Patients
    return 2 if len(key) - len(param) - 1 >= 3 else 0


def lifted(rtype: str | None, flt: Filter, base: Filter | None = None) -> Filter:
    """``flt`` AND ``base`` with the equalities they imply lifted to the top level."""
    params = parameters_for(rtype) if rtype else {}
    top: Filter = {}
    candidates: list[tuple[int, str, bool]] = []  # (rank, key, names the compartment)
    for field, cond in _conjuncts(flt):
        if isinstance(cond, dict) and set(cond) == {"$in"} and len(cond["$in"]) == 1:
            cond = cond["$in"][0]  # one allowed value: an equality
        if field == KEY_FIELD:
            if isinstance(cond, str):
                name, sep, value = split_key(cond)
                candidates.append(_exact(rtype, params, name, value, top) if sep == "="
                                  else (_rank(cond, name), cond, False))
            continue
        if not field.startswith("sp."):
            if "." not in field and isinstance(cond, str):
                top.setdefault(field, cond)
            continue
        name = field[3:]
        param = params.get(name)
        if param is None:
            continue
        if param.type in EXACT_TYPES and isinstance(cond, str):
            candidates.append(_exact(rtype, params, name, cond, top))
        elif param.type == "string":
            literal = _prefix(cond)
            if literal is not None:
                key = f"{name}^{literal[:PREFIX_MAX]}"
                candidates.append((_rank(key, name), key, False))
    # The compartment is pinned by ``pat`` already: a second key should narrow it.
    useful = [(r, k) for r, k, c in candidates if not (c and "pat" in top)]
    if useful:
        top[KEY_FIELD] = max(useful, key=lambda c: c[0])[1]
    out = dict(top)
    for extra in (base or {}).items():
        out.setdefault(*extra)
    rest = [flt] if flt else []
    if rest:
        out["$and"] = rest
    return out


#: Top-level fields a lifted equality on which an index answers (documents.py).
INDEXED = frozenset({"_id", "pat", KEY_FIELD, "b", "refs", "by", "org"})


def _broad(key: Any) -> bool:
    """Is ``key`` one of a parameter with few values, such as ``status``, that selects
    a large share?"""
    return isinstance(key, str) and split_key(key)[0] in _BROAD


def is_indexed(rtype: str, flt: Filter) -> bool:
    """Does some selective equality of ``flt`` reach an index once lifted?"""
    out = lifted(rtype, flt)
    broad = _broad(out.get(KEY_FIELD))
    return any(field in INDEXED and not (field == KEY_FIELD and broad) for field in out)


def selective_key(rtype: str, flt: Filter) -> bool:
    """Does ``flt`` lift a key that selects few records (a code, an identifier), not
    one of a parameter with few values?"""
    key = lifted(rtype, flt).get(KEY_FIELD)
    return key is not None and not _broad(key)


#: A filter limited to at most this many ids (the patients a clinician treats) may be
#: read id by id: :func:`indexed_branches`.
ID_LOOKUPS_MAX = 1000


def _alternatives(cond: Filter) -> list[Filter] | None:
    """``cond`` as filters any match satisfies one of: an ``_id`` list as one
    equality per id, an ``$or`` as its branches (each split the same way)."""
    ids = cond.get("_id") if set(cond) == {"_id"} else None
    if isinstance(ids, dict) and set(ids) == {"$in"} and isinstance(ids["$in"], list) \
            and all(isinstance(i, str) for i in ids["$in"]):
        return [{"_id": i} for i in sorted(set(ids["$in"]))]
    if set(cond) == {"$or"} and isinstance(cond["$or"], list):
        out: list[Filter] = []
        for branch in cond["$or"]:
            if not isinstance(branch, dict):
                return None
            out += _alternatives(branch) or [branch]
        return out
    return None


def indexed_branches(rtype: str, flt: Filter) -> list[Filter] | None:
    """``flt`` as a union of filters that each reach an index, when it reaches none
    itself but one of its conditions is a list of ids, or an ``$or`` of those and
    indexed equalities: a clinician's search of Patients is limited to those they
    treat or registered (``{$or: [{_id: {$in: [...]}}, {by: ...}]}``), which no
    index answers on FerretDB (``$in`` and ``$or`` are never pushed down), so it read
    every Patient; read branch by branch it costs a look-up per patient treated.
    None when ``flt`` reaches an index already, or has no such condition, or one of
    more than :data:`ID_LOOKUPS_MAX` branches."""
    if is_indexed(rtype, flt):
        return None
    parts = [flt["$and"]] if set(flt) == {"$and"} and isinstance(flt["$and"], list) else None
    conjuncts: list[Filter] = []
    stack = list(parts[0]) if parts else [flt]
    while stack:
        part = stack.pop(0)
        if isinstance(part, dict) and set(part) == {"$and"} and isinstance(part["$and"], list):
            stack[:0] = part["$and"]
        elif isinstance(part, dict):
            conjuncts.append(part)
        else:
            return None
    for i, conjunct in enumerate(conjuncts):
        branches = _alternatives(conjunct)
        if not branches or len(branches) > ID_LOOKUPS_MAX \
                or not all(is_indexed(rtype, b) for b in branches):
            continue
        rest = conjuncts[:i] + conjuncts[i + 1:]
        return [{"$and": [*rest, b]} if rest else b for b in branches]
    return None
