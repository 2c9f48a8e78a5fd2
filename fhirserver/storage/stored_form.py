"""The form a resource takes in the ``res`` field of a stored document.

BSON has no exact decimal that every MongoDB wire-protocol server stores (FerretDB
1.x has no Decimal128) and no integer beyond 64 bits, but a FHIR decimal is exact,
its precision significant (R4 datatypes.html#decimal: ``1.50`` stays ``1.50``), and a
JSON integer can be any size. So a resource holding such a number
(:class:`~fhirserver.model.json_text.Number`) is stored as its JSON text, a string,
which keeps each number as written.

Every other resource is stored as JSON text too, written by orjson after one space
(which JSON allows, and which tells the two forms apart): FerretDB decodes every
field of every document a query selects, at about half a millisecond per Synthea
Observation held as a document, and a string is one field. Documents written as BSON
documents by earlier versions read unchanged, and ``serve`` turns them into text once
(:func:`needs_text`). Nothing queries ``res`` by path: search reads the extracted
``sp``, ``k`` and ``so``.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..model import json_text

#: What starts the text of a resource whose numbers are all plain doubles and ints.
PLAIN = " "


def stored_form(resource: dict[str, Any] | None) -> str | None:
    """What ``res`` holds for ``resource``."""
    if resource is None:
        return None
    try:
        return PLAIN + orjson.dumps(resource).decode()
    except TypeError:  # a number only json_text writes exactly
        return json_text.dumps(resource).decode()


def resource_of(raw: Any) -> dict[str, Any] | None:
    """The resource a stored ``res`` holds."""
    if isinstance(raw, str):
        if raw.startswith(PLAIN):
            plain: dict[str, Any] = orjson.loads(raw)
            return plain
        value: dict[str, Any] = json_text.loads(raw, trusted=True)
        return value
    return raw  # type: ignore[no-any-return]


def needs_text(raw: Any) -> bool:
    """Is this ``res`` a BSON document, as earlier versions stored most resources?"""
    return isinstance(raw, dict)
