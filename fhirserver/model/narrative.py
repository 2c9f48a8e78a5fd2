"""The narrative's XHTML rules (R4 narrative.html#Narrative, datatypes txt-1 and txt-2).

txt-1: "The narrative SHALL contain only the basic html formatting elements and
attributes described in chapters 7-11 (except section 4 of chapter 9) and 15 of the
HTML 4.0 standard, <a> elements (either name or href), images and internally contained
style attributes"; txt-2: "The narrative SHALL have some non-whitespace content".
narrative.html also says the div is an XHTML ``div`` element, well-formed.

Clients are expected to render the div (narrative.html#Narrative), often by handing
the stored text to a browser's HTML parser, so what passes here must not run script
there: the element and attribute lists are allow-lists (the ones the FHIR reference
validator uses, plus the rest of HTML 4.0 chapters 10 and 15), URLs keep to http,
https, mailto, relative references and ``data:image``, and the two places where an
XML comment or CDATA section reads differently as HTML (``<!-->``, ``<![CDATA[``)
are refused. Pure: no Flask, no database.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from lxml import etree

from .xml_shapes import _XHTML_PARSER_OPTIONS, XHTML_NS

__all__ = ["narrative_problems"]

_X = f"{{{XHTML_NS}}}"
_XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"

#: HTML 4.0 chapters 7 (body content: div, span, headings, address), 8 (bdo),
#: 9 except 9.4 (ins, del), 10 (lists), 11 (tables), 15 (font styles, hr), a, img, map.
ELEMENTS = frozenset({
    "div", "span", "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "address", "bdo",
    "em", "strong", "dfn", "code", "samp", "kbd", "var", "cite", "abbr", "acronym",
    "blockquote", "q", "sub", "sup", "pre",
    "ul", "ol", "li", "dl", "dt", "dd", "dir", "menu",
    "table", "caption", "thead", "tfoot", "tbody", "colgroup", "col", "tr", "th", "td",
    "tt", "i", "b", "big", "small", "strike", "s", "u", "font", "center",
    "a", "img", "map", "area",
})

#: Attributes any of those elements may carry (HTML 4.0 %coreattrs, %i18n, the
#: table cell and alignment attributes of chapters 11 and 15).
_COMMON = frozenset({
    "id", "class", "style", "title", "lang", _XML_LANG, "dir", "accesskey", "tabindex",
    "align", "valign", "char", "charoff", "width", "height", "span", "abbr", "axis",
    "headers", "scope", "rowspan", "colspan", "nowrap", "bgcolor", "border", "summary",
    "frame", "rules", "cellspacing", "cellpadding", "start", "type", "value", "compact",
    "clear", "noshade", "size", "color", "face", "datetime",
})

_BY_ELEMENT = {
    "a": frozenset({"href", "name", "rel", "rev", "hreflang", "charset", "shape", "coords"}),
    "area": frozenset({"href", "nohref", "alt", "shape", "coords"}),
    "img": frozenset({"src", "alt", "longdesc", "usemap", "ismap", "hspace", "vspace"}),
    "map": frozenset({"name"}),
    "blockquote": frozenset({"cite"}),
    "q": frozenset({"cite"}),
}

#: Attributes whose value is a URL a browser may load or follow.
_URLS = frozenset({"href", "src", "cite", "longdesc", "usemap"})
_SCHEMES = frozenset({"http", "https", "mailto"})
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")
#: What browsers drop from a URL before reading its scheme (URL standard: leading and
#: trailing C0 controls and spaces, and tabs and newlines anywhere).
_URL_NOISE = re.compile(r"[\x00-\x20\x7f-\x9f]+")
_DATA_IMAGE = re.compile(r"data:image/(png|gif|jpeg|jpg|webp|bmp)[;,]", re.IGNORECASE)
#: CSS that runs script or loads a behaviour in some browser (IE expression(),
#: behavior:, -moz-binding) or brings in other style (@import).
_BAD_CSS = re.compile(r"expression\s*\(|behavior\s*:|-moz-binding|@import|javascript:|"
                      r"vbscript:", re.IGNORECASE)


def narrative_problems(div: str) -> Iterator[str]:
    """What breaks txt-1 or txt-2 in a narrative's ``div`` (the JSON string form,
    json.html#xhtml), one message each; nothing when the div is acceptable."""
    if "<![CDATA[" in div:
        # An HTML parser reads "<![CDATA[" as a comment ending at the next ">", so
        # markup inside the section, text to XML, would be elements to a browser.
        yield "a CDATA section is not allowed: HTML reads it differently from XHTML"
        return
    stripped = div.lstrip()
    if stripped.startswith(("<?", "<!")):
        yield "must be a single XHTML div element, without an XML declaration or DTD"
        return
    try:
        root = etree.fromstring(div.encode(), etree.XMLParser(**_XHTML_PARSER_OPTIONS))
    except (etree.XMLSyntaxError, ValueError) as exc:
        yield f"is not well-formed XHTML: {exc}"
        return
    if root.tag != f"{_X}div":
        yield f"must be a <div> element in the XHTML namespace ({XHTML_NS}), not {_name(root)}"
        return
    yield from _elements(root)
    if not any(t.strip() for t in root.itertext()) and root.find(f".//{_X}img") is None:
        yield "txt-2: the narrative SHALL have some non-whitespace content"


def _elements(root: Any) -> Iterator[str]:
    for el in root.iter():
        if isinstance(el, etree._Comment):
            text = el.text or ""
            if text.startswith((">", "->")):
                # "<!-->" and "<!--->" close the comment at once in HTML
                yield "a comment starting with '>' or '->' is not allowed: HTML ends it there"
            continue
        if not isinstance(el.tag, str):
            continue  # a processing instruction the parser kept: inert in HTML
        local = etree.QName(el).localname
        if not el.tag.startswith(_X) or local not in ELEMENTS:
            yield f"txt-1: element <{_name(el)}> is not allowed in a narrative"
            continue
        allowed = _BY_ELEMENT.get(local, frozenset())
        for attr, value in el.attrib.items():
            name = attr if attr == _XML_LANG else etree.QName(attr).localname
            if attr not in _COMMON and attr not in allowed:
                what = "an event handler" if name.lower().startswith("on") else "not allowed"
                yield f"txt-1: attribute {_attr(attr)} on <{local}> is {what}"
            elif attr in _URLS and not _safe_url(value):
                yield f"txt-1: {local}/@{attr} {_short(value)} is not an http, https, " \
                      "mailto, relative or data:image URL"
            elif attr == "style" and _BAD_CSS.search(_URL_NOISE.sub("", value)):
                yield f"txt-1: style on <{local}> {_short(value)} runs script or loads " \
                      "external style"


def _safe_url(value: str) -> bool:
    url = _URL_NOISE.sub("", value)
    scheme = _SCHEME.match(url)
    if scheme is None:
        return True  # relative or a fragment (#id)
    name = scheme.group(1).lower()
    return name in _SCHEMES or (name == "data" and _DATA_IMAGE.match(url) is not None)


def _name(el: Any) -> str:
    qname = etree.QName(el)
    if qname.namespace == XHTML_NS:
        return str(qname.localname)
    where = "no namespace" if qname.namespace is None else f"namespace {qname.namespace}"
    return f"{qname.localname} ({where})"


def _attr(attr: str) -> str:
    qname = etree.QName(attr)
    return qname.localname if qname.namespace is None else \
        f"{qname.localname} (namespace {qname.namespace})"


def _short(value: str, limit: int = 60) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "...")
