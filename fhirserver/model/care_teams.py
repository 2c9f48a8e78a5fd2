"""The care team a patient's ``$care-team`` operation keeps, as a CareTeam resource
(R4 careteam.html), pure.

One CareTeam per patient, at an id the server derives from the patient's
(``care-team-<patient id>``), lists the members whose care relationship comes from
the team (auth/access.py): ``participant.member`` the Practitioner,
``participant.period.end`` when the membership ends with the organisation's own
care of the patient. The care relationships are the policy's index and the
resource is their record: both change together through ``$care-team``, so the ids
with the ``care-team-`` prefix are the server's and no REST write may change them
(a clinician writing themselves into one would otherwise appear on the team).
Other CareTeam resources are patient data like any other and open no access.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any, Final

PREFIX: Final = "care-team-"
#: A membership lasting this long or more is shown without an end (an operator's).
OPEN_ENDED_YEARS: Final = 50


def team_id(patient: str) -> str:
    """The CareTeam id of ``patient``'s team: ``care-team-<id>`` when that fits the
    64 characters of an id (datatypes.html#id), else a digest of the patient id."""
    rid = PREFIX + patient
    if len(rid) <= 64:
        return rid
    return PREFIX + hashlib.sha256(patient.encode()).hexdigest()[:40]


def is_managed(rtype: str, rid: str | None) -> bool:
    """Is this the id of a team the server keeps (not writable through REST)?"""
    return rtype == "CareTeam" and isinstance(rid, str) and rid.startswith(PREFIX)


def render(patient: str, members: list[tuple[str, datetime]], now: datetime) -> dict[str, Any]:
    """The CareTeam listing ``members`` (Practitioner reference, end of membership),
    the active ones only, ordered by reference."""
    participants: list[dict[str, Any]] = []
    for member, until in sorted(members):
        until = until if until.tzinfo else until.replace(tzinfo=UTC)
        if until <= now:
            continue
        entry: dict[str, Any] = {"member": {"reference": member}}
        if until.year - now.year < OPEN_ENDED_YEARS:
            entry["period"] = {"end": until.astimezone(UTC).isoformat(timespec="seconds")
                               .replace("+00:00", "Z")}
        participants.append(entry)
    team: dict[str, Any] = {"resourceType": "CareTeam", "id": team_id(patient),
                            "status": "active", "subject": {"reference": f"Patient/{patient}"}}
    if participants:
        team["participant"] = participants
    return team
