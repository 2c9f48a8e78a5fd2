"""read and vread (R4 http.html#read, http.html#vread)."""

from __future__ import annotations

from .. import errors
from ..search.results import whole_number
from ..storage.records import Stored
from .context import Context


def read(ctx: Context, rtype: str, rid: str) -> Stored:
    stored = ctx.repo.get(rtype, rid)
    if stored is None:
        ctx.probe_absent(rtype, rid)  # as long as a refusal takes: no timing oracle
    elif not ctx.visible(stored):
        stored = None  # not the caller's to see (deleted ones included): as if it never existed
    if stored is None:
        raise errors.NotFound(f"Resource {rtype}/{rid} is not known")
    if stored.deleted:
        raise errors.Gone(
            f"Resource {rtype}/{rid} was deleted (version {stored.version})",
            headers={"ETag": stored.etag},
        )
    ctx.touch(stored.resource)
    return stored


def vread(ctx: Context, rtype: str, rid: str, version: str) -> Stored:
    number = whole_number(version)
    if number is None:
        raise errors.NotFound(f"Version '{version[:40]}' of {rtype}/{rid} is not known")
    stored = ctx.repo.get_version(rtype, rid, number)
    current = ctx.repo.get(rtype, rid)
    if current is None:
        ctx.probe_absent(rtype, rid)  # as long as a hidden one takes
    elif not ctx.visible(current) or (stored is not None and not ctx.visible_version(current, stored)):
        stored = None
    if stored is None:
        raise errors.NotFound(f"Version {version} of {rtype}/{rid} is not known")
    if stored.deleted:
        raise errors.Gone(f"Version {version} of {rtype}/{rid} is a deletion")
    ctx.touch(stored.resource)
    return stored
