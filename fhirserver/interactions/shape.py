"""``_summary`` and ``_elements`` (R4 search.html#summary, search.html#elements).

A subsetted resource is marked with the SUBSETTED tag from v3-ObservationValue, as
the spec requires, so a client never mistakes it for the whole record.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class

SUBSETTED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "SUBSETTED",
    "display": "Resource encoded in summary mode",
}
_ALWAYS = ("resourceType", "id", "meta")


@cache
def summary_elements(rtype: str) -> frozenset[str]:
    """Top-level elements flagged isSummary in the resource's StructureDefinition."""
    model = get_fhir_model_class(rtype)
    names: set[str] = set(_ALWAYS)
    for field in model.model_fields.values():
        extra = field.json_schema_extra
        if isinstance(extra, dict) and extra.get("summary_element_property") and field.alias:
            names.add(field.alias)
            names.add("_" + field.alias)
    return frozenset(names)


@cache
def mandatory_elements(rtype: str) -> frozenset[str]:
    model = get_fhir_model_class(rtype)
    names = set(_ALWAYS)
    for field in model.model_fields.values():
        extra = field.json_schema_extra
        if isinstance(extra, dict) and extra.get("element_required") and field.alias:
            names.add(field.alias)
    return frozenset(names)


def _subsetted(resource: dict[str, Any], keep: frozenset[str] | set[str]) -> dict[str, Any]:
    out = {k: v for k, v in resource.items() if k in keep}
    meta = dict(out.get("meta") or {})
    meta["tag"] = [*meta.get("tag", []), SUBSETTED]
    out["meta"] = meta
    return out


def shape(resource: dict[str, Any] | None, query: Any) -> dict[str, Any] | None:
    """The resource as ``_summary``/``_elements`` ask for it; unchanged otherwise."""
    if resource is None:
        return None
    rtype = resource.get("resourceType", "")
    summary = getattr(query, "summary", None)
    elements = getattr(query, "elements", None)
    if summary == "true":
        return _subsetted(resource, summary_elements(rtype))
    if summary == "text":
        return _subsetted(resource, {"text", *mandatory_elements(rtype)})
    if summary == "data":
        return _subsetted(resource, set(resource) - {"text"})
    if elements:
        keep = {*mandatory_elements(rtype)}
        for name in elements:
            keep.add(name)
            keep.add("_" + name)
        return _subsetted(resource, keep)
    return resource
