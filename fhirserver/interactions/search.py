"""search (R4 http.html#search, search.html): a searchset Bundle, paged.

Pages are keyset cursors (``_cursor``) on the sort order, which always ends with
``_id`` so it is total: while others create and delete, a page never repeats or
skips a resource, whatever ``_sort`` asks for (search.html#sort, http.html#paging).
An update that moves a resource's sort value past the cursor (a result's date, in a
patient's newest-first pages) moves it to pages already read, or to one more.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .. import errors
from ..auth.disclosure import sees_whole
from ..auth.lookup_rules import uses_lookup_exception
from ..search.blinding import identity_probes
from ..search.buckets import newest_first
from ..search.compile import compile_clause, compile_filter
from ..search.keys import lifted, named_patients, selective_key
from ..search.parse import parse_query
from ..search.query import Clause, SearchQuery
from ..search.shards import POPULATION_SORT, estimate, resume_position
from ..search.sorting import DEFAULT_SORT, after, compile_sort, decode_key, encode_key, reverse
from ..storage.records import Stored
from .bounds import bounded
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
from .identity_lookups import count_lookups, shown
from .includes import included
from .joins import resolver
from .shape import shape

PAGING = ("_cursor",)
AUDITED_PATIENTS = 200  # patients named in one audit record at most
Cursor = tuple[str, str]


def parse(ctx: Context, rtype: str, params: Sequence[tuple[str, str]], *,
          strict: bool = False) -> SearchQuery:
    return parse_query(
        rtype,
        [(k, v) for k, v in params if k not in PAGING],
        tz=ctx.tz,
        base_url=ctx.base_url,
        blinder=ctx.repo.protection.blinder,
        strict=strict,
        default_count=ctx.settings.default_count,
        max_count=ctx.settings.max_count,
    )


def matching(ctx: Context, query: SearchQuery,
             extra_filter: dict[str, Any] | None = None, *, lookups: bool = True) -> dict[str, Any]:
    """The MongoDB filter of ``query`` with its joins resolved, ANDed with ``extra_filter``.

    ``lookups`` off: the identifier look-up exception never applies (conditional
    interactions match within the caller's reach only, or a conditional create would
    hand back, uncounted, the Patient a look-up is limited to)."""
    flt = compile_filter(query, resolver(ctx))
    if extra_filter:
        flt = {"$and": [flt, extra_filter]} if flt else extra_filter
    lookup = lookups and is_identifier_lookup(query)
    pinned = lifted(query.resource_type, flt).get("pat")
    reach = ctx.search_filter(query.resource_type, identifier_lookup=lookup,
                              pinned=pinned if isinstance(pinned, str) else None)
    if reach:
        flt = {"$and": [flt, reach]} if flt else reach
    return flt


def matching_named(ctx: Context, query: SearchQuery,
                   extra_filter: dict[str, Any] | None = None) -> dict[str, Any]:
    """:func:`matching` for a search that reads patients' records: when the caller's
    scopes refuse it (403), the refusal's audit record still names the patients the
    search named (:func:`touch_searched`), so their access logs show the attempt."""
    try:
        return matching(ctx, query, extra_filter)
    except errors.Forbidden:
        touch_searched(ctx, query, extra_filter or {})
        raise


def is_identifier_lookup(query: SearchQuery) -> bool:
    """``Patient?identifier=system|value`` with one value and nothing else: the
    look-up backend clients may run for any patient, one person per request. A
    comma list (OR, search.html#combining) or a repeated parameter, any other
    clause, modifier, partial token or include makes it an ordinary search, limited
    to the caller's reach."""
    if query.resource_type != "Patient" or len(query.clauses) != 1:
        return False
    clause = query.clauses[0]
    if not isinstance(clause, Clause) or len(clause.values) != 1:
        return False
    value = clause.values[0]
    return (clause.param.name == "identifier" and clause.modifier is None
            and not query.includes and not query.revincludes
            and bool(getattr(value, "system", None)) and bool(getattr(value, "code", None))
            and getattr(value, "text", None) is None and getattr(value, "of_type", None) is None)


def _identity_lookup(ctx: Context, query: SearchQuery,
                     note: Callable[[str], None] | None) -> bool:
    """Count the search if it is an identity look-up reaching beyond the caller's
    patients (429 past ``FHIR_LOOKUPS_PER_MINUTE``); True if it is."""
    caller = ctx.access.caller if ctx.access else None
    if is_identifier_lookup(query) and uses_lookup_exception(caller):
        count_lookups(ctx, "Patient search by identifier", note)
        return True
    if caller is not None and caller.kind in ("user", "system") \
            and not sees_whole(caller, None, None):
        # A caller who reads identity numbers masked could otherwise confirm the
        # hidden characters by searching, many guesses in one comma list: each
        # number asked about is one look-up (FHIR_LOOKUPS_PER_MINUTE).
        probes = identity_probes(query.clauses)
        if probes:
            count_lookups(ctx, "search by identity number", note, cost=probes)
    return False


def _shown(ctx: Context, stored: Stored, resource: dict[str, Any] | None,
           lookup: bool) -> dict[str, Any] | None:
    """A look-up's result outside the caller's reach shows no health card number
    unless the caller holds the ``card-number`` scope (as ``$ihe-pix``)."""
    if not lookup or resource is None or ctx.access is None:
        return resource
    reach = ctx.access.reachable()
    return resource if reach is None or stored.id in reach else shown(ctx, resource)


def search(
    ctx: Context,
    rtype: str,
    params: Sequence[tuple[str, str]],
    *,
    strict: bool = False,
    path: str | None = None,
    extra_filter: dict[str, Any] | None = None,
    note: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """``note`` receives what the audit record should say of an identity look-up."""
    path = path or rtype
    paging = [(k, v) for k, v in params if k in PAGING]
    query = parse(ctx, rtype, params, strict=strict)
    lookup = _identity_lookup(ctx, query, note)
    flt = matching_named(ctx, query, extra_filter)
    if flt or not listing(query):
        bounded(ctx, rtype, flt)
    if ctx.access is not None:
        touch_searched(ctx, query, flt)
    applied = list(query.applied)
    self_link = link("self", page_url(ctx, path, [*applied, *paging]))
    if query.summary == "count" or query.count == 0:
        counted = ctx.repo.count(rtype, flt)
        if counted and ctx.access is not None:
            # A count says something about each record it counted: their patients
            # see it in their access log.
            for patient in ctx.repo.compartments(rtype, flt, AUDITED_PATIENTS):
                ctx.access.touch(patient)
        return bundle("searchset", [], total=counted, links=[self_link])

    sort = compile_sort(query)
    if unsorted(query):
        newest = newest_first(rtype)
        if ctx.repo.population_walk(rtype, flt):
            sort = POPULATION_SORT
        elif newest is not None and ctx.repo.patient_walk(rtype, flt) \
                and not selective_key(rtype, flt):
            # A key that selects few records (a code) is read whole in one query
            # whatever the order; without one, a first page reads only its months.
            sort = newest
    found = keyset_page(ctx, rtype, flt, sort, query.count, dict(paging), chosen=unsorted(query))
    page, nxt, prev = found.rows, found.next, found.previous
    total = _total(ctx, query, rtype, flt, found, resumed="_cursor" in dict(paging))
    links = [self_link]
    if nxt:
        links.append(link("next", page_url(ctx, path, [*applied, nxt])))
    if prev:
        links.append(link("previous", page_url(ctx, path, [*applied, prev])))

    entries = [match_entry(ctx, s, _shown(ctx, s, shape(s.resource, query), lookup)) for s in page]
    extra, notes = included(ctx, page, query)
    entries += [match_entry(ctx, s, shape(s.resource, query), mode="include") for s in extra]
    warnings = [
        errors.Issue(f"Search parameter '{name}' was ignored: {reason}",
                     code="not-supported", severity="warning", expression=(name,))
        for name, reason in query.ignored
    ] + [errors.Issue(note, code="too-costly", severity="warning") for note in notes]
    if warnings:
        entries.append(outcome_entry(errors.operation_outcome(warnings)))
    return bundle("searchset", entries, total=total, links=links)


@dataclass(frozen=True)
class Page:
    """One page of matches, the cursors of its neighbours, and, for a population page
    read shard by shard, an estimate of every match (search/shards.py)."""

    rows: list[Stored]
    next: Cursor | None
    previous: Cursor | None
    estimate: int | None = None


def touch_searched(ctx: Context, query: SearchQuery, flt: dict[str, Any]) -> None:
    """A search of patients' records looked into them whatever it found: the audit
    record names the patient ``flt`` is pinned to and every patient the query's own
    parameters name (``patient=a,b``, an untyped ``subject=a``; not the patients a
    chain found), up to :data:`AUDITED_PATIENTS`, so their access logs show the
    attempt. Records found name their own patients too."""
    rtype = query.resource_type
    pinned = lifted(rtype, flt).get("pat")
    named = [pinned] if isinstance(pinned, str) else []
    for clause in query.clauses:
        if isinstance(clause, Clause):
            named += [p for p in named_patients(rtype, compile_clause(clause)) if p not in named]
    if ctx.access is not None:
        for patient in named[:AUDITED_PATIENTS]:
            ctx.access.touch(patient)


def listing(query: SearchQuery) -> bool:
    """Is this a page of records in the server's order, with no count of them
    (``_summary=count``, ``_count=0``, ``_total=accurate``)? Without a condition it
    is read shard by shard at the cost of the page (``Repository.population_walk``),
    while a count would read them all."""
    return unsorted(query) and query.summary != "count" and query.count != 0 \
        and query.total != "accurate"


def unsorted(query: SearchQuery) -> bool:
    """Does the search leave its order to the server? ``_sort=_id`` compiles to the
    same order as no ``_sort`` at all, but asks for it (search.html#sort): only a
    search without ``_sort`` may be paged in the population order."""
    return not query.sort


def _total(ctx: Context, query: SearchQuery, rtype: str, flt: dict[str, Any],
           found: Page, *, resumed: bool = False) -> int | None:
    """``Bundle.total`` (search.html#total): exact and free when the result is one
    page. Otherwise counting reads every match, and a page should cost what it shows:
    a population page gives the estimate its walk makes by default (and for
    ``_total=estimate``), other searches count only when ``_total`` asks.

    ``resumed``: the page went on from a cursor. An empty one (its rows deleted since
    the link was made, or a forged cursor) has no neighbours either, but says nothing
    of the matches before it: it is not a result of 0."""
    if query.total == "none":
        return None
    if found.next is None and found.previous is None and (found.rows or not resumed):
        return len(found.rows)
    if query.total == "accurate":
        return ctx.repo.count(rtype, flt)
    if found.estimate is not None:
        return found.estimate
    if query.total == "estimate":
        # With no condition every record matches: the type's size is the estimate
        # (a count would read them all).
        return ctx.repo.count(rtype, flt) if flt else ctx.repo.estimated_count(rtype)
    return None


def keyset_page(ctx: Context, rtype: str, flt: dict[str, Any], sort: list[tuple[str, int]],
                count: int, paging: dict[str, str], *, chosen: bool = False) -> Page:
    """One page in ``sort`` order, after (``a``) or before (``b``) a cursor's row.

    ``chosen``: the search gave no ``_sort`` and ``sort`` is the server's choice, so a
    cursor of the order an older version chose goes on in that order."""
    cursor = decode_cursor(paging["_cursor"]) if "_cursor" in paging else {}
    if "a" in cursor and "b" in cursor:
        # Links name one row to go on after or before; a cursor naming both is forged.
        raise errors.Invalid("Invalid paging cursor", expression="_cursor")

    def with_(extra: dict[str, Any]) -> dict[str, Any]:
        return {"$and": [flt, extra]} if flt else extra

    held = cursor.get("a", cursor.get("b"))
    if chosen and sort in (POPULATION_SORT, newest_first(rtype)) \
            and isinstance(held, list) and len(held) == 1:
        # A cursor of an unsorted page read in the order an older version gave (before
        # every record had its shards, or before a patient's records came newest
        # first): the same order on. Not for ``_sort=-date``, which asks for its order:
        # no link of it holds one value. That order is read whole: a search with no
        # condition (only read shard by shard) is bounded as any other then, or a
        # cursor made up to look old would read every record of the type.
        sort = DEFAULT_SORT
        if not flt:
            bounded(ctx, rtype, flt)

    if "b" in cursor:
        backwards, before = reverse(sort), decode_key(cursor["b"])
        read = ctx.repo.find_keyed(rtype, with_(after(backwards, before)), backwards, count + 1,
                                   start=before)
        has_prev, has_next = len(read) > count, True
        rows, reached_end = list(reversed(read[:count])), not has_prev
    else:
        start = decode_key(cursor["a"]) if "a" in cursor else None
        q = with_(after(sort, start)) if start is not None else flt
        read = ctx.repo.find_keyed(rtype, q, sort, count + 1, start=start)
        has_next, has_prev = len(read) > count, "a" in cursor
        rows, reached_end = read[:count], not has_next
    guess = None
    if sort == POPULATION_SORT:
        # ``read`` is in walk order, the row past the page included.
        guess = estimate(resume_position(held) if isinstance(held, list) else None,
                         "b" not in cursor, [key[0] for _, key in read], reached_end)
    nxt = ("_cursor", encode_cursor({"a": encode_key(rows[-1][1])})) if has_next and rows else None
    prev = ("_cursor", encode_cursor({"b": encode_key(rows[0][1])})) if has_prev and rows else None
    return Page([s for s, _ in rows], nxt, prev, guess)
