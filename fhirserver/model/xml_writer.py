"""FHIR XML from the JSON form the server keeps (R4 xml.html): text written straight
from the model definitions, exact numbers kept."""

from __future__ import annotations

from collections.abc import Iterable
from itertools import zip_longest
from typing import Any

import orjson
from lxml import etree

from . import json_text
from .validation import _fields, _resource_model
from .xml_shapes import (
    _NAME,
    _NOT_XML,
    _XHTML_DIV,
    _XHTML_PARSER_OPTIONS,
    FHIR_NS,
    XHTML_NS,
    _element_model,
    _order,
)


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
