"""Which groups of an import may be written side by side, and which must wait.

An import is read as groups (a Bundle, a chunk of NDJSON lines), each committed all
or nothing. Written one after another, the import is bound by one core's Python:
validation and search values take most of a resource's cost. Written by several
processes at once it uses every core, but only where the order in which groups
commit cannot change the outcome. A group waits for every earlier group still
being written that:

- writes a record it references: a reference must resolve when it is written
  (``interactions/rules.check_references``), as it did in file order; and, the
  other way round, references a record it writes: a reference to a later file
  must not resolve because that file was written first;
- writes the same record with other content: the later content must stay the
  current version, as in file order. The same content written twice (the hospitals
  and clinicians every Synthea bundle repeats) waits for nothing: of two concurrent
  creates one conflicts and is tried again, and then finds the content unchanged;
- holds a Patient with an identifier of one of its Patients: the master patient
  index decides between two Patients with one identity number, in file order.
  Identifiers are compared by their letters and digits alone, whatever their case
  or system, so that every spelling the index takes for one number is one key.

A group whose write meets a concurrent one all the same (an identifier another
group releases, which no file shows) is written again after every earlier group
(:meth:`Schedule.again`): file order decides.

The logic here is pure: it sees ids, references and identifiers, never a database.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..model.references import iter_references, parse_reference
from ..model.types import DIRECTORY_TYPES, SUPPORTED_TYPES


@dataclass(frozen=True)
class GroupKeys:
    """What one group touches, as the schedule compares it with other groups."""

    #: "Type/id" of each record written, with a digest of its content
    writes: Mapping[str, bytes] = field(default_factory=dict)
    #: "Type/id" of each record referenced and checked, not written by the group
    needs: frozenset[str] = frozenset()
    #: the Patients' identifiers ("system|value"), which the patient index compares
    identities: frozenset[str] = frozenset()


def content_digest(resource: Mapping[str, Any]) -> bytes:
    """The same for two resources with the same content, whatever their key order."""
    return hashlib.blake2b(orjson.dumps(resource, option=orjson.OPT_SORT_KEYS),
                           digest_size=16).digest()


def group_keys(records: Iterable[tuple[str, str, Mapping[str, Any]]],
               base_url: str) -> GroupKeys:
    """The keys of a group's kept records (type, id, resource as it is written: its
    references between the group's entries rewritten, its id set)."""
    writes: dict[str, bytes] = {}
    referenced: set[str] = set()
    identities: set[str] = set()
    for rtype, rid, resource in records:
        writes[f"{rtype}/{rid}"] = content_digest(resource)
        for _, ref in iter_references(dict(resource)):
            local = parse_reference(ref, base_url)
            if local is not None and local.type in SUPPORTED_TYPES \
                    and local.type not in DIRECTORY_TYPES:
                referenced.add(f"{local.type}/{local.id}")
        if rtype == "Patient":
            identities.update(_identifiers(resource))
    return GroupKeys(writes, frozenset(referenced - writes.keys()), frozenset(identities))


def _identifiers(resource: Mapping[str, Any]) -> Iterable[str]:
    for identifier in resource.get("identifier") or ():
        if isinstance(identifier, dict) and isinstance(identifier.get("value"), str):
            folded = unicodedata.normalize("NFKC", identifier["value"]).casefold()
            yield "".join(c for c in folded if c.isalnum())


@dataclass
class _Holders:
    """The unfinished groups that write one key, all with the same content."""

    digest: bytes | None
    groups: set[int]


class Schedule:
    """Groups admitted in file order; each waits for the unfinished earlier groups
    it depends on (module docstring). Keeps only what unfinished groups hold, so its
    size follows the groups in flight, not the size of the import."""

    def __init__(self) -> None:
        self._holders: dict[str, _Holders] = {}
        self._held: dict[int, list[str]] = {}
        self._readers: dict[str, set[int]] = {}
        self._read: dict[int, list[str]] = {}
        self._waits: dict[int, set[int]] = {}

    def admit(self, group: int, keys: GroupKeys) -> None:
        waits: set[int] = set()
        held: list[str] = []

        def hold(key: str, digest: bytes | None) -> None:
            holders = self._holders.get(key)
            if holders is None:
                self._holders[key] = _Holders(digest, {group})
            elif digest is not None and holders.digest == digest:
                holders.groups.add(group)
            else:
                waits.update(holders.groups)
                self._holders[key] = _Holders(digest, {group})
            held.append(key)

        for key in keys.needs:
            holders = self._holders.get(key)
            if holders is not None:
                waits.update(holders.groups)
            self._readers.setdefault(key, set()).add(group)
        for key, digest in keys.writes.items():
            waits.update(self._readers.get(key, ()))
            hold(key, digest)
        for identity in keys.identities:
            hold("identifier " + identity, None)  # never shared: always in order
        waits.discard(group)
        self._held[group] = held
        self._read[group] = list(keys.needs)
        self._waits[group] = waits

    def again(self, group: int) -> None:
        """Hand ``group`` out again once every earlier group has finished: its write
        met a concurrent one, so file order decides. Later groups that wait for it
        go on waiting."""
        self._waits[group] = {g for g in self._held if g < group}

    def ready(self) -> list[int]:
        """Admitted groups that wait for nothing, oldest first (not yet handed out)."""
        return sorted(g for g, w in self._waits.items() if not w)

    def start(self, group: int) -> None:
        del self._waits[group]

    def finish(self, group: int) -> None:
        for key in self._held.pop(group, ()):
            holders = self._holders.get(key)
            if holders is not None:
                holders.groups.discard(group)
                if not holders.groups:
                    del self._holders[key]
        for key in self._read.pop(group, ()):
            readers = self._readers.get(key)
            if readers is not None:
                readers.discard(group)
                if not readers:
                    del self._readers[key]
        for waits in self._waits.values():
            waits.discard(group)

    def __len__(self) -> int:
        """Groups admitted and not finished."""
        return len(self._held)
