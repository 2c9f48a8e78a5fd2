"""The newest records of each $lastn group of one patient, read from the registry
and the latest months instead of the whole record (search/latest.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pymongo.errors import BulkWriteError, DuplicateKeyError

from ..search.buckets import BUCKET_FIELD, BUCKETED, REGISTRY
from ..search.keys import KEY_FIELD, lifted
from ..search.latest import (
    GROUPED,
    MARKER,
    complete_doc,
    group_doc,
    group_id,
    group_of,
    read_groups,
    recorded,
    registry_group,
    short,
)
from .records import Stored

if TYPE_CHECKING:
    from .repository import Repository

#: Newest first, as $lastn reads its candidates (latest effective time, then id).
ORDER = [("so.-date", -1), ("_id", 1)]
#: Buckets read newest first before the groups still short are read one by one...
WALK_BUCKETS = 12
#: ... or consecutive buckets that kept nothing (a crowded stay of one code, read by
#: day) once they have cost more than the groups left would one by one: a query
#: costs about as much as reading WASTE_PER_GROUP records.
IDLE_BUCKETS = 2
WASTE_PER_GROUP = 8
#: Groups left that are read one by one; more are read in one read of the record.
FEW_LEFT = 4
#: Records of a patient (as its months count them) that one query reads for less
#: than the registry, the walk and a group or two would cost.
WHOLE = 64
#: Records a group, for each of the ``max`` it keeps, below which the record is read
#: whole: the latest months fill the groups of codes measured that often.
PER_GROUP = 20


def newest_per_group(repo: Repository, rtype: str, query: dict[str, Any],
                     most: int) -> list[Stored] | None:
    """The ``most`` newest records of each group among one patient's records (``query``
    names the patient and nothing else, but for the caller's limits), or None when
    ``query`` is not pinned to one patient's records, or when the patient has so few,
    or so few a code, that reading them in one query costs less. Each group's
    records come together, newest first."""
    if rtype not in GROUPED or rtype not in BUCKETED or not repo.patient_walk(rtype, query):
        return None
    patient = lifted(rtype, query)["pat"]
    plan = BUCKETED[rtype] + ">"
    months = repo.months(rtype, patient, plan)
    if recorded(months.values()) <= WHOLE:
        return None
    groups = _groups(repo, rtype, patient)
    if recorded(months.values()) < PER_GROUP * most * len(groups):
        # Few records a code (a code measured yearly): the latest months would fill
        # few groups, and the record would be read whole after the walk.
        return None
    kept: dict[str, list[Stored]] = {}
    walked, idle, wasted = True, 0, 0
    for n, bucket in enumerate(repo.buckets(rtype, patient, plan, False, months=months)):
        unfilled = len(short(groups, kept, most))
        if n == WALK_BUCKETS or not unfilled or (idle >= IDLE_BUCKETS
                                                 and wasted >= WASTE_PER_GROUP * unfilled):
            walked = False
            break
        found = list(repo.iterate(rtype, {"$and": [query, {BUCKET_FIELD: plan + bucket}]},
                                  ORDER))
        if _offer(kept, iter(found), most):
            idle, wasted = 0, 0
        else:
            idle, wasted = idle + 1, wasted + len(found) + WASTE_PER_GROUP
    left = [] if walked else short(groups, kept, most)
    for key in left:
        kept[key] = []
    if len(left) > FEW_LEFT or any(groups[key] is None for key in left):
        # Many groups the latest months did not fill (codes measured long ago, groups
        # whose records were deleted or are hidden from the caller), or a code with
        # no coding: one read of the record, newest first, as without the registry.
        _offer(kept, repo.iterate(rtype, query, ORDER), most, frozenset(left))
        return [s for group in kept.values() for s in group]
    for key in left:
        # By its own key, newest first: a code measured years ago costs its own
        # records, not the patient's.
        chosen = {"$and": [query, {KEY_FIELD: groups[key]}]}
        first = repo.find(rtype, chosen, ORDER, most)
        # Not one the walk kept under its old code (an update ran meanwhile).
        seen = {s.id for room in kept.values() for s in room}
        ours = [s for s in first
                if group_id(group_of(s.resource or {})) == key and s.id not in seen]
        if len(first) < most or len(ours) == len(first):
            kept[key] = ours
        else:  # a longer code sharing the key's first characters, or one kept already
            _offer(kept, repo.iterate(rtype, chosen, ORDER), most, frozenset({key}))
    return [s for group in kept.values() for s in group]


def _offer(kept: dict[str, list[Stored]], found: Iterator[Stored], most: int,
           only: frozenset[str] | None = None) -> int:
    """Keep each record (newest first) while its group has room; with ``only``, just
    the records of those groups, stopping once they are full. Returns how many were
    kept."""
    added = 0
    # A record an update moved to an older bucket while the walk ran is met twice.
    seen = {s.id for room in kept.values() for s in room}
    for stored in found:
        key = group_id(group_of(stored.resource or {}))
        if (only is not None and key not in only) or stored.id in seen:
            continue
        seen.add(stored.id)
        room = kept.setdefault(key, [])
        if len(room) < most:
            room.append(stored)
            added += 1
        if only is not None and not short(only, kept, most):
            break
    return added


def _groups(repo: Repository, rtype: str, patient: str) -> dict[str, str | None]:
    """The patient's groups (by :func:`group_id`), each with the key that selects its
    records. Their codes stay in the database: a code may be megabytes long, and a
    reply the driver cannot take is a failed $lastn. A patient whose records were
    written before groups were registered has its record read once to register them."""
    registry = repo.db[REGISTRY]
    docs = list(registry.find({"g": registry_group(rtype, patient)}, {"t": 1, "done": 1}))
    groups, complete = read_groups(docs)
    if complete or repo.marked(MARKER):
        return groups
    found: dict[str, dict[str, Any]] = {}
    for stored, keys in repo.with_keys(rtype, {"pat": patient}):
        entry = group_doc(rtype, patient, group_of(stored.resource or {}),
                          [k for k in keys if k.startswith(GROUPED[rtype] + "=")])
        found.setdefault(entry["_id"], entry)
    _insert_new(registry, list(found.values()))
    with contextlib.suppress(DuplicateKeyError):
        registry.insert_one(complete_doc(rtype, patient))
    groups.update(read_groups(found.values())[0])
    return groups


def _insert_new(collection: Any, docs: Sequence[Mapping[str, Any]]) -> None:
    """Insert the documents not there yet (another request may register the same)."""
    if not docs:
        return
    try:
        collection.insert_many(list(docs), ordered=False)
    except BulkWriteError as exc:
        if any(e.get("code") != 11000 for e in exc.details.get("writeErrors", ())):
            raise
