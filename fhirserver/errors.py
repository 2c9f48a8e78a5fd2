"""One error hierarchy for everything a client can cause, rendered as OperationOutcome.

FHIR R4 operationoutcome.html: every failure carries issues with a severity, an
issue-type code (http://hl7.org/fhir/issue-type) and, where an element is at fault,
its FHIRPath ``expression``. Each subclass is named for its issue type and knows its
HTTP status, so handlers raise and one renderer answers::

    FhirError
    ├── Invalid              400  invalid / structure / value / required
    │   └── Unprocessable    422  business-rule (valid FHIR the server won't accept)
    ├── NotFound             404  not-found
    ├── Gone                 410  deleted
    ├── MethodNotAllowed     405  not-supported
    ├── NotAcceptable        406  not-supported
    ├── UnsupportedMedia     415  not-supported
    ├── TooLarge             413  too-costly
    ├── Conflict             409  conflict / duplicate
    ├── PreconditionFailed   412  conflict
    ├── Forbidden            403  forbidden
    ├── Unauthorized         401  login
    ├── Throttled            429  throttled (with Retry-After)
    └── ServerError          500  exception (a bug; never carries internals)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

DETAILS_SYSTEM = "https://fhirserver.example/CodeSystem/outcome-details"


@dataclass(frozen=True)
class Issue:
    """One OperationOutcome.issue."""

    diagnostics: str
    code: str = "invalid"
    severity: str = "error"
    expression: tuple[str, ...] = ()
    # A machine-readable reason of this server's own (issue.details), for clients
    # that must tell failures apart (e.g. an expired card code from a revoked card).
    details: str | None = None

    def to_fhir(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "severity": self.severity,
            "code": self.code,
        }
        if self.details:
            out["details"] = {"coding": [{"system": DETAILS_SYSTEM, "code": self.details}]}
        out["diagnostics"] = self.diagnostics
        if self.expression:
            out["expression"] = list(self.expression)
        return out


def operation_outcome(issues: Iterable[Issue]) -> dict[str, Any]:
    """Build an OperationOutcome resource from issues."""
    return {"resourceType": "OperationOutcome", "issue": [i.to_fhir() for i in issues]}


def information(message: str, code: str = "informational") -> dict[str, Any]:
    """An OperationOutcome reporting success, as HAPI answers deletes and batch entries."""
    return operation_outcome([Issue(message, code=code, severity="information")])


@dataclass(eq=False)
class FhirError(Exception):
    """Base of every client-visible error.

    Raise with a message, or with a list of issues when several problems are found
    at once (validation reports them all rather than the first).
    """

    message: str = ""
    issues: Sequence[Issue] = field(default_factory=tuple)
    expression: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    details: str | None = None

    status = 500
    code = "exception"

    def __post_init__(self) -> None:
        super().__init__(self.message)
        if not self.issues:
            expr = (self.expression,) if self.expression else ()
            self.issues = (Issue(self.message, code=self.code, expression=expr,
                                 details=self.details),)
        elif not self.message:
            self.message = "; ".join(i.diagnostics for i in self.issues)

    def __str__(self) -> str:
        return self.message

    def outcome(self) -> dict[str, Any]:
        return operation_outcome(self.issues)


class Invalid(FhirError):
    status = 400
    code = "invalid"


class Unprocessable(Invalid):
    status = 422
    code = "processing"


class TooCostly(Invalid):
    """A search the server refuses to run in full (search.html#errors: too-costly)."""

    code = "too-costly"


class NotFound(FhirError):
    status = 404
    code = "not-found"


class Gone(FhirError):
    status = 410
    code = "deleted"


class MethodNotAllowed(FhirError):
    status = 405
    code = "not-supported"


class NotAcceptable(FhirError):
    status = 406
    code = "not-supported"


class UnsupportedMedia(FhirError):
    status = 415
    code = "not-supported"


class TooLarge(FhirError):
    status = 413
    code = "too-costly"


class Conflict(FhirError):
    status = 409
    code = "conflict"


class PreconditionFailed(FhirError):
    status = 412
    code = "conflict"


class Forbidden(FhirError):
    status = 403
    code = "forbidden"


class Unauthorized(FhirError):
    status = 401
    code = "login"


class Throttled(FhirError):
    """Too many requests of one kind from one client (RFC 6585 section 4); raise it
    with a ``Retry-After`` header (RFC 9110 section 10.2.3)."""

    status = 429
    code = "throttled"


class Unavailable(FhirError):
    """A resource the answer depends on could not be reached in time (RFC 9110 section
    15.6.4): the request may be tried again."""

    status = 503
    code = "transient"


class ServerError(FhirError):
    status = 500
    code = "exception"


def status_of(error: BaseException) -> int:
    return error.status if isinstance(error, FhirError) else 500
