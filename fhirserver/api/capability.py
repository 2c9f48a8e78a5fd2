"""The CapabilityStatement, generated from what is registered (R4 capabilitystatement.html).

Interactions come from the app's URL map (a route that exists is an interaction we
offer), search parameters from the search registry, formats from negotiation. No
hand-written JSON, so the statement cannot drift from the server.
"""

from __future__ import annotations

from typing import Any

from flask import current_app

from ..interactions.context import Context
from ..model.types import DIRECTORY_TYPES, SUPPORTED_TYPES
from ..search.catalog import parameters_for
from ..storage.indexing import instant, now
from ..version import __version__
from . import opdefs
from .state import public_base_url

# (URL rule, HTTP method) -> FHIR interaction code
TYPE_INTERACTIONS = {
    ("/<rtype>/<rid>", "GET"): "read",
    ("/<rtype>/<rid>/_history/<vid>", "GET"): "vread",
    ("/<rtype>/<rid>", "PUT"): "update",
    ("/<rtype>/<rid>", "PATCH"): "patch",
    ("/<rtype>/<rid>", "DELETE"): "delete",
    ("/<rtype>/<rid>/_history", "GET"): "history-instance",
    ("/<rtype>/_history", "GET"): "history-type",
    ("/<rtype>", "POST"): "create",
    ("/<rtype>", "GET"): "search-type",
    ("/<rtype>/_search", "POST"): "search-type",
}
SYSTEM_INTERACTIONS = {
    ("/", "POST"): ("transaction", "batch"),
    ("/_history", "GET"): ("history-system",),
}
SEARCH_TYPE_DOCS = "http://hl7.org/fhir/SearchParameter/"


def _routes() -> set[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    for rule in current_app.url_map.iter_rules():
        for method in rule.methods or ():
            out.add((rule.rule, method))
    return out


def _offered(op: opdefs.Operation, routes: set[tuple[str, str]]) -> bool:
    return any((op.rule, method) in routes for method in op.methods)


def _operations(rtype: str, routes: set[tuple[str, str]], base: str) -> list[dict[str, Any]]:
    """The operations on ``rtype`` whose route is registered, each with the canonical
    URL of its definition (opdefs.canonical: the server's own are served here)."""
    return [{"name": op.code, "definition": opdefs.canonical(op, base)}
            for op in opdefs.by_type().get(rtype, ()) if _offered(op, routes)]


#: Read-only types the server serves besides the stored ones: (route, search parameters).
DIRECTORY = {
    "NamingSystem": ("/NamingSystem", ("_id", "type", "value")),
    "OperationDefinition": ("/OperationDefinition", ("_id", "code", "url")),
}


def _search_params(rtype: str) -> list[dict[str, Any]]:
    params = []
    for name, p in sorted(parameters_for(rtype).items()):
        base = "Resource" if name.startswith("_") else rtype
        params.append({
            "name": name,
            "definition": f"{SEARCH_TYPE_DOCS}{base}-{name.lstrip('_')}",
            "type": p.type,
        })
    return params


def _includes(rtype: str) -> list[str]:
    """``_include`` values for searches on ``rtype``: its reference parameters."""
    refs = [n for n, p in sorted(parameters_for(rtype).items()) if p.type == "reference"]
    return ["*", *(f"{rtype}:{n}" for n in refs)]


def _revincludes(rtype: str) -> list[str]:
    """``_revinclude`` values: reference parameters of held types that can point here."""
    out = ["*"]
    for source in SUPPORTED_TYPES:
        for name, p in sorted(parameters_for(source).items()):
            if p.type == "reference" and (not p.targets or rtype in p.targets):
                out.append(f"{source}:{name}")
    return out


def _names_directory(rtype: str) -> bool:
    """Can a ``rtype`` refer to the clinician directory (a reference parameter that
    targets it, or any type)?"""
    return any(p.type == "reference" and (not p.targets or set(p.targets) & set(DIRECTORY_TYPES))
               for p in parameters_for(rtype).values())


def capability_statement(ctx: Context) -> dict[str, Any]:
    routes = _routes()
    base = public_base_url()
    type_interactions = list(dict.fromkeys(
        code for key, code in TYPE_INTERACTIONS.items() if key in routes))
    resources = []
    for rtype in SUPPORTED_TYPES:
        resources.append({
            "type": rtype,
            "profile": f"http://hl7.org/fhir/StructureDefinition/{rtype}",
            "interaction": [{"code": c} for c in type_interactions],
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": ("/<rtype>/<rid>", "PUT") in routes,
            "conditionalCreate": ("/<rtype>", "POST") in routes,
            "conditionalRead": "full-support",
            "conditionalUpdate": ("/<rtype>", "PUT") in routes,
            "conditionalDelete": "single" if ("/<rtype>", "DELETE") in routes else "not-supported",
            # Enforced for the clinical record; references to the clinician
            # directory are kept as given (interactions/rules.py check_references).
            "referencePolicy": ["literal", "local"] if _names_directory(rtype)
            else ["literal", "local", "enforced"],
            "searchInclude": _includes(rtype),
            "searchRevInclude": _revincludes(rtype),
            "searchParam": _search_params(rtype),
            "operation": _operations(rtype, routes, base),
        })
        if not resources[-1]["operation"]:
            del resources[-1]["operation"]
    for rtype, (rule, names) in DIRECTORY.items():
        if (rule, "GET") in routes:
            resources.append({
                "type": rtype,
                "profile": f"http://hl7.org/fhir/StructureDefinition/{rtype}",
                "interaction": [{"code": "read"}, {"code": "search-type"}],
                "searchParam": [{"name": n, "type": "uri" if n == "url" else "token"}
                                for n in names],
            })
    if ("/AuditEvent", "GET") in routes:
        # The audit log: a patient's own record of access, an operator's whole log.
        resources.append({
            "type": "AuditEvent",
            "profile": "http://hl7.org/fhir/StructureDefinition/AuditEvent",
            "interaction": [{"code": "search-type"}],
            "searchParam": [{"name": "patient", "type": "reference",
                             "definition": f"{SEARCH_TYPE_DOCS}AuditEvent-patient"}],
        })
    system = [c for key, codes in SYSTEM_INTERACTIONS.items() if key in routes for c in codes]
    system_ops = _operations("", routes, base)
    from .oauth import endpoints

    urls = endpoints()
    security = {
        "service": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
            "code": "SMART-on-FHIR"}]}],
        "description": "SMART App Launch 2.x and SMART Backend Services; "
                       "see /.well-known/smart-configuration",
        "extension": [{
            "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
            "extension": [{"url": "authorize", "valueUri": urls["authorization_endpoint"]},
                          {"url": "token", "valueUri": urls["token_endpoint"]},
                          {"url": "introspect", "valueUri": urls["introspection_endpoint"]},
                          {"url": "revoke", "valueUri": urls["revocation_endpoint"]}],
        }],
    }
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": instant(now()),
        "publisher": "fhirserver",
        "kind": "instance",
        "software": {"name": "fhirserver", "version": __version__},
        "implementation": {"description": "fhirserver FHIR R4 server", "url": base},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "application/json", "application/fhir+xml",
                   "application/xml"],
        "patchFormat": ["application/json-patch+json"],
        "rest": [{
            "mode": "server",
            "security": security,
            "resource": resources,
            "interaction": [{"code": c} for c in system],
            **({"operation": system_ops} if system_ops else {}),
        }],
    }
