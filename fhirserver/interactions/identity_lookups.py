"""Identity look-ups within a request: marking and counting them, and what a Patient
shows through one. The rules are ``auth/lookup_rules.py``, the counting
``auth/lookups.py``; the look-ups themselves are a Patient search by identifier
(:mod:`.search`), ``$ihe-pix`` and ``$match`` (``mpi/``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..auth import lookups
from ..auth.lookup_rules import sees_card_numbers, without_systems
from ..auth.policy import Caller
from ..model.identifier_systems import HEALTH_CARD_KEY
from .context import Context

#: what an identity look-up leaves in the audit record (never the number asked)
LOOKUP_NOTE = "identity look-up"
#: the registry key of the identifier system health card numbers are issued in
CARD_SYSTEM_KEY = HEALTH_CARD_KEY


def card_system(ctx: Context) -> str:
    return ctx.registry.by_key(CARD_SYSTEM_KEY).system


def caller_of(ctx: Context) -> Caller | None:
    return ctx.access.caller if ctx.access else None


def count_lookups(ctx: Context, what: str, note: Callable[[str], None] | None,
                  cost: int = 1) -> None:
    """Mark the request as an identity look-up (``what`` says which, for the audit
    record) and count ``cost`` of them for the caller's client (429 past the limit)."""
    caller = caller_of(ctx)
    if caller is None or cost <= 0:
        return
    if note is not None:
        note(f"{LOOKUP_NOTE}: {what}")
    lookups.spend(ctx.repo.db, caller, ctx.clock(), ctx.settings.lookups_per_minute, cost)


def shown(ctx: Context, resource: dict[str, Any]) -> dict[str, Any]:
    """A Patient as an identity look-up may show it: without its health card
    numbers unless the caller holds the ``card-number`` scope."""
    if sees_card_numbers(caller_of(ctx)):
        return resource
    return without_systems(resource, frozenset({card_system(ctx)}))
