"""Minimum disclosure of identity numbers, applied to what leaves for a caller.

Every answer body passes through :func:`disclosed` on its way out (``api/
negotiation.render``): a resource, and each resource of a Bundle (searchset,
history, transaction and batch responses, nested ones included) or of a
Parameters' ``resource`` parts, is masked for its own patient as
``auth/disclosure.py`` decides, and labelled MASKED (R4 security-labels.html).
Identifiers an operation builds into Parameters values itself (``$ihe-pix``) are
masked by that operation with :func:`identifier_for`. ``meta.versionId`` and the
ETag stay those of the stored version: the masked resource is a view of it.
"""

from __future__ import annotations

from typing import Any

from ..auth.disclosure import kept_whole, sees_whole
from ..auth.policy import Caller
from ..model.masking import mask, masked
from ..model.references import parse_reference
from ..storage.indexing import patient_of
from .context import Context
from .identity_lookups import card_system

#: answers that are about the request, not a record: never walked
_NOT_RECORDS = frozenset({"OperationOutcome", "CapabilityStatement", "Parameters", "Bundle"})


def record_of(resource: dict[str, Any]) -> str | None:
    """Whose record ``resource`` is: its compartment, and for a RelatedPerson (a
    family binding's answer) the patient it is related to."""
    if resource.get("resourceType") == "RelatedPerson":
        ref = (resource.get("patient") or {}).get("reference")
        local = parse_reference(ref) if isinstance(ref, str) else None
        return local.id if local is not None and local.type == "Patient" else None
    return patient_of(resource)


class _View:
    """One answer's facts: the caller, whom they reach, what stays whole."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.caller: Caller | None = ctx.access.caller if ctx.access is not None else None
        self._reach: frozenset[str] | None | bool = False
        self.keep = kept_whole(self.caller, card_system(ctx))

    def reach(self) -> frozenset[str] | None:
        if self._reach is False:
            self._reach = self.ctx.access.reachable() if self.ctx.access is not None else None
        return self._reach  # type: ignore[return-value]

    def whole(self, patient: str | None) -> bool:
        caller = self.caller
        reach = self.reach() if caller is not None and caller.kind == "patient" else None
        return sees_whole(caller, patient, reach)

    def resource(self, resource: dict[str, Any]) -> dict[str, Any]:
        kind = resource.get("resourceType")
        if kind == "Bundle":
            return self._bundle(resource)
        if kind == "Parameters":
            return self._parameters(resource)
        if not isinstance(kind, str) or kind in _NOT_RECORDS or self.whole(record_of(resource)):
            return resource
        return masked(resource, self.ctx.registry, self.keep)[0]

    def _bundle(self, bundle: dict[str, Any]) -> dict[str, Any]:
        entries = bundle.get("entry")
        if not isinstance(entries, list):
            return bundle
        out = [self._entry(e) for e in entries]
        if all(a is b for a, b in zip(out, entries, strict=True)):
            return bundle
        return {**bundle, "entry": out}

    def _entry(self, entry: Any) -> Any:
        if not isinstance(entry, dict) or not isinstance(entry.get("resource"), dict):
            return entry
        shown = self.resource(entry["resource"])
        return entry if shown is entry["resource"] else {**entry, "resource": shown}

    def _parameters(self, parameters: dict[str, Any]) -> dict[str, Any]:
        params = parameters.get("parameter")
        if not isinstance(params, list):
            return parameters
        out = [self._parameter(p) for p in params]
        if all(a is b for a, b in zip(out, params, strict=True)):
            return parameters
        return {**parameters, "parameter": out}

    def _parameter(self, param: Any) -> Any:
        if not isinstance(param, dict):
            return param
        out = self._entry(param)
        parts = param.get("part")
        if isinstance(parts, list):
            new_parts = [self._parameter(p) for p in parts]
            if any(a is not b for a, b in zip(new_parts, parts, strict=True)):
                out = {**out, "part": new_parts}
        return out


def disclosed(ctx: Context, body: dict[str, Any]) -> dict[str, Any]:
    """``body`` as the caller may see it: identity numbers masked where their access
    does not need them whole. Unchanged (the same object) when nothing is masked."""
    if ctx.access is None or ctx.access.caller is None or ctx.access.caller.kind == "operator":
        return body
    return _View(ctx).resource(body)


def identifier_for(ctx: Context, patient: str | None,
                   identifier: dict[str, Any]) -> dict[str, Any]:
    """One Identifier of ``patient``'s, as the caller may see it (masked or whole)."""
    view = _View(ctx)
    system, value = identifier.get("system"), identifier.get("value")
    if not isinstance(system, str) or not isinstance(value, str) or system in view.keep \
            or view.whole(patient):
        return identifier
    found = ctx.registry.match(system)
    return {**identifier, "value": mask(value, found.entry)} if found is not None else identifier


def sees_whole_of(ctx: Context, patient: str | None) -> tuple[bool, frozenset[str]]:
    """Does the caller see ``patient``'s identity numbers whole; and the systems
    whose numbers they see whole in any case (``kept_whole``)."""
    if ctx.access is None or ctx.access.caller is None or ctx.access.caller.kind == "operator":
        return True, frozenset()
    view = _View(ctx)
    return view.whole(patient), view.keep
