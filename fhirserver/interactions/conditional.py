"""Finding the resources a conditional interaction is about (R4 http.html#ccreate).

Conditional create, update and delete and conditional references all name their
target with search criteria; the outcome depends on 0, 1 or many matches.

A conditional create (and a conditional update that creates) makes at most one
resource for its criteria, also when several clients send it at once: the writer
that found no match holds a claim on the criteria until its write is done, and
the others wait for it and match again (storage/search_claims.py).
"""

from __future__ import annotations

import time
from urllib.parse import parse_qsl

from .. import errors
from ..search.parse import parse_query
from ..storage.search_claims import ClaimBusy, criteria_key
from .context import Context, Planner
from .search import matching

#: How long a plan that already holds criteria waits for others (a transaction whose
#: entries wait for each other's criteria must not wait for a lease to end).
HOLDING_WAIT = 0.5


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
        blinder=ctx.repo.protection.blinder,
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


def claim_criteria(planner: Planner, rtype: str, query: str, what: str, rid: str) -> str | None:
    """After a match found nothing: hold the criteria for a create of ``rtype/rid``
    (None), or the one match a concurrent writer made meanwhile (http.html#ccreate).

    The claim is taken whoever the caller is (its key does not depend on what they
    may see), and held until the planner's writes are done; matching stays the
    caller's. A writer that holds the criteria is waited for until its lease runs
    out, when its claim is taken over.
    """
    claims = planner.repo.search_claims
    key = criteria_key(rtype, criteria(query), planner.repo.protection.blinder.keyed)
    if planner.holds(key):
        return None
    wait = HOLDING_WAIT if planner.held else claims.lease.total_seconds() + 1
    deadline = time.monotonic() + wait
    pause = 0.002
    while True:
        held = claims.take(key, rtype, rid)
        if held is not None:
            # The planner gives it back whatever happens next (a 412 from the match
            # below included), not only a lease later.
            planner.held.append(held)
        # Matched again once held: the previous holder may have written and let go
        # between the caller's first match and this claim.
        found = single_match(planner.ctx, rtype, query, what)
        if held is not None:
            if found is not None:
                planner.held.remove(held)
                claims.release(held)
            return found
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise ClaimBusy(f"criteria '{rtype}?{query.lstrip('?')}' are held by another writer")
        time.sleep(pause)
        pause = min(pause * 2, 0.05)
