"""Who may do what to which patient's data (DESIGN.md section 1), pure.

The decision combines the token's scopes with the patients the caller can reach:

* a **patient** token reaches the patient's own compartment and those of the
  family members bound to their card;
* a **user** (clinician) token reaches the patients with whom the clinician has an
  active care relationship (a card scan, break-the-glass, records they authored);
* a **system** (backend) token reaches the patients its organisation has an active
  care relationship with, and may look any Patient up by identifier;
* an **operator** token (minted by ``fhirserver token`` for scripts) reaches all.

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

from .scopes import Scope, matching

KINDS = ("patient", "user", "system", "operator")
#: Resource types whose instances belong to one patient's compartment.
COMPARTMENT_TYPES = ("Patient", "Observation", "DiagnosticReport")


@dataclass(frozen=True)
class Caller:
    kind: str
    scopes: tuple[Scope, ...]
    subject: str
    client_id: str = ""
    patient: str | None = None  # patient token's own patient, or a user's launch patient
    practitioner: str | None = None  # "Practitioner/x" for users (fhirUser)
    organization: str | None = None  # "Organization/x" for users and backend clients
    token_id: str = ""
    extra: dict[str, str] = field(default_factory=dict)

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


def _contexts(caller: Caller) -> tuple[str, ...]:
    if caller.kind == "patient":
        return ("patient",)
    if caller.kind == "user":
        return ("user", "patient") if caller.patient else ("user",)
    if caller.kind == "system":
        return ("system",)
    return ("patient", "user", "system")


def decide(caller: Caller, rtype: str, interaction: str,
           reachable: frozenset[str] | None, *, identifier_lookup: bool = False) -> Decision:
    """May ``caller`` perform ``interaction`` on ``rtype``, and over which patients?

    ``reachable`` is the set of patients the caller's relationships reach (None for
    all); ``identifier_lookup`` marks a Patient search by identifier, which backend
    clients may run for any patient.
    """
    found = matching(caller.scopes, rtype, interaction, _contexts(caller))
    if not found:
        return Decision(False, reason=f"no granted scope allows {interaction} on {rtype}")
    constraints = () if any(not s.query for s in found) else tuple(s.query for s in found)
    if caller.kind == "operator":
        return Decision(True, None, constraints)
    patients = reachable
    if caller.kind == "user" and caller.patient and not any(s.context == "user" for s in found):
        # Only patient/ scopes matched: the launch patient alone, if treated.
        patients = frozenset({caller.patient}) & (reachable or frozenset())
    if caller.kind == "system" and identifier_lookup and rtype == "Patient" and interaction == "search":
        return Decision(True, None, constraints, "patient lookup by identifier")
    return Decision(True, patients if patients is not None else None, constraints)


def may_write(decision: Decision, patients: set[str | None]) -> bool:
    """A write is allowed when every compartment it touches (the old and the new
    version's patient) is in reach; a resource outside any compartment (no patient)
    is writable only by callers who reach every patient or by backend clients
    creating results."""
    if not decision.allowed:
        return False
    if decision.patients is None:
        return True
    return all(p is not None and p in decision.patients for p in patients)
