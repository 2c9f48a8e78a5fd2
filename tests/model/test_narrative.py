"""Narrative XHTML: txt-1 (only basic HTML 4.0 formatting, a, img and style attributes)
and txt-2 (some non-whitespace content), R4 narrative.html#Narrative and the Narrative
datatype's invariants. A narrative is rendered by clients, so markup that runs script
in a browser is refused, and every narrative of the shared data still passes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fhirserver.errors import Invalid
from fhirserver.model.narrative import narrative_problems
from fhirserver.model.validation import validate_resource
from tests.model.data import SPEC, load, synthea_files

X = '<div xmlns="http://www.w3.org/1999/xhtml">'


def problems(div: str) -> list[str]:
    return list(narrative_problems(div))


ATTACKS = [
    (X + "<script>alert(1)</script>hi</div>", "<script>"),
    (X + "<p>x</p><style>p{color:red}</style></div>", "<style>"),
    (X + '<iframe src="https://evil.example/"/>x</div>', "<iframe>"),
    (X + '<object data="x.swf">x</object></div>', "<object>"),
    (X + '<embed src="x.swf"/>x</div>', "<embed>"),
    (X + '<form action="https://evil.example/"><input name="pw"/></form>x</div>', "<form>"),
    (X + '<button>x</button></div>', "<button>"),
    (X + '<textarea>x</textarea></div>', "<textarea>"),
    (X + '<base href="https://evil.example/"/>x</div>', "<base>"),
    (X + '<link rel="stylesheet" href="https://evil.example/x.css"/>x</div>', "<link>"),
    (X + '<meta http-equiv="refresh" content="0;url=https://evil.example/"/>x</div>', "<meta>"),
    (X + '<frameset><frame src="x"/></frameset>x</div>', "<frameset>"),
    (X + '<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>x</div>', "<svg"),
    (X + '<math xmlns="http://www.w3.org/1998/Math/MathML"><mi>x</mi></math></div>', "<math"),
    (X + "<ins>x</ins></div>", "<ins>"),  # HTML 4.0 9.4, excluded by txt-1
    (X + '<p onclick="alert(1)">x</p></div>', "onclick on <p> is an event handler"),
    (X + '<img src="x.png" onerror="alert(1)"/></div>', "onerror on <img>"),
    (X + '<p ONMOUSEOVER="alert(1)">x</p></div>', "ONMOUSEOVER"),
    (X + '<a href="javascript:alert(1)">x</a></div>', "a/@href"),
    (X + '<a href=" JaVaScRiPt:alert(1)">x</a></div>', "a/@href"),
    (X + '<a href="jav&#x09;ascript:alert(1)">x</a></div>', "a/@href"),
    (X + '<a href="&#x0A;javascript:alert(1)">x</a></div>', "a/@href"),
    (X + '<a href="vbscript:msgbox(1)">x</a></div>', "a/@href"),
    (X + '<a href="data:text/html,&lt;script&gt;alert(1)&lt;/script&gt;">x</a></div>', "a/@href"),
    (X + '<img src="data:image/svg+xml,&lt;svg onload=alert(1)&gt;"/></div>', "img/@src"),
    (X + '<img src="javascript:alert(1)"/></div>', "img/@src"),
    (X + '<p style="width: expression(alert(1))">x</p></div>', "style on <p>"),
    (X + '<p style="background:url(javascript:alert(1))">x</p></div>', "style on <p>"),
    (X + '<a xmlns:x="http://www.w3.org/1999/xlink" x:href="javascript:alert(1)">x</a></div>',
     "attribute href (namespace http://www.w3.org/1999/xlink)"),
    (X + "<![CDATA[ ><script>alert(1)</script> ]]>x</div>", "CDATA"),
    (X + "<!--><script>alert(1)</script>-->x</div>", "comment"),
    (X + "<!---><script>alert(1)</script>-->x</div>", "comment"),
    ('<?xml version="1.0"?>' + X + "x</div>", "XML declaration"),
    ("<p>x</p>", "not p"),
    ("<div>x</div>", "div (no namespace)"),
    ("plain text", "not well-formed"),
    (X + "<p>x</div>", "not well-formed"),
    (X + " \n <p> </p><br/></div>", "txt-2"),
    (X + "</div>", "txt-2"),
]


@pytest.mark.parametrize(("div", "words"), ATTACKS)
def test_txt1_txt2_refuse_markup_that_runs_script_or_is_empty(div: str, words: str) -> None:
    """narrative.html#Narrative txt-1 and txt-2: each case gives a message naming it."""
    found = problems(div)
    assert found and any(words in p for p in found), found


RICH = [
    X + "<p>Peter <b>Chalmers</b>, <i>born</i> 1974</p></div>",
    X + '<table class="grid" border="1" cellpadding="2"><thead><tr><th colspan="2">'
        "Result</th></tr></thead><tbody><tr><td style=\"color: red\">6.3</td>"
        '<td align="right">mmol/L</td></tr></tbody></table></div>',
    X + '<a name="top"/><a href="#top">top</a> <a href="https://hl7.org/fhir">FHIR</a> '
        '<a href="mailto:a@example.org">mail</a> <a href="Patient/1">Patient</a></div>',
    X + '<img src="data:image/png;base64,iVBORw0KGgo=" alt=""/></div>',  # an image is content
    X + '<ul><li>one</li></ul><ol start="2"><li>two</li></ol><dl><dt>a</dt><dd>b</dd></dl>'
        '<pre>x</pre><blockquote cite="https://example.org/">q</blockquote>'
        '<span xml:lang="en" lang="en" dir="ltr" title="t" id="s1">x</span><!-- a note --></div>',
    X + '<h1>H</h1><hr/><sub>1</sub><sup>2</sup><code>c</code><u>u</u><br/>ok</div>',
    ('<div xmlns="http://www.w3.org/1999/xhtml" xml:lang="en"><h:p xmlns:h='
    '"http://www.w3.org/1999/xhtml">prefixed</h:p></div>'),
]


@pytest.mark.parametrize("div", RICH)
def test_rich_narratives_pass(div: str) -> None:
    """narrative.html: tables, lists, links, anchors, images, style attributes are basic
    formatting txt-1 allows."""
    assert problems(div) == []


def _narratives(value: Any) -> list[str]:
    if isinstance(value, dict):
        own = [value["div"]] if isinstance(value.get("div"), str) else []
        return own + [d for v in value.values() for d in _narratives(v)]
    if isinstance(value, list):
        return [d for v in value for d in _narratives(v)]
    return []


def _shared_files() -> list[Path]:
    return sorted(SPEC.glob("**/*.json")) + synthea_files()


def test_every_narrative_of_the_spec_examples_and_synthea_passes() -> None:
    """The R4 examples (all types in shared data, Bundles' entries and contained
    resources too) and the Synthea bundles keep to txt-1 and txt-2."""
    seen, refused = 0, {}
    for path in _shared_files():
        for div in _narratives(load(path)):
            seen += 1
            if found := problems(div):
                refused[f"{path.name}: {div[:80]}"] = found
    assert seen > 100 and not refused, refused


def test_validation_names_every_narrative_that_breaks_txt1() -> None:
    """validation.html: the resource's own and a contained resource's narrative are
    each reported as a 400 with its FHIRPath."""
    bad = {"status": "generated", "div": X + '<a href="javascript:alert(1)">x</a></div>'}
    body = {"resourceType": "Patient", "text": bad,
            "contained": [{"resourceType": "Patient", "id": "c", "text": bad}]}
    with pytest.raises(Invalid) as caught:
        validate_resource(body)
    assert caught.value.status == 400
    assert [e for i in caught.value.issues for e in i.expression] == [
        "Patient.text.div", "Patient.contained[0].text.div"]
    assert all("javascript:" in i.diagnostics for i in caught.value.issues)
