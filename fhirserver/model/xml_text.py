"""FHIR XML to and from the JSON form the server keeps (R4 xml.html, json.html).

The server stores and works on the JSON form; XML is a representation at the edge,
converted after everything else is done (masking included) and before anything else
starts. The conversion follows the element definitions of the ``fhir.resources``
models (the same shapes validation walks): element order, which elements repeat,
which are primitives and of what type. It does not go through model instances, since
their XML output changes what a client sent (decimals through ``float``, so ``0.50``
becomes ``0.5``; dates and base64 re-formatted; element ``id`` written as a child
element instead of an attribute) and building them is slow for large Bundles.

The mapping (xml.html): the root element is the resource type, in the namespace
``http://hl7.org/fhir``; primitives are ``<name value="..."/>`` whose ``id`` and
extensions (JSON ``_name``) are the element's ``id`` attribute and ``extension``
children; ``id`` of datatypes and backbone elements and ``url`` of Extension are
attributes; a resource inside another (``contained``, ``Bundle.entry.resource``,
``Parameters.parameter.resource``) is wrapped in an element named for its type;
``Narrative.div`` is the XHTML element itself. Numbers keep their text exactly as
``json_text`` does (datatypes.html#decimal).

Parsing is hardened: no DTD (so no entities, internal or external, and no
network), no processing instructions; libxml2's own limits on depth and node size
stay on. Every refusal is :class:`~fhirserver.errors.Invalid` naming the element.
"""

from __future__ import annotations

from .xml_reader import loads
from .xml_shapes import FHIR_NS, XHTML_NS
from .xml_writer import dumps

__all__ = ["FHIR_NS", "XHTML_NS", "dumps", "loads"]
