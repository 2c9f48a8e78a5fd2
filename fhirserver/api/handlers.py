"""Every error leaving the server is an OperationOutcome (STYLE.md rule 2).

FhirError subclasses carry their status; werkzeug's own errors (unknown route 404,
405, 413 body too large) are translated; anything else is a bug: logged with its
traceback, answered 500 without internals.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, g, request
from gunicorn.http.errors import NoMoreData, ParseException
from werkzeug.exceptions import HTTPException

from .. import errors
from .negotiation import render

log = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    406: "not-supported",
    409: "conflict",
    412: "conflict",
    413: "too-costly",
    415: "not-supported",
    422: "processing",
    429: "throttled",
}


def render_error(err: errors.FhirError) -> Response:
    if err.details and not g.get("audit_detail"):
        # The machine-readable reason goes into the request's AuditEvent (outcomeDesc):
        # e.g. a registration check that found an identity number taken.
        g.audit_detail = f"{err.status} {err.details}"
    return render(err.status, err.outcome(), err.headers)


def _http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    if status == 404:
        message = f"No FHIR endpoint at '{request.path}' (unknown resource type or path)"
    elif status == 405:
        message = f"Method {request.method} is not allowed on '{request.path}'"
    elif status == 413:
        message = "The request body is larger than this server accepts"
    else:
        message = exc.description or exc.name
    outcome = errors.operation_outcome([errors.Issue(message, code=_HTTP_CODES.get(status, "exception"))])
    headers = {}
    if status == 405 and exc.get_headers():
        headers = {k: v for k, v in exc.get_headers() if k == "Allow"}
    return render(status, outcome, headers)


def _unreadable_body(exc: Exception) -> Response:
    """A chunked body the server cannot read (a bad chunk size, chunk data without its
    CRLF, a malformed trailer; RFC 9112 section 7.1), or one the client stopped
    sending: the client's fault, found only when the application reads the body. The
    connection is closed: what is left of it cannot be told from a next request."""
    reason = "ended early" if isinstance(exc, NoMoreData) else "is not valid chunked encoding"
    outcome = errors.operation_outcome([errors.Issue(
        f"The request body could not be read: it {reason}", code="structure")])
    return render(400, outcome, {"Connection": "close"})


def _unexpected(exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.path)
    outcome = errors.operation_outcome(
        [errors.Issue("Internal server error; the failure has been logged", code="exception",
                      severity="fatal")]
    )
    return render(500, outcome)


def register(app: Flask) -> None:
    app.register_error_handler(errors.FhirError, render_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(ParseException, _unreadable_body)
    app.register_error_handler(NoMoreData, _unreadable_body)
    app.register_error_handler(Exception, _unexpected)
