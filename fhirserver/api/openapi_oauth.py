"""OpenAPI descriptions of the authorization server's endpoints and the docs
themselves (SMART App Launch 2.x, RFC 6749, RFC 7636, RFC 7662, RFC 7009, OpenID
Connect Discovery), keyed by (URL rule, method)."""

from __future__ import annotations

from typing import Any

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"


def _form(fields: dict[str, str], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"required": True, "content": {FORM: {"schema": {
        "type": "object", "required": list(required),
        "properties": {k: {"type": "string", "description": v} for k, v in fields.items()}}}}}


def _json(description: str, properties: dict[str, Any] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object"}
    if properties:
        schema["properties"] = properties
    return {"description": description, "content": {JSON: {"schema": schema}}}


OAUTH_ERROR = _json("OAuth error (RFC 6749 section 5.2)", {
    "error": {"type": "string"}, "error_description": {"type": "string"}})

TOKEN = _json("Access token (RFC 6749 section 5.1; SMART context)", {
    "access_token": {"type": "string"}, "token_type": {"const": "bearer"},
    "expires_in": {"type": "integer"}, "scope": {"type": "string"},
    "refresh_token": {"type": "string"}, "id_token": {"type": "string"},
    "patient": {"type": "string"}, "need_patient_banner": {"type": "boolean"}})

AUTHORIZE_PARAMS = {
    "response_type": "code", "client_id": "The registered application",
    "redirect_uri": "Exactly as registered", "scope": "Space-separated SMART scopes",
    "state": "Opaque value returned with the code", "aud": "This server's FHIR base URL",
    "code_challenge": "PKCE challenge (RFC 7636), required",
    "code_challenge_method": "S256", "launch": "EHR launch value from /oauth/launch",
    "nonce": "OpenID Connect nonce (with scope openid)",
}
REQUIRED_AUTHORIZE = ("response_type", "client_id", "redirect_uri", "scope", "state", "aud",
                      "code_challenge", "code_challenge_method")
HTML = {"200": {"description": "The sign-in page", "content": {"text/html": {}}},
        "302": {"description": "Back to the redirect URI with code and state, or an error"}}

PATHS: dict[tuple[str, str], dict[str, Any]] = {
    ("/.well-known/smart-configuration", "GET"): {"responses": {"200": _json(
        "SMART configuration (conformance.html#using-well-known)")}},
    ("/.well-known/openid-configuration", "GET"): {"responses": {"200": _json(
        "OpenID Provider Metadata")}},
    ("/oauth/jwks", "GET"): {"responses": {"200": {
        "description": "JSON Web Key Set", "content": {"application/jwk-set+json": {}}}}},
    ("/oauth/authorize", "GET"): {
        "parameters": [{"name": k, "in": "query", "required": k in REQUIRED_AUTHORIZE,
                        "description": v, "schema": {"type": "string"}}
                       for k, v in AUTHORIZE_PARAMS.items()],
        "responses": HTML},
    ("/oauth/authorize", "POST"): {
        "description": "authorize-post: the same parameters as a form",
        "requestBody": _form(AUTHORIZE_PARAMS, REQUIRED_AUTHORIZE), "responses": HTML},
    ("/oauth/login", "POST"): {
        "description": "The sign-in page's form (CSRF-protected; for browsers)",
        "requestBody": _form({"csrf": "From the page", "username": "", "password": ""}),
        "responses": {"200": {"description": "The approval page", "content": {"text/html": {}}}}},
    ("/oauth/approve", "POST"): {
        "description": "The approval page's form (CSRF-protected; for browsers)",
        "requestBody": _form({"csrf": "From the page", "request": "From the page",
                              "patient": "The patient chosen", "decision": "approve or deny"}),
        "responses": {"302": {"description": "Back to the application with the code"}}},
    ("/oauth/token", "POST"): {
        "description": "grant_type authorization_code (with code_verifier), refresh_token, or "
                       "client_credentials (SMART Backend Services: client_assertion_type "
                       "urn:ietf:params:oauth:client-assertion-type:jwt-bearer and a signed "
                       "client_assertion, or HTTP Basic)",
        "requestBody": _form({
            "grant_type": "authorization_code | refresh_token | client_credentials",
            "code": "", "redirect_uri": "", "code_verifier": "PKCE verifier",
            "client_id": "A public client's id", "refresh_token": "",
            "scope": "Requested scopes (client_credentials; a narrower refresh)",
            "client_assertion_type": "", "client_assertion": "private_key_jwt (RFC 7523)"},
            ("grant_type",)),
        "responses": {"200": TOKEN, "400": OAUTH_ERROR, "401": OAUTH_ERROR}},
    ("/oauth/introspect", "POST"): {
        "description": "RFC 7662; the caller authenticates as a confidential or backend client",
        "requestBody": _form({"token": "The token to check"}, ("token",)),
        "responses": {"200": _json("Token state", {"active": {"type": "boolean"}}),
                      "401": OAUTH_ERROR}},
    ("/oauth/revoke", "POST"): {
        "description": "RFC 7009; a refresh token ends its whole authorization",
        "requestBody": _form({"token": "The token to revoke"}, ("token",)),
        "responses": {"200": _json("Done, whether or not the token was valid"),
                      "401": OAUTH_ERROR}},
    ("/oauth/launch", "POST"): {
        "description": "EHR launch: needs an EHR user's or EHR system's access token "
                       "(Authorization: Bearer). Form fields or a JSON object.",
        "security": [{"bearer": []}],
        "requestBody": {"required": True, "content": {k: {"schema": {
            "type": "object", "required": ["patient", "client_id"], "properties": {
                "patient": {"type": "string", "description": "The Patient id (or Patient/<id>) "
                            "the app opens on", "examples": ["Patient/123"]},
                "client_id": {"type": "string", "description": "The app"},
                "user": {"type": "string", "description": "The fhirUser who will approve "
                         "(Practitioner/<id> or Patient/<id>); an EHR system only"}}}}
            for k in (FORM, JSON)}},
        "responses": {"200": _json("The launch value, valid five minutes", {
            "launch": {"type": "string"}, "expires_in": {"type": "integer"}}),
            "default": {"description": "OperationOutcome", "content": {JSON: {}}}}},
    ("/openapi.json", "GET"): {"responses": {"200": _json("This document")}},
    ("/docs", "GET"): {"responses": {"200": {"description": "Swagger UI",
                                             "content": {"text/html": {}}}}},
}
