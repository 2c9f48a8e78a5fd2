"""IHE PIXm ``Patient/$ihe-pix`` (ITI-83, Mobile Patient Identifier Cross-reference
Query): one document number in, the same person's other identifiers out.

Answers as PIXm says: 400 for a malformed or unregistered ``sourceIdentifier``
system, 403 for an unregistered ``targetSystem``, 404 when no Patient holds the
source identifier, else a Parameters with ``targetIdentifier`` per identifier (of
the target systems, if given) and ``targetId`` for the Patient.

For a backend client every query is an identity look-up, counted against
``FHIR_LOOKUPS_PER_MINUTE`` (auth/lookup_rules.py); health card numbers are
answered only to the ``card-number`` scope, other callers get the other identifiers,
masked unless the caller sees that patient's numbers whole (auth/disclosure.py; the
answer is then labelled MASKED, security-labels.html).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .. import errors
from ..auth.lookup_rules import uses_lookup_exception
from ..crypto.fields import IDENTIFIER
from ..interactions.context import Context
from ..interactions.disclosure import identifier_for
from ..interactions.identity_lookups import caller_of, count_lookups, shown
from ..model.identifier_systems import Registry
from ..model.identity_numbers import InvalidNumber
from ..model.masking import labelled
from ..search.keys import key_condition


def parse_identifier(raw: str, registry: Registry, name: str) -> tuple[str, str]:
    """``system|value`` of a registered system, the value normalised."""
    system, sep, value = raw.partition("|")
    if not sep or not system or not value:
        raise errors.Invalid(f"'{name}' must be system|value", expression=name)
    found = registry.match(system)
    if found is None:
        raise errors.Invalid(f"'{name}': system '{system}' is not a registered identifier "
                             "system (see GET NamingSystem)", expression=name)
    try:
        return system, found.entry.check(value, found.parameter)
    except InvalidNumber as exc:
        raise errors.Invalid(f"'{name}': {exc}", expression=name) from exc


def has_identifier(resource: dict[str, Any] | None, system: str, value: str) -> bool:
    return any(i.get("system") == system and i.get("value") == value
               for i in (resource or {}).get("identifier") or ())


def holders(ctx: Context, system: str, value: str) -> list[str]:
    """Ids of the Patients holding ``system|value``: for a uniquely-identifying
    system the active holder by its claim only (one primary-key read; a merged
    Patient's numbers are claimed by the one it was merged into), else by search.

    A number nobody holds and one held by a Patient the caller may not see must
    cost the same work, so a unique number never falls back to a search."""
    found = ctx.registry.match(system)
    if found is not None and found.entry.unique:
        holder = ctx.repo.claim_holder(f"{system}|{value}")
        return [holder] if holder else []
    if found is not None:  # an identity number: the database holds its blind index
        value = ctx.repo.protection.blinder.value(IDENTIFIER, value)
    return ctx.repo.find_ids("Patient", key_condition("identifier", f"{system}|{value}"), limit=10)


def ihe_pix(ctx: Context, params: Sequence[tuple[str, str]],
            note: Callable[[str], None] | None = None) -> dict[str, Any]:
    sources = [v for k, v in params if k == "sourceIdentifier"]
    if len(sources) != 1:
        raise errors.Invalid("Exactly one 'sourceIdentifier' (system|value) is required",
                             expression="sourceIdentifier")
    registry = ctx.registry
    system, value = parse_identifier(sources[0], registry, "sourceIdentifier")
    targets = [v for k, v in params if k == "targetSystem"]
    for target in targets:
        if registry.match(target) is None:
            raise errors.Forbidden(f"targetSystem '{target}' is not a registered identifier system",
                                   expression="targetSystem")
    caller = caller_of(ctx)
    beyond = uses_lookup_exception(caller)
    if beyond:
        # Backend clients look patients up by identifier, counted; others only whom
        # they treat.
        count_lookups(ctx, "$ihe-pix", note)
    ids = holders(ctx, system, value)
    patients = [p for p in ctx.repo.get_many("Patient", ids).values()
                if not p.deleted and has_identifier(p.resource, system, value)]
    if caller is not None and caller.kind != "operator" and not beyond:
        if not ids:  # the same round trips as for a holder hidden from the caller
            ctx.repo.get("Patient", f"absent-{value}")
            ctx.probe_absent("Patient", f"absent-{value}")
        patients = [p for p in patients if ctx.visible(p)]
    if not patients:
        raise errors.NotFound(f"No Patient holds identifier {system}|{value}")
    out: list[dict[str, Any]] = []
    any_masked = False
    for stored in patients:
        for ident in shown(ctx, stored.resource or {}).get("identifier") or ():
            same = ident.get("system") == system and ident.get("value") == value
            if not same and (not targets or ident.get("system") in targets):
                given = identifier_for(ctx, stored.id, ident)
                any_masked = any_masked or given is not ident
                out.append({"name": "targetIdentifier", "valueIdentifier": given})
        out.append({"name": "targetId", "valueReference": {"reference": stored.reference}})
    answer = {"resourceType": "Parameters", "parameter": out}
    return labelled(answer) if any_masked else answer
