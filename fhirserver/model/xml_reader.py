"""FHIR XML read into the JSON form the server keeps (R4 xml.html), with a hardened
parser: no DTD, no entities, no network; every refusal names the element."""

from __future__ import annotations

from typing import Any

from fhir.resources.R4B.resource import Resource
from lxml import etree

from ..errors import Invalid
from . import json_text
from .validation import _Field, _fields, _resource_model
from .xml_shapes import (
    _INTEGER,
    _NUMBER,
    _PARSER_OPTIONS,
    _PRIMITIVE,
    _XHTML_DIV,
    FHIR_NS,
    _element_model,
    _refuse,
)

# -- XML -> JSON ----------------------------------------------------------------------


def loads(raw: bytes) -> dict[str, Any]:
    """The JSON form of a FHIR XML resource; :class:`Invalid` (400) naming what is wrong.

    The body is read as UTF-8 whatever its XML declaration says (http.html#mime-type:
    UTF-8 is the only encoding), so the test for a DTD below sees every one.
    """
    if b"<!DOCTYPE" in raw or b"<!ENTITY" in raw:
        raise Invalid("The XML has a DTD (<!DOCTYPE>): FHIR XML has none, and no entities "
                      "other than XML's own are read (xml.html)")
    try:
        root = etree.fromstring(raw, etree.XMLParser(encoding="utf-8", **_PARSER_OPTIONS))
    except (etree.XMLSyntaxError, ValueError) as exc:
        raise Invalid(f"The request body is not well-formed XML: {exc}") from exc
    if root is None:
        raise Invalid("The request body is not well-formed XML")
    if root.getroottree().docinfo.internalDTD is not None:
        raise Invalid("The XML has a DTD (<!DOCTYPE>): FHIR XML has none (xml.html)")
    name = _name(root, "the root element")
    return _read_resource(root, name, name)


def _name(el: Any, where: str) -> str:
    """The local name of a FHIR element; any other node is refused."""
    if not isinstance(el.tag, str):  # an entity reference
        raise _refuse(where, "entity references are not allowed in FHIR XML (xml.html)")
    qname = etree.QName(el)
    if qname.namespace != FHIR_NS:
        found = f"namespace '{qname.namespace}'" if qname.namespace else "no namespace"
        raise _refuse(where, f"<{qname.localname}> is in {found}; FHIR elements are in "
                      f"'{FHIR_NS}' (xml.html)", "structure")
    return str(qname.localname)


def _read_resource(el: Any, rtype: str, where: str) -> dict[str, Any]:
    cls = _resource_model({"resourceType": rtype})
    if cls is None:
        raise _refuse(where, f"<{rtype}> is not a FHIR resource type this server reads in XML",
                      "structure")
    _check_attributes(el, where, allowed=())
    return {"resourceType": rtype, **_read_members(el, cls, where)}


def _check_attributes(el: Any, where: str, allowed: tuple[str, ...]) -> None:
    for attr in el.attrib:
        if not attr.startswith("{") and attr not in allowed:
            # Attributes in other namespaces (xsi:schemaLocation) are not FHIR content.
            raise _refuse(where, f"unknown attribute '{attr}'", "structure")


def _no_text(el: Any, where: str) -> None:
    if (el.text or "").strip() or any((c.tail or "").strip() for c in el):
        raise _refuse(where, "FHIR elements hold no text; a primitive's value is its 'value' "
                      "attribute (xml.html)", "structure")


def _read_members(el: Any, cls: type, path: str) -> dict[str, Any]:
    _no_text(el, path)
    fields = _fields(cls)
    values: dict[str, list[Any]] = {}
    exts: dict[str, list[Any]] = {}
    for child in el:
        if child.tag == _XHTML_DIV and cls.__name__ == "Narrative" and "div" not in values:
            values["div"], exts["div"] = [_div_text(child)], [None]
            continue
        name = _name(child, path)
        spec = fields.get(name)
        if spec is None or spec.kind == "extension" or name == "div":
            raise _refuse(f"{path}.{name}", f"unknown element '{name}'", "structure")
        index = len(values.get(name, []))
        where = f"{path}.{spec.segment}[{index}]" if spec.many else f"{path}.{spec.segment}"
        if not spec.many and name in values:
            raise _refuse(where, "the element appears more than once but does not repeat",
                          "structure")
        value, ext = _read_value(child, spec, where)
        values.setdefault(name, []).append(value)
        exts.setdefault(name, []).append(ext)
    out: dict[str, Any] = {}
    if "id" in el.attrib and not issubclass(cls, Resource):
        out["id"] = el.attrib["id"]
    if "url" in el.attrib and cls.__name__ == "Extension":
        out["url"] = el.attrib["url"]
    for name, items in values.items():
        many = fields[name].many if name in fields else False
        found = exts[name]
        if any(v is not None for v in items):
            out[name] = items if many else items[0]
        if any(x is not None for x in found):
            out["_" + name] = found if many else found[0]
    return out


def _div_text(el: Any) -> str:
    """The narrative's XHTML as the JSON string (json.html#xhtml): the div element with
    its namespace declared on it."""
    return str(etree.tostring(el, encoding=str, with_tail=False))


def _read_value(el: Any, spec: _Field, where: str) -> tuple[Any, Any]:
    """(JSON value, JSON ``_name`` value or None) of one element."""
    if spec.kind == "resource":
        _check_attributes(el, where, allowed=())
        _no_text(el, where)
        inner = list(el)
        if len(inner) != 1:
            raise _refuse(where, "must hold exactly one resource", "structure")
        return _read_resource(inner[0], _name(inner[0], where), where), None
    if spec.kind in _PRIMITIVE:
        _check_attributes(el, where, allowed=("value", "id"))
        ext = _read_members(el, _element_model(), where)  # id and extensions
        raw = el.attrib.get("value")
        if raw is None and not ext:
            raise _refuse(where, "an element must have a value or children (ele-1)", "required")
        return (None if raw is None else _primitive(raw, spec.kind, where)), (ext or None)
    assert spec.model is not None
    allowed = ("id", "url") if spec.model.__name__ == "Extension" else ("id",)
    _check_attributes(el, where, allowed=allowed)
    return _read_members(el, spec.model, where), None


def _primitive(raw: str, kind: str, where: str) -> Any:
    if kind == "string":
        return raw
    if kind == "boolean":
        if raw not in ("true", "false"):
            raise _refuse(where, f"'{raw[:40]}' is not a boolean (true or false)", "value")
        return raw == "true"
    if not (_INTEGER if kind == "integer" else _NUMBER).fullmatch(raw):
        raise _refuse(where, f"'{raw[:40]}' is not a valid {kind}", "value")
    return json_text.number(raw)
