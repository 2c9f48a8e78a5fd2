"""Reading request bodies (R4 http.html#mime-type): media type, size and JSON syntax."""

from __future__ import annotations

import re
from typing import Any

from flask import request

from .. import errors
from ..model import json_text

RESOURCE_TYPES = ("application/fhir+json", "application/json", "application/json+fhir", "text/json")
PATCH_TYPES = ("application/json-patch+json",)


def json_body(accepted: tuple[str, ...] = RESOURCE_TYPES) -> Any:
    """The parsed JSON body: 415 for another media type, 400 for broken JSON.

    Numbers are kept exactly as sent (model/json_text.py, datatypes.html#decimal).

    The size limit is werkzeug's MAX_CONTENT_LENGTH: reading past it raises the 413.
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
    if not raw.strip():
        raise errors.Invalid("The request body is empty")
    try:
        parsed = json_text.loads(raw)
    except ValueError as exc:
        raise errors.Invalid(f"The request body is not valid JSON: {exc}") from exc
    if _NUL.search(raw):
        raise errors.Invalid("The request body holds a NUL character (\\u0000) in a string; "
                             "FHIR strings cannot hold it (datatypes.html#string)")
    return parsed


#: A JSON escape of NUL (after an even number of backslashes, so not the text
#: "\\u0000" itself); raw NUL bytes are not valid JSON and fail the parse.
_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
