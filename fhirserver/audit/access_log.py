"""gunicorn's access log without the identifiers in query strings.

The server's access log (``fhirserver serve``, gunicorn ``accesslog``) goes wherever
the operator's log shipping sends it, far from the access policy that guards the
records. This logger class hands gunicorn's formatter atoms whose query strings are
redacted (:mod:`.redaction`) and whose credentials are blanked: the request line
``r``, the query ``q``, the Referer ``f``, and the same values as request-header
(``{...}i``) and environ (``{...}e``) atoms an operator may name in the format.
"""

from __future__ import annotations

from typing import Any

from gunicorn.glogging import Logger

from .redaction import MASK, redact_query, redact_request_line, redact_target

_TARGETS = frozenset({"f", "{referer}i", "{raw_uri}e", "{request_uri}e", "{http_referer}e"})
_QUERIES = frozenset({"q", "{query_string}e"})
_SECRETS = frozenset({"{authorization}i", "{cookie}i", "{proxy-authorization}i",
                      "{http_authorization}e", "{http_cookie}e", "{http_proxy_authorization}e"})


class RedactingLogger(Logger):  # type: ignore[misc]
    """``logger_class`` for gunicorn: the access log shows a request's shape only."""

    def atoms(self, resp: Any, req: Any, environ: Any, request_time: Any) -> dict[str, Any]:
        atoms: dict[str, Any] = super().atoms(resp, req, environ, request_time)
        return redact_atoms(atoms)


def redact_atoms(atoms: dict[str, Any]) -> dict[str, Any]:
    """gunicorn's access-log atoms with query strings and credentials redacted."""
    out = dict(atoms)
    for name, value in atoms.items():
        if not isinstance(value, str):
            continue
        if name == "r":
            out[name] = redact_request_line(value)
        elif name in _TARGETS:
            out[name] = redact_target(value) if value != "-" else value
        elif name in _QUERIES:
            out[name] = redact_query(value)
        elif name in _SECRETS:
            out[name] = MASK
    return out
