"""Building response Bundles (R4 bundle.html): searchset, history, and their entries."""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlencode

import orjson

from .. import errors
from ..storage.indexing import instant, now
from ..storage.records import Stored
from .context import Context


def encode_cursor(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(data)).decode().rstrip("=")


def decode_cursor(token: str, param: str = "_cursor") -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = orjson.loads(raw)
    except (ValueError, orjson.JSONDecodeError) as exc:
        raise errors.Invalid(f"Invalid paging cursor in '{param}'", expression=param) from exc
    if not isinstance(data, dict):
        raise errors.Invalid(f"Invalid paging cursor in '{param}'", expression=param)
    return data


def link(relation: str, url: str) -> dict[str, str]:
    return {"relation": relation, "url": url}


def page_url(ctx: Context, path: str, params: Sequence[tuple[str, str]]) -> str:
    query = urlencode(list(params), safe="|,:$/")
    return ctx.url(path) + (f"?{query}" if query else "")


def bundle(kind: str, entries: Iterable[dict[str, Any]], *, total: int | None = None,
           links: Sequence[dict[str, str]] = ()) -> dict[str, Any]:
    out: dict[str, Any] = {
        "resourceType": "Bundle",
        "meta": {"lastUpdated": instant(now())},
        "type": kind,
    }
    if total is not None:
        out["total"] = total
    if links:
        out["link"] = list(links)
    out["entry"] = list(entries)
    if not out["entry"]:
        del out["entry"]
    return out


def match_entry(ctx: Context, stored: Stored, resource: dict[str, Any] | None = None,
                mode: str = "match") -> dict[str, Any]:
    ctx.touch(stored.resource)  # whatever of it is shown (_elements, _summary)
    return {
        "fullUrl": ctx.url(stored.reference),
        "resource": resource if resource is not None else stored.resource,
        "search": {"mode": mode},
    }


def outcome_entry(outcome: dict[str, Any]) -> dict[str, Any]:
    return {"resource": outcome, "search": {"mode": "outcome"}}


_HISTORY_STATUS = {"POST": "201 Created", "PUT": "200 OK", "PATCH": "200 OK", "DELETE": "204 No Content"}


def history_entry(ctx: Context, stored: Stored) -> dict[str, Any]:
    """One version in a history Bundle (http.html#history): request and response."""
    ctx.touch(stored.resource)
    method = stored.method or ("DELETE" if stored.deleted else "PUT")
    if method == "PATCH":
        method = "PUT"
    status = "201 Created" if stored.version == 1 and method in ("POST", "PUT") else _HISTORY_STATUS[method]
    entry: dict[str, Any] = {"fullUrl": ctx.url(stored.reference)}
    if stored.resource is not None:
        entry["resource"] = stored.resource
    entry["request"] = {
        "method": method,
        "url": stored.type if method == "POST" else stored.reference,
    }
    entry["response"] = {
        "status": status,
        "etag": stored.etag,
        "lastModified": instant(stored.last_updated),
    }
    return entry
