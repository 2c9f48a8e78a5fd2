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

import re
from collections.abc import Sequence
from typing import Any

from .. import errors
from ..search.results import parse_whole
from ..search.text import CUT, fold
from ..storage.records import Stored
from .bundles import bundle, link, match_entry, outcome_entry, page_url
from .context import Context
from .search import bounded, matching, parse

ORDER = [("so.-date", -1), ("_id", 1)]
#: What grouping needs of a candidate: its code tokens and subject (search values).
FIELDS = ("v", "sp.code", "sp.subject")
#: Attempts when a kept Observation changes between the two reads.
ATTEMPTS = 3
_ESCAPED = re.compile(r"\\.")

Group = tuple[str, tuple[str, ...]]


def group_key(resource: dict[str, Any]) -> tuple[str, ...]:
    """The code an Observation is grouped by."""
    code = resource.get("code") or {}
    codings = sorted({
        f"{c.get('system', '')}|{c.get('code')}" for c in code.get("coding") or ()
        if isinstance(c, dict) and isinstance(c.get("code"), str)
    })
    if codings:
        return tuple(codings)
    return (fold(code.get("text", "")),) if isinstance(code.get("text"), str) else ()


def coded_key(tokens: Sequence[str]) -> tuple[str, ...]:
    """The code key from the stored ``code`` tokens: each coding is stored as
    ``system|code`` (escaped, search/types/token.py) and as its bare code, which has
    no unescaped ``|``. Empty for a code given as text only, and for one whose tokens
    were cut to the index length (two long codes alike in their first characters
    would be stored alike): the resource itself tells those apart."""
    if any(t.endswith(CUT) for t in tokens):
        return ()
    return tuple(sorted({t for t in tokens if "|" in _ESCAPED.sub("", t)}))


def _group(ctx: Context, row: dict[str, Any]) -> Group:
    sp = row.get("sp") or {}
    subjects = sp.get("subject") or [""]
    key = coded_key(sp.get("code") or ())
    if not key:  # text only, or cut: the code itself, whole, from the resource
        stored = ctx.repo.get("Observation", row["_id"])
        key = ("whole",) + group_key(stored.resource or {}) if stored else ("whole",)
    return str(subjects[0]), key


def _choose(ctx: Context, flt: dict[str, Any], most: int) -> list[Stored]:
    """One pass over the candidates' search values, newest first; then only the kept
    resources are read whole, each only if it still matches the filter (the caller's
    reach among it). A kept one written in between (another version than the one
    chosen, or one the filter no longer matches) makes the choice again."""
    for attempt in range(ATTEMPTS):
        kept: list[tuple[Group, str, int]] = []
        room: dict[Group, int] = {}
        for row in ctx.repo.iterate_fields("Observation", flt, ORDER, FIELDS):
            key = _group(ctx, row)
            left = room.get(key, most)
            if left > 0:
                room[key] = left - 1
                kept.append((key, row["_id"], row["v"]))
        found = ctx.repo.get_many("Observation", [rid for _, rid, _ in kept], flt)
        same = [(key, found[rid]) for key, rid, v in kept
                if rid in found and found[rid].version == v]
        if len(same) == len(kept) or attempt == ATTEMPTS - 1:
            # Grouped: by patient, then code, newest first within a group (stable).
            same.sort(key=lambda pair: pair[0])
            return [stored for _, stored in same]
    raise AssertionError("unreachable")


def lastn(ctx: Context, params: Sequence[tuple[str, str]], *, strict: bool = False) -> dict[str, Any]:
    raw_max = [v for k, v in params if k == "max"]
    if len(raw_max) > 1:
        raise errors.Invalid("'max' may be given once", expression="max")
    most = parse_whole(raw_max[0], "max", least=1) if raw_max else 1
    rest = [(k, v) for k, v in params if k != "max"]
    query = parse(ctx, "Observation", rest, strict=strict)
    flt = matching(ctx, query)
    bounded(ctx, "Observation", flt)  # it reads every candidate: as a search would

    chosen = _choose(ctx, flt, most)
    entries = [match_entry(ctx, s) for s in chosen]
    if query.ignored:
        entries.append(outcome_entry(errors.operation_outcome(
            errors.Issue(f"Search parameter '{name}' was ignored: {reason}",
                         code="not-supported", severity="warning", expression=(name,))
            for name, reason in query.ignored)))
    applied = [*(("max", str(most)),) * bool(raw_max), *query.applied]
    return bundle("searchset", entries, total=len(chosen),
                  links=[link("self", page_url(ctx, "Observation/$lastn", applied))])
