"""The authorization pages' sign-in state, kept on the server (OWASP session
management: the cookie carries only an unguessable identifier).

Between ``/oauth/authorize``, the login form and the approval form the server must
remember the pending authorization request (client, redirect URI, PKCE challenge,
scopes, launch), the CSRF token of its forms and, once signed in, the user. A signed
cookie would put all of that in the browser, readable by anyone who sees it; here
the cookie holds a random value and the database its SHA-256 (a dump yields no
usable session). The identifier changes when the user signs in, so a value planted
before login is worth nothing after it; the state ends with the answer (approval or
denial), so a cookie stolen afterwards approves nothing.

Each pending request is a document of its own with a random id, which the approval
form carries: the form approves exactly the request it shows (another request
started in the same browser meanwhile makes it stale), and answering deletes the
request by primary key, so one approval gives one code however often it is sent.
Idle state expires after ``IDLE_MINUTES``.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

SESSIONS = "_oauth_sessions"
PENDING = "_oauth_pending"
IDLE_MINUTES = 15


@dataclass
class SignIn:
    key: str  # the SHA-256 of the cookie value
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    request_id: str | None = None
    user: str | None = None


def _key(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def start(db: Any, now: datetime, request_id: str | None = None,
          user: str | None = None) -> tuple[str, SignIn]:
    """A new sign-in state; returns the cookie value and the state."""
    value = secrets.token_urlsafe(32)
    state = SignIn(_key(value), request_id=request_id, user=user)
    save(db, state, now)
    return value, state


def load(db: Any, value: str | None, now: datetime) -> SignIn | None:
    if not value:
        return None
    doc = db[SESSIONS].find_one({"_id": _key(value)})
    if doc is None or doc["exp"].replace(tzinfo=now.tzinfo) <= now:
        return None
    return SignIn(doc["_id"], doc["csrf"], doc.get("request_id"), doc.get("user"))


def save(db: Any, state: SignIn, now: datetime) -> None:
    db[SESSIONS].replace_one({"_id": state.key}, {
        "_id": state.key, "csrf": state.csrf, "request_id": state.request_id,
        "user": state.user, "exp": now + timedelta(minutes=IDLE_MINUTES)}, upsert=True)


def drop(db: Any, state: SignIn) -> None:
    db[SESSIONS].delete_one({"_id": state.key})


def hold(db: Any, request: dict[str, Any], now: datetime) -> str:
    """Keep a pending authorization request; its id."""
    request_id = secrets.token_urlsafe(18)
    db[PENDING].insert_one({"_id": request_id, "request": request,
                            "exp": now + timedelta(minutes=IDLE_MINUTES)})
    return request_id


def pending(db: Any, request_id: str | None, now: datetime) -> dict[str, Any] | None:
    doc = db[PENDING].find_one({"_id": request_id}) if request_id else None
    if doc is None or doc["exp"].replace(tzinfo=now.tzinfo) <= now:
        return None
    return dict(doc["request"])


def answer(db: Any, request_id: str) -> bool:
    """Use the pending request up: True for exactly one caller."""
    return bool(db[PENDING].delete_one({"_id": request_id}).deleted_count == 1)
