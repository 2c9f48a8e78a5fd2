"""The OpenAPI path items of each route the server registers (R4 http.html for the
interactions, operations.html for the operations, the SMART and OAuth documents for
``/oauth/*``). Pure: a route's rule, method and docstring in, path items out."""

from __future__ import annotations

from typing import Any

from ..interactions.compartment import MEMBERS as COMPARTMENT_MEMBERS
from ..model.types import SUPPORTED_TYPES
from ..search.catalog import parameters_for
from ..search.parameters import RESULT_PARAMS
from .opdefs import OPERATIONS, Operation, Param

FHIR_JSON = "application/fhir+json"
FHIR_XML = "application/fhir+xml"
#: FHIR XML (xml.html) is not what a JSON Schema describes: the same content, as text.
XML_SCHEMA = {"type": "string", "contentMediaType": FHIR_XML,
              "description": "The same content in FHIR XML (http://hl7.org/fhir/R4/xml.html)"}
REF = "#/components/schemas/"
COMPARTMENT = "Patient"

TAGS = [
    {"name": "System", "description": "Capabilities, batch/transaction, history"},
    *({"name": t, "description": f"{t}: interactions and operations"} for t in SUPPORTED_TYPES),
    {"name": "Directory", "description": "NamingSystem, AuditEvent, OperationDefinition"},
    {"name": "Authorization", "description": "SMART on FHIR, OAuth 2.0, OpenID Connect"},
]

COMMON_PARAMETERS: dict[str, Any] = {
    "id": {"name": "id", "in": "path", "required": True, "description": "Logical id",
           "schema": {"type": "string", "pattern": "^[A-Za-z0-9\\-.]{1,64}$"}},
    "vid": {"name": "vid", "in": "path", "required": True, "description": "Version id",
            "schema": {"type": "string"}},
    "_count": {"name": "_count", "in": "query", "description": "Page size",
               "schema": {"type": "integer", "minimum": 0}},
    "_since": {"name": "_since", "in": "query", "description": "Only versions since (instant)",
               "schema": {"type": "string", "format": "date-time"}},
    "_cursor": {"name": "_cursor", "in": "query", "description": "Paging cursor (next link)",
                "schema": {"type": "string"}},
    "If-Match": {"name": "If-Match", "in": "header", "description": "W/\"<versionId>\": "
                 "update only that version (http.html#concurrency)", "schema": {"type": "string"}},
    "If-None-Match": {"name": "If-None-Match", "in": "header", "schema": {"type": "string"}},
    "If-None-Exist": {"name": "If-None-Exist", "in": "header", "description": "Conditional "
                      "create: search criteria (http.html#ccreate)", "schema": {"type": "string"}},
    "Prefer": {"name": "Prefer", "in": "header", "description": "return=minimal | "
               "representation | OperationOutcome; handling=strict | lenient",
               "schema": {"type": "string"}},
}
for _name in sorted(RESULT_PARAMS - {"_count"}):
    COMMON_PARAMETERS[_name] = {"name": _name, "in": "query", "schema": {"type": "string"},
                                "description": "search result parameter (search.html)"}

COMMON_RESPONSES: dict[str, Any] = {
    "Error": {"description": "An error, as an OperationOutcome (4xx; 500 is a bug)",
              "content": {FHIR_JSON: {"schema": {"$ref": REF + "OperationOutcome"}},
                          FHIR_XML: {"schema": XML_SCHEMA}}},
}


def ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def fhir_content(schema: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A FHIR body's content: JSON with its schema, and XML (http.html#mime-type)."""
    return {FHIR_JSON: {"schema": schema, **extra}, FHIR_XML: {"schema": XML_SCHEMA}}


def answer(rtype: str, description: str = "") -> dict[str, Any]:
    return {"description": description or rtype,
            "content": fhir_content({"$ref": REF + rtype})}


def body(rtype: str) -> dict[str, Any]:
    return {"required": True, "content": fhir_content({"$ref": REF + rtype})}


def _op(summary: str, tag: str, responses: dict[str, Any], *, params: list[Any] | None = None,
        request: dict[str, Any] | None = None, description: str = "") -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary.strip(), "tags": [tag]}
    if description:
        op["description"] = description
    if params:
        op["parameters"] = params
    if request is not None:
        op["requestBody"] = request
    op["responses"] = {**responses, "default": ref("responses", "Error")}
    return op


def _search_refs(rtype: str) -> list[dict[str, str]]:
    return [ref("parameters", f"{rtype}.{n}") for n in sorted(parameters_for(rtype))] + \
        [ref("parameters", n) for n in ("_count", *sorted(RESULT_PARAMS - {"_count"}))]


def _form_schema(rtype: str) -> dict[str, Any]:
    names = [*sorted(parameters_for(rtype)), *sorted(RESULT_PARAMS)]
    return {"required": False, "content": {"application/x-www-form-urlencoded": {"schema": {
        "type": "object", "properties": {n: {"type": "string"} for n in names}}}}}


BUNDLE = {"200": answer("Bundle", "A Bundle")}
HISTORY = [ref("parameters", "_since"), ref("parameters", "_count"), ref("parameters", "_cursor")]
PATCH = {"required": True, "content": {"application/json-patch+json": {"schema": {
    "type": "array", "description": "RFC 6902 JSON Patch", "items": {
        "type": "object", "required": ["op", "path"],
        "properties": {"op": {"enum": ["add", "remove", "replace", "move", "copy", "test"]},
                       "path": {"type": "string"}, "from": {"type": "string"}, "value": {}}}}}}}


def _typed(rule: str, method: str, doc: str, rtype: str) -> dict[str, Any] | None:
    """The REST interactions on one type (http.html)."""
    t = rtype
    written = {"200": answer(t, "Updated"), "201": answer(t, "Created")}
    table: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {
        ("/<rtype>", "GET"): (f"/{t}", _op(doc, t, BUNDLE, params=_search_refs(t))),
        ("/<rtype>", "POST"): (f"/{t}", _op(doc, t, written, request=body(t), params=[
            ref("parameters", "If-None-Exist"), ref("parameters", "Prefer")])),
        ("/<rtype>", "PUT"): (f"/{t}", _op(doc, t, written, request=body(t), params=[
            ref("parameters", "If-Match")], description="Search criteria in the query string")),
        ("/<rtype>", "DELETE"): (f"/{t}", _op(doc, t, {"204": {"description": "Deleted"}},
                                              description="Search criteria in the query string")),
        ("/<rtype>/_search", "POST"): (f"/{t}/_search", _op(doc, t, BUNDLE,
                                                            request=_form_schema(t))),
        ("/<rtype>/_history", "GET"): (f"/{t}/_history", _op(doc, t, BUNDLE, params=HISTORY)),
        ("/<rtype>/<rid>", "GET"): (f"/{t}/{{id}}", _op(doc, t, {
            "200": answer(t), "304": {"description": "Not modified"}}, params=[
            ref("parameters", "id"), ref("parameters", "If-None-Match")])),
        ("/<rtype>/<rid>", "PUT"): (f"/{t}/{{id}}", _op(doc, t, written, request=body(t), params=[
            ref("parameters", "id"), ref("parameters", "If-Match"), ref("parameters", "Prefer")])),
        ("/<rtype>/<rid>", "PATCH"): (f"/{t}/{{id}}", _op(doc, t, {"200": answer(t)}, request=PATCH,
                                                          params=[ref("parameters", "id"),
                                                                  ref("parameters", "If-Match")])),
        ("/<rtype>/<rid>", "DELETE"): (f"/{t}/{{id}}", _op(doc, t, {
            "204": {"description": "Deleted"}}, params=[ref("parameters", "id")])),
        ("/<rtype>/<rid>/_history", "GET"): (f"/{t}/{{id}}/_history", _op(
            doc, t, BUNDLE, params=[ref("parameters", "id"), *HISTORY])),
        ("/<rtype>/<rid>/_history/<vid>", "GET"): (f"/{t}/{{id}}/_history/{{vid}}", _op(
            doc, t, {"200": answer(t)}, params=[ref("parameters", "id"), ref("parameters", "vid")])),
    }
    found = table.get((rule, method))
    return {found[0]: found[1]} if found else None


def _primitive_schema(p: Param) -> dict[str, Any]:
    kind = {"boolean": "boolean", "integer": "integer", "positiveInt": "integer"}.get(p.type,
                                                                                    "string")
    schema: dict[str, Any] = {"type": kind}
    if p.example is not None:
        schema["examples"] = [p.example]
    return schema


def _value_key(p: Param) -> str:
    return "value" + p.type[:1].upper() + p.type[1:]


def _parameters_schema(params: tuple[Param, ...], title: str) -> dict[str, Any]:
    """A Parameters resource holding exactly these parameters, by name."""
    items = []
    for p in params:
        if p.type[:1].isupper() and p.type not in ("Reference", "Identifier", "Attachment"):
            value: dict[str, Any] = {"resource": {"$ref": REF + p.type}}
        else:
            key = _value_key(p)
            value = {key: {"$ref": REF + p.type} if p.type[:1].isupper() else _primitive_schema(p)}
        items.append({"type": "object", "description": f"{p.doc} ({p.min}..{p.max})",
                      "required": ["name", *value], "properties": {"name": {"const": p.name},
                                                                    **value}})
    return {"type": "object", "title": title, "required": ["resourceType"], "properties": {
        "resourceType": {"const": "Parameters"},
        "parameter": {"type": "array", "items": {"oneOf": items} if items else {}}}}


def example_body(op: Operation) -> dict[str, Any]:
    """A Parameters body with the operation's example values (for the docs and README)."""
    parameter: list[dict[str, Any]] = []
    for p in op.inputs():
        if p.example is None:
            continue
        if p.type == "Reference":
            parameter.append({"name": p.name, "valueReference": {"reference": p.example}})
        elif p.type == "Identifier":
            system, _, value = str(p.example).partition("|")
            parameter.append({"name": p.name, "valueIdentifier": {"system": system, "value": value}})
        else:
            parameter.append({"name": p.name, _value_key(p): p.example})
    return {"resourceType": "Parameters", "parameter": parameter}


def _operation(op: Operation, method: str, doc: str) -> dict[str, Any]:
    """An operation's path item (operations.html#request): GET carries the primitive
    inputs in the query; POST a Parameters body (or the same names in the query)."""
    outs = op.outputs()
    if len(outs) == 1 and outs[0].name == "return":
        result = answer(outs[0].type, outs[0].doc)
    else:
        result = {"description": "The output parameters", "content": fhir_content(
            _parameters_schema(outs, f"${op.code} output"))}
    for media in op.produces:
        result["content"][media] = {"schema": {"type": "string", "format": "binary"}}
    params: list[Any] = [ref("parameters", "id")] if op.instance else []
    request = None
    inputs = op.inputs()
    if method == "GET":
        params += [{"name": p.name, "in": "query", "required": p.min > 0,
                    "description": p.doc, "schema": _primitive_schema(p)}
                   for p in inputs if p.primitive or p.search_type]
    elif inputs:
        request = {"required": any(p.min > 0 for p in inputs), "content": fhir_content(
            _parameters_schema(inputs, f"${op.code} input"), example=example_body(op))}
    names = ", ".join(f"{p.name} ({p.type} {p.min}..{p.max})" for p in inputs) or "none"
    description = (f"{op.description}\n\nParameters: {names}. "
                   f"Definition: OperationDefinition/{op.id}")
    responses = {str(s): result for s in op.statuses}
    return _op(doc or op.title, op.resource or "System", responses, params=params, request=request,
               description=description)


#: Bulk Data export's status and file URLs (export.html), handed out in
#: Content-Location and the manifest.
_JOB = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"},
        "description": "The export, as the kick-off's Content-Location names it"}
_FILE = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"},
         "description": "A file the manifest lists, e.g. Observation.ndjson"}
_MANIFEST = {"type": "object", "required": ["transactionTime", "request", "requiresAccessToken",
                                            "output", "error"],
             "properties": {"transactionTime": {"type": "string", "format": "date-time"},
                            "request": {"type": "string"},
                            "requiresAccessToken": {"const": True},
                            "output": {"type": "array", "items": {"type": "object", "properties": {
                                "type": {"type": "string"}, "url": {"type": "string"},
                                "count": {"type": "integer"}}}},
                            "error": {"type": "array", "items": {"type": "object"}}}}
BULK_STATUS = {
    "200": {"description": "Complete: the manifest (export.html#response---complete-status)",
            "content": {"application/json": {"schema": _MANIFEST}}},
    "202": {"description": "In progress", "headers": {
        "X-Progress": {"schema": {"type": "string"}, "description": "e.g. Observation 1200/5000"},
        "Retry-After": {"schema": {"type": "integer"}}}},
}

SYSTEM: dict[tuple[str, str], tuple[str, str, dict[str, Any], list[Any], dict[str, Any] | None]] = {
    ("/bulk-status/<job_id>", "GET"): ("/bulk-status/{job_id}", "System", BULK_STATUS,
                                       [_JOB], None),
    ("/bulk-status/<job_id>", "DELETE"): ("/bulk-status/{job_id}", "System",
                                          {"202": answer("OperationOutcome", "Cancelled")},
                                          [_JOB], None),
    ("/bulk-files/<job_id>/<name>", "GET"): ("/bulk-files/{job_id}/{name}", "System", {
        "200": {"description": "NDJSON, one resource a line", "content": {
            "application/fhir+ndjson": {"schema": {"type": "string"}}}}}, [_JOB, _FILE], None),
    ("/", "POST"): ("/", "System", {"200": answer("Bundle", "batch-response or "
                                                  "transaction-response")}, [], body("Bundle")),
    ("/_history", "GET"): ("/_history", "System", BUNDLE, HISTORY, None),
    ("/metadata", "GET"): ("/metadata", "System", {"200": answer("CapabilityStatement")}, [], None),
    ("/NamingSystem", "GET"): ("/NamingSystem", "Directory", BUNDLE, [
        {"name": n, "in": "query", "schema": {"type": "string"}} for n in ("_id", "type", "value")],
        None),
    ("/NamingSystem/<rid>", "GET"): ("/NamingSystem/{id}", "Directory",
                                     {"200": answer("NamingSystem")}, [ref("parameters", "id")],
                                     None),
    ("/AuditEvent", "GET"): ("/AuditEvent", "Directory", BUNDLE, [
        {"name": "patient", "in": "query", "schema": {"type": "string"},
         "description": "Patient/<id>"}, ref("parameters", "_count"),
        ref("parameters", "_cursor")], None),
    ("/OperationDefinition", "GET"): ("/OperationDefinition", "Directory", BUNDLE, [
        {"name": n, "in": "query", "schema": {"type": "string"}} for n in ("_id", "code", "url")],
        None),
    ("/OperationDefinition/<rid>", "GET"): ("/OperationDefinition/{id}", "Directory",
                                            {"200": answer("OperationDefinition")},
                                            [ref("parameters", "id")], None),
}


def _oauth(rule: str, method: str, doc: str) -> dict[str, Any] | None:
    from . import openapi_oauth

    found = openapi_oauth.PATHS.get((rule, method))
    if found is None:
        return None
    return {rule: {method.lower(): {"summary": doc or rule, "tags": ["Authorization"], **found}}}


def for_route(rule: str, method: str, doc: str) -> dict[str, dict[str, Any]] | None:
    """The path items ``rule`` serves for ``method``; None for a route unknown here."""
    if method in ("HEAD", "OPTIONS"):
        return {}
    if rule.startswith(("/oauth/", "/.well-known/", "/openapi.json", "/docs")):
        return _oauth(rule, method, doc)
    if (rule, method) in SYSTEM:
        path, tag, responses, params, request = SYSTEM[(rule, method)]
        return {path: {method.lower(): _op(doc, tag, responses, params=params, request=request)}}
    if (rule, "GET") in SYSTEM:
        return {}  # a read-only type: other methods answer 405
    if "$" in rule:
        ops = [op for op in OPERATIONS if op.rule == rule and method in op.methods]
        if not ops:
            return None
        return {op.path: {method.lower(): _operation(op, method, doc)} for op in ops}
    if rule == "/<rtype>/<rid>/<ctype>" and method == "GET":
        return {f"/{COMPARTMENT}/{{id}}/{c}": {"get": _op(
            doc, c, BUNDLE, params=[ref("parameters", "id"), *_search_refs(c)])}
            for c in COMPARTMENT_MEMBERS}
    out: dict[str, dict[str, Any]] = {}
    for rtype in SUPPORTED_TYPES:
        found = _typed(rule, method, doc, rtype)
        if found is None:
            return None
        for path, op in found.items():
            out[path] = {method.lower(): op}
    return out
