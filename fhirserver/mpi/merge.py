"""``Patient/$merge`` (the R5 operation, patient-operation-merge.html, on R4): fold a
duplicate Patient found later into the one that stays.

In one unit of work (all or nothing): the source becomes inactive with a
``replaced-by`` link, the target gains a ``replaces`` link and the source's
identifiers it lacks (as ``use: old``), and every Observation and DiagnosticReport
pointing at the source is re-pointed to the target. The source stays readable,
so references to it keep resolving. The source is written first: it gives up its
unique identifiers before the target takes them.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from .. import errors
from ..interactions import write
from ..interactions.context import Context, Planner, run_single
from ..model.references import parse_reference, rewrite_references

MEMBER_TYPES = ("Observation", "DiagnosticReport")


def _patient_id(raw: str | None, name: str) -> str:
    if not raw:
        raise errors.Invalid(f"Parameter '{name}' (a Patient reference) is required", expression=name)
    local = parse_reference(raw)
    if local is None or local.type != "Patient":
        raise errors.Invalid(f"'{name}' must reference a Patient, not '{raw}'", expression=name)
    return local.id


def _links(patient: dict[str, Any], other: str, kind: str) -> list[dict[str, Any]]:
    links = [lk for lk in patient.get("link") or ()
             if lk.get("other", {}).get("reference") != f"Patient/{other}"]
    return [*links, {"other": {"reference": f"Patient/{other}"}, "type": kind}]


def plan_merge(planner: Planner, source_id: str, target_id: str) -> dict[str, Any]:
    if source_id == target_id:
        raise errors.Invalid("source-patient and target-patient are the same Patient",
                             expression="source-patient")
    source = planner.current("Patient", source_id)
    target = planner.current("Patient", target_id)
    # What the caller may not see does not exist for the merge either.
    source = source if source is None or planner.ctx.visible(source) else None
    target = target if target is None or planner.ctx.visible(target) else None
    for stored, name, rid in ((source, "source-patient", source_id), (target, "target-patient", target_id)):
        if stored is None or stored.deleted:
            raise errors.NotFound(f"{name} Patient/{rid} does not exist", expression=name)
    src, tgt = copy.deepcopy(source.resource or {}), copy.deepcopy(target.resource or {})  # type: ignore[union-attr]
    if src.get("active") is False and any(lk.get("type") == "replaced-by" for lk in src.get("link") or ()):
        raise errors.Unprocessable(f"Patient/{source_id} has already been merged",
                                   expression="source-patient")
    if tgt.get("active") is False:
        raise errors.Unprocessable(f"Patient/{target_id} is inactive and cannot receive a merge",
                                   expression="target-patient")

    src["active"] = False
    src["link"] = _links(src, target_id, "replaced-by")
    write.update(planner, "Patient", source_id, src)

    have = {(i.get("system"), i.get("value")) for i in tgt.get("identifier") or ()}
    moved = [{**i, "use": "old"} for i in src.get("identifier") or ()
             if (i.get("system"), i.get("value")) not in have]
    if moved:
        tgt["identifier"] = [*(tgt.get("identifier") or ()), *moved]
    tgt["link"] = _links(tgt, source_id, "replaces")
    result = write.update(planner, "Patient", target_id, tgt)

    old, new = f"Patient/{source_id}", f"Patient/{target_id}"

    def repoint(ref: str) -> str | None:
        local = parse_reference(ref)
        return new if local is not None and f"{local.type}/{local.id}" == old else None

    moved_records = 0
    for rtype in MEMBER_TYPES:
        # Every record of the source moves, those hidden from the caller too (or
        # the merge would be partial), and none is named in an answer.
        for stored in planner.repo.find(rtype, {"refs": old}):
            body = rewrite_references(stored.resource or {}, repoint)
            write.update(planner, rtype, stored.id, body, server=True)
            moved_records += 1
    return {"target": result, "records": moved_records, "identifiers": len(moved)}


def merge(ctx: Context, params: Sequence[tuple[str, str]]) -> dict[str, Any]:
    if not ctx.registrar:
        raise errors.Forbidden("Merging patients is registration's work: it needs the "
                               "'registration' scope")
    args: dict[str, str] = {}
    for k, v in params:
        if k in args:
            raise errors.Invalid(f"Parameter '{k}' given twice", expression=k)
        args[k] = v
    source_id = _patient_id(args.get("source-patient"), "source-patient")
    target_id = _patient_id(args.get("target-patient"), "target-patient")
    preview = args.get("preview", "false") == "true"
    if preview:
        done = plan_merge(Planner(ctx), source_id, target_id)  # planned, never committed
    else:
        done = run_single(ctx, lambda p: plan_merge(p, source_id, target_id))
    target = ctx.repo.get("Patient", target_id) if not preview else None
    outcome = errors.information(
        f"{'Would merge' if preview else 'Merged'} Patient/{source_id} into Patient/{target_id}: "
        f"{done['records']} records re-pointed, {done['identifiers']} identifiers copied")
    out = [
        {"name": "input", "resource": {"resourceType": "Parameters", "parameter": [
            {"name": "source-patient", "valueReference": {"reference": f"Patient/{source_id}"}},
            {"name": "target-patient", "valueReference": {"reference": f"Patient/{target_id}"}},
        ]}},
        {"name": "outcome", "resource": outcome},
    ]
    if target is not None:
        out.append({"name": "result", "resource": target.resource})
    return {"resourceType": "Parameters", "parameter": out}
