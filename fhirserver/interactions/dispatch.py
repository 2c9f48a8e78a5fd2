"""Routing one Bundle entry's request to its interaction (R4 http.html#transaction).

The REST API routes with Flask; Bundle entries carry their request as data
(``method`` and a relative ``url``), so they are routed here, onto the same
interaction functions.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from .. import errors
from ..model import json_text
from ..model.types import ALL_R4_TYPES, SUPPORTED_TYPES
from . import history as history_
from . import read as read_
from . import search as search_
from . import write
from .context import Planner, Result


@dataclass(frozen=True)
class Target:
    """What an entry's ``request.url`` addresses."""

    type: str
    id: str | None = None
    version: str | None = None
    query: str = ""
    history: bool = False
    search: bool = False  # Type/_search


def parse_url(url: str, base_url: str) -> Target:
    if base_url and url.startswith(base_url + "/"):
        url = url[len(base_url) + 1:]
    parts = urlsplit(url)
    if parts.scheme or parts.netloc:
        raise errors.Invalid(f"Request URL '{url}' is not on this server")
    segments = [s for s in parts.path.split("/") if s]
    if not segments:
        raise errors.Invalid("Request URL has no resource type")
    rtype = segments[0]
    if rtype not in SUPPORTED_TYPES:
        known = "a supported" if rtype not in ALL_R4_TYPES else "a stored"
        raise errors.NotFound(f"Resource type '{rtype}' is not {known} type on this server")
    rest = segments[1:]
    if not rest:
        return Target(rtype, query=parts.query)
    if rest == ["_history"]:
        return Target(rtype, query=parts.query, history=True)
    if rest == ["_search"]:
        return Target(rtype, query=parts.query, search=True)
    if len(rest) == 1:
        return Target(rtype, rest[0], query=parts.query)
    if len(rest) == 2 and rest[1] == "_history":
        return Target(rtype, rest[0], query=parts.query, history=True)
    if len(rest) == 3 and rest[1] == "_history":
        return Target(rtype, rest[0], rest[2], query=parts.query)
    raise errors.Invalid(f"Request URL '{url}' is not a supported interaction")


def patch_operations(resource: Any) -> Any:
    """A JSON Patch carried in a Bundle entry as a Binary (http.html#patch)."""
    if not isinstance(resource, dict) or resource.get("resourceType") != "Binary":
        raise errors.Invalid("A PATCH entry must carry its JSON Patch as a Binary resource")
    if resource.get("contentType") != "application/json-patch+json":
        raise errors.UnsupportedMedia("Only application/json-patch+json patches are supported")
    data = resource.get("data", "")
    if not isinstance(data, str):
        raise errors.Invalid("Binary.data must be a base64 string", expression="Binary.data")
    try:
        return json_text.loads(base64.b64decode(data, validate=True))
    except ValueError as exc:
        raise errors.Invalid(f"The Binary does not hold a JSON Patch: {exc}") from exc


def read_entry(planner: Planner, target: Target, request: dict[str, Any]) -> Result:
    ctx = planner.ctx
    params = parse_qsl(target.query, keep_blank_values=True)
    if target.history:
        return Result(200, body=history_.history(ctx, params, target.type, target.id))
    if target.id is None:
        return Result(200, body=search_.search(ctx, target.type, params))
    stored = (
        read_.vread(ctx, target.type, target.id, target.version)
        if target.version
        else read_.read(ctx, target.type, target.id)
    )
    if request.get("ifNoneMatch") in (stored.etag, f'"{stored.version}"', "*"):
        return Result(304, stored)
    return Result(200, stored)


def write_entry(planner: Planner, target: Target, method: str, request: dict[str, Any],
                resource: Any) -> Result:
    if_match = request.get("ifMatch")
    if method == "POST":
        if target.id is not None or target.history:
            raise errors.Invalid("POST entries must be addressed to the resource type")
        return write.create(planner, target.type, resource, if_none_exist=request.get("ifNoneExist"))
    if method == "PUT":
        if target.id is None:
            return write.conditional_update(planner, target.type, target.query, resource, if_match=if_match)
        return write.update(planner, target.type, target.id, resource, if_match=if_match)
    if method == "PATCH":
        if target.id is None:
            found = write.single_match(planner.ctx, target.type, target.query, "Conditional patch")
            if found is None:
                raise errors.NotFound("Conditional patch: no resource matches")
            return write.patch(planner, target.type, found, patch_operations(resource), if_match=if_match)
        return write.patch(planner, target.type, target.id, patch_operations(resource), if_match=if_match)
    if method == "DELETE":
        if target.id is None:
            return write.conditional_delete(planner, target.type, target.query)
        return write.delete(planner, target.type, target.id, if_match=if_match)
    raise errors.MethodNotAllowed(f"Method {method} is not supported in a Bundle entry")
