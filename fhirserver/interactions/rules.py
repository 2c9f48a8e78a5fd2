"""Checks every write makes before it is planned: validity, preconditions, references."""

from __future__ import annotations

import re
from typing import Any

from .. import errors
from ..model import groups
from ..model.nesting import check_depth
from ..model.references import (
    iter_references,
    malformed_local,
    parse_reference,
    rewrite_references,
)
from ..model.types import DIRECTORY_TYPES, SUPPORTED_TYPES
from ..model.validation import validate_resource
from ..mpi.patients import check_patient
from ..search.results import whole_number
from ..storage.limits import MAX_DOCUMENT_BYTES, resource_bytes
from ..storage.records import Stored
from . import integrity
from .context import Context, Planner

_ETAG = re.compile(r'^\s*(?:W/"([0-9]{1,18})"|"([0-9]{1,18})"|([0-9]{1,18}))\s*$')


def version_of_etag(value: object) -> int:
    """The version an If-Match header names: W/"3", "3" or 3 (http.html#concurrency)."""
    m = _ETAG.match(value) if isinstance(value, str) else None
    if not m:
        raise errors.Invalid(f"If-Match value {str(value)[:60]!r} is not a version ETag such "
                             "as W/\"1\"")
    return int(next(g for g in m.groups() if g is not None))


def check_if_match(if_match: str | None, current: Stored | None, label: str) -> None:
    """412 when the client's version is not the current one (http.html#concurrency);
    an If-Match sent empty names no version (400), as one that is not an ETag."""
    if if_match is None:
        return
    wanted = version_of_etag(if_match)
    if current is None or current.deleted or current.version != wanted:
        have = "no current version" if current is None or current.deleted else (
            f"current version {current.version}"
        )
        raise errors.PreconditionFailed(
            f"If-Match W/\"{wanted}\" does not match {label}: it has {have}"
        )


def validate(body: Any, rtype: str, ctx: Context) -> dict[str, Any]:
    """The resource to store: valid, with absolute references to this server made relative,
    and for a Patient, its registered identifiers normalised and checked
    (:func:`fhirserver.mpi.patients.check_patient`).

    A reference to ``{base}/Patient/1`` names the same resource as ``Patient/1``
    (references.html#literal); storing the relative form keeps it resolving when the
    server's public address changes, and makes it match ``subject=Patient/1``
    searches and referential-integrity checks (HAPI treats its base as local too).
    """
    check_depth(body, ctx.settings.max_json_depth, "The resource")  # before walking it
    size = resource_bytes(body) if isinstance(body, dict) else None
    if size is not None and size > MAX_DOCUMENT_BYTES:  # before validating and indexing it
        raise errors.TooLarge(f"The resource takes {size:,} bytes stored; this server stores "
                              f"at most {MAX_DOCUMENT_BYTES:,} per resource", expression=rtype)
    validate_resource(body, expected_type=rtype)
    assert isinstance(body, dict)
    if rtype == "Patient":
        body = check_patient(body, ctx.registry)
    if rtype == groups.GROUP and (found := groups.problems(body, ctx.base_url)):
        raise errors.Unprocessable(issues=found)
    base = ctx.base_url.rstrip("/")
    if not base:
        return body

    def localise(ref: str) -> str | None:
        if not ref.startswith(base + "/"):
            return None
        local = parse_reference(ref, base)
        if local is None:
            return None
        suffix = f"/_history/{local.version}" if local.version else ""
        return f"{local.type}/{local.id}{suffix}"

    return rewrite_references(body, localise)


def check_references(planner: Planner, resource: dict[str, Any]) -> None:
    """Local references to the types we store must resolve (422 otherwise).

    References to other types, to other servers and to contained resources are
    kept as given. So are references to the clinician directory (a performer, an
    author, a team member): a hospital's result names its clinician whether or not
    registration has entered them yet, and only registration can. A versioned
    reference must name an existing version.

    A Group's members are checked only where the writer may read the patient: for
    any other, "no such patient" would tell a stranger organisation which patients
    exist, so they are kept as given, exist or not (an export reports them).
    """
    problems: list[errors.Issue] = []
    base = planner.ctx.base_url
    reach = _readable_patients(planner.ctx)
    for path, ref in iter_references(resource):
        local = parse_reference(ref, base)
        if local is None and (meant := malformed_local(ref, base)) in SUPPORTED_TYPES:
            # Stored as given, it would name nothing, in no patient's compartment.
            problems.append(errors.Issue(
                f"Reference '{ref[:200]}' is not a valid {meant} reference: the form is "
                f"{meant}/[id], an id being 1-64 letters, digits, '-' and '.'",
                code="invalid", expression=(path,)))
            continue
        if local is None or local.type not in SUPPORTED_TYPES or local.type in DIRECTORY_TYPES:
            continue
        if groups.is_member_path(path) and reach is not None and local.id not in reach:
            continue
        version = whole_number(local.version) if local.version is not None else None
        if local.version is not None and version is None:
            ok = False  # this server's version ids are integers
        else:
            ok = planner.resolves(local.type, local.id, version)
        if ok and planner.pending(local.type, local.id) is None \
                and not groups.is_member_path(path):
            integrity.refer(planner, f"{local.type}/{local.id}", path)
        if not ok:
            problems.append(
                errors.Issue(
                    f"Reference '{ref}' does not resolve to an existing resource",
                    code="not-found",
                    expression=(path,),
                )
            )
    if problems:
        raise errors.Unprocessable(issues=problems)


def _readable_patients(ctx: Context) -> frozenset[str] | None:
    """The patients whose Patient the caller may read (None: all; none without a
    scope to read Patients)."""
    if ctx.access is None:
        return None
    try:
        return ctx.access.decision("Patient", "read").patients
    except errors.Forbidden:
        return frozenset()
