"""Content negotiation and rendering (R4 http.html#mime-type, http.html#general).

``_format`` wins over ``Accept``; JSON is the only format served, so a request that
can only take XML (or anything else) gets 406 with an OperationOutcome in JSON.
``_pretty=true`` indents.

Every answer body leaves through :func:`render`, so this is where identity numbers
are masked for callers whose access does not need them whole
(``interactions/disclosure.py``): no interaction, present or future, answers around it.
"""

from __future__ import annotations

from datetime import UTC
from email.utils import format_datetime
from typing import Any

import orjson
from flask import Request, Response, g, request

from .. import errors
from ..model import json_text
from ..storage.records import Stored

FHIR_JSON = "application/fhir+json"
JSON = "application/json"
_FORMAT_ALIASES = {
    "json": FHIR_JSON,
    FHIR_JSON: FHIR_JSON,
    "application/fhir json": FHIR_JSON,  # an unescaped "+" in a query string
    JSON: JSON,
    "text/json": JSON,
}
_XML = {"xml", "text/xml", "application/xml", "application/fhir+xml"}


def response_mimetype(req: Request) -> str:
    """The JSON flavour to answer in, or NotAcceptable."""
    fmt = req.args.get("_format")
    if fmt:
        base = fmt.split(";")[0].strip().lower()
        if base in _FORMAT_ALIASES:
            return _FORMAT_ALIASES[base]
        if base in _XML:
            raise errors.NotAcceptable("XML is not supported by this server; use _format=json")
        raise errors.NotAcceptable(f"Unsupported _format '{fmt}'; use json")
    accept = req.accept_mimetypes
    if not accept or not req.headers.get("Accept"):
        return FHIR_JSON
    best = accept.best_match([FHIR_JSON, JSON, "application/json+fhir"])
    if best:
        return JSON if best == JSON else FHIR_JSON
    if any(m in _XML for m, _ in accept):
        raise errors.NotAcceptable("XML is not supported by this server; ask for application/fhir+json")
    raise errors.NotAcceptable(
        f"Cannot answer in any of the accepted types ({req.headers.get('Accept')}); "
        "this server speaks application/fhir+json"
    )


def _pretty() -> bool:
    return request.args.get("_pretty", "").lower() == "true"


def _for_caller(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` as the authenticated caller may see it (minimum disclosure)."""
    if g.get("caller") is None:
        return body
    from ..interactions.disclosure import disclosed
    from .state import context

    return disclosed(context(), body)


def render(status: int, body: dict[str, Any] | None, headers: dict[str, str] | None = None,
           mimetype: str | None = None) -> Response:
    try:
        mimetype = mimetype or response_mimetype(request)
    except errors.NotAcceptable:
        mimetype = FHIR_JSON  # the 406 itself, and errors, are still JSON
    option = orjson.OPT_INDENT_2 if _pretty() else 0
    if isinstance(body, dict):
        body = _for_caller(body)
    data = b"" if body is None else json_text.dumps(body, option=option)
    resp = Response(data, status=status, mimetype=mimetype if body is not None else None)
    if body is not None:
        resp.headers["Content-Type"] = f"{mimetype}; charset=utf-8"
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


def version_headers(stored: Stored) -> dict[str, str]:
    return {
        "ETag": stored.etag,
        "Last-Modified": format_datetime(stored.last_updated.astimezone(UTC), usegmt=True),
    }
