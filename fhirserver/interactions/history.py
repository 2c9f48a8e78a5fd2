"""history at instance, type and system level (R4 http.html#history).

Newest version first; ``_since`` keeps versions made at or after an instant;
``_count`` pages; the ``next`` link carries a keyset cursor (lastUpdated, version
key), so pages stay correct while other clients keep writing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from .. import errors
from ..model.types import SUPPORTED_TYPES
from ..search.dates import leap_second_read, utc
from ..search.results import parse_whole
from ..storage.records import Stored
from .bundles import bundle, decode_cursor, encode_cursor, history_entry, link, page_url
from .context import Context

_KNOWN = {"_since", "_count", "_cursor", "_format", "_pretty", "_at", "_summary", "_elements"}


def _parse_since(value: str) -> datetime:
    try:
        # a "+" sent unencoded arrives as a space: read it as HAPI does
        parsed = datetime.fromisoformat(re.sub(r" ([0-9]{2}:[0-9]{2})$", r"+\1",
                                               leap_second_read(value).replace("Z", "+00:00")))
    except ValueError as exc:
        raise errors.Invalid(f"Invalid instant '{value}' for '_since'", expression="_since") from exc
    if parsed.tzinfo is None:
        raise errors.Invalid(
            f"'_since' must be an instant with a time zone, got '{value}'", expression="_since"
        )
    return utc(parsed)  # naive UTC as stored, clamped at the edges of time


def _naive(t: datetime) -> datetime:
    return utc(t) if t.tzinfo is not None else t


def _parse_count(value: str | None, ctx: Context) -> int:
    if value is None:
        return ctx.settings.default_count
    return max(0, min(parse_whole(value, "_count"), ctx.settings.max_count))


def _history_limit(ctx: Context, rtype: str) -> dict[str, Any] | None:
    """History entries of patients the caller may not see are left out."""
    if ctx.access is None:
        return None
    d = ctx.access.decision(rtype, "search")
    if d.constraints:
        raise errors.Forbidden(f"{rtype} history is not available to tokens whose scopes "
                               "only allow some records (granular scopes)")
    patients = d.patients
    hidden = ctx.access.family_hidden() if rtype != "Patient" else []
    if hidden and patients is not None:
        # Old versions carry no label marks either: a family member's results are
        # left out of a patient's history unless the member shares sensitive ones.
        patients = patients - set(hidden)
    if rtype != "Patient" and ctx.access.choices():
        # Old versions carry no consent marks: the history of a patient who
        # restricted sharing is left out for clinicians and clients.
        restricted = {p for p, c in ctx.access.choices().items() if c.restrict_sensitive or c.opt_out}
        if restricted:
            patients = (patients if patients is not None else frozenset()) - restricted \
                if patients is not None else None
            if patients is None:
                return {"pat": {"$nin": sorted(restricted)}}
    if patients is None:
        return None
    return {"rid" if rtype == "Patient" else "pat": {"$in": sorted(patients)}}


def _visible_versions(ctx: Context, current: Stored, rtype: str, since: datetime | None,
                      after: tuple[datetime, str] | None, wanted: int) -> list[Stored]:
    """Up to ``wanted`` versions of one record that the caller may see, newest first
    (``Context.visible_version``: another patient's version, or one sensitive then,
    is not). Read on past the hidden ones, so that neither the page's cursor (the
    last version shown) nor its ``next`` link tells of a hidden version."""
    out: list[Stored] = []
    while len(out) < wanted:
        batch = ctx.repo.history([rtype], current.id, since, after, limit=wanted)
        out += [s for s in batch if ctx.visible_version(current, s)]
        if len(batch) < wanted:
            break
        lu, key = ctx.repo.history_key(batch[-1])
        after = (_naive(lu), key)
    return out[:wanted]


def history(
    ctx: Context,
    params: Sequence[tuple[str, str]],
    rtype: str | None = None,
    rid: str | None = None,
) -> dict[str, Any]:
    args = dict(params)
    unknown = sorted(set(args) - _KNOWN)
    if unknown:
        raise errors.Invalid(f"Unknown history parameter(s): {', '.join(unknown)}")
    since = _parse_since(args["_since"]) if "_since" in args else None
    count = _parse_count(args.get("_count"), ctx)
    after = None
    if "_cursor" in args:
        raw = decode_cursor(args["_cursor"])
        try:
            after = (_naive(datetime.fromisoformat(raw["lu"])), str(raw["k"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise errors.Invalid("Invalid paging cursor in '_cursor'", expression="_cursor") from exc
    types = [rtype] if rtype else list(SUPPORTED_TYPES)
    current = None
    if rtype and rid:
        current = ctx.repo.get(rtype, rid)
        if current is None:
            ctx.probe_absent(rtype, rid)  # as long as a hidden one takes
        if current is None or not ctx.visible(current):
            raise errors.NotFound(f"Resource {rtype}/{rid} is not known")
    if current is not None and rtype is not None:
        versions = _visible_versions(ctx, current, rtype, since, after, count + 1)
    else:
        limits = {t: _history_limit(ctx, t) for t in types}
        versions = ctx.repo.history(types, rid, since, after, limit=count + 1,
                                    filters={t: f for t, f in limits.items() if f is not None})
    page, more = versions[:count], len(versions) > count
    path = "/".join(p for p in (rtype, rid, "_history") if p)
    base_params = [(k, v) for k, v in params if k in ("_since", "_count")]
    links = [link("self", page_url(ctx, path, list(params)))]
    if more and page:
        lu, key = ctx.repo.history_key(page[-1])
        cursor = encode_cursor({"lu": lu.isoformat(), "k": key})
        links.append(link("next", page_url(ctx, path, [*base_params, ("_cursor", cursor)])))
    return bundle("history", (history_entry(ctx, s) for s in page), links=links)
