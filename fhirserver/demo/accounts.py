"""Sign-in accounts for the demo data (``fhirserver serve --demo``), so that the web
app at ``/app/`` can be tried at once: a clinician who treats one demo patient and
may break the glass, and one account per demo patient, each with a health card, the
first patient holding the second's card (a family binding to switch between).

Only the demo's own patients (those of the bundles next to this module) get an
account, a card binding or the demo clinician: ``--demo`` on a database that already
holds real patients must not give them a printed password, bind them to each other or
put a demo clinician on their care team; nor is an account of the same name that
signs in as someone else replaced.

Passwords are new at every start and printed once by ``serve``: demo accounts never
have a password that is written down anywhere.
"""

from __future__ import annotations

import gzip
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from .. import errors
from ..auth import users
from ..auth.access import set_team_member
from ..config import Settings
from ..interactions.context import Context
from ..mpi import cards, family
from ..storage.repository import Repository

CLINICIAN = "dr-smith"
ORGANIZATION = "Organization/demo-hospital"


@dataclass(frozen=True)
class Account:
    username: str
    password: str
    who: str  # fhirUser
    note: str


def _name(resource: dict[str, object]) -> str:
    names = resource.get("name") or [{}]
    first = names[0] if isinstance(names, list) and names and isinstance(names[0], dict) else {}
    given = " ".join(first.get("given") or [])
    return f"{given} {first.get('family', '')}".strip()


def demo_patient_ids() -> frozenset[str]:
    """The ids of the Patients in the demo's bundles (``*.json.gz`` here)."""
    ids: set[str] = set()
    for path in Path(__file__).parent.glob("*.json.gz"):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            bundle = json.load(f)
        ids.update(str(e["resource"]["id"]) for e in bundle.get("entry") or ()
                   if (e.get("resource") or {}).get("resourceType") == "Patient")
    return frozenset(ids)


def _ours(db: object, username: str, who: str) -> bool:
    """True when the name is free or already the demo's account for ``who``."""
    found = users.find(db, username)
    return found is None or found.fhir_user == who


def _password() -> str:
    return "-".join(secrets.token_urlsafe(4) for _ in range(4))


def _card_number(ctx: Context, pid: str) -> str:
    try:
        return str(cards.active_card(ctx, pid)["number"])
    except errors.NotFound:
        return str(cards.issue(ctx, pid)["number"])


def create(settings: Settings) -> list[Account]:
    """Create (or reset the passwords of) the demo accounts; what to sign in with."""
    repo = Repository.from_settings(settings, initialise=False)
    try:
        ctx = Context(repo, settings, (settings.base_url or settings.issuer).rstrip("/"))
        patients = []
        for pid in sorted(demo_patient_ids()):
            stored = repo.get("Patient", pid)
            if stored is not None and stored.resource is not None and not stored.deleted:
                patients.append((pid, _name(stored.resource)))
        accounts: list[Account] = []
        numbers = {pid: _card_number(ctx, pid) for pid, _ in patients}
        if len(patients) >= 2:
            try:
                family.bind_by_operator(ctx, patients[0][0], numbers[patients[1][0]], "SIB")
            except errors.FhirError:
                pass  # bound at an earlier start
        if not _ours(repo.db, CLINICIAN, f"Practitioner/{CLINICIAN}"):
            return []  # a real account of that name: no demo accounts at all
        password = _password()
        users.add(repo.db, users.User(CLINICIAN, "practitioner", f"Practitioner/{CLINICIAN}",
                                      ORGANIZATION, roles=(users.EMERGENCY_ACCESS,)), password)
        treats = patients[-1] if patients else None
        if treats:
            set_team_member(repo.db, treats[0], f"Practitioner/{CLINICIAN}", datetime.now(UTC))
        accounts.append(Account(CLINICIAN, password, f"Practitioner/{CLINICIAN}",
                                f"clinician; treats {treats[1] if treats else 'nobody'}; "
                                "may break the glass"))
        for i, (pid, name) in enumerate(patients):
            username = (name.split(" ")[0] or pid[:8]).lower()
            if not _ours(repo.db, username, f"Patient/{pid}"):
                continue
            password = _password()
            users.add(repo.db, users.User(username, "patient", f"Patient/{pid}"), password)
            note = f"patient {name}; card {numbers[pid]}"
            if i == 0 and len(patients) >= 2:
                note += f"; holds the card of {patients[1][1]}"
            accounts.append(Account(username, password, f"Patient/{pid}", note))
        return accounts
    finally:
        repo.close()
