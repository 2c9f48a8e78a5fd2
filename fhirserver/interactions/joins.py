"""Executing chained parameters and ``_has`` (search.html#chaining, search.html#has).

MongoDB has no join that FerretDB also runs, so a join is resolved inside out: the
inner condition is run against the other collection first, and what it finds
becomes an ``$in`` on this one. The inner condition, limited to what the caller may
see, must be answered from an index on a large type (it runs alone, whatever narrows
the outer search: ``bounds.py``),
and the number of resources a join may carry is bounded; a search over more is
refused as too costly rather than answered wrongly.
"""

from __future__ import annotations

from typing import Any

from .. import errors
from ..search.compile import chain_condition, compile_condition, has_condition
from ..search.query import Chain, Has
from .bounds import bounded
from .context import Context

MAX_JOIN = 10_000


def resolver(ctx: Context) -> Any:
    """The resolver :func:`~fhirserver.search.compile.compile_filter` calls on joins."""

    def resolve(join: Chain | Has) -> dict[str, Any]:
        if isinstance(join, Chain):
            found: dict[str, list[str]] = {}
            for target, inner in join.inner:
                seen = _seen(ctx, target, compile_condition(inner, resolve))
                bounded(ctx, target, seen, join.param.name)
                ids = ctx.repo.find_ids(target, seen, limit=MAX_JOIN + 1)
                _bounded(len(ids), join.param.name)
                found[target] = ids
            _bounded(sum(len(v) for v in found.values()), join.param.name)
            return chain_condition(join, found)
        seen = _seen(ctx, join.source, compile_condition(join.inner, resolve))
        bounded(ctx, join.source, seen, f"_has:{join.source}:{join.param.name}")
        refs = ctx.repo.key_values(join.source, join.param.name, seen, limit=MAX_JOIN + 1)
        _bounded(len(refs), f"_has:{join.source}:{join.param.name}")
        return has_condition(join, refs)

    return resolve


def _seen(ctx: Context, rtype: str, flt: dict[str, Any]) -> dict[str, Any]:
    """A join only goes through resources the caller may see: a hidden patient's
    data must not decide which results come back."""
    limit = ctx.search_filter(rtype)
    if not limit:
        return flt
    return {"$and": [flt, limit]} if flt else limit


def _bounded(n: int, name: str) -> None:
    if n > MAX_JOIN:
        raise errors.TooCostly(
            f"The chained search through '{name}' matches more than {MAX_JOIN} resources; "
            "narrow it down", expression=name,
        )
