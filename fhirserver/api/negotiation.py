"""Content negotiation and rendering (R4 http.html#mime-type, http.html#general).

``_format`` wins over ``Accept``; FHIR JSON and FHIR XML are served (xml.html), the
media type answered being the one asked for (``application/fhir+xml`` for ``_format=
xml``). JSON wins a tie (``*/*``). A request that can take neither gets 406 with an
OperationOutcome in JSON. ``_pretty=true`` indents.

The XML is made from the JSON form last (``model/xml_text.py``), after masking, so
both formats disclose exactly the same. Paths that are not FHIR (OAuth, the OpenAPI
document) answer JSON whatever the request asks.

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
from ..model import json_text, xml_text
from ..storage.records import Stored

FHIR_JSON = "application/fhir+json"
JSON = "application/json"
FHIR_XML = "application/fhir+xml"
XML = "application/xml"
_FORMAT_ALIASES = {
    "json": FHIR_JSON,
    FHIR_JSON: FHIR_JSON,
    "application/fhir json": FHIR_JSON,  # an unescaped "+" in a query string
    "application/json+fhir": FHIR_JSON,
    JSON: JSON,
    "text/json": JSON,
    "xml": FHIR_XML,
    FHIR_XML: FHIR_XML,
    "application/fhir xml": FHIR_XML,
    "application/xml+fhir": FHIR_XML,
    XML: XML,
    "text/xml": "text/xml",
}
#: What Accept may name, best first on a tie, and the media type answered for each.
_ACCEPTED = {
    FHIR_JSON: FHIR_JSON, JSON: JSON, "application/json+fhir": FHIR_JSON,
    FHIR_XML: FHIR_XML, XML: XML, "text/xml": "text/xml", "application/xml+fhir": FHIR_XML,
}
#: Paths whose bodies are not FHIR resources: always JSON (their own formats).
#: paths that answer no FHIR resource: OAuth, the API description, NDJSON export files
#: and the web app
NOT_FHIR = ("/oauth/", "/.well-known/", "/openapi.json", "/docs", "/bulk-files/", "/app")


#: Where a request keeps the media type chosen for it: it is chosen before any work
#: (a 406 comes first) and asked for again when the answer is rendered.
_CHOSEN = "fhirserver.response_mimetype"


def response_mimetype(req: Request) -> str:
    """The media type to answer in, or NotAcceptable."""
    chosen = req.environ.get(_CHOSEN)
    if chosen is None:
        chosen = req.environ[_CHOSEN] = _negotiated(req)
    return str(chosen)


def _negotiated(req: Request) -> str:
    fmt = req.args.get("_format")
    if fmt:
        base = fmt.split(";")[0].strip().lower()
        if base in _FORMAT_ALIASES:
            return _FORMAT_ALIASES[base]
        raise errors.NotAcceptable(f"Unsupported _format '{fmt}'; use json or xml")
    asked = req.headers.get("Accept")
    if asked in _ACCEPTED:  # one media type, as most clients send: what it names
        return _ACCEPTED[asked]
    accept = req.accept_mimetypes
    if not accept or not asked:
        return FHIR_JSON
    best = accept.best_match(list(_ACCEPTED))
    if best:
        return _ACCEPTED[best]
    raise errors.NotAcceptable(
        f"Cannot answer in any of the accepted types ({req.headers.get('Accept')}); "
        "this server speaks application/fhir+json and application/fhir+xml"
    )


def is_xml(mimetype: str) -> bool:
    return mimetype.endswith("xml") or mimetype == "application/xml+fhir"


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
    if request.path.startswith(NOT_FHIR):
        mimetype = FHIR_JSON
    if isinstance(body, dict):
        body = _for_caller(body)
    if body is None:
        data = b""
    elif is_xml(mimetype):
        data = xml_text.dumps(body, pretty=_pretty())
    else:
        data = json_text.dumps(body, option=orjson.OPT_INDENT_2 if _pretty() else 0)
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
