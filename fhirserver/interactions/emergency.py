"""Break the glass: a clinician's emergency access to one patient, with a reason,
for ``break_glass_minutes``, recorded as emergency access (DESIGN.md section 1)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from .. import errors
from ..auth.policy import Caller
from ..storage.indexing import instant
from .context import Context

EMERGENCIES = "_emergency_access"


def break_glass(ctx: Context, caller: Caller, pid: str, reason: str) -> dict[str, Any]:
    assert ctx.access is not None and caller.practitioner
    ctx.access.decision("Patient", "read")  # the token must allow reading patients at all
    stored = ctx.repo.get("Patient", pid)
    if stored is None or stored.deleted:
        raise errors.NotFound(f"Resource Patient/{pid} is not known")
    now = ctx.clock()
    until = now + timedelta(minutes=ctx.settings.break_glass_minutes)
    ctx.repo.db[EMERGENCIES].insert_one({
        "_id": uuid.uuid4().hex, "patient": pid, "by": caller.practitioner,
        "organization": caller.organization, "client": caller.client_id, "reason": reason,
        "at": now, "until": until,
    })
    # this request's own record is emergency access, even when it fails once the
    # emergency is stored (the relationship stays)
    ctx.access.opened_emergency(pid)
    ctx.open_care(caller.practitioner, stored, until, "break-glass", now=now,
                  emergency=True)
    return {"resourceType": "OperationOutcome", "issue": [{
        "severity": "warning", "code": "informational",
        "diagnostics": f"Emergency access to Patient/{pid} until {instant(until)}; "
                       "this access is recorded with its reason",
    }]}
