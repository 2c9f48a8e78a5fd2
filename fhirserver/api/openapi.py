"""The OpenAPI 3.1 document of the server, generated from what is registered.

Like the CapabilityStatement, it is made from the app's URL map: each route becomes
the paths it serves (a ``/<rtype>`` route one path per resource type, an operation's
route the path of that operation, with its parameters from :mod:`.opdefs`), each
with its summary from the view's docstring. A route no table here knows is still
listed, from its rule and docstring, so the document never hides an endpoint.

Bodies are FHIR JSON, described by the schemas of :mod:`.fhir_schema`; security
schemes are SMART's OAuth 2.0 flows with the server's own endpoints
(OpenAPI 3.1 section 4.8.27, security scheme object).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..model.types import SUPPORTED_TYPES
from ..search.catalog import parameters_for
from . import fhir_schema, openapi_paths
from .opdefs import OPERATIONS

FHIR_JSON = "application/fhir+json"
#: Resource types whose schema the document carries (and all they use).
SCHEMA_TYPES = (*SUPPORTED_TYPES, "Bundle", "Parameters", "OperationOutcome", "RelatedPerson",
                "CapabilityStatement", "OperationDefinition", "NamingSystem", "AuditEvent")


@dataclass(frozen=True)
class Route:
    """One (URL rule, HTTP method) of the app, with the view's docstring."""

    rule: str
    method: str
    doc: str


@dataclass(frozen=True)
class Server:
    """What the document says about where the server is."""

    base: str  # the FHIR base URL, also the token issuer
    oauth: dict[str, str]  # authorization_endpoint, token_endpoint, ... (oauth.endpoints)
    scopes: tuple[str, ...]
    public: frozenset[str]  # paths answered without a token
    version: str


def security_schemes(server: Server) -> dict[str, Any]:
    scopes = {s: s for s in server.scopes}
    token, authorize = server.oauth["token_endpoint"], server.oauth["authorization_endpoint"]
    return {
        "smart": {
            "type": "oauth2",
            "description": "SMART App Launch 2.x: authorization code with PKCE (RFC 7636, "
                           "code_challenge_method S256, required) for apps; SMART Backend "
                           "Services: client credentials, the client authenticating with "
                           "private_key_jwt (RFC 7523) or client_secret_basic. Discovery: "
                           f"{server.base}/.well-known/smart-configuration",
            "flows": {
                "authorizationCode": {"authorizationUrl": authorize, "tokenUrl": token,
                                      "refreshUrl": token, "scopes": scopes},
                "clientCredentials": {"tokenUrl": token, "scopes": {
                    s: s for s in server.scopes if s.startswith("system/")}},
            },
        },
        "openid": {"type": "openIdConnect",
                   "openIdConnectUrl": f"{server.base}/.well-known/openid-configuration"},
        "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                   "description": "An access token obtained otherwise (e.g. fhirserver token)"},
    }


def _path_params(rule: str) -> list[dict[str, Any]]:
    return [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in re.findall(r"<(?:[a-z]+:)?([A-Za-z_]+)>", rule)]


def _generic(route: Route) -> dict[str, dict[str, Any]]:
    """A route no table knows: its rule and docstring, an answer of any FHIR resource."""
    path = re.sub(r"<(?:[a-z]+:)?([A-Za-z_]+)>", r"{\1}", route.rule)
    op: dict[str, Any] = {"summary": route.doc or route.rule, "tags": ["Other"],
                          "responses": {"200": openapi_paths.answer("Resource")}}
    params = _path_params(route.rule)
    if params:
        op["parameters"] = params
    return {path: {route.method.lower(): op}}


def _search_parameters() -> dict[str, Any]:
    """``components.parameters``: each type's search parameters, referenced by name."""
    out: dict[str, Any] = {}
    for rtype in SUPPORTED_TYPES:
        for name, p in sorted(parameters_for(rtype).items()):
            out[f"{rtype}.{name}"] = {"name": name, "in": "query", "required": False,
                                      "description": f"{p.type} search parameter",
                                      "schema": {"type": "string"}}
    out.update(openapi_paths.COMMON_PARAMETERS)
    return out


def paths(routes: Iterable[Route], server: Server) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for route in routes:
        found = openapi_paths.for_route(route.rule, route.method, route.doc)
        if found is None:
            found = _generic(route)
        for path, methods in found.items():
            for method, op in methods.items():
                if path in server.public or path.startswith(("/oauth/", "/OperationDefinition/")):
                    op.setdefault("security", [])
                out.setdefault(path, {})[method] = op
    return dict(sorted(out.items(), key=lambda kv: _order(kv[0])))


def _order(path: str) -> tuple[int, str]:
    """System paths first, then per type in the server's order, then the OAuth ones."""
    head = path.strip("/").split("/")[0]
    if head in SUPPORTED_TYPES:
        return (1 + SUPPORTED_TYPES.index(head), path)
    return (0 if not head.startswith((".", "oauth")) else 99, path)


def document(routes: Iterable[Route], server: Server) -> dict[str, Any]:
    routes = list(routes)
    ops = ", ".join(f"{op.resource}{'/{id}' if op.instance else ''}/${op.code}"
                    for op in OPERATIONS)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "fhirserver",
            "version": server.version,
            "summary": "FHIR R4 (4.0.1) server: Patient, Observation, DiagnosticReport",
            "description": "FHIR R4 REST API (http://hl7.org/fhir/R4/http.html). Bodies are "
                           "FHIR JSON (application/fhir+json) or FHIR XML "
                           "(application/fhir+xml), by Accept, Content-Type or _format. "
                           "Every error is an "
                           "OperationOutcome. The CapabilityStatement is at /metadata; each "
                           "operation's OperationDefinition at /OperationDefinition/{id}. "
                           f"Operations: {ops}.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
        "servers": [{"url": server.base}],
        "security": [{"smart": []}, {"openid": []}, {"bearer": []}],
        "tags": openapi_paths.TAGS,
        "paths": paths(routes, server),
        "components": {
            "schemas": fhir_schema.schemas(SCHEMA_TYPES),
            "parameters": _search_parameters(),
            "responses": openapi_paths.COMMON_RESPONSES,
            "securitySchemes": security_schemes(server),
        },
    }
