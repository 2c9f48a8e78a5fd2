"""Generated requests for fuzzing the HTTP API, and what every answer must satisfy.

The routes come from the application's own URL map and the search parameters from
the server's parameter tables, so an endpoint or parameter added later is fuzzed
without anyone remembering to list it. Bodies are valid resources with one part
replaced by something hostile (wrong types, huge numbers, deep nesting, odd
Unicode), since a body that is wrong everywhere is refused at the door and reaches
none of the code behind it.

Used by ``tests/api/test_fuzz.py`` (a bounded number of examples in the suite) and
``scripts/fuzz.py`` (as many as asked, against a running server).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from hypothesis import strategies as st

from fhirserver.errors import Invalid
from fhirserver.model import xml_text
from fhirserver.search.catalog import parameters_for
from fhirserver.search.parameters import RESULT_PARAMS

TYPES = ("Patient", "Observation", "DiagnosticReport")
#: Types the server does not serve, or serves only in part, and names that are no type.
ODD_TYPES = ("AuditEvent", "NamingSystem", "Practitioner", "Bundle", "patient", "Foo", "_search",
             "$everything", "metadata", "..", "%00", "Patient%2F1")
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
MODIFIERS = ("", ":missing", ":exact", ":contains", ":not", ":text", ":above", ":below", ":in",
             ":not-in", ":of-type", ":identifier", ":iterate", ":Patient", ":code-text", ":x")
PREFIXES = ("", "eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap", "zz")
CONTENT_TYPES = ("application/fhir+json", "application/json", "application/json-patch+json",
                 "application/fhir+xml", "text/plain", "multipart/form-data; boundary=x",
                 "application/x-www-form-urlencoded", "application/fhir+json; charset=latin-1", "")


@dataclass(frozen=True)
class Call:
    """One HTTP request: ``path`` includes its query string."""

    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None

    def __str__(self) -> str:
        body = "" if self.body is None else f" body={self.body[:300]!r}"
        path = self.path if len(self.path) < 400 else f"{self.path[:400]}...({len(self.path)} chars)"
        return f"{self.method} {path} headers={self.headers}{body}"


# -- the resources that bodies are made from ------------------------------------------

def seed_resources(patient_id: str, observation_id: str = "o1") -> list[dict[str, Any]]:
    """Small valid resources of each type, the Observation and report about
    ``patient_id``, the report's result ``observation_id``; bodies are these with one
    part broken."""
    subject = {"reference": f"Patient/{patient_id}"}
    return [
        {"resourceType": "Patient", "active": True, "gender": "female", "birthDate": "1980-02-29",
         "name": [{"family": "Zhang", "given": ["Wei"]}],
         "identifier": [{"system": "http://example.org/mrn", "value": "A-1"}],
         "telecom": [{"system": "phone", "value": "+86 10 1234 5678"}],
         "extension": [{"url": "http://example.org/x", "valueString": "y"}]},
        {"resourceType": "Observation", "status": "final", "subject": subject,
         "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                             "observation-category", "code": "laboratory"}]}],
         "code": {"coding": [{"system": "http://loinc.org", "code": "2339-0"}], "text": "Glucose"},
         "effectiveDateTime": "2024-05-27T07:44:08+08:00",
         "valueQuantity": {"value": 5.4, "unit": "mmol/L", "system": "http://unitsofmeasure.org",
                           "code": "mmol/L"},
         "component": [{"code": {"text": "c"}, "valueString": "v"}]},
        {"resourceType": "DiagnosticReport", "status": "final", "subject": subject,
         "code": {"coding": [{"system": "http://loinc.org", "code": "24323-8"}]},
         "effectivePeriod": {"start": "2024-05-27", "end": "2024-05-28"},
         "issued": "2024-05-28T10:00:00Z", "result": [{"reference": f"Observation/{observation_id}"}]},
    ]


# -- hostile values ------------------------------------------------------------------

#: Numbers at and beyond the edges of what databases and floats hold.
EDGE_NUMBERS = (0, -1, 2**31, 2**63 - 1, 2**63, -(2**63) - 1, 10**30, 1e308, -1e308, 5e-324,
                0.1, 1.50)
EDGE_STRINGS = ("", " ", "\u0000", "\ud7ff", "\ufeff", "a" * 5000, "<script>x</script>", "'\"",
                "${jndi:x}", "../../etc/passwd", "%", "\\", "|", "$", "\u202e", "۲", "²",
                "0001-01-01", "9999-12-31T23:59:59-14:00", "0001", "1e308", "NaN", "-0",
                "Patient/x/_history/zz", "urn:uuid:", "http://", "#", "?", "&", "=")

leaf = st.one_of(
    st.none(), st.booleans(), st.sampled_from(EDGE_NUMBERS), st.integers(),
    st.floats(allow_nan=False, allow_infinity=False), st.sampled_from(EDGE_STRINGS),
    st.text(max_size=30),
)
json_values = st.recursive(
    leaf, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                  st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=12,
)


def _paths(node: Any, here: tuple[Any, ...] = ()) -> Iterable[tuple[Any, ...]]:
    yield here
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*here, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*here, i))


def _set(doc: Any, path: Sequence[Any], value: Any) -> Any:
    if not path:
        return value
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = value
    return doc


def _delete(doc: Any, path: Sequence[Any]) -> Any:
    if not path:
        return doc
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    del parent[path[-1]]
    return doc


def _nested(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {"url": "http://example.org/deep", "valueString": "x"}
    for _ in range(depth):
        node = {"url": "http://example.org/deep", "extension": [node]}
    return node


@st.composite
def mutated(draw: st.DrawFn, resources: Sequence[dict[str, Any]]) -> Any:
    """A valid resource with one hostile change."""
    doc = copy.deepcopy(draw(st.sampled_from(resources)))
    paths = list(_paths(doc))
    where = draw(st.sampled_from(paths))
    how = draw(st.sampled_from(("replace", "replace", "replace", "delete", "add", "deep", "keep")))
    if how == "replace":
        return _set(doc, where, draw(json_values))
    if how == "delete":
        return _delete(doc, where)
    if how == "add":
        doc[draw(st.sampled_from(("id", "meta", "contained", "text", "resourceType", "_birthDate",
                                  "modifierExtension", draw(st.text(max_size=10)))))] = draw(json_values)
        return doc
    if how == "deep":
        doc["extension"] = [_nested(draw(st.sampled_from((10, 99, 150, 250))))]
        return doc
    return doc


# -- requests ------------------------------------------------------------------------

def route_table() -> list[tuple[str, frozenset[str]]]:
    """Every URL rule of the API and its methods, from the blueprints themselves."""
    from flask import Flask

    from fhirserver.api import (
        audit_log,
        authorize,
        cards,
        naming,
        oauth,
        operations,
        resources,
        system,
    )

    app = Flask("routes")
    for module in (system, oauth, authorize, naming, audit_log, resources, operations, cards):
        app.register_blueprint(module.blp)
    return sorted({(r.rule, frozenset((r.methods or set()) - {"HEAD", "OPTIONS"}))
                   for r in app.url_map.iter_rules() if not r.rule.startswith("/static")},
                  key=lambda r: (r[0], sorted(r[1])))


def search_parameters() -> list[tuple[str, str]]:
    """(type, name) of every search parameter of every type served."""
    return [(t, name) for t in TYPES for name in sorted(parameters_for(t))]


def _search_value(draw: st.DrawFn, ptype: str) -> str:
    prefix = draw(st.sampled_from(PREFIXES)) if ptype in ("date", "number", "quantity") else ""
    typed = {
        "date": st.sampled_from(("2024", "2024-05", "2024-05-27", "2024-05-27T07:44:08+00:00",
                                 "2024-05-27T07:44:08 00:00", "0001", "0001-01-01T00:00:00+14:00",
                                 "9999-12-31T23:59:59-14:00", "2024-13-45", "2024-02-30")),
        "number": st.sampled_from(("5.4", "1e308", "9223372036854775808", "-0", "1.50", "0x10")),
        "quantity": st.sampled_from(("5.4", "5.4|http://unitsofmeasure.org|mmol/L", "5.4||mmol/L",
                                     "1e999|x|y", "|||")),
        "token": st.sampled_from(("http://loinc.org|2339-0", "2339-0", "|female", "http://x|",
                                  "laboratory", "a|b|c", "%7C")),
        "reference": st.sampled_from(("Patient/p1", "p1", "Patient/p1/_history/zz",
                                      "http://other/Patient/1", "Observation/x", "urn:uuid:1")),
        "composite": st.sampled_from(("http://loinc.org|2339-0$5.4", "2339-0$gt5", "$", "a$b$c")),
    }.get(ptype, st.text(max_size=20))
    value = draw(st.one_of(typed, st.sampled_from(EDGE_STRINGS), st.text(max_size=20)))
    if draw(st.booleans()):
        value = ",".join([value, draw(typed)])
    return prefix + value


@st.composite
def query_items(draw: st.DrawFn, rtype: str) -> list[tuple[str, str]]:
    params = parameters_for(rtype)
    names = sorted(params) + sorted(RESULT_PARAMS) + ["_format", "_since", "_at", "start", "end",
                                                      "max", "_has:Observation:patient:code",
                                                      "subject:Patient.name", "patient.identifier",
                                                      "unknown", "_cursor"]
    items = []
    for _ in range(draw(st.integers(0, 4))):
        name = draw(st.sampled_from(names))
        param = params.get(name)
        if param is not None:
            name += draw(st.sampled_from(MODIFIERS))
            value = _search_value(draw, param.type)
        else:
            value = draw(st.one_of(
                st.sampled_from(("1", "0", "-1", "²", "20", "100000", "accurate", "estimate",
                                 "true", "count", "id,name", "Observation:patient", "*",
                                 "-date", "date,-_id", "eyJ0IjoxfQ", "json", "xml")),
                st.sampled_from(EDGE_STRINGS), st.text(max_size=20)))
        items.append((name, value))
    return items


def _encode(items: Sequence[tuple[str, str]]) -> str:
    return "&".join(f"{quote(k, safe=':.$_-')}={quote(v, safe=':|,$')}" for k, v in items)


def _headers(draw: st.DrawFn, method: str) -> dict[str, str]:
    headers: dict[str, str] = {}
    if method in ("POST", "PUT", "PATCH"):
        headers["Content-Type"] = draw(st.sampled_from(CONTENT_TYPES[:2])
                                       | st.sampled_from(CONTENT_TYPES))
    for name, values in (
        ("Accept", ("application/fhir+json", "application/fhir+xml", "text/html", "*/*", "x/y;q=x")),
        ("If-Match", ('W/"1"', '"1"', 'W/"zz"', "*", "")),
        ("If-None-Match", ('W/"1"', "*")),
        ("If-None-Exist", ("identifier=http://example.org/mrn|A-1", "name=x", "bogus=1", "", "&&")),
        ("If-Modified-Since", ("Mon, 01 Jan 0001 00:00:00 GMT", "yesterday")),
        ("Prefer", ("return=minimal", "return=OperationOutcome", "handling=strict",
                    "handling=lenient", "respond-async")),
    ):
        if draw(st.integers(0, 5)) == 0:
            headers[name] = draw(st.sampled_from(values) | st.text(
                alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=20)
                .map(str.strip))  # HTTP clients refuse leading or trailing blanks
    return headers


def _body(draw: st.DrawFn, method: str, path: str, resources: Sequence[dict[str, Any]]) -> bytes | None:
    if method not in ("POST", "PUT", "PATCH"):
        return None
    if method == "PATCH":
        ops = st.fixed_dictionaries({"op": st.sampled_from(("add", "replace", "remove", "move",
                                                            "copy", "test", "x")),
                                     "path": st.sampled_from(("/name/0/family", "/id", "/",
                                                              "/resourceType", "/meta", "/x~1y",
                                                              "/name/-", "/name/99")),
                                     "value": json_values})
        value: Any = draw(st.one_of(st.lists(ops, max_size=3), json_values))
    elif "$" in path:
        parameter = st.fixed_dictionaries(
            {"name": st.sampled_from(("patient", "member", "payload", "reason", "code", "resource",
                                      "onlyCertainMatches", "count", "source-patient",
                                      "target-patient", "result-patient", "sourceIdentifier",
                                      "share", "x")) | st.text(max_size=8)},
            optional={"valueString": json_values, "valueReference": json_values,
                      "valueBoolean": json_values, "valueInteger": json_values,
                      "valueIdentifier": json_values, "resource": mutated(resources),
                      "part": json_values})
        value = draw(st.one_of(
            st.fixed_dictionaries({"resourceType": st.just("Parameters"),
                                   "parameter": st.lists(parameter, max_size=4)}),
            json_values, mutated(resources)))
    elif path.split("?")[0] == "/":
        entry = st.fixed_dictionaries(
            {"request": st.fixed_dictionaries(
                {"method": st.sampled_from(METHODS) | json_values,
                 "url": st.sampled_from(("Patient", "Observation", "Patient/p1",
                                         "Patient?identifier=http://example.org/mrn|A-1",
                                         "Observation/o1", "x")) | json_values},
                optional={"ifMatch": st.sampled_from(('W/"1"',)) | json_values,
                          "ifNoneExist": json_values, "ifNoneMatch": json_values})},
            optional={"fullUrl": st.sampled_from(("urn:uuid:1", "urn:uuid:2", "Patient/p1"))
                      | json_values,
                      "resource": mutated(resources)})
        value = draw(st.one_of(
            st.fixed_dictionaries({"resourceType": st.just("Bundle"),
                                   "type": st.sampled_from(("transaction", "batch", "collection"))
                                   | json_values,
                                   "entry": st.lists(entry, max_size=4)}),
            json_values))
    else:
        value = draw(mutated(resources))
    if draw(st.integers(0, 20)) == 0:
        return draw(st.binary(max_size=40) | st.sampled_from((
            b"[" * 100_000, b'{"a":' * 50_000, b'{"resourceType": "Patient", "id": "\xff"}',
            b'{"resourceType":"Patient","active":true,"active":false}', b"\xef\xbb\xbf{}"))) or b"{"
    return json.dumps(value).encode()


@st.composite
def search_calls(draw: st.DrawFn, rtype: str, name: str) -> Call:
    """A search on ``rtype`` by parameter ``name`` (with any modifier, prefix and
    value), sometimes with other parameters, by GET or by POST _search."""
    param = parameters_for(rtype)[name]
    items = [(name + draw(st.sampled_from(MODIFIERS)), _search_value(draw, param.type))]
    items += draw(query_items(rtype))
    if draw(st.integers(0, 3)) == 0:
        return Call("POST", f"/{rtype}/_search",
                    {"Content-Type": "application/x-www-form-urlencoded"},
                    _encode(items).encode())
    return Call("GET", f"/{rtype}?{_encode(items)}")


@st.composite
def calls(draw: st.DrawFn, routes: Sequence[tuple[str, frozenset[str]]], ids: dict[str, list[str]],
          resources: Sequence[dict[str, Any]]) -> Call:
    """Any request to any of ``routes`` (URL rules and their methods), about the
    resources of ``ids`` or about others."""
    rule, methods = draw(st.sampled_from(routes))
    rtype = draw(st.sampled_from(TYPES) | st.sampled_from(ODD_TYPES))
    known = ids.get(rtype) or ["none"]
    rid = draw(st.sampled_from(known) | st.sampled_from(("x", "%20", "a" * 70, "..", "%C0%AF", "1.2"))
               | st.text(alphabet="abcXYZ019-._~%", min_size=1, max_size=10))
    path = (rule.replace("<rtype>", rtype).replace("<rid>", rid)
            .replace("<ctype>", draw(st.sampled_from(TYPES)))
            .replace("<vid>", draw(st.sampled_from(("1", "2", "0", "zz", "²", "99999999999999999999")))))
    method = draw(st.sampled_from(sorted(methods)) | st.sampled_from(METHODS))
    items = draw(query_items(rtype if rtype in TYPES else "Patient"))
    if items:
        path += "?" + _encode(items)
    headers = _headers(draw, method)
    return Call(method, path, headers, _body(draw, method, path, resources))


# -- what every answer must satisfy --------------------------------------------------

#: Endpoints a browser shows to a person (SMART authorization): their errors are pages.
PAGES = frozenset({"/oauth/authorize", "/oauth/login", "/oauth/approve"})


def problems(call: Call, status: int, content_type: str, body: bytes) -> list[str]:
    """What is wrong with an answer, whatever the request was (http.html#return:
    errors come as an OperationOutcome); empty when nothing is."""
    found = []
    if status >= 500:
        found.append(f"{status} server error")
    if status < 400 or call.method == "HEAD":
        return found
    route = call.path.split("?")[0]
    if route in PAGES and content_type.startswith("text/html"):
        return found  # a sign-in page tells a person what went wrong
    try:
        answer = xml_text.loads(body) if "xml" in content_type else json.loads(body)
    except (ValueError, Invalid):
        what = f"not JSON or FHIR XML ({content_type})"
        return [*found, f"{status} with a body that is {what}: {body[:120]!r}"]
    if not isinstance(answer, dict):
        return [*found, f"{status} with a body that is not a JSON object: {body[:120]!r}"]
    if route.startswith("/oauth/") and isinstance(answer.get("error"), str):
        return found  # RFC 6749 section 5.2: OAuth endpoints answer with an error code
    if answer.get("resourceType") != "OperationOutcome" or not answer.get("issue"):
        found.append(f"{status} with a body that is no OperationOutcome: {body[:120]!r}")
    return found
