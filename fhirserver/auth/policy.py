"""Who may do what to which patient's data (DESIGN.md section 1), pure.

The decision combines the token's scopes with the patients the caller can reach:

* a **patient** token reaches the patient's own compartment and those of the
  family members bound to their card;
* a **user** (clinician) token reaches the patients with whom the clinician has an
  active care relationship (a card scan, the care team, break-the-glass), and the
  records the clinician wrote (not the rest of that patient's record);
* a **system** (backend) token reaches the patients its organisation has an active
  care relationship with and the records its organisation wrote, and may look one
  Patient up by one exact identifier;
* an **operator** token (minted by ``fhirserver token`` for scripts) reaches all.

The clinician directory (Practitioner, Organization, PractitionerRole) is nobody's
health data: whoever holds a scope for the type reads and searches all of it,
patient tokens included (``patient/Practitioner.rs``, as SMART apps ask to show
who performed a test), and only operators and holders of the ``registration``
scope change it, whatever else their scopes say.

A Group (group.html) lists patients, so who is in it is itself sensitive: it is
kept by operators and by backend clients of an organisation (``system/Group.c``,
``.u``, ``.d``), and read and searched by operators and by the organisation whose
client wrote it (the record's stored writer organisation, ``org``, the same mark
that keeps an organisation's own results in its reach). Another organisation's
Group reads 404, its writes 404 as well, and it is left out of searches; clinicians
and patients get none (403), whatever their scopes. A Group an operator made has
no organisation and is the operators' alone.

A scope must cover the interaction (``r`` read, ``s`` search, ``c`` create, ``u``
update, ``d`` delete); ``patient/`` scopes apply to patient tokens and to the launch
patient of a user token, ``user/`` to users, ``system/`` to backend clients. Where a
matching scope carries a granular query, the resource must satisfy one of the
queries of the matching scopes (an unconstrained matching scope lifts them all).

Nothing here touches the database: the caller's reachable patients are computed by
:mod:`.access` and passed in.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..model.groups import GROUP
from ..model.types import DIRECTORY_TYPES
from .scopes import REGISTRATION, Scope, matching

KINDS = ("patient", "user", "system", "operator")
#: Resource types whose instances belong to one patient's compartment.
COMPARTMENT_TYPES = ("Patient", "Observation", "DiagnosticReport", "CareTeam")


@dataclass(frozen=True)
class Caller:
    kind: str
    scopes: tuple[Scope, ...]
    subject: str
    client_id: str = ""
    #: a patient token: the patient it belongs to (its fhirUser); a user token: its
    #: launch patient
    patient: str | None = None
    practitioner: str | None = None  # "Practitioner/x" for users (fhirUser)
    organization: str | None = None  # "Organization/x" for users and backend clients
    token_id: str = ""
    extra: dict[str, str] = field(default_factory=dict)
    #: the non-clinical scopes granted (``openid``, ``registration``, ``card-number``...)
    named: frozenset[str] = frozenset()

    def has(self, scope: str) -> bool:
        """Holds the non-clinical ``scope`` (operators hold them all)."""
        return self.kind == "operator" or scope in self.named

    @property
    def who(self) -> str:
        return self.practitioner or (f"Patient/{self.patient}" if self.kind == "patient" else "") \
            or self.client_id or self.subject


@dataclass(frozen=True)
class Decision:
    allowed: bool
    #: the patients whose data is in reach; None means every patient
    patients: frozenset[str] | None = frozenset()
    #: granular constraints (each a search query); empty means none
    constraints: tuple[tuple[tuple[str, str], ...], ...] = ()
    reason: str = ""
    #: what the caller wrote stays in its reach whatever the patient (a clinician's
    #: own notes, an organisation's own results): the stored field and value that
    #: mark those records, ``("by", "Practitioner/x")`` or ``("org", "Organization/y")``
    authored: tuple[str, str] | None = None
    #: a clinician's launch where only ``patient/`` scopes cover this type: the
    #: launch patient alone, whatever care relationships the clinician holds
    launch_only: bool = False


def _contexts(caller: Caller) -> tuple[str, ...]:
    if caller.kind == "patient":
        return ("patient",)
    if caller.kind == "user":
        return ("user", "patient") if caller.patient else ("user",)
    if caller.kind == "system":
        return ("system",)
    return ("patient", "user", "system")


WRITES = frozenset({"create", "update", "patch", "delete"})


def decide(caller: Caller, rtype: str, interaction: str,
           reachable: frozenset[str] | None, *, identifier_lookup: bool = False) -> Decision:
    """May ``caller`` perform ``interaction`` on ``rtype``, and over which patients?

    ``reachable`` is the set of patients the caller's relationships reach (None for
    all); ``identifier_lookup`` marks a Patient search by one exact identifier, which
    backend clients may run for any patient.

    Reach for writes is narrower than for reads: a patient writes only into their
    own record (a bound family member's record is theirs to read, not to change),
    and authorship never opens a record for writing.
    """
    found = matching(caller.scopes, rtype, interaction, _contexts(caller))
    if not found:
        return Decision(False, reason=f"no granted scope allows {interaction} on {rtype}")
    constraints = () if any(not s.query for s in found) else tuple(s.query for s in found)
    if caller.kind == "operator":
        return Decision(True, None, constraints)
    if rtype in DIRECTORY_TYPES:
        return _directory(caller, interaction, constraints)
    if rtype == GROUP:
        return _group(caller, constraints)
    patients = reachable
    own_context = any(s.context == caller.kind for s in found)
    launch_only = caller.kind == "user" and bool(caller.patient) and not own_context
    if launch_only:
        # Only patient/ scopes matched: the launch patient alone, if treated.
        patients = _only(caller.patient, reachable)
    if caller.kind == "patient" and interaction in WRITES:
        patients = _only(caller.patient, reachable)
    if caller.kind == "system" and identifier_lookup and rtype == "Patient" and interaction == "search":
        return Decision(True, None, constraints, "patient lookup by identifier")
    authored = None
    if interaction not in WRITES and own_context:
        if caller.kind == "user" and caller.practitioner:
            authored = ("by", caller.practitioner)
        elif caller.kind == "system" and caller.organization:
            authored = ("org", caller.organization)
    return Decision(True, patients, constraints, authored=authored, launch_only=launch_only)


def _directory(caller: Caller, interaction: str,
               constraints: tuple[tuple[tuple[str, str], ...], ...]) -> Decision:
    """Reading the directory reaches every entry; changing it is registration's."""
    if interaction in WRITES and not caller.has(REGISTRATION):
        return Decision(False, reason="the clinician directory is kept by registration "
                                      "(the 'registration' scope)")
    return Decision(True, None, constraints)


def _group(caller: Caller, constraints: tuple[tuple[tuple[str, str], ...], ...]) -> Decision:
    """An organisation's backend clients keep its Groups; nobody else but operators
    sees them. No patient opens a Group (``patients`` is empty): only the stored
    writer organisation does, for writes as for reads."""
    if caller.kind != "system" or not caller.organization:
        return Decision(False, reason="groups of patients are kept by operators and by "
                                      "backend clients of an organisation")
    return Decision(True, frozenset(), constraints, authored=("org", caller.organization))


def _only(patient: str | None, reachable: frozenset[str] | None) -> frozenset[str]:
    """``{patient}`` if it is in reach (None: everyone is), else nobody."""
    if patient and (reachable is None or patient in reachable):
        return frozenset({patient})
    return frozenset()


def author_key(caller: Caller | None) -> str | None:
    """What a new record stores as its author (``by``): the clinician, or the
    backend client, that wrote it first."""
    if caller is None:
        return None
    if caller.kind == "user" and caller.practitioner:
        return caller.practitioner
    if caller.kind == "patient" and caller.patient:
        return f"Patient/{caller.patient}"
    return f"client/{caller.client_id}" if caller.client_id else None


def may_write(decision: Decision, patients: set[str | None]) -> bool:
    """A write is allowed when every compartment it touches (the old and the new
    version's patient) is in reach; a resource outside any compartment (no patient)
    is writable only by callers who reach every patient."""
    if not decision.allowed:
        return False
    if decision.patients is None:
        return True
    return all(p is not None and p in decision.patients for p in patients)
