"""A clinician's account and the clinician directory (practitioner.html,
practitionerrole.html): the Practitioner a token's ``fhirUser`` names, and the
PractitionerRole that says they work for the organisation the token acts for.

An account made on a Practitioner the server does not hold would carry a
``fhirUser`` that reads 404 (SMART App Launch: ``fhirUser`` is a resource the app
can read), so ``fhirserver users add`` checks it here; the role is found, or made
once at an id derived from the pair, so adding the account again changes nothing.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from ..model.types import is_valid_id
from ..model.validation import validate_resource
from ..search.compile import compile_filter
from ..search.parse import parse_query
from ..storage.indexing import make_write
from ..storage.unit_of_work import VersionConflict

if TYPE_CHECKING:
    from ..storage.repository import Repository


def problem(repo: Repository, reference: str, rtype: str) -> str | None:
    """What is wrong with ``reference`` as a ``rtype`` this server holds, or None."""
    kind, _, rid = reference.partition("/")
    if kind != rtype or not is_valid_id(rid):
        return f"use {rtype}/<id>"
    stored = repo.get(rtype, rid)
    if stored is None or stored.deleted:
        gone = " (it was deleted)" if stored is not None else ""
        return f"no {reference} on this server{gone}: create or import it first"
    return None


def role_for(repo: Repository, practitioner: str, organization: str) -> str:
    """The id of an active PractitionerRole tying ``practitioner`` to
    ``organization``: an existing one, else one made now."""
    query = parse_query("PractitionerRole", [("practitioner", practitioner),
                                             ("organization", organization)], tz=repo.tz)
    for stored in repo.iterate("PractitionerRole", compile_filter(query), [("_id", 1)]):
        if (stored.resource or {}).get("active", True):
            return stored.id
    rid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"fhirserver:role:{practitioner}|{organization}"))
    role = {"resourceType": "PractitionerRole", "active": True,
            "practitioner": {"reference": practitioner},
            "organization": {"reference": organization}}
    validate_resource(role, "PractitionerRole")
    current = repo.get("PractitionerRole", rid)
    version = current.version + 1 if current is not None else 1
    try:
        repo.commit([make_write("PractitionerRole", rid, {**role, "id": rid}, version=version,
                                expected=current.version if current else None, method="PUT",
                                tz=repo.tz, protection=repo.protection)])
    except VersionConflict:
        pass  # made at the same moment by another command: the same role
    return rid
