"""Plain records passed between storage and the interactions above it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Stored:
    """One version of a resource as stored; ``resource`` is None for a delete."""

    type: str
    id: str
    version: int
    last_updated: datetime
    deleted: bool
    resource: dict[str, Any] | None
    method: str = ""
    content_hash: str = ""
    org: str | None = None  # the organisation that first wrote it (consent)
    by: str | None = None  # who first wrote it (Practitioner/x, client/y): authorship reach
    #: the journal entry of the multi-write unit that wrote this version, if one did:
    #: while that unit is in flight, nobody may build on the version (unit_of_work.py)
    tx: str | None = None

    @property
    def etag(self) -> str:
        return f'W/"{self.version}"'

    @property
    def reference(self) -> str:
        return f"{self.type}/{self.id}"


@dataclass
class Write:
    """A new version to store.

    ``expected`` is the version the write was planned against: ``None`` means the
    resource must not exist yet (create, update-as-create), an int means the
    current version must still be exactly that one (the compare-and-set that makes
    If-Match and concurrent updates safe).
    """

    type: str
    id: str
    version: int
    expected: int | None
    last_updated: datetime
    resource: dict[str, Any] | None  # None: delete
    method: str  # POST, PUT, PATCH, DELETE
    patient: str | None = None
    search: dict[str, Any] = field(default_factory=dict)
    content_hash: str = ""
    refs: list[str] = field(default_factory=list)  # local references, "Type/id"
    # Unique identifier keys ("system|value") this version holds, and those the
    # version it replaces held (master patient index; Patients only).
    claims: tuple[str, ...] = ()
    previous_claims: tuple[str, ...] = ()
    org: str | None = None
    by: str | None = None
    #: what ``res`` stores (identity numbers encrypted; None for a delete) and the
    #: data keys it uses (storage/protection.py)
    sealed: dict[str, Any] | None = None
    data_keys: list[str] = field(default_factory=list)
    #: what the stored document derives from the version alone, built once (its
    #: size is checked before it is written: unit_of_work.current_document)
    derived: dict[str, Any] | None = field(default=None, init=False, repr=False,
                                           compare=False)
    #: the journal entry of the unit that writes this version (set at commit), and
    #: that of the version it replaces (``Stored.tx``), if a multi-write unit wrote it
    tx: str | None = field(default=None, init=False, compare=False)
    base_tx: str | None = field(default=None, init=False, compare=False)
    #: when the version it replaces was written: with its number, which version that
    #: is (a number is used again once a failed unit takes its version back)
    base_written: datetime | None = field(default=None, init=False, compare=False)

    @property
    def taken(self) -> list[str]:
        return [k for k in self.claims if k not in self.previous_claims]

    @property
    def released(self) -> list[str]:
        return [k for k in self.previous_claims if k not in self.claims]

    @property
    def deleted(self) -> bool:
        return self.resource is None

    def stored(self) -> Stored:
        return Stored(
            self.type, self.id, self.version, self.last_updated, self.deleted,
            self.resource, self.method, self.content_hash, self.org, self.by,
        )
