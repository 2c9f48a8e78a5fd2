"""What every interaction works with, and the planner that makes writes atomic.

Interactions never write directly: they *plan* writes into a :class:`Planner`, which
commits them at the end. A single REST call commits its one planned write at once;
a transaction Bundle plans all its entries into one planner and commits them
together (all or nothing), and a batch gives each entry a planner of its own. The
planner also answers "does this resource exist?" as the transaction will leave the
database, so references between entries resolve.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any, TypeVar

from .. import errors
from ..auth import consent
from ..auth.access import Access, end_patient, end_relationship, forget, record_care
from ..auth.bindings import end_bindings
from ..auth.disclosure import kept_whole, sees_whole
from ..auth.revocation import end_patient_tokens, wait_past_cut_off
from ..auth.tokens import patient_holder
from ..auth.users import disable_accounts_of
from ..config import Settings
from ..model.identifier_systems import HEALTH_CARD_KEY, Registry, load_registry
from ..model.masking import mask
from ..storage.limits import MAX_DOCUMENT_BYTES, stored_bytes
from ..storage.protection import CARDS
from ..storage.records import Stored, Write
from ..storage.repository import Repository
from ..storage.search_claims import ClaimBusy, Held
from ..storage.unit_of_work import IdentifierTaken, InFlight, VersionConflict
from . import integrity

#: Retry jitter from its own generator: the global one is the caller's (and
#: property-based tests replay it).
_JITTER = random.Random()


def end_person(repo: Repository, patient: str, deleted: int | None) -> None:
    """What a deleted Patient's person held ends with the record: every care
    relationship with them (auth/access.py end_patient), their family bindings either
    way (auth/bindings.py) and their active health card (a card without its pointer
    is revoked, mpi/cards.py). A new person registered at the id later is opened
    neither by those who treated the deleted one, nor by their family or card, and
    does not reach the deleted one's family; the deleted one's sharing choices are
    not theirs, and the deleted one's patient accounts are disabled and the access
    tokens issued for them revoked (their sign-in, refresh and access tokens would
    open the new record as their own).

    ``deleted``: the version that deleted the record (None: it is gone). Once a new
    person is registered at the id, nothing is done: their registration ended the
    deleted one's before it was committed, and what the id holds now is theirs (a
    delete slow to get here would revoke their tokens and disable their accounts)."""
    if deleted is not None:
        now = repo.get("Patient", patient)
        if now is not None and (not now.deleted or now.version != deleted):
            return
    db = repo.db
    end_patient_tokens(db, patient, datetime.now(UTC))
    # the card before the bindings: a binding written meanwhile checks its cards after
    db[CARDS].delete_one({"_id": f"active|{patient}"})
    end_patient(db, patient)
    for who in end_bindings(db, patient):
        forget(db, f"family|{who}")
    consent.forget_patient(db, patient)
    disable_accounts_of(db, f"Patient/{patient}")


@dataclass(frozen=True)
class Context:
    """Per-request facts: where we are and what we store."""

    repo: Repository
    settings: Settings
    base_url: str  # absolute, no trailing slash
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))  # injectable in tests
    #: what the caller may see and change; None for trusted internal callers (import)
    access: Access | None = None

    def search_filter(self, rtype: str, identifier_lookup: bool = False,
                      pinned: str | None = None) -> dict[str, Any] | None:
        return self.access.search_filter(rtype, identifier_lookup, pinned) if self.access else None

    def visible(self, stored: Stored, interaction: str = "read") -> bool:
        """May the caller see this stored resource? (False: answer 404.)"""
        if self.access is None:
            return True
        if stored.resource is None:
            # A deletion: judge by the content it deleted, so that a hidden record's
            # history (and the fact that it existed) stays hidden.
            previous = self.repo.get_version(stored.type, stored.id, stored.version - 1) \
                if stored.version > 1 else None
            if previous is None or previous.resource is None:
                return False
            stored = previous
        from ..storage.indexing import patient_of

        patient = patient_of(stored.resource)
        if not self.access.can_see(stored.type, patient, interaction,
                                   {"by": stored.by, "org": stored.org}):
            self.repo.read_alike(stored.type, found=False)  # as a missing id reads
            return False
        if not self.access.consent_allows(stored.type, patient, stored.resource, stored.org):
            self.access.probe_absent(stored.type, stored.id)  # as long as any refusal takes
            self.repo.read_alike(stored.type, found=False)
            return False
        d = self.access.decision(stored.type, interaction)
        if d.constraints:
            flt = self.access.search_filter(stored.type) or {}
            return self.repo.count(stored.type, {"$and": [{"_id": stored.id}, flt]}) > 0
        return True

    def visible_version(self, current: Stored, version: Stored) -> bool:
        """May the caller see ``version`` of a record whose ``current`` version it
        may see? Each version is judged by what it held: a record moved from another
        patient, or whose sensitive label a later version dropped, keeps its earlier
        versions hidden from those they were hidden from. A token whose scopes allow
        only some records (granular) sees the current version only: what its scopes
        select is evaluated on current records, not on old versions."""
        if self.access is None or version.version == current.version:
            return True
        if self.access.decision(version.type, "read").constraints:
            return False
        return self.visible(version)

    def check_write(self, rtype: str, interaction: str, old: dict[str, Any] | None,
                    new: dict[str, Any] | None) -> None:
        managed_team(rtype, (new or old or {}).get("id"))
        if self.access is None:
            return
        from ..storage.indexing import patient_of

        patients = {patient_of(r) for r in (old, new) if r is not None}
        self.access.check_write(rtype, interaction, patients, creating=old is None)

    def open_care(self, who: str, found: Stored, until: datetime, reason: str, *,
                  now: datetime, emergency: bool = False) -> None:
        """Open a care relationship with the Patient this request ``found`` (a card
        scan, break-the-glass). A delete of the Patient at the same moment ends every
        relationship with it once committed; one written just after that is ended
        here, once the Patient is seen deleted since it was found (it would reach the
        deleted patient's records, or a new person registered at the id)."""
        record_care(self.repo.db, who, found.id, until, reason, emergency=emergency, now=now)
        finished = self.repo.uow.finished
        for _ in range(100):
            current = self.repo.get("Patient", found.id)
            # from the version found on: it may have been taken back and its number
            # written again (by a delete) since the request read it
            seen = [current] + ([self.repo.get_version("Patient", found.id, n)
                                 for n in range(found.version, current.version)]
                                if current is not None else [])
            # a delete in flight may yet be taken back; once committed, its own
            # end_person runs after and finds the relationship written above
            if not finished.still_in_flight([v.tx for v in seen if v is not None and v.tx]):
                break
            time.sleep(0.05)
        else:
            raise errors.Conflict("The patient is being changed; try again")
        if current is None or current.deleted:
            end_person(self.repo, found.id, current.version if current is not None else None)
        elif any(v is None or v.deleted for v in seen):
            # deleted, and a new person registered at the id since: their card and
            # family are theirs; only what this request opened ends
            end_relationship(self.repo.db, who, found.id, at=now, reason=reason)
        else:
            return
        raise errors.NotFound(f"Resource Patient/{found.id} is not known")

    @property
    def reaches_all(self) -> bool:
        """A trusted internal caller (import) or an operator: every record is in reach."""
        caller = self.access.caller if self.access is not None else None
        return caller is None or caller.kind == "operator"

    @property
    def registrar(self) -> bool:
        """May write identity documents and learn that a number is taken: internal
        callers, operators, and tokens with the ``registration`` scope."""
        from ..auth.scopes import REGISTRATION

        caller = self.access.caller if self.access is not None else None
        return caller is None or caller.has(REGISTRATION)

    def touch(self, resource: dict[str, Any] | None) -> None:
        """Note whose data the request returned or changed (for the audit record)."""
        if self.access is not None and resource:
            from ..storage.indexing import patient_of

            self.access.touch(patient_of(resource))

    def probe_absent(self, rtype: str, rid: str) -> None:
        """Spend on a missing id what a hidden one costs: the policy's look (see
        Access.probe_absent) and a read of a stored resource, as a hidden id has."""
        if self.access is not None and not self.reaches_all:
            self.access.probe_absent(rtype, rid)
            self.repo.read_alike(rtype, found=True)

    @property
    def tz(self) -> tzinfo:
        return self.repo.tz

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path}"

    @property
    def registry(self) -> Registry:
        """The identifier systems of the master patient index."""
        return load_registry(self.settings.identifier_systems)


def managed_team(rtype: str, rid: str | None) -> None:
    """A patient's care team kept by ``$care-team`` changes through it alone
    (model/care_teams.py): a REST write there would list members who hold no care
    relationship, or hide members who do. Every caller, import included."""
    from ..model.care_teams import is_managed

    if is_managed(rtype, rid):
        raise errors.Forbidden(f"CareTeam/{rid} is the patient's care team, changed through "
                               "Patient/{id}/$care-team only", expression="CareTeam.id")


@dataclass
class Result:
    """What an interaction answers, before any HTTP rendering."""

    status: int
    stored: Stored | None = None
    outcome: dict[str, Any] | None = None
    location: str | None = None  # relative: Type/id/_history/n
    body: dict[str, Any] | None = None  # a Bundle or other computed resource

    @property
    def resource(self) -> dict[str, Any] | None:
        if self.body is not None:
            return self.body
        return self.stored.resource if self.stored else None


@dataclass
class Planner:
    ctx: Context
    writes: list[Write] = field(default_factory=list)
    # Checks that must see every planned write (references between entries of a
    # transaction, referential integrity of deletes): they run just before commit.
    checks: list[Callable[[], None]] = field(default_factory=list)
    _pending: dict[tuple[str, str], Write] = field(default_factory=dict)
    _cache: dict[tuple[str, str], Stored | None] = field(default_factory=dict)
    #: when (time.monotonic) each cached version was read: see :meth:`resolves`
    _read_at: dict[tuple[str, str], float] = field(default_factory=dict)
    #: conditional criteria this plan holds until its writes are done
    held: list[Held] = field(default_factory=list)
    #: the stored records its writes refer to, each with the first path referring to
    #: it, and checks to run again once its writes are stored (interactions/integrity.py)
    referred: dict[str, str] = field(default_factory=dict)
    settles: list[Callable[[], None]] = field(default_factory=list)
    #: before its first read, and once its writes are stored (integrity.settle)
    started: float = field(default_factory=integrity.now)
    stored_at: float = 0.0
    #: what the caller calls the records it writes, where that is not "Type/id" (a
    #: transaction's entries: their ids are chosen by the server)
    names: dict[str, str] = field(default_factory=dict)

    @property
    def repo(self) -> Repository:
        return self.ctx.repo

    def holds(self, key: str) -> bool:
        return any(h.key == key for h in self.held)

    def release_claims(self) -> None:
        """Give back the criteria claims, written or not: from now on the stored
        resources answer a conditional create (storage/search_claims.py)."""
        held, self.held = self.held, []
        for h in held:
            self.repo.search_claims.release(h)

    def add(self, write: Write) -> Write:
        size = stored_bytes(write)
        if size > MAX_DOCUMENT_BYTES:
            raise errors.TooLarge(
                f"{write.type}/{write.id} would take {size:,} bytes stored with its search "
                f"values; this server stores at most {MAX_DOCUMENT_BYTES:,} per resource",
                expression=write.type)
        base = self._cache.get((write.type, write.id))
        if base is not None and base.version == write.expected:
            write.base_tx = base.tx  # see storage/unit_of_work.py
            write.base_written = base.last_updated
        self.writes.append(write)
        self._pending[(write.type, write.id)] = write
        return write

    def pending(self, rtype: str, rid: str) -> Write | None:
        return self._pending.get((rtype, rid))

    def prefetch(self, rtype: str, ids: list[str]) -> None:
        """Load current versions in one query (imports plan many writes at once)."""
        read_at = time.monotonic()
        found = self.repo.get_many(rtype, ids)
        for rid in ids:
            self._cache[(rtype, rid)] = found.get(rid)
            self._read_at[(rtype, rid)] = read_at

    def presume_absent(self, rtype: str, ids: Iterable[str]) -> None:
        """Plan ``ids`` as free without reading them (an import's records of patients
        with none recorded, ``Repository.unrecorded_patients``). Where one is not, its
        create meets the primary key at commit: a VersionConflict, nothing written."""
        for rid in ids:
            self._cache[(rtype, rid)] = None

    def current(self, rtype: str, rid: str) -> Stored | None:
        """The stored current version (as before this planner's writes)."""
        key = (rtype, rid)
        if key not in self._cache:
            # kept: an import's results all name the same patient
            self._read_at[key] = time.monotonic()
            self._cache[key] = self.repo.get(rtype, rid)
        return self._cache[key]

    def exists(self, rtype: str, rid: str) -> bool:
        w = self.pending(rtype, rid)
        if w is not None:
            return not w.deleted
        if (rtype, rid) in self._cache:
            cached = self._cache[(rtype, rid)]
            return cached is not None and not cached.deleted
        return self.repo.exists(rtype, rid)

    def resolves(self, rtype: str, rid: str, version: int | None = None) -> bool:
        """Does a reference resolve *for this caller*? A record hidden from them
        answers like one that does not exist (a 422 either way), or writing a
        reference would tell which hidden ids exist."""
        w = self.pending(rtype, rid)
        if w is not None and version is None:
            return not w.deleted
        current = self._settled(rtype, rid, version)
        if current is None:
            self.ctx.probe_absent(rtype, rid)
            return False
        if version is not None:
            # Read whatever the version (a hidden record costs the reads a missing one
            # does). One past the current version is a write's claim
            # (storage/unit_of_work.py), not yet a version, and may never be one.
            found = self.repo.get_version(rtype, rid, version) is not None
            return found and version <= current.version and self.ctx.visible(current)
        return not current.deleted and self.ctx.visible(current)

    def _settled(self, rtype: str, rid: str, version: int | None = None) -> Stored | None:
        """The current version, as its unit left it. One written by a unit still in
        flight, whose failure would make the record exist where it does not, or not
        where it does (a delete, a create), or take away the ``version`` referred to,
        is planned again (InFlight); of a record the caller may not see it answers as
        any hidden one (a 422). One whose unit ended after it was read is read again:
        the unit may have taken it back. (Versions before the current one are final:
        nobody builds on a version whose unit is in flight.)"""
        finished = self.repo.uow.finished
        for _ in range(3):
            current = self.current(rtype, rid)
            if current is None or not current.tx:
                return current
            if finished.in_flight(current.tx):
                if self.ctx.visible(current) and (version == current.version
                                                  or self._taken_back_changes(current)):
                    raise InFlight(target=f"{rtype}/{rid}")
                return current
            if finished.ended_before(current.tx, self._read_at.get((rtype, rid), 0.0)):
                return current
            self._cache.pop((rtype, rid), None)
            current = self.current(rtype, rid)
        if current is not None and self.ctx.visible(current):
            raise InFlight(target=f"{rtype}/{rid}")  # written again and again meanwhile
        return current

    def _taken_back_changes(self, current: Stored) -> bool:
        """Whether taking back ``current``'s version would change whether the record
        exists: a delete does, and so does a create; an update of a live record does
        not."""
        return current.deleted or not integrity.stays(self.repo, current.type, current.id,
                                                       current.version)

    def check(self) -> None:
        for check in self.checks:
            check()
        self.checks = []

    def _ended_patients(self) -> list[Write]:
        """Patients deleted by this plan, whose care relationships end once it is
        committed. Those written again at a deleted Patient's id lose the ones a
        crash right after the delete may have left, before the new record exists."""
        ended: list[Write] = []
        for w in self.writes:
            if w.type != "Patient":
                continue
            if w.resource is None:
                ended.append(w)
            elif w.expected is not None:
                current = self.current("Patient", w.id)
                if current is not None and current.deleted:
                    if current.tx and self.repo.uow.finished.in_flight(current.tx):
                        raise InFlight(w)  # a delete that may yet be taken back
                    end_person(self.repo, w.id, current.version)
                    # its tokens were cut off up to this second: the newcomer's,
                    # issued once it is registered, must come in a later one
                    wait_past_cut_off(self.repo.db, patient_holder(w.id), datetime.now(UTC))
        return ended

    def _taken(self, exc: IdentifierTaken) -> tuple[str, str]:
        """The identifier a taken claim stands for, as the caller may see it: the
        claim holds a blind index (storage/protection.py), the write the value it
        was computed from, masked unless the caller sees this patient's numbers
        whole (a masked number sent back stands for the stored one, which the
        caller must not learn from a conflict)."""
        system = exc.key.rpartition("|")[0]
        for ident in (exc.write.resource or {}).get("identifier") or ():
            if isinstance(ident, dict) and ident.get("system") == system \
                    and isinstance(ident.get("value"), str) \
                    and self.repo.protection.claim_key(f"{system}|{ident['value']}") == exc.key:
                return system, self._as_seen(exc.write.id, system, ident["value"])
        return system, "(this number)"

    def _as_seen(self, patient: str, system: str, value: str) -> str:
        """``value`` of ``patient``'s identifier of ``system``, masked unless the
        caller sees it whole (auth/disclosure.py; the answer path masks the same way,
        interactions/disclosure.py)."""
        access = self.ctx.access
        caller = access.caller if access is not None else None
        reach = access.reachable() if access is not None and caller is not None \
            and caller.kind == "patient" else None
        card = self.ctx.registry.by_key(HEALTH_CARD_KEY).system
        found = self.ctx.registry.match(system)
        if found is None or system in kept_whole(caller, card) or sees_whole(caller, patient, reach):
            return value
        return mask(value, found.entry)

    def commit(self) -> None:
        self.check()
        for h in self.held:
            if not self.repo.search_claims.renew(h):
                raise ClaimBusy(f"the claim on conditional criteria {h.key} was taken over")
        ended = self._ended_patients()
        try:
            self.repo.commit(
                self.writes,
                verify=(lambda: integrity.settle(self)) if self.referred or self.settles else None,
                journalled=any(w.deleted for w in self.writes) or integrity.slow(self))
            for w in ended:
                end_person(self.repo, w.id, w.version)
            if self.ctx.access is not None:
                for w in self.writes:
                    self.ctx.access.touch(w.patient)
        except IdentifierTaken as exc:
            system, value = self._taken(exc)
            holder = self.repo.get("Patient", exc.holder) if exc.holder else None
            named = holder is not None and self.ctx.visible(holder)
            raise errors.Conflict(
                f"Identifier {system}|{value} already belongs to "
                f"{f'Patient/{exc.holder}' if named else 'another active Patient'}: "
                "no two active Patients may share it",
                expression=f"{exc.write.type}.identifier", details="identifier-taken",
            ) from exc
        self.writes = []
        self.referred, self.settles = {}, []
        self._pending.clear()
        self._cache.clear()
        self._read_at.clear()
        self.started = integrity.now()


T = TypeVar("T")


def run_single(ctx: Context, plan: Callable[[Planner], T], *, retry: bool = True) -> T:
    """Plan and commit one interaction; replan when a concurrent write got in first.

    With ``retry`` off (the client sent If-Match) losing the race is the client's
    412: the version it based its change on is gone.
    """
    attempts = 10 if retry else 1
    for attempt in range(attempts):
        planner = Planner(ctx)
        try:
            result = plan(planner)
            planner.commit()
        except ClaimBusy as exc:
            if attempt + 1 < attempts:
                time.sleep(_JITTER.uniform(0, 0.005 * (attempt + 1)))
                continue
            raise errors.Conflict("Another request is writing a resource for the same "
                                  "conditional criteria: try again") from exc
        except VersionConflict as exc:
            if attempt + 1 < attempts:
                time.sleep(_JITTER.uniform(0, 0.005 * (attempt + 1)))  # de-synchronise the racers
                continue
            if retry or isinstance(exc, InFlight):  # the version may yet stand: not a 412
                raise errors.Conflict(f"{exc}: try again") from exc
            raise errors.PreconditionFailed(
                f"{exc.write.type}/{exc.write.id} was changed by another request "
                "(If-Match no longer matches)"
            ) from exc
        finally:
            planner.release_claims()
        return result
    raise AssertionError("unreachable")
