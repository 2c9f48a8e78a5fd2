"""``_include`` and ``_revinclude`` (search.html#include, search.html#revinclude).

Forward includes read the references out of the matched resources themselves;
reverse includes ask the referring collection through its indexed reference
parameter. ``:iterate`` repeats both over what the previous round added, up to
``MAX_ROUNDS``. Included resources are bounded by ``MAX_INCLUDES``: past it the
rest is left out and the searchset says so in its outcome entry, rather than
answering an unbounded page.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .. import errors
from ..search.catalog import parameters_for
from ..search.compile import param_condition
from ..search.definitions import TABLES
from ..search.extract import references
from ..search.parameters import SearchParameter
from ..search.query import Include, SearchQuery
from ..storage.records import Stored
from .context import Context

MAX_INCLUDES = 1000
MAX_ROUNDS = 4


def _reference_params(rtype: str, name: str) -> list[SearchParameter]:
    params = parameters_for(rtype)
    if name == "*":
        return [p for p in params.values() if p.type == "reference"]
    param = params.get(name)
    return [param] if param is not None and param.type == "reference" else []


def _sources(inc: Include) -> Iterable[str]:
    return TABLES if inc.source == "*" else (inc.source,) if inc.source in TABLES else ()


def _forward(ctx: Context, inc: Include, frontier: list[Stored]) -> list[Stored]:
    wanted: dict[str, list[str]] = {}
    for stored in frontier:
        if stored.resource is None or inc.source not in ("*", stored.type):
            continue
        for param in _reference_params(stored.type, inc.param):
            for ref in references(param, stored.resource):
                rtype, _, rid = ref.partition("/")
                if rtype in TABLES and rid and "/" not in rid and inc.target in (None, rtype):
                    wanted.setdefault(rtype, []).append(rid)
    out: list[Stored] = []
    for rtype, ids in wanted.items():
        found = ctx.repo.get_many(rtype, ids)
        out += [s for s in found.values() if not s.deleted and _may(ctx, s)]
    return out


def _reverse(ctx: Context, inc: Include, frontier: list[Stored], limit: int) -> list[Stored]:
    """The resources of ``inc``'s source types that refer to the frontier through its
    parameter(s): one query per source type and frontier resource, each pinned by an
    equality on the referrers' ``refs`` (every local reference they hold, indexed),
    the parameters tested on what that finds. An ``$in`` of the frontier's references
    reaches no index on FerretDB, which read every record of the source type for it
    (2 s for ``_revinclude=DiagnosticReport:result``, 37 s for ``*``)."""
    out: list[Stored] = []
    seen: set[str] = set()
    for source in _sources(inc):
        params = _reference_params(source, inc.param)
        limit_ = _limit(ctx, source)
        for target in frontier:
            if inc.target not in (None, target.type):
                continue
            conds = [param_condition(param, target.reference) for param in params
                     if not param.targets or target.type in param.targets]
            if not conds:
                continue
            parts: list[dict[str, Any]] = [{"refs": target.reference},
                                           conds[0] if len(conds) == 1 else {"$or": conds}]
            if limit_:
                parts.append(limit_)
            for found in ctx.repo.find(source, {"$and": parts}, limit=limit + 1):
                if found.reference not in seen:
                    seen.add(found.reference)
                    out.append(found)
            if len(out) > limit:
                return out
    return out


def _may(ctx: Context, stored: Stored) -> bool:
    try:
        return ctx.visible(stored, "search")
    except errors.Forbidden:
        return False  # no scope for that type: it is simply not included


def _limit(ctx: Context, rtype: str) -> dict[str, Any] | None:
    try:
        return ctx.search_filter(rtype)
    except errors.Forbidden:
        return {"_id": {"$exists": False}}


def included(ctx: Context, matches: list[Stored], query: SearchQuery) -> tuple[list[Stored], list[str]]:
    """The resources ``query``'s includes add to the page ``matches``, and notes on
    what was left out."""
    if not query.includes and not query.revincludes:
        return [], []
    seen = {s.reference for s in matches}
    out: list[Stored] = []
    notes: list[str] = []
    frontier = matches
    for round_ in range(MAX_ROUNDS):
        incs = [i for i in query.includes if round_ == 0 or i.iterate]
        revs = [i for i in query.revincludes if round_ == 0 or i.iterate]
        if not frontier or not (incs or revs):
            break
        found: list[Stored] = []
        for inc in incs:
            found += _forward(ctx, inc, frontier)
        for rev in revs:
            found += _reverse(ctx, rev, frontier, MAX_INCLUDES)
        new: list[Stored] = []
        for stored in found:
            if stored.reference not in seen:
                seen.add(stored.reference)
                new.append(stored)
        if len(out) + len(new) > MAX_INCLUDES:
            notes.append(f"More than {MAX_INCLUDES} resources were to be included; "
                         "only the first ones are in this page")
            out += new[: MAX_INCLUDES - len(out)]
            break
        out += new
        frontier = new
    else:
        if frontier and any(i.iterate for i in (*query.includes, *query.revincludes)):
            notes.append(f"':iterate' stopped after {MAX_ROUNDS} rounds")
    return out, notes
