"""``Observation/$lastn`` (R4 observation-operation-lastn.html): the most recent
``max`` Observations of each code, per patient.

The other parameters are Observation search parameters and select the candidates
(``patient``/``subject``, ``category``, ``code``, ``date``...). A group is one
patient and one code: the set of ``system|code`` codings of ``Observation.code``
(its text when it has no coding), as the operation groups "by code". The groups of
one patient's whole record are filled from its registered groups and latest months
(storage/latest.py); other candidates are read newest first (latest effective
time, then id) and kept while their group still has room, in one pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .. import errors
from ..search.latest import GroupKey, group_of
from ..search.query import Clause
from ..search.results import parse_whole
from ..storage.latest import ORDER, newest_per_group
from ..storage.records import Stored
from .bounds import bounded
from .bundles import bundle, link, match_entry, outcome_entry, page_url
from .context import Context
from .search import matching_named, parse, touch_searched

#: The parameters that name the patient whose groups the registry answers for.
PATIENT = frozenset({"patient", "subject"})


def lastn(ctx: Context, params: Sequence[tuple[str, str]], *, strict: bool = False) -> dict[str, Any]:
    raw_max = [v for k, v in params if k == "max"]
    if len(raw_max) > 1:
        raise errors.Invalid("'max' may be given once", expression="max")
    most = parse_whole(raw_max[0], "max", least=1) if raw_max else 1
    rest = [(k, v) for k, v in params if k != "max"]
    query = parse(ctx, "Observation", rest, strict=strict)
    flt = matching_named(ctx, query)
    bounded(ctx, "Observation", flt)  # it reads every candidate: as a search would
    touch_searched(ctx, query, flt)  # the patients it looks into, whatever it finds

    # Filtered further (a category, a date range), groups the filter excludes would
    # never fill: such a selection is read whole, as the filter keeps it.
    grouped = newest_per_group(ctx.repo, "Observation", flt, most) \
        if all(isinstance(c, Clause) and c.param.name in PATIENT and c.modifier is None
               for c in query.clauses) else None
    kept: list[Stored] = grouped if grouped is not None else []
    if grouped is None:
        room: dict[GroupKey, int] = {}
        for stored in ctx.repo.iterate("Observation", flt, ORDER):
            key = group_of(stored.resource or {})
            left = room.get(key, most)
            if left > 0:
                room[key] = left - 1
                kept.append(stored)
    # Grouped: by patient, then code, newest first within a group (stable sort).
    kept.sort(key=lambda s: group_of(s.resource or {}))

    entries = [match_entry(ctx, s) for s in kept]
    if query.ignored:
        entries.append(outcome_entry(errors.operation_outcome(
            errors.Issue(f"Search parameter '{name}' was ignored: {reason}",
                         code="not-supported", severity="warning", expression=(name,))
            for name, reason in query.ignored)))
    applied = [*(("max", str(most)),) * bool(raw_max), *query.applied]
    return bundle("searchset", entries, total=len(kept),
                  links=[link("self", page_url(ctx, "Observation/$lastn", applied))])
