"""Finding, parsing and rewriting references (FHIR R4 references.html).

A ``Reference.reference`` is a literal reference: relative (``Patient/123``,
``Patient/123/_history/2``), absolute (``https://server/fhir/Patient/123``), a
contained resource (``#p1``), a UUID or OID in a Bundle (``urn:uuid:...``), or, in a
transaction, a conditional reference (``Patient?identifier=...``, http.html#trules).

The walk is generic rather than driven by the resource definitions: a Reference is
any JSON object with a string ``reference`` property, wherever it sits (resource
elements, backbone elements, extensions' ``valueReference``, ``Reference.identifier
.assigner``, contained resources). Paths use the JSON property names, e.g.
``DiagnosticReport.result[2].reference`` or
``Patient.extension[0].valueReference.reference``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .types import ALL_R4_TYPES, is_valid_id

__all__ = [
    "LocalRef",
    "is_conditional_reference",
    "iter_references",
    "malformed_local",
    "parse_reference",
    "rewrite_references",
]

#: references.html#literal: ``[type]/[id]`` optionally followed by ``/_history/[vid]``.
_RELATIVE = re.compile(
    r"(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})"
    r"(?:/_history/(?P<version>[A-Za-z0-9\-.]{1,64}))?"
)
#: http.html#trules: a conditional reference is ``[type]?[search parameters]``.
_CONDITIONAL = re.compile(r"[A-Z][A-Za-z]+\?.*", re.DOTALL)


@dataclass(frozen=True)
class LocalRef:
    """A reference to a resource on this server: type, id and, for a versioned
    reference (``Type/id/_history/vid``), the version id."""

    type: str
    id: str
    version: str | None = None

    def __str__(self) -> str:
        base = f"{self.type}/{self.id}"
        return base if self.version is None else f"{base}/_history/{self.version}"


def is_conditional_reference(ref: str) -> bool:
    """True for ``Type?query``, which only a transaction may resolve (http.html#trules)."""
    match = _CONDITIONAL.fullmatch(ref)
    return match is not None and ref.partition("?")[0] in ALL_R4_TYPES


def _local_path(ref: str, base_url: str) -> str | None:
    """``ref`` relative to this server (``Type/...``), or None when it is no local
    reference: contained (``#x``), ``urn:uuid:``/``urn:oid:``, another server's URL."""
    if not isinstance(ref, str) or not ref or ref.startswith(("#", "urn:")):
        return None
    if "://" not in ref:
        return ref
    base = base_url.rstrip("/")
    if not base or not ref.startswith(base + "/"):
        return None
    return ref[len(base) + 1 :]


def parse_reference(ref: str, base_url: str = "") -> LocalRef | None:
    """The local resource ``ref`` names, or None when it names none.

    Relative references and absolute URLs under ``base_url`` are local
    (references.html#literal: a relative reference is relative to the service base).
    Contained (``#x``), ``urn:uuid:``/``urn:oid:``, other servers' URLs, conditional
    references and anything not of the form ``Type/id[/_history/vid]`` with an R4
    resource type give None.
    """
    path = _local_path(ref, base_url)
    match = _RELATIVE.fullmatch(path) if path is not None else None
    if match is None or match["type"] not in ALL_R4_TYPES or not is_valid_id(match["id"]):
        return None
    return LocalRef(match["type"], match["id"], match["version"])


def malformed_local(ref: str, base_url: str = "") -> str | None:
    """The resource type a reference means to name on this server when it is no
    literal reference (references.html#literal): ``Patient/a b``, ``Patient/``,
    ``Patient/x/y``, ``//Patient/x`` under the base, an id over 64 characters; None for a well-formed one and for
    what is not local (contained, ``urn:``, another server, a conditional
    reference)."""
    path = _local_path(ref, base_url)
    if path is None:
        return None
    rtype, slash, _ = path.lstrip("/").partition("/")
    if not slash or rtype not in ALL_R4_TYPES or parse_reference(ref, base_url) is not None:
        return None
    return rtype


def _is_reference(value: object) -> bool:
    return isinstance(value, dict) and isinstance(value.get("reference"), str)


def iter_references(resource: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """Yield ``(FHIRPath of the Reference.reference element, reference)`` for every
    Reference in ``resource``, contained resources included, in document order."""
    root = resource.get("resourceType")
    yield from _walk(resource, root if isinstance(root, str) else "Resource")


def _walk(node: dict[str, Any], path: str) -> Iterator[tuple[str, str]]:
    if _is_reference(node):
        yield f"{path}.reference", node["reference"]
    for key, value in node.items():
        if isinstance(value, dict):
            yield from _walk(value, f"{path}.{key}")
        elif isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, dict):
                    yield from _walk(item, f"{path}.{key}[{index}]")


def rewrite_references(
    resource: dict[str, Any], mapping: Callable[[str], str | None]
) -> dict[str, Any]:
    """A copy of ``resource`` where each ``Reference.reference`` for which ``mapping``
    returns a string is replaced by it; None keeps the reference as it is.

    Used to resolve ``urn:uuid:`` and conditional references in transactions and
    imports (bundle.html#references, http.html#trules). Only Reference.reference is
    rewritten; ``Attachment.url`` and other URIs are left alone. ``mapping`` may
    raise to reject a reference; the input is never modified.
    """
    return _rewrite(resource, mapping)


def _rewrite(node: dict[str, Any], mapping: Callable[[str], str | None]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in node.items():
        if isinstance(value, dict):
            out[key] = _rewrite(value, mapping)
        elif isinstance(value, list):
            out[key] = [_rewrite(v, mapping) if isinstance(v, dict) else v for v in value]
        else:
            out[key] = value
    if _is_reference(node):
        new = mapping(node["reference"])
        if new is not None:
            out["reference"] = new
    return out
