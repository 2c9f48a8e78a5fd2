"""Reading request bodies (R4 http.html#mime-type): media type, size and syntax.

A resource may come as FHIR JSON or FHIR XML (xml.html); XML is turned into the JSON
form at once (``model/xml_text.py``), so everything after sees one form and applies
the same checks (validation, depth, NUL) to both.
"""

from __future__ import annotations

from typing import Any

from flask import request
from werkzeug.exceptions import RequestEntityTooLarge

from .. import errors
from ..model import json_text, xml_text
from ..model.nesting import check_depth, nul_path
from .state import state

RESOURCE_TYPES = ("application/fhir+json", "application/fhir+xml", "application/json",
                  "application/json+fhir", "text/json", "application/xml", "text/xml",
                  "application/xml+fhir")
PATCH_TYPES = ("application/json-patch+json",)


def _refuse_longer_stream(limit: int) -> None:
    """413 for a streamed (chunked) body longer than the limit. werkzeug stops such a
    body at the limit without an error; reading on raises its 413. A body of exactly
    the limit cannot be told apart from a longer one, and is refused too."""
    try:
        request.stream.read(1)
    except RequestEntityTooLarge:
        pass
    raise errors.TooLarge(f"The request body is larger than {limit:,} bytes "
                          "(FHIR_MAX_BODY_BYTES)")


def json_body(accepted: tuple[str, ...] = RESOURCE_TYPES) -> Any:
    """The body in the JSON form: 415 for another media type, 400 for broken JSON or XML.

    Numbers are kept exactly as sent (model/json_text.py, datatypes.html#decimal).

    The size limit is werkzeug's MAX_CONTENT_LENGTH: reading past it raises the 413.
    Nesting deeper than FHIR_MAX_JSON_DEPTH is a 400 before anything walks the body.
    """
    mimetype = (request.mimetype or "").lower()
    if mimetype not in accepted:
        if accepted == PATCH_TYPES:
            raise errors.UnsupportedMedia(
                f"PATCH takes JSON Patch (application/json-patch+json), not "
                f"'{request.content_type or '(none)'}'; FHIRPath Patch and XML Patch are not "
                "supported (http.html#patch)")
        raise errors.UnsupportedMedia(
            f"Unsupported Content-Type '{request.content_type or '(none)'}'; "
            f"send {' or '.join(accepted[:2])}"
        )
    raw = request.get_data(cache=False)
    limit = request.max_content_length
    if request.content_length is None and limit is not None and len(raw) >= limit:
        _refuse_longer_stream(limit)
    if not raw.strip():
        raise errors.Invalid("The request body is empty")
    if "xml" in mimetype:
        body = xml_text.loads(raw)
    else:
        try:
            body = json_text.loads(raw)
        except ValueError as exc:
            raise errors.Invalid(f"The request body is not valid JSON: {exc}") from exc
    check_depth(body, state().settings.max_json_depth)
    root = body.get("resourceType") if isinstance(body, dict) else None
    where = nul_path(body, root if isinstance(root, str) and root.isalpha() else "$")
    if where is not None:
        raise errors.Invalid(f"{where}: a JSON string holds U+0000 (NUL), which FHIR strings may not "
                             "contain (json.html)", expression=where[:200])
    return body
