"""People who log in at the authorization server: clinicians (linked to a
Practitioner and an organisation) and patients (linked to their Patient).

Passwords are stored as scrypt hashes (hashlib, per-password salt); repeated
failures lock the account for a while (``LOCK_AFTER`` failures within the lock
window lock it for ``LOCK_MINUTES``), which caps online guessing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from .clients import check_secret, hash_secret

USERS = "_users"
LOCK_AFTER = 5
LOCK_MINUTES = 15


@dataclass(frozen=True)
class User:
    username: str
    kind: str  # "practitioner" | "patient"
    fhir_user: str  # Practitioner/x or Patient/y
    organization: str | None = None

    @property
    def patient(self) -> str | None:
        return self.fhir_user.split("/", 1)[1] if self.kind == "patient" else None


def add(db: Any, user: User, password: str) -> None:
    if len(password) < 10:
        raise ValueError("passwords need at least 10 characters")
    db[USERS].replace_one({"_id": user.username}, {
        "_id": user.username, "kind": user.kind, "fhirUser": user.fhir_user,
        "organization": user.organization, "password": hash_secret(password),
        "failures": 0, "locked_until": None}, upsert=True)


def _user(doc: dict[str, Any]) -> User:
    return User(doc["_id"], doc["kind"], doc["fhirUser"], doc.get("organization"))


def find(db: Any, username: str) -> User | None:
    doc = db[USERS].find_one({"_id": username})
    return _user(doc) if doc else None


class LoginFailed(Exception):
    def __init__(self, message: str, locked: bool = False) -> None:
        super().__init__(message)
        self.locked = locked


def login(db: Any, username: str, password: str, now: datetime) -> User:
    """The user, or :class:`LoginFailed` (the same message whether the name or the
    password was wrong)."""
    doc = db[USERS].find_one({"_id": username})
    if doc is None:
        check_secret(password, hash_secret("timing-equaliser"))  # same work as a real check
        raise LoginFailed("Unknown user name or wrong password")
    locked = doc.get("locked_until")
    if locked is not None and locked.replace(tzinfo=now.tzinfo) > now:
        raise LoginFailed("Too many failed attempts: the account is locked for a while", locked=True)
    if not check_secret(password, doc["password"]):
        failures = int(doc.get("failures", 0)) + 1
        update: dict[str, Any] = {"failures": failures}
        if failures >= LOCK_AFTER:
            update = {"failures": 0, "locked_until": now + timedelta(minutes=LOCK_MINUTES)}
        db[USERS].update_one({"_id": username}, {"$set": update})
        if "locked_until" in update:
            raise LoginFailed("Too many failed attempts: the account is locked for a while",
                              locked=True)
        raise LoginFailed("Unknown user name or wrong password")
    db[USERS].update_one({"_id": username}, {"$set": {"failures": 0, "locked_until": None}})
    return _user(doc)
