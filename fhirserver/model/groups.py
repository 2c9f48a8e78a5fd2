"""A Group of patients (R4 group.html), as this server keeps it, pure.

A Group here lists patients: it is what Group-level Bulk Data export
(export.html, "Endpoint - Group of Patients") exports the compartments of. So its
``member.entity`` references must name Patients on this server (``Patient/<id>``,
or an absolute URL under the server's base) and its ``type`` is ``person``. Other
kinds of group (devices, practitioners, medications) are not stored.

A member whose ``inactive`` is true has left the group (group.html:
"A flag to indicate that the member is no longer in the group") and is not
exported.
"""

from __future__ import annotations

from typing import Any, Final

from .. import errors
from .references import parse_reference

GROUP: Final = "Group"


def problems(resource: dict[str, Any], base_url: str = "") -> list[errors.Issue]:
    """What makes ``resource`` no Group of patients: each as an issue naming the
    element (FHIRPath)."""
    found: list[errors.Issue] = []
    if resource.get("type") != "person":
        found.append(errors.Issue(
            f"This server keeps groups of patients: Group.type must be 'person', not "
            f"{resource.get('type')!r}", code="not-supported", expression=("Group.type",)))
    for i, member in enumerate(resource.get("member") or []):
        entity = member.get("entity") if isinstance(member, dict) else None
        ref = entity.get("reference") if isinstance(entity, dict) else None
        local = parse_reference(ref, base_url) if isinstance(ref, str) else None
        if local is None or local.type != "Patient" or local.version is not None:
            found.append(errors.Issue(
                f"A member must be a Patient on this server (Patient/<id>), not {ref!r}",
                code="value", expression=(f"Group.member[{i}].entity.reference",)))
    return found


def member_ids(resource: dict[str, Any] | None) -> list[str]:
    """The ids of the group's current members (inactive ones left out), in order,
    once each."""
    out: list[str] = []
    for member in (resource or {}).get("member") or []:
        if not isinstance(member, dict) or member.get("inactive") is True:
            continue
        ref = (member.get("entity") or {}).get("reference")
        local = parse_reference(ref) if isinstance(ref, str) else None
        if local is not None and local.type == "Patient" and local.id not in out:
            out.append(local.id)
    return out


def is_member_path(path: str) -> bool:
    """Is ``path`` (from :func:`..references.iter_references`) a member's entity?"""
    return path.startswith("Group.member[") and path.endswith("].entity.reference")
