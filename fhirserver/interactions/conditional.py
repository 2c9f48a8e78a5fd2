"""Finding the resources a conditional interaction is about (R4 http.html#ccreate).

Conditional create, update and delete and conditional references all name their
target with search criteria; the outcome depends on 0, 1 or many matches.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from .. import errors
from ..search.parse import parse_query
from .context import Context
from .search import matching


def criteria(query: str) -> list[tuple[str, str]]:
    items = parse_qsl(query.lstrip("?"), keep_blank_values=True)
    if not items:
        raise errors.Invalid("A conditional interaction needs search criteria")
    return items


def matching_ids(ctx: Context, rtype: str, query: str, limit: int = 2) -> list[str]:
    """Ids of up to ``limit`` current resources matching ``query``.

    Unknown parameters are an error here, not ignored: ignoring one would widen the
    match and update or delete the wrong resource.
    """
    parsed = parse_query(
        rtype,
        criteria(query),
        tz=ctx.tz,
        base_url=ctx.base_url,
        strict=True,
        default_count=limit,
        max_count=max(limit, ctx.settings.max_count),
    )
    # The caller's view, like any search: a conditional interaction must neither
    # reveal nor touch what the caller may not see.
    return ctx.repo.find_ids(rtype, matching(ctx, parsed, lookups=False), limit=limit)


def single_match(ctx: Context, rtype: str, query: str, what: str) -> str | None:
    """The one match, None for no match, 412 for several (http.html#cond-update)."""
    ids = matching_ids(ctx, rtype, query)
    if len(ids) > 1:
        raise errors.PreconditionFailed(
            f"{what}: criteria '{rtype}?{query.lstrip('?')}' match more than one resource"
        )
    return ids[0] if ids else None
