"""Search parameter definitions (R4 searchparameter-registry.html, search.html#table).

A :class:`SearchParameter` says where a parameter's values live in a resource, as a
small path language read by :mod:`.paths` (``name.given:string``,
``telecom[system=email]:ContactPoint``, ``subject[is=Patient]:Reference``): each path
ends in the FHIR datatype found there, so extraction never has to guess a shape.
The per-resource tables are in :mod:`.definitions`; :mod:`.catalog` joins them
with the common ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as attribute

TYPES = ("token", "string", "date", "reference", "quantity", "uri", "number", "composite",
         "special")


@dataclass(frozen=True)
class Component:
    """One component of a composite parameter (search.html#composite), relative to its base."""

    type: str
    paths: tuple[str, ...]


@dataclass(frozen=True)
class SearchParameter:
    """One search parameter of one resource type.

    ``targets`` lists the resource types a reference may point to (empty means any);
    ``system`` is the implicit code system of a bound ``code`` element, so that
    ``gender=http://hl7.org/fhir/administrative-gender|male`` matches too;
    ``absent`` is the token indexed when the element is absent (Patient ``deceased``
    is a FHIRPath boolean that is false when nothing is recorded);
    composites list their ``bases`` ("" is the resource itself) and ``components``;
    ``union`` names the parameters whose values together are exactly this one's
    (Observation ``combo-code`` is ``code`` and ``component-code``): its values are
    stored only as keys, and a condition on its other stored values tests each of
    those parameters' instead (search/compile.py).
    """

    name: str
    type: str
    paths: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()
    system: str | None = None
    absent: str | None = None
    bases: tuple[str, ...] = ()
    components: tuple[Component, ...] = ()
    union: tuple[str, ...] = ()
    #: The parameters ``union`` names, as :func:`.catalog.parameters_for` gives this one.
    parts: tuple[SearchParameter, ...] = attribute(default=(), compare=False, repr=False)

    @property
    def field(self) -> str:
        """The MongoDB field holding this parameter's values."""
        return "_id" if self.name == "_id" else f"sp.{self.name}"


COMMON: tuple[SearchParameter, ...] = (
    SearchParameter("_id", "token", ("id:id",)),
    SearchParameter("_lastUpdated", "date", ("meta.lastUpdated:instant",)),
    SearchParameter("_tag", "token", ("meta.tag:Coding",)),
    SearchParameter("_profile", "uri", ("meta.profile:canonical",)),
    SearchParameter("_security", "token", ("meta.security:Coding",)),
    SearchParameter("_source", "uri", ("meta.source:uri",)),
)

#: Result parameters (search.html#return) and the HTTP-level ones (http.html#parameters).
RESULT_PARAMS = frozenset({
    "_count", "_sort", "_total", "_summary", "_elements", "_include", "_revinclude",
    "_contained", "_containedType",
})
HTTP_PARAMS = frozenset({"_format", "_pretty"})
#: Defined by the spec for all resources but not implemented here.
UNSUPPORTED_PARAMS = frozenset({
    "_text", "_content", "_list", "_type", "_query", "_filter",
})
