"""Reading request bodies (R4 http.html#mime-type): media type, size and JSON syntax."""

from __future__ import annotations

from typing import Any

from flask import request
from werkzeug.exceptions import RequestEntityTooLarge

from .. import errors
from ..model import json_text
from ..model.nesting import check_depth, nul_path
from .state import state

RESOURCE_TYPES = ("application/fhir+json", "application/json", "application/json+fhir", "text/json")
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
    """The parsed JSON body: 415 for another media type, 400 for broken JSON.

    Numbers are kept exactly as sent (model/json_text.py, datatypes.html#decimal).

    The size limit is werkzeug's MAX_CONTENT_LENGTH: reading past it raises the 413.
    Nesting deeper than FHIR_MAX_JSON_DEPTH is a 400 before anything walks the body.
    """
    mimetype = (request.mimetype or "").lower()
    if mimetype not in accepted:
        if "xml" in mimetype:
            raise errors.UnsupportedMedia("XML is not supported by this server; send application/fhir+json")
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
