"""Family bindings as the access policy reads them: whom a cardholder reaches.

Binding a card is ``mpi/family.py``. A binding is its slot document
``slot|<holder>|1..5`` in ``_card_bindings`` (primary keys, so the limit of five
holds under concurrency); whom a holder reaches is read from those five documents
by key, never from a list kept beside them (a list updated by two writers at once
can lose or resurrect a member).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ..storage.protection import CARDS

BINDINGS = "_card_bindings"
MAX_MEMBERS = 5


def slots(holder: str) -> list[str]:
    return [f"slot|{holder}|{i}" for i in range(1, MAX_MEMBERS + 1)]


def aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def family_reach(db: Any, holder: str) -> dict[str, Any]:
    """``{"m": members, "g": {child: guardianship ends}}`` of ``holder``, from the
    binding slots themselves (five primary-key reads)."""
    found = [db[BINDINGS].find_one({"_id": slot}) for slot in slots(holder)]
    bound = [b for b in found if b is not None]
    return {"m": [b["member"] for b in bound],
            "g": {b["member"]: aware(b["guardian_until"]) for b in bound if b.get("guardian_until")}}


def members(db: Any, holder: str) -> list[str]:
    return list(family_reach(db, holder)["m"])


def end_bindings(db: Any, patient: str) -> set[str]:
    """Remove every binding ``patient`` is in, as holder or as member (a deleted
    Patient's: a new person registered at the id later must neither reach the family
    nor be reached by it), and the binding requests they made. Returns everyone whose
    family reach changed. Each query is answered from an index or a key
    (``storage/repository.py``), as two finds rather than one ``$or``."""
    col = db[BINDINGS]
    found = [*col.find({"member": patient, "kind": "binding"}),
             *col.find({"holder": patient, "kind": "binding"})]
    changed: set[str] = set()
    for b in found:
        col.delete_one({"_id": b["_id"]})
        col.delete_one({"_id": f"pair|{b['holder']}|{b['member']}"})
        pointer = db[CARDS].find_one({"_id": f"active|{b['member']}"})
        if pointer is not None:  # the member's card, by its key: no scan of the cards
            db[CARDS].update_one({"_id": pointer["card"], "guardian": b["holder"]},
                                 {"$set": {"guardian": None}})
        changed |= {b["holder"], b["member"]}
    # the requests the patient made, which another would otherwise accept for them
    col.delete_many({"holder": patient, "kind": "request"})
    return changed
