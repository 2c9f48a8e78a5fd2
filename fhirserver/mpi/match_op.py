"""``Patient/$match`` (R4 patient-operation-match.html): candidates for the input
Patient, scored and graded by :mod:`.matching`, best first.

Candidates come from the searches :func:`.matching.blocking_keys` names (identifier,
birth date, family name, phone), each bounded; a uniquely-identifying identifier is
looked up by its claim. The answer is a searchset Bundle whose entries carry
``search.score`` and the ``match-grade`` extension.

Candidates outside the caller's reach (found through an identifier's holder) are
answered only to a registration desk (the ``registration`` scope), each counted as
an identity look-up (auth/lookup_rules.py) and shown without health card numbers
unless the caller holds ``card-number``; other callers get the candidates they reach.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .. import errors
from ..auth.lookup_rules import matches_beyond_reach
from ..interactions.bundles import bundle, match_entry
from ..interactions.context import Context
from ..interactions.identity_lookups import caller_of, count_lookups, shown
from ..interactions.search import matching, parse
from ..model.validation import validate_resource
from .matching import blocking_keys, rank
from .pix import holders

MATCH_GRADE = "http://hl7.org/fhir/StructureDefinition/match-grade"
PER_KEY = 200  # candidates fetched per blocking search
DEFAULT_COUNT = 10


def _parameters(body: Any) -> tuple[dict[str, Any], bool, int | None]:
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise errors.Invalid("$match takes a Parameters resource", expression="resourceType")
    resource, only_certain, count = None, False, None
    params = body.get("parameter") or []
    if not isinstance(params, list):
        raise errors.Invalid("Parameters.parameter must be an array",
                             expression="Parameters.parameter")
    for i, p in enumerate(params):
        name = p.get("name") if isinstance(p, dict) else None
        where = f"Parameters.parameter[{i}]"
        if name == "resource":
            resource = p.get("resource")
        elif name == "onlyCertainMatches":
            if not isinstance(p.get("valueBoolean"), bool):
                raise errors.Invalid("onlyCertainMatches must be a valueBoolean", expression=where)
            only_certain = p["valueBoolean"]
        elif name == "count":
            value = p.get("valueInteger")
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise errors.Invalid("count must be a positive valueInteger", expression=where)
            count = p["valueInteger"]
    if not isinstance(resource, dict) or resource.get("resourceType") != "Patient":
        raise errors.Invalid("Parameter 'resource' must hold the Patient to match",
                             expression="Parameters.parameter")
    validate_resource(resource, expected_type="Patient")
    return resource, only_certain, count


def _normalised(ctx: Context, patient: dict[str, Any]) -> dict[str, Any]:
    """Registered identifiers in their stored form; invalid ones are kept as given
    (a mistyped number is exactly what matching should survive)."""
    out = dict(patient)
    idents = []
    for ident in patient.get("identifier") or ():
        found = ctx.registry.match(str(ident.get("system", "")))
        if found is not None and isinstance(ident.get("value"), str):
            try:
                ident = {**ident, "value": found.entry.check(ident["value"], found.parameter)}
            except ValueError:
                pass
        idents.append(ident)
    if idents:
        out["identifier"] = idents
    return out


def _reach(ctx: Context) -> frozenset[str] | None:
    """The patients the caller may search (None: everyone)."""
    return ctx.access.decision("Patient", "search").patients if ctx.access else None


def match(ctx: Context, body: Any, note: Callable[[str], None] | None = None) -> dict[str, Any]:
    query, only_certain, count = _parameters(body)
    query = _normalised(ctx, query)

    def unique(system: str) -> bool:
        found = ctx.registry.match(system)
        return found is not None and found.entry.unique

    ids: list[str] = []
    for name, value in blocking_keys(query):
        if name == "identifier":
            system, _, val = value.partition("|")
            found = holders(ctx, system, val)
        else:
            q = parse(ctx, "Patient", [(name, value)])
            found = ctx.repo.find_ids("Patient", matching(ctx, q), limit=PER_KEY)
        ids += [i for i in found if i not in ids]
    reach = _reach(ctx)
    wide = matches_beyond_reach(caller_of(ctx))
    ids = [i for i in ids if wide or reach is None or i in reach]
    stored = ctx.repo.get_many("Patient", ids)
    candidates = [s.resource for s in stored.values()
                  if not s.deleted and s.resource and s.resource.get("active") is not False]
    ranked = rank(query, candidates, unique, count=count or DEFAULT_COUNT, only_certain=only_certain)
    outside = {c.resource["id"] for c in ranked
               if reach is not None and c.resource["id"] not in reach}
    count_lookups(ctx, f"$match, {len(outside)} candidate(s) outside the caller's reach", note,
                  cost=len(outside))
    entries = []
    for c in ranked:
        s = stored[c.resource["id"]]
        entry = match_entry(ctx, s)
        if s.id in outside:
            entry["resource"] = shown(ctx, entry["resource"])
        entry["search"] = {
            "extension": [{"url": MATCH_GRADE, "valueCode": c.grade}],
            "mode": "match",
            "score": c.score,
        }
        entries.append(entry)
    return bundle("searchset", entries, total=len(entries))
