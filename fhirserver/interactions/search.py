"""search (R4 http.html#search, search.html): a searchset Bundle, paged.

Without ``_sort`` results come in id order and pages are keyset cursors on the id
(``_cursor``), so a page never repeats or skips a resource while others write.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .. import errors
from ..search.compile import compile_filter, compile_sort
from ..search.parse import parse_query
from ..storage.records import Stored
from .bundles import bundle, decode_cursor, encode_cursor, link, match_entry, outcome_entry, page_url
from .context import Context
from .shape import shape

PAGING = ("_cursor", "_offset")


def search(
    ctx: Context,
    rtype: str,
    params: Sequence[tuple[str, str]],
    *,
    strict: bool = False,
    path: str | None = None,
    extra_filter: dict[str, Any] | None = None,
) -> dict[str, Any]:
    path = path or rtype
    paging = {k: v for k, v in params if k in PAGING}
    query = parse_query(
        rtype,
        [(k, v) for k, v in params if k not in PAGING],
        tz=ctx.tz,
        base_url=ctx.base_url,
        strict=strict,
        default_count=ctx.settings.default_count,
        max_count=ctx.settings.max_count,
    )
    flt = compile_filter(query)
    if extra_filter:
        flt = {"$and": [flt, extra_filter]} if flt else extra_filter
    count = query.count
    applied = list(query.applied)
    total = None if query.total == "none" else ctx.repo.count(rtype, flt)
    if query.summary == "count" or count == 0:
        return bundle("searchset", [], total=total if total is not None else ctx.repo.count(rtype, flt),
                      links=[link("self", page_url(ctx, path, applied))])

    sort = compile_sort(query)
    links = [link("self", page_url(ctx, path, [*applied, *paging.items()]))]
    if sort:
        page, nxt, prev = _offset_page(ctx, rtype, flt, sort, count, paging)
    else:
        page, nxt, prev = _keyset_page(ctx, rtype, flt, count, paging)
    if nxt:
        links.append(link("next", page_url(ctx, path, [*applied, nxt])))
    if prev:
        links.append(link("previous", page_url(ctx, path, [*applied, prev])))

    entries = [match_entry(ctx, s, shape(s.resource, query)) for s in page]
    if query.ignored:
        entries.append(outcome_entry(errors.operation_outcome(
            errors.Issue(
                f"Search parameter '{name}' was ignored: {reason}",
                code="not-supported", severity="warning", expression=(name,),
            )
            for name, reason in query.ignored
        )))
    return bundle("searchset", entries, total=total, links=links)


Page = tuple[list[Stored], tuple[str, str] | None, tuple[str, str] | None]


def _keyset_page(ctx: Context, rtype: str, flt: dict[str, Any], count: int,
                 paging: dict[str, str]) -> Page:
    cursor = decode_cursor(paging["_cursor"]) if "_cursor" in paging else {}
    after, before = cursor.get("a"), cursor.get("b")

    def with_(extra: dict[str, Any]) -> dict[str, Any]:
        return {"$and": [flt, extra]} if flt else extra

    if isinstance(before, str):
        rows = ctx.repo.find(rtype, with_({"_id": {"$lt": before}}), [("_id", -1)], limit=count + 1)
        more_before = len(rows) > count
        page = list(reversed(rows[:count]))
        has_prev, has_next = more_before, True
    else:
        q = with_({"_id": {"$gt": after}}) if isinstance(after, str) else flt
        rows = ctx.repo.find(rtype, q, [("_id", 1)], limit=count + 1)
        page = rows[:count]
        has_next, has_prev = len(rows) > count, isinstance(after, str)
    nxt = ("_cursor", encode_cursor({"a": page[-1].id})) if has_next and page else None
    prev = ("_cursor", encode_cursor({"b": page[0].id})) if has_prev and page else None
    return page, nxt, prev


def _offset_page(ctx: Context, rtype: str, flt: dict[str, Any], sort: list[tuple[str, int]],
                 count: int, paging: dict[str, str]) -> Page:
    raw = paging.get("_offset", "0")
    if not raw.isdigit():
        raise errors.Invalid(f"Invalid '_offset' value '{raw}'", expression="_offset")
    offset = int(raw)
    order = sort if any(key == "_id" for key, _ in sort) else [*sort, ("_id", 1)]
    rows = ctx.repo.find(rtype, flt, order, limit=count + 1, skip=offset)
    page = rows[:count]
    nxt = ("_offset", str(offset + count)) if len(rows) > count else None
    prev = ("_offset", str(max(0, offset - count))) if offset > 0 else None
    return page, nxt, prev
