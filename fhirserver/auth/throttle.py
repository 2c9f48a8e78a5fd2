"""Growing delays for failed sign-ins, per user name and client address (OWASP
authentication guidance: throttle, do not lock out).

Locking an account after a few failures lets anyone who knows a clinician's user
name lock them out. Instead each (user name, address) pair that keeps failing waits
longer between attempts: the first ``FREE_FAILURES`` cost nothing, then 1, 2, 4...
seconds up to ``MAX_DELAY``. The user at their own desk, from another address, is
not slowed by an attacker elsewhere; the attacker gets about a hundred guesses a day
per address. Records are keyed by a hash of the pair (no user names or addresses in the
clear) and end with a successful sign-in.

One attempt per pair runs at a time (:func:`begin` takes a lease, :func:`end`
returns it): sending many guesses at once would otherwise all pass the check before
the first failure is counted.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any

from pymongo.errors import DuplicateKeyError

FAILURES = "_login_failures"
FREE_FAILURES = 3
MAX_DELAY = 900
LEASE_SECONDS = 10  # an attempt that crashed frees its pair after this


def delay(failures: int) -> int:
    """Seconds to wait after ``failures`` consecutive failures (pure)."""
    if failures < FREE_FAILURES:
        return 0
    return int(min(2 ** (failures - FREE_FAILURES), MAX_DELAY))


def _key(username: str, address: str) -> str:
    return hashlib.sha256(f"{username.strip().lower()}|{address}".encode()).hexdigest()


def begin(db: Any, username: str, address: str, now: datetime) -> int:
    """Start an attempt: 0 to go ahead (the pair's lease is taken), else the seconds
    to wait (a delay still running, or another attempt of the pair in flight). The
    delay is read once the lease is held, so an attempt that raced the previous
    failure still sees the delay that failure set."""
    key = _key(username, address)
    lease = {"_id": f"lease|{key}", "exp": now + timedelta(seconds=LEASE_SECONDS)}
    try:
        db[FAILURES].insert_one(lease)
    except DuplicateKeyError:
        held = db[FAILURES].find_one({"_id": lease["_id"]})
        if held is None or held["exp"].replace(tzinfo=now.tzinfo) > now:
            return 1  # another attempt of the pair is running (or just ended): retry
        # A lease left by an attempt that crashed: take it over only if it is still
        # that one.
        taken = db[FAILURES].replace_one({"_id": lease["_id"], "exp": held["exp"]}, lease)
        if taken.modified_count != 1:
            return 1
    doc = db[FAILURES].find_one({"_id": key})
    if doc is not None and doc.get("until") is not None:
        left = (doc["until"].replace(tzinfo=now.tzinfo) - now).total_seconds()
        if left > 0:
            db[FAILURES].delete_one({"_id": lease["_id"]})
            return int(left + 0.999)
    return 0


def end(db: Any, username: str, address: str, now: datetime, *, success: bool) -> int:
    """Finish an attempt: a success clears the pair's record; a failure counts and
    returns the delay it imposes on the next attempt. The lease is returned."""
    key = _key(username, address)
    try:
        if success:
            db[FAILURES].delete_one({"_id": key})
            return 0
        doc = db[FAILURES].find_one({"_id": key}) or {}
        failures = int(doc.get("n", 0)) + 1  # the lease makes this writer the only one
        seconds = delay(failures)
        db[FAILURES].replace_one({"_id": key}, {
            "_id": key, "n": failures, "at": now, "exp": now + timedelta(days=1),
            "until": now + timedelta(seconds=seconds) if seconds else None}, upsert=True)
        return seconds
    finally:
        db[FAILURES].delete_one({"_id": f"lease|{key}"})
