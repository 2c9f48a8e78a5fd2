"""Which master key a database is sealed under, checked before a server serves.

The first process to use a database records the master key's id (never the key) in
``_secrets``; a later process with another key stops with :class:`WrongMasterKey`
naming both ids. Without this check a misconfigured worker would start, fail every
request that opens a sealed value with a 500, and extend the audit chain under a key
its verification does not hold.
"""

from __future__ import annotations

from typing import Any

from pymongo.errors import DuplicateKeyError

from . import WrongMasterKey
from .master import MasterKey

SECRETS = "_secrets"
BINDING = "master-key"


def bind(db: Any, master: MasterKey) -> None:
    """Accept ``master`` for ``db`` (recording it on first use) or refuse it."""
    col = db[SECRETS]
    doc = col.find_one({"_id": BINDING})
    if doc is None:
        try:
            col.insert_one({"_id": BINDING, "kid": master.kid})
            return
        except DuplicateKeyError:  # another worker bound it first: compare with theirs
            doc = col.find_one({"_id": BINDING}) or {}
    if doc.get("kid") != master.kid:
        raise WrongMasterKey(
            f"database {db.name!r} is sealed under master key {doc.get('kid')}, but the "
            f"configured key ({master.source}) is {master.kid}: every worker and server of one "
            "deployment needs the same FHIR_MASTER_KEY (or master key file)")
