"""Authentication of every request: no endpoint answers without a valid access token
except /metadata, the SMART and OpenID Connect discovery documents, the OAuth
endpoints, and the descriptions of the API (the OpenAPI document, its docs page and
the OperationDefinitions) and the web app's static files (``/app/``), which hold no
patient data. CORS preflights never reach here: they carry no token by design (Fetch
standard, #http-requests) and are answered in front of the application (cors.py)."""

from __future__ import annotations

from flask import Flask, g, request

from .. import errors
from ..auth.callers import caller_from_claims
from ..auth.tokens import TokenService, challenge
from ..crypto.master import load
from ..crypto.sealing import sealer
from .state import state

PUBLIC = ("/metadata", "/.well-known/smart-configuration", "/.well-known/openid-configuration",
          "/openapi.json", "/docs", "/OperationDefinition", "/app")
PUBLIC_PREFIXES = ("/oauth/", "/docs/", "/OperationDefinition/", "/app/")


def public(path: str) -> bool:
    """Whether ``path`` answers without a token."""
    return path in PUBLIC or path.startswith(PUBLIC_PREFIXES)


def tokens() -> TokenService:
    st = state()
    if st.tokens is None:
        st.tokens = TokenService(st.repo.db, st.settings.issuer, sealer(load(st.settings)))
    return st.tokens


def authenticate() -> None:
    if "\x00" in request.path or any("\x00" in k or "\x00" in v
                                      for k, v in request.args.items(multi=True)):
        # No id, parameter or value holds U+0000, and the database cannot store it.
        raise errors.Invalid("The request URL holds a NUL character (%00)")
    if public(request.path):
        return
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise errors.Unauthorized("An access token is required (Authorization: Bearer ...)",
                                  headers=challenge())
    claims = tokens().verify(token.strip(), state().clock())
    g.caller = caller_from_claims(claims)
    g.claims = claims


def register(app: Flask) -> None:
    app.before_request(authenticate)
