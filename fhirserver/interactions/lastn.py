"""``Observation/$lastn`` (R4 observation-operation-lastn.html): the most recent
``max`` Observations of each code, per patient.

The other parameters are Observation search parameters and select the candidates
(``patient``/``subject``, ``category``, ``code``, ``date``...). Candidates are read
newest first (latest effective time, then id) and kept while their group still has
room, so only one pass over the selection is needed. A group is one patient and one
code: the set of ``system|code`` codings of ``Observation.code`` (its text when it
has no coding), as the operation groups "by code".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .. import errors
from ..search.results import parse_whole
from ..search.text import fold, token
from ..storage.records import Stored
from .bundles import bundle, link, match_entry, outcome_entry, page_url
from .context import Context
from .search import bounded, matching_named, parse, touch_searched

ORDER = [("so.-date", -1), ("_id", 1)]


def group_key(resource: dict[str, Any]) -> tuple[str, ...]:
    """The code an Observation is grouped by: its codings as escaped ``system|code``
    tokens, so that a ``|`` inside a system or code does not make two codes one."""
    code = resource.get("code") or {}
    codings = sorted({
        token(c.get("system") if isinstance(c.get("system"), str) else None, c["code"])
        for c in code.get("coding") or ()
        if isinstance(c, dict) and isinstance(c.get("code"), str)
    })
    if codings:
        return tuple(codings)
    return (fold(code.get("text", "")),) if isinstance(code.get("text"), str) else ()


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

    kept: list[Stored] = []
    room: dict[tuple[str, tuple[str, ...]], int] = {}
    for stored in ctx.repo.iterate("Observation", flt, ORDER):
        res = stored.resource or {}
        subject = (res.get("subject") or {}).get("reference", "")
        key = (subject if isinstance(subject, str) else "", group_key(res))
        left = room.get(key, most)
        if left > 0:
            room[key] = left - 1
            kept.append(stored)
    # Grouped: by patient, then code, newest first within a group (stable sort).
    order = {k: i for i, k in enumerate(sorted(room))}
    kept.sort(key=lambda s: order[(
        (s.resource or {}).get("subject", {}).get("reference", ""), group_key(s.resource or {}))])

    entries = [match_entry(ctx, s) for s in kept]
    if query.ignored:
        entries.append(outcome_entry(errors.operation_outcome(
            errors.Issue(f"Search parameter '{name}' was ignored: {reason}",
                         code="not-supported", severity="warning", expression=(name,))
            for name, reason in query.ignored)))
    applied = [*(("max", str(most)),) * bool(raw_max), *query.applied]
    return bundle("searchset", entries, total=len(kept),
                  links=[link("self", page_url(ctx, "Observation/$lastn", applied))])
