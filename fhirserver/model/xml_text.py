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

import functools
import re
from collections.abc import Iterable
from itertools import zip_longest
from typing import Any

import orjson
from fhir.resources.R4B.resource import Resource
from lxml import etree

from ..errors import Invalid, Issue
from . import json_text
from .validation import _Field, _fields, _resource_model

__all__ = ["FHIR_NS", "XHTML_NS", "dumps", "loads"]

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


def dumps(resource: dict[str, Any], *, pretty: bool = False) -> bytes:
    """The XML text of ``resource`` (a resource in the server's JSON form); ``pretty``
    indents the FHIR elements (not the narrative, whose whitespace is content)."""
    out: list[str] = []
    _resource(out, resource, 0 if pretty else None, root=True)
    return _DECLARATION + "".join(out).encode()


_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'
_ESCAPE = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;",
                         "\n": "&#10;", "\r": "&#13;", "\t": "&#9;"})


def _pad(indent: int | None) -> str:
    return "" if indent is None else "\n" + "  " * indent


def _deeper(indent: int | None) -> int | None:
    return None if indent is None else indent + 1


def _close(out: list[str], start: str, inner: list[str], name: str, indent: int | None) -> None:
    if inner:
        out.append(start + ">")
        out.extend(inner)
        out.append(f"{_pad(indent)}</{name}>")
    else:
        out.append(start + "/>")


def _resource(out: list[str], resource: dict[str, Any], indent: int | None, *,
              root: bool = False) -> None:
    rtype = str(resource.get("resourceType") or "Resource")
    start = f"{'' if root else _pad(indent)}<{rtype}" + (f' xmlns="{FHIR_NS}"' if root else "")
    inner: list[str] = []
    _members(inner, resource, _resource_model(resource), _deeper(indent), resource=True)
    _close(out, start, inner, rtype, indent)


def _keys(obj: dict[str, Any], cls: type | None) -> list[str]:
    """The element names of ``obj``: the model's order first, then any it does not know
    (an R4 element R4B dropped), in the order of the JSON."""
    present = {k.removeprefix("_") for k in obj if k != "resourceType"}
    known = [k for k in _order(cls) if k in present] if cls is not None else []
    if len(known) == len(present):
        return known
    return known + [k for k in dict.fromkeys(k.removeprefix("_") for k in obj)
                    if k in present and k not in known and _NAME.fullmatch(k)]


def _members(out: list[str], obj: dict[str, Any], cls: type | None, indent: int | None, *,
             resource: bool) -> str:
    """Append the child elements of ``obj`` to ``out``; return its attributes (the ``id``
    of an element, the ``url`` of an Extension) as text for the start tag."""
    fields = _fields(cls) if cls is not None else {}
    attrs = ""
    name = cls.__name__ if cls is not None else ""
    for key in _keys(obj, cls):
        value, ext = obj.get(key), obj.get("_" + key)
        if key == "id" and not resource and isinstance(value, str):
            attrs += f' id="{_text(value)}"'
            continue
        if key == "url" and name == "Extension" and isinstance(value, str):
            attrs += f' url="{_text(value)}"'
            continue
        if key == "div" and name == "Narrative" and isinstance(value, str):
            out.append(_pad(indent) + _xhtml(value))
            continue
        spec = fields.get(key)
        pairs: Iterable[tuple[Any, Any]]
        if isinstance(value, list) or isinstance(ext, list):
            pairs = zip_longest(value if isinstance(value, list) else [],
                                ext if isinstance(ext, list) else [])
        else:
            pairs = [(value, ext)]
        for item, item_ext in pairs:
            if item is None and item_ext is None:
                continue
            start = f"{_pad(indent)}<{key}"
            inner: list[str] = []
            if isinstance(item, dict):
                if spec is None and "resourceType" in item or spec is not None and spec.kind == "resource":
                    _resource(inner, item, _deeper(indent))
                else:
                    start += _members(inner, item, spec.model if spec is not None else None,
                                      _deeper(indent), resource=False)
            else:
                if isinstance(item_ext, dict):
                    start += _members(inner, item_ext, _element_model(), _deeper(indent),
                                      resource=False)
                if item is not None:
                    start += f' value="{_text(item)}"'
            _close(out, start, inner, key, indent)
    return attrs


def _text(value: Any) -> str:
    """A value as attribute text, escaped. A character XML 1.0 cannot carry
    (validation refuses control characters, but an error message may quote a URL) is
    written as U+FFFD rather than failing the whole answer."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, json_text.Number):
        return value.text
    if isinstance(value, float):
        return orjson.dumps(value).decode()
    text = value if isinstance(value, str) else str(value)
    return _NOT_XML.sub("\ufffd", text).translate(_ESCAPE)


def _xhtml(div: str) -> str:
    """The narrative's XHTML element as text: the div as the JSON holds it when it is
    well-formed XML on its own (checked as safely as a request body), else its text."""
    try:
        el = etree.fromstring(div.encode(), etree.XMLParser(**_XHTML_PARSER_OPTIONS))
    except (etree.XMLSyntaxError, ValueError):
        el = None
    if el is not None and el.tag == _XHTML_DIV and el.getroottree().docinfo.internalDTD is None \
            and not div.lstrip().startswith("<?"):
        return div
    # Not well-formed XHTML (validation refuses it on the way in): written as text.
    text = _NOT_XML.sub("\ufffd", div).translate(_ESCAPE)
    return f'<div xmlns="{XHTML_NS}">{text}</div>'


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
