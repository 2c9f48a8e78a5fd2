"""Importing groups of resources through the same write path as the REST API.

Each resource is written as an update at a stable id (its own id, else the uuid of
its ``urn:uuid:`` fullUrl, else a uuid derived from its content), so importing the
same files twice creates nothing new: unchanged content makes no new version.
References between entries (``urn:uuid:``) are rewritten to ``Type/id``, including
references to types this server does not store (kept as given, in that form).
A group (one Bundle, or a chunk of NDJSON) is committed all or nothing.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .. import errors
from ..interactions import write
from ..interactions.context import Context, Planner
from ..model.references import rewrite_references
from ..model.types import SUPPORTED_TYPES, is_valid_id
from ..storage.indexing import blinded_hash, patient_of
from ..storage.protection import Protection
from ..storage.unit_of_work import VersionConflict
from .reader import SourceEntry


@dataclass
class ImportStats:
    created: Counter[str] = field(default_factory=Counter)
    updated: Counter[str] = field(default_factory=Counter)
    unchanged: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    @property
    def written(self) -> int:
        return sum(self.created.values()) + sum(self.updated.values())

    @property
    def kept(self) -> int:
        return self.written + sum(self.unchanged.values())

    def add(self, other: ImportStats) -> None:
        for name in ("created", "updated", "unchanged", "rejected", "dropped"):
            getattr(self, name).update(getattr(other, name))
        self.problems += other.problems


def stable_id(entry: SourceEntry, protection: Protection) -> str:
    """The entry's id, else one derived from its content (the same on every import of
    the file), through the blinded form: an id is no hash of an identity number."""
    rid = entry.resource.get("id")
    if isinstance(rid, str) and is_valid_id(rid):
        return rid
    if entry.request_url and "/" in entry.request_url and "?" not in entry.request_url:
        candidate = entry.request_url.rstrip("/").split("/")[-1]
        if is_valid_id(candidate):
            return candidate
    if entry.full_url and entry.full_url.startswith("urn:uuid:"):
        candidate = entry.full_url.removeprefix("urn:uuid:")
        if is_valid_id(candidate):
            return candidate
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "fhirserver:" + blinded_hash(protection, entry.resource)))


@dataclass
class GroupPlan:
    """A group's entries sorted out before anything is written."""

    kept: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    #: fullUrl -> "Type/id", for references between the group's entries
    mapping: dict[str, str] = field(default_factory=dict)
    dropped: Counter[str] = field(default_factory=Counter)
    repeated: list[tuple[str, str]] = field(default_factory=list)


def plan_group(entries: Iterable[SourceEntry], protection: Protection) -> GroupPlan:
    """Each entry's type and stable id; the types not stored here dropped, and an id
    seen twice kept once (the first)."""
    plan = GroupPlan()
    seen: set[tuple[str, str]] = set()
    for entry in entries:
        rtype = str(entry.resource.get("resourceType", "(none)"))
        rid = stable_id(entry, protection)
        if entry.full_url:
            plan.mapping[entry.full_url] = f"{rtype}/{rid}"
        if rtype not in SUPPORTED_TYPES:
            plan.dropped[rtype] += 1
        elif (rtype, rid) in seen:
            plan.repeated.append((rtype, rid))
        else:
            seen.add((rtype, rid))
            plan.kept.append((rtype, rid, entry.resource))
    return plan


class Contended(Exception):
    """The group met a concurrent write of the same record or identifier; nothing of
    it was written, and writing it again may succeed."""


def import_group(ctx: Context, entries: Iterable[SourceEntry], stats: ImportStats,
                 source: str = "", *, contended: bool = False, presume: bool = False) -> None:
    """Write one group all or nothing. ``contended``: raise :class:`Contended` when
    the commit meets a concurrent write (other processes import side by side),
    instead of reporting the group as not imported. ``presume``: plan the records of
    patients with none recorded as creates without reading them by id; a record that
    exists all the same makes the commit contended (``Planner.presume_absent``)."""
    plan = plan_group(entries, ctx.repo.protection)
    stats.dropped.update(plan.dropped)
    for rtype, rid in plan.repeated:
        stats.problems.append(f"{source}: {rtype}/{rid} appears twice; first kept")
        stats.rejected[rtype] += 1
    mapping = plan.mapping
    kept = [(rtype, rid, {**rewrite_references(resource, mapping.get), "id": rid})
            for rtype, rid, resource in plan.kept]
    if not kept:
        return
    planner = Planner(ctx)
    for rtype in SUPPORTED_TYPES:
        ids = [rid for t, rid, _ in kept if t == rtype]
        if presume and ids:
            owners = {rid: patient_of(resource) for t, rid, resource in kept if t == rtype}
            free = ctx.repo.unrecorded_patients(rtype, (p for p in owners.values() if p))
            planner.presume_absent(rtype, (rid for rid in ids if owners[rid] in free))
            ids = [rid for rid in ids if owners[rid] not in free]
        if ids:
            planner.prefetch(rtype, ids)
    outcome: list[tuple[str, str]] = []
    for rtype, rid, resource in kept:
        try:
            result = write.update(planner, rtype, rid, resource)
        except errors.FhirError as err:
            stats.rejected[rtype] += 1
            stats.problems.append(f"{source}: {rtype}/{rid}: {err.message}")
            continue
        if planner.pending(rtype, rid) is None:
            outcome.append((rtype, "unchanged"))
        else:
            outcome.append((rtype, "created" if result.status == 201 else "updated"))
    try:
        planner.commit()
    except (errors.FhirError, VersionConflict) as err:
        if contended and (isinstance(err, VersionConflict) or err.details == "identifier-taken"):
            raise Contended(str(err)) from err
        for rtype, _ in outcome:
            stats.rejected[rtype] += 1
        stats.problems.append(f"{source}: not imported: {err}")
        return
    for rtype, what in outcome:
        getattr(stats, what)[rtype] += 1
