"""What FHIR XML's reader and writer share (R4 xml.html): the namespaces, the element
order of the models, and the hardened parser settings."""

from __future__ import annotations

import functools
import re

from ..errors import Invalid, Issue

FHIR_NS = "http://hl7.org/fhir"
XHTML_NS = "http://www.w3.org/1999/xhtml"
_F = f"{{{FHIR_NS}}}"
_PRIMITIVE = frozenset({"boolean", "integer", "decimal", "string"})
_NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_INTEGER = re.compile(r"-?(0|[1-9][0-9]*)")
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")  # what a FHIR element name can be
#: Characters XML 1.0 cannot carry at all, not even as references (XML 1.0 section 2.2).
_NOT_XML = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_PARSER_OPTIONS = {
    "resolve_entities": False, "no_network": True, "load_dtd": False, "dtd_validation": False,
    "huge_tree": False, "remove_comments": True, "remove_pis": True, "collect_ids": False,
}
_XHTML_PARSER_OPTIONS = {**_PARSER_OPTIONS, "remove_comments": False}
_XHTML_DIV = f"{{{XHTML_NS}}}div"


def _refuse(where: str, text: str, code: str = "invalid") -> Invalid:
    return Invalid(issues=(Issue(f"{where}: {text}", code=code, expression=(where,)),))


@functools.cache
def _order(cls: type) -> tuple[str, ...]:
    """The model's JSON property names in the documented element order (xml.html)."""
    return tuple(cls.elements_sequence())  # type: ignore[attr-defined]


@functools.cache
def _element_model() -> type:
    """Element: what a primitive's ``_name`` holds (its id and extensions)."""
    from fhir.resources.R4B.element import Element

    return Element


# -- JSON -> XML ----------------------------------------------------------------------
# Written as text: building an lxml tree costs about a hundred times as much for a
# search Bundle, and every value here is escaped the same way lxml would.
