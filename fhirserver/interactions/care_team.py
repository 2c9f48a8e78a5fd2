"""``Patient/{id}/$care-team``: the patient's care team, kept as a CareTeam resource
(model/care_teams.py) next to the care relationships it gives (auth/access.py).

Membership changes the relationship first (what the policy reads), then the
resource; reading the operation brings the resource up to date when a membership
has ended since it was last written (or when the team predates the resource), so
``GET CareTeam/<id>`` and the operation show the same team.
"""

from __future__ import annotations

from ..auth import access as care
from ..model.care_teams import render
from ..storage.records import Stored
from . import write
from .context import Context, Planner, run_single


def care_team(ctx: Context, patient: str, *, member: str | None = None, remove: bool = False,
              organization: str | None = None) -> Stored:
    """The patient's team after adding (or, with ``remove``, taking off) ``member``;
    ``organization`` None: an operator's change. The caller's rights have been
    checked by the operation."""
    if member is not None:
        care.set_team_member(ctx.repo.db, patient, member, ctx.clock(), remove=remove,
                             organization=organization)
    now = ctx.clock()
    wanted = render(patient, care.team(ctx.repo.db, patient, now), now)

    def plan(planner: Planner) -> Stored:
        # A server write: the resource mirrors the relationships just checked.
        result = write.update(planner, "CareTeam", wanted["id"], wanted, server=True)
        assert result.stored is not None
        return result.stored

    stored = run_single(ctx, plan)
    ctx.touch(stored.resource)
    return stored
