"""The groups of ``Observation/$lastn``, registered so that it need not read a whole record.

$lastn (R4 observation-operation-lastn.html) returns the newest ``max`` records of
each code of a patient. Read newest first, a patient's frequent codes fill their
groups within the latest months, but a code measured once, years ago, is only
found at the end: without knowing which codes a patient has, the operation has to
read every record of the patient. So every write of a grouped record registers its
group (the patient's subject reference and its code) in the month registry, as
months are registered (search/buckets.py): before the record, never removed. A
$lastn then reads the patient's groups (one query), the latest months until every
group is full, and each group still short of ``max`` by its own code key.

Records written before groups were registered are found by reading the patient's
record once, which registers its groups and marks them complete (:func:`complete_doc`);
a database created by a version that registers them is complete throughout
(``code-groups`` in the schema collection).

Pure: values in, keys and documents out.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .buckets import DENSE, by_day
from .text import fold, token

#: The types whose records $lastn groups, and the parameter it groups them by.
GROUPED = {"Observation": "code"}
#: The schema marker of a database whose every grouped record registered its group.
MARKER = "code-groups"
#: The records a month registered without a count is taken to hold...
UNCOUNTED = 16
#: ... and a month read by day, whose count stops near DENSE.
CROWDED = 8 * DENSE

GroupKey = tuple[str, tuple[str, ...]]  # (subject reference, codes)


def codes(resource: Mapping[str, Any]) -> tuple[str, ...]:
    """The code an Observation is grouped by: its codings as escaped ``system|code``
    tokens, so that a ``|`` inside a system or code does not make two codes one; its
    text when it has no coding."""
    code = resource.get("code") or {}
    codings = sorted({
        token(c.get("system") if isinstance(c.get("system"), str) else None, c["code"])
        for c in code.get("coding") or ()
        if isinstance(c, dict) and isinstance(c.get("code"), str)
    })
    if codings:
        return tuple(codings)
    return (fold(code.get("text", "")),) if isinstance(code.get("text"), str) else ()


def group_of(resource: Mapping[str, Any]) -> GroupKey:
    """The $lastn group of a record: one patient (as its subject names it) and one code."""
    subject = (resource.get("subject") or {}).get("reference", "")
    return (subject if isinstance(subject, str) else "", codes(resource))


def registry_group(rtype: str, patient: str) -> str:
    """The registry group holding one patient's $lastn groups (beside its months)."""
    return f"{rtype}|{patient}|{GROUPED[rtype]}"


def group_id(key: GroupKey) -> str:
    """The digest that names a group: its codes may be as long as a code may be (an
    index entry may not, and a $lastn reads a patient's groups without their codes)."""
    return hashlib.sha256(json.dumps([key[0], *key[1]]).encode()).hexdigest()


def group_doc(rtype: str, patient: str, key: GroupKey,
              code_keys: Iterable[str]) -> dict[str, Any]:
    """The registry document of one group. ``t``: a key (``k``) every record of the
    group has, which selects its records; None when its code has no coding (a text)."""
    g = registry_group(rtype, patient)
    chosen = min(code_keys, default=None)
    return {"_id": f"{g}|{group_id(key)}", "g": g, "s": key[0], "c": list(key[1]),
            "t": chosen}


def complete_doc(rtype: str, patient: str) -> dict[str, Any]:
    """The registry document saying that every group of ``patient`` is registered."""
    g = registry_group(rtype, patient)
    return {"_id": f"{g}*", "g": g, "done": True}


def read_groups(docs: Iterable[Mapping[str, Any]]) -> tuple[dict[str, str | None], bool]:
    """The groups a patient's registry documents list, by :func:`group_id` (read
    without their codes), each with its selecting key, and whether they are all of
    the patient's groups."""
    groups: dict[str, str | None] = {}
    complete = False
    for doc in docs:
        if doc.get("done"):
            complete = True
        elif "t" in doc and isinstance(doc.get("_id"), str) and "|" in doc["_id"]:
            groups[doc["_id"].rsplit("|", 1)[1]] = doc["t"] if isinstance(doc["t"], str) \
                else None
    return groups, complete


def short(groups: Iterable[str], kept: Mapping[str, Sequence[Any]], most: int) -> list[str]:
    """The groups that hold fewer than ``most`` records so far."""
    return [key for key in groups if len(kept.get(key, ())) < most]


def recorded(months: Iterable[Mapping[str, Any]]) -> int:
    """About how many records a patient has, from its months' registry documents: the
    creates each month counts, :data:`CROWDED` for a month read by day (its count
    stops near the threshold: it may hold many more), :data:`UNCOUNTED` for a month
    registered without a count."""
    return sum(CROWDED if by_day(m) else int(m["n"]) if isinstance(m.get("n"), int)
               else UNCOUNTED for m in months)
