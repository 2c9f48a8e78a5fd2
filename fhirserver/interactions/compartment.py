"""The Patient compartment (R4 compartmentdefinition-patient.html): compartment search
``Patient/{id}/{type}`` (http.html#search) and ``Patient/{id}/$everything``
(patient-operation-everything.html).

Every stored record carries its compartment key ``pat`` (the Patient its subject is),
indexed with ``lu``; both operations select on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .. import errors
from ..search.compile import compile_filter
from ..search.dates import parse_range
from ..search.parse import parse_query
from ..search.results import parse_whole
from ..search.sorting import after, decode_key, encode_key
from ..storage.records import Stored
from .bundles import (
    bundle,
    decode_cursor,
    encode_cursor,
    link,
    match_entry,
    outcome_entry,
    page_url,
)
from .context import Context
from .read import read
from .search import search

#: Types in the Patient compartment held here, and the parameter that carries the
#: record's clinical date ("care dates" for $everything's start and end).
MEMBERS = {"Observation": "date", "DiagnosticReport": "date", "CareTeam": "date"}
EVERYTHING_ORDER = ("Patient", *MEMBERS)
EVERYTHING_PARAMS = ("start", "end", "_since", "_type", "_count", "_cursor")
#: Within a type, newest clinical date first (a patient's latest records lead), then
#: id: the order a patient's records can be read in month by month (search/buckets.py).
EVERYTHING_SORT = [("so.-date", -1), ("_id", 1)]


def compartment_search(ctx: Context, pid: str, rtype: str, params: Sequence[tuple[str, str]],
                       *, strict: bool = False) -> dict[str, Any]:
    """``GET Patient/{pid}/{rtype}?...``: the search restricted to the compartment."""
    if rtype not in MEMBERS:
        raise errors.NotFound(f"Resources of type '{rtype}' are not in the Patient compartment "
                              "on this server")
    return search(ctx, rtype, params, strict=strict, path=f"Patient/{pid}/{rtype}",
                  extra_filter={"pat": pid})


def _care_dates(ctx: Context, rtype: str, start: str | None, end: str | None) -> dict[str, Any]:
    items = [(MEMBERS[rtype], f"ge{start}")] if start else []
    items += [(MEMBERS[rtype], f"le{end}")] if end else []
    return compile_filter(parse_query(rtype, items, tz=ctx.tz)) if items else {}


def _reaches(limit: dict[str, Any], pid: str) -> bool:
    """Is the caller's Patient search condition ``limit`` nothing but a list of the
    patients they reach, ``pid`` among them (or that list or what they wrote)? Then
    it keeps ``pid``'s Patient."""
    either = limit.get("$or") if limit.keys() == {"$or"} else None
    if isinstance(either, list) and either and isinstance(either[0], dict):
        return _reaches(either[0], pid)
    by_id = limit.get("_id") if limit.keys() == {"_id"} else None
    ids = by_id.get("$in") if isinstance(by_id, dict) and by_id.keys() == {"$in"} else None
    return isinstance(ids, list) and pid in ids


def everything(ctx: Context, pid: str, params: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """The patient and every record in their compartment, Patient first, then by type,
    newest first, paged by a keyset cursor over (type, sort key)."""
    patient = read(ctx, "Patient", pid)  # 404 / 410 as for a read
    args = dict(params)
    ignored = [k for k, _ in params if k not in EVERYTHING_PARAMS]
    for name in ("start", "end"):
        if args.get(name) and parse_range(args[name], ctx.tz) is None:
            raise errors.Invalid(f"Invalid '{name}' value '{args[name]}': expected a date",
                                 expression=name)
    since = None
    if args.get("_since"):
        rng = parse_range(args["_since"], ctx.tz)
        if rng is None:
            raise errors.Invalid(f"Invalid '_since' value '{args['_since']}': expected an instant",
                                 expression="_since")
        since = rng[0]
    types = list(EVERYTHING_ORDER)
    if args.get("_type"):
        asked = [t.strip() for t in args["_type"].split(",") if t.strip()]
        unknown = [t for t in asked if t not in EVERYTHING_ORDER]
        if unknown:
            raise errors.Invalid(f"Invalid '_type': {', '.join(unknown)} not in the Patient "
                                 "compartment on this server", expression="_type")
        types = [t for t in EVERYTHING_ORDER if t in asked]
    raw_count = args.get("_count", str(ctx.settings.default_count))
    count = max(1, min(parse_whole(raw_count, "_count"), ctx.settings.max_count))

    filters: dict[str, dict[str, Any]] = {}
    narrowed: set[str] = set()
    for rtype in types:
        parts = [{"_id": pid} if rtype == "Patient" else {"pat": pid}]
        # Scopes may still narrow a type, or refuse it.
        limit = ctx.search_filter(rtype, pinned=pid)
        if limit:
            parts.append(limit)
            if not (rtype == "Patient" and _reaches(limit, pid)):
                narrowed.add(rtype)
        if rtype in MEMBERS:
            care = _care_dates(ctx, rtype, args.get("start"), args.get("end"))
            parts += [care] if care else []
        if since is not None:
            parts.append({"lu": {"$gte": since}})
        filters[rtype] = {"$and": parts} if len(parts) > 1 else parts[0]

    cursor = decode_cursor(args["_cursor"]) if "_cursor" in args else {}
    start_type, start = cursor.get("t"), cursor.get("k")
    if start_type is not None and start_type not in types:
        raise errors.Invalid("Invalid paging cursor", expression="_cursor")
    rows: list[tuple[Stored, list[Any]]] = []
    for rtype in types[types.index(start_type) if start_type else 0:]:
        flt, key = filters[rtype], None
        if rtype == start_type and start is not None:
            key = decode_key(start)
            flt = {"$and": [flt, after(EVERYTHING_SORT, key)]}
        elif rtype == "Patient" and "Patient" not in narrowed and since is None:
            # The read above found it, and nothing here narrows it: a Patient has no
            # clinical date, so it sorts as (missing, id).
            rows.append((patient, [None, pid]))
            continue
        rows += ctx.repo.find_keyed(rtype, flt, EVERYTHING_SORT, count + 1 - len(rows),
                                    start=key)
        if len(rows) > count:
            break
    page, more = [s for s, _ in rows[:count]], len(rows) > count

    # Counting reads every record: the total is given when it is free (one page).
    total = len(page) if not more and "_cursor" not in args else None
    applied = [(k, v) for k, v in params if k in EVERYTHING_PARAMS and k != "_cursor"]
    path = f"Patient/{pid}/$everything"
    paging = [("_cursor", args["_cursor"])] if "_cursor" in args else []
    links = [link("self", page_url(ctx, path, [*applied, *paging]))]
    if more:
        nxt = encode_cursor({"t": page[-1].type, "k": encode_key(rows[count - 1][1])})
        links.append(link("next", page_url(ctx, path, [*applied, ("_cursor", nxt)])))
    entries = [match_entry(ctx, s) for s in page]
    if ignored:
        entries.append(outcome_entry(errors.operation_outcome(
            errors.Issue(f"Parameter '{k}' was ignored: not a parameter of $everything",
                         code="not-supported", severity="warning", expression=(k,))
            for k in ignored)))
    return bundle("searchset", entries, total=total, links=links)
