"""The form a resource takes in the ``res`` field of a stored document.

BSON has no exact decimal that every MongoDB wire-protocol server stores (FerretDB
1.x has no Decimal128) and no integer beyond 64 bits, but a FHIR decimal is exact,
its precision significant (R4 datatypes.html#decimal: ``1.50`` stays ``1.50``), and a
JSON integer can be any size. So a resource holding such a number
(:class:`~fhirserver.model.json_text.Number`) is stored as its JSON text, a string,
which keeps each number as written; every other resource, nearly all of them, is
stored as a BSON document as before, so documents written earlier read unchanged.
Nothing queries ``res`` by path: search reads the extracted ``sp`` and ``so``.
"""

from __future__ import annotations

from typing import Any

from ..model import json_text


def stored_form(resource: dict[str, Any] | None) -> dict[str, Any] | str | None:
    """What ``res`` holds for ``resource``."""
    if resource is not None and json_text.has_numbers(resource):
        return json_text.dumps(resource).decode()
    return resource


def resource_of(raw: Any) -> dict[str, Any] | None:
    """The resource a stored ``res`` holds."""
    if isinstance(raw, str):
        value: dict[str, Any] = json_text.loads(raw, trusted=True)
        return value
    return raw  # type: ignore[no-any-return]
