"""gunicorn's own error answers as OperationOutcomes (R4 http.html#summary).

Some requests never reach the application: gunicorn refuses a request line over
``limit_request_line`` (414), too many or too large header fields (431), a request
line that is not ASCII HTTP (400), an ``Expect`` it cannot meet (417) or a
``Transfer-Encoding`` it does not support (501). It writes those answers itself, as
HTML, through ``gunicorn.util.write_error``: this worker writes them as FHIR JSON
instead, with the same status, so a FHIR client gets an OperationOutcome for every
failure.
"""

from __future__ import annotations

import socket
from typing import Any

import orjson
from gunicorn import util
from gunicorn.workers.gthread import ThreadWorker

from ..errors import Issue, operation_outcome

#: HTTP status -> issue type (http://hl7.org/fhir/issue-type).
_CODES = {400: "structure", 403: "forbidden", 414: "too-long", 417: "not-supported",
          431: "too-long", 501: "not-supported"}


def outcome_bytes(status: int, reason: str, message: str) -> bytes:
    """The whole HTTP/1.1 answer: status line, headers and an OperationOutcome body."""
    text = f"{reason}: {message}" if message else reason
    severity = "fatal" if status >= 500 else "error"
    body = orjson.dumps(operation_outcome([Issue(
        text[:1000], code=_CODES.get(status, "exception" if status >= 500 else "invalid"),
        severity=severity)]))
    head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\n"
            f"Content-Type: application/fhir+json\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode("latin-1") + body


def write_outcome(sock: socket.socket, status_int: int, reason: str, mesg: str) -> None:
    """Drop-in for ``gunicorn.util.write_error``."""
    util.write_nonblock(sock, outcome_bytes(status_int, reason, mesg))


class FhirThreadWorker(ThreadWorker):  # type: ignore[misc]
    """gunicorn's gthread worker, answering the requests gunicorn refuses with
    OperationOutcomes. ``Worker.handle_error`` writes through the module function
    ``gunicorn.util.write_error`` (its only caller), replaced here in the worker process
    before it serves anything."""

    def init_process(self) -> Any:
        util.write_error = write_outcome
        return super().init_process()
