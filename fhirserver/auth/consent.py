"""A patient's sharing choices (DESIGN.md section 1): restrict records carrying
sensitive security labels to the organisation that wrote them, or opt out of
sharing across organisations altogether. Break-the-glass still opens the record
(and is recorded as an emergency). Family members bound to the patient's card read
sensitive-labelled records only when the patient chooses to share them.

Which labels are sensitive is ``model/security_labels.py``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..storage.upserts import upsert

CONSENTS = "_consents"


@dataclass(frozen=True)
class Choice:
    restrict_sensitive: bool = False
    opt_out: bool = False
    #: family members bound to this patient's card may read sensitive-labelled records
    share_with_family: bool = False


def _choice(doc: dict[str, Any]) -> Choice:
    return Choice(bool(doc.get("restrict_sensitive")), bool(doc.get("opt_out")),
                  bool(doc.get("share_with_family")))


def load(db: Any, patients: Iterable[str]) -> dict[str, Choice]:
    wanted = sorted(set(patients))
    if not wanted:
        return {}
    return {d["_id"]: _choice(d) for d in db[CONSENTS].find({"_id": {"$in": wanted}})}


def save(db: Any, patient: str, choice: Choice) -> None:
    upsert(db[CONSENTS], {"_id": patient, **choice.__dict__})
    _cache.pop(_cache_key(db), None)  # this process sees its own change at once


#: Per process: every patient's choice, re-read every REFRESH seconds. Only patients
#: who chose something have a record, so this stays small, and a request that must
#: check hundreds of treated patients pays no database round trip for it.
REFRESH = 2.0
_cache: dict[str, tuple[float, dict[str, Choice]]] = {}


def _cache_key(db: Any) -> str:
    return f"{getattr(db.client, 'address', '')}/{db.name}"


def cached(db: Any, patients: Iterable[str]) -> dict[str, Choice]:
    import time

    key = _cache_key(db)
    at, everyone = _cache.get(key, (0.0, {}))
    if time.monotonic() - at > REFRESH:
        everyone = {d["_id"]: _choice(d) for d in db[CONSENTS].find({})}
        _cache[key] = (time.monotonic(), everyone)
    return {p: everyone[p] for p in patients if p in everyone}


def allowed(choice: Choice | None, sensitive: bool, writer_org: str | None,
            reader_org: str | None) -> bool:
    """May a clinician or client of ``reader_org`` see a record of this patient?"""
    if choice is None:
        return True
    same_org = writer_org is not None and writer_org == reader_org
    if choice.opt_out:
        return same_org
    if choice.restrict_sensitive and sensitive:
        return same_org
    return True


def condition(choices: dict[str, Choice], reader_org: str | None) -> dict[str, Any] | None:
    """The MongoDB condition on Observation/DiagnosticReport documents that applies
    the choices of these patients (``pat`` the patient, ``sens`` the label flag,
    ``org`` the writing organisation); None when none of them chose anything."""
    restricted = sorted(p for p, c in choices.items() if c.restrict_sensitive and not c.opt_out)
    opted_out = sorted(p for p, c in choices.items() if c.opt_out)
    if not restricted and not opted_out:
        return None
    mine = {"org": reader_org} if reader_org else {"_id": {"$exists": False}}
    special = restricted + opted_out
    branches: list[dict[str, Any]] = [{"pat": {"$nin": special}}]
    if restricted:
        branches.append({"$and": [{"pat": {"$in": restricted}},
                                  {"$or": [{"sens": {"$ne": True}}, mine]}]})
    if opted_out:
        branches.append({"$and": [{"pat": {"$in": opted_out}}, mine]})
    return {"$or": branches}
