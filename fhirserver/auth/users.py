"""People who sign in at the authorization server: clinicians (linked to a
Practitioner and an organisation) and patients (linked to their Patient).

Passwords are stored as scrypt hashes (hashlib, per-password salt) and must pass
:func:`password_problem`: length is what makes a password hard to guess (NIST SP
800-63B section 3.1.1.2), so there is a minimum length and no rule about character
classes. Online guessing is slowed by :mod:`.throttle` (per user name and address,
never a lockout that an attacker could trigger). An operator can disable an account
(it signs in no more; what it holds is revoked by :mod:`.revocation`), enable it
again, or remove it. Roles give a clinician what their job needs beyond
treating patients: ``emergency-access`` (break-the-glass) and ``registration``
(identity documents of patients; the ``registration`` scope).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from .clients import check_secret, hash_secret

USERS = "_users"
EMERGENCY_ACCESS = "emergency-access"
REGISTRATION = "registration"
ROLES = (EMERGENCY_ACCESS, REGISTRATION)
MIN_PASSWORD = 12
MAX_PASSWORD = 1024  # bounds the hashing work one request can ask for
NAME_IN_PASSWORD = 4  # user names this long must not appear in the password


@dataclass(frozen=True)
class User:
    username: str
    kind: str  # "practitioner" | "patient"
    fhir_user: str  # Practitioner/x or Patient/y
    organization: str | None = None
    roles: tuple[str, ...] = ()
    disabled: bool = False
    created: datetime | None = None  # None for accounts made by older versions

    @property
    def patient(self) -> str | None:
        return self.fhir_user.split("/", 1)[1] if self.kind == "patient" else None


def password_problem(username: str, password: str) -> str | None:
    """What is wrong with ``password`` as this user's password, or None (pure). Any
    characters may be used, spaces too: a passphrase of common words is both long and
    easy to remember."""
    if len(password) < MIN_PASSWORD:
        return f"passwords need at least {MIN_PASSWORD} characters"
    if len(password) > MAX_PASSWORD:
        return f"passwords have at most {MAX_PASSWORD} characters"
    if not password.strip():
        return "a password cannot be only spaces"
    name = username.strip().casefold()
    if len(name) >= NAME_IN_PASSWORD and name in password.casefold():
        return "a password must not contain the user name"
    return None


def add(db: Any, user: User, password: str) -> None:
    """Create an account, or replace one of the same name (its password, identity and
    roles). A replaced account keeps its creation time and stays disabled if it was:
    only :func:`set_disabled` enables an account."""
    problem = password_problem(user.username, password)
    if problem:
        raise ValueError(problem)
    unknown = set(user.roles) - set(ROLES)
    if unknown:
        raise ValueError(f"unknown roles {sorted(unknown)}; known: {', '.join(ROLES)}")
    if user.kind == "patient" and user.roles:
        raise ValueError("roles are for clinicians")
    before = _doc(db, user.username) or {}
    db[USERS].replace_one({"_id": user.username}, {
        "_id": user.username, "kind": user.kind, "fhirUser": user.fhir_user,
        "organization": user.organization, "password": hash_secret(password),
        "roles": sorted(set(user.roles)), "disabled": bool(before.get("disabled")),
        "created": before.get("created") or datetime.now(UTC)}, upsert=True)


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
    return replace(user, roles=tuple(roles))


def set_disabled(db: Any, username: str, disabled: bool) -> User:
    """Disable or enable an account; its new state. Disabling stops sign-in only: the
    caller revokes what the account holds (:func:`.revocation.end_user`)."""
    user = find(db, username)
    if user is None:
        raise ValueError(f"no user {username!r}")
    db[USERS].update_one({"_id": username}, {"$set": {"disabled": disabled}})
    return replace(user, disabled=disabled)


def disable_accounts_of(db: Any, fhir_user: str) -> int:
    """Disable every account that signs in as ``fhir_user`` (a deleted Patient's):
    no sign-in, and no refresh token it holds is exchanged again (:func:`active`).
    Access tokens already issued end with their lifetime."""
    return int(db[USERS].update_many({"fhirUser": fhir_user, "disabled": {"$ne": True}},
                                     {"$set": {"disabled": True}}).modified_count)


def remove(db: Any, username: str) -> bool:
    """Delete an account; False if there was none."""
    if "\x00" in username:
        return False
    return bool(db[USERS].delete_one({"_id": username}).deleted_count == 1)


def every(db: Any) -> list[User]:
    """All accounts, by name (never their password hashes)."""
    return [_user(d) for d in db[USERS].find({}, {"password": 0}).sort("_id", 1)]


def _user(doc: dict[str, Any]) -> User:
    return User(doc["_id"], doc["kind"], doc["fhirUser"], doc.get("organization"),
                tuple(doc.get("roles") or ()), bool(doc.get("disabled")), doc.get("created"))


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


def active(db: Any, username: str, fhir_user: str | None = None) -> User | None:
    """The account, if it exists, is not disabled and (when given) is still the
    ``fhir_user`` a grant or token names; else None."""
    user = find(db, username)
    if user is None or user.disabled or (fhir_user is not None and user.fhir_user != fhir_user):
        return None
    return user


def has_role(db: Any, username: str, fhir_user: str | None, role: str) -> bool:
    """Does the account behind a token (its ``sub`` and ``fhirUser``) hold ``role``
    now? Read at the moment of use, so taking a role away (or disabling the account)
    takes effect at once."""
    user = active(db, username, fhir_user or "")
    return user is not None and role in user.roles


class LoginFailed(Exception):
    """Unknown user name or wrong password (the same message for both)."""


_EQUALISER = hash_secret("timing-equaliser")


def login(db: Any, username: str, password: str) -> User:
    """The user, or :class:`LoginFailed`."""
    doc = _doc(db, username)
    if doc is None:
        check_secret(password, _EQUALISER)  # the same work as a real check
        raise LoginFailed("Unknown user name or wrong password")
    if not check_secret(password, doc["password"]) or doc.get("disabled"):
        # A disabled account answers like a wrong password: whoever tries learns
        # nothing about which accounts exist or which passwords were right.
        raise LoginFailed("Unknown user name or wrong password")
    return _user(doc)
