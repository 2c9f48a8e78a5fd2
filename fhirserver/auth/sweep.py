"""Removing what the authorization server keeps only for a while: sign-in state,
pending requests, codes, launches, used refresh tokens, assertion ids.

Anyone may open an authorization request, and each one stores a little: without
cleaning, an anonymous caller could grow the database at will. Every expiring
document carries ``exp``; expired ones are deleted at most once a minute per
process (on MongoDB a TTL index would do the same; FerretDB 1.x has none).
"""

from __future__ import annotations

import threading
import time
from datetime import datetime
from typing import Any

from .clients import ASSERTIONS
from .grants import CODES, FAMILIES, REFRESH
from .launches import LAUNCHES
from .signin import PENDING, SESSIONS
from .throttle import FAILURES

EVERY = 60.0
DATED = (SESSIONS, PENDING, CODES, LAUNCHES, REFRESH, FAMILIES, FAILURES)
_last: dict[str, float] = {}
_lock = threading.Lock()


def sweep(db: Any, now: datetime) -> None:
    key = f"{getattr(db.client, 'address', '')}/{db.name}"
    with _lock:
        if time.monotonic() - _last.get(key, -EVERY) < EVERY:
            return
        _last[key] = time.monotonic()
    for name in DATED:
        db[name].delete_many({"exp": {"$lt": now}})
    db[ASSERTIONS].delete_many({"exp": {"$lt": int(now.timestamp())}})
