"""People who sign in at the authorization server: clinicians (linked to a
Practitioner and an organisation) and patients (linked to their Patient).

Passwords are stored as scrypt hashes (hashlib, per-password salt). Online guessing
is slowed by :mod:`.throttle` (per user name and address, never a lockout that an
attacker could trigger). Roles give a clinician what their job needs beyond
treating patients: ``emergency-access`` (break-the-glass) and ``registration``
(identity documents of patients; the ``registration`` scope).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .clients import check_secret, hash_secret

USERS = "_users"
EMERGENCY_ACCESS = "emergency-access"
REGISTRATION = "registration"
ROLES = (EMERGENCY_ACCESS, REGISTRATION)


@dataclass(frozen=True)
class User:
    username: str
    kind: str  # "practitioner" | "patient"
    fhir_user: str  # Practitioner/x or Patient/y
    organization: str | None = None
    roles: tuple[str, ...] = ()

    @property
    def patient(self) -> str | None:
        return self.fhir_user.split("/", 1)[1] if self.kind == "patient" else None


def add(db: Any, user: User, password: str) -> None:
    if len(password) < 10:
        raise ValueError("passwords need at least 10 characters")
    unknown = set(user.roles) - set(ROLES)
    if unknown:
        raise ValueError(f"unknown roles {sorted(unknown)}; known: {', '.join(ROLES)}")
    if user.kind == "patient" and user.roles:
        raise ValueError("roles are for clinicians")
    db[USERS].replace_one({"_id": user.username}, {
        "_id": user.username, "kind": user.kind, "fhirUser": user.fhir_user,
        "organization": user.organization, "password": hash_secret(password),
        "roles": sorted(set(user.roles))}, upsert=True)


def set_roles(db: Any, username: str, add_: tuple[str, ...], remove: tuple[str, ...]) -> User:
    """Grant and take away roles; the user's new state."""
    user = find(db, username)
    if user is None:
        raise ValueError(f"no user {username!r}")
    unknown = (set(add_) | set(remove)) - set(ROLES)
    if unknown:
        raise ValueError(f"unknown roles {sorted(unknown)}; known: {', '.join(ROLES)}")
    if user.kind == "patient" and add_:
        raise ValueError("roles are for clinicians")
    roles = sorted((set(user.roles) | set(add_)) - set(remove))
    db[USERS].update_one({"_id": username}, {"$set": {"roles": roles}})
    return User(user.username, user.kind, user.fhir_user, user.organization, tuple(roles))


def _user(doc: dict[str, Any]) -> User:
    return User(doc["_id"], doc["kind"], doc["fhirUser"], doc.get("organization"),
                tuple(doc.get("roles") or ()))


def _doc(db: Any, username: str) -> dict[str, Any] | None:
    """The account named ``username``; none for a name no account can have (a NUL,
    which the embedded database cannot even compare, comes from a sign-in form)."""
    if "\x00" in username:
        return None
    doc: dict[str, Any] | None = db[USERS].find_one({"_id": username})
    return doc


def find(db: Any, username: str) -> User | None:
    doc = _doc(db, username)
    return _user(doc) if doc else None


def has_role(db: Any, username: str, fhir_user: str | None, role: str) -> bool:
    """Does the account behind a token (its ``sub`` and ``fhirUser``) hold ``role``
    now? Read at the moment of use, so taking a role away takes effect at once."""
    user = find(db, username)
    return user is not None and user.fhir_user == fhir_user and role in user.roles


class LoginFailed(Exception):
    """Unknown user name or wrong password (the same message for both)."""


_EQUALISER = hash_secret("timing-equaliser")


def login(db: Any, username: str, password: str) -> User:
    """The user, or :class:`LoginFailed`."""
    doc = _doc(db, username)
    if doc is None:
        check_secret(password, _EQUALISER)  # the same work as a real check
        raise LoginFailed("Unknown user name or wrong password")
    if not check_secret(password, doc["password"]):
        raise LoginFailed("Unknown user name or wrong password")
    return _user(doc)
