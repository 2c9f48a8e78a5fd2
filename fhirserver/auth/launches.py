"""EHR launch contexts (SMART App Launch 2.x, app-launch.html#launch-app-ehr-launch).

An EHR that opens an app on a patient first asks this server for a ``launch`` value
and hands it to the app, which passes it back in its authorization request. The
launch is what puts a patient into the app's token, so it is guarded:

* only an EHR user (a clinician) or an EHR system (a backend client) that may see
  the patient creates one; for any other patient the answer is the same 404 as for
  a patient that does not exist;
* it names the app (``client_id``) and the user it is for: the clinician who
  created it, or the user an EHR system names; only that user's approval, in that
  app, honours it;
* it lives ``LAUNCH_SECONDS`` and is used once (deleting it by primary key is the use).

Nothing here touches Flask.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

LAUNCHES = "_oauth_launches"
LAUNCH_SECONDS = 300


@dataclass(frozen=True)
class Launch:
    patient: str
    client_id: str
    user: str  # the fhirUser (Practitioner/x or Patient/y) who may approve it


def create(db: Any, launch: Launch, now: datetime) -> str:
    value = secrets.token_urlsafe(24)
    db[LAUNCHES].insert_one({"_id": value, "patient": launch.patient, "client_id": launch.client_id,
                             "user": launch.user, "exp": now + timedelta(seconds=LAUNCH_SECONDS)})
    return value


def peek(db: Any, value: str, client_id: str, now: datetime) -> Launch | None:
    """The launch for ``client_id`` if it exists and is current (not yet used)."""
    doc = db[LAUNCHES].find_one({"_id": value}) if value else None
    if doc is None or doc.get("client_id") != client_id or not doc.get("user"):
        return None
    if doc["exp"].replace(tzinfo=now.tzinfo) <= now:
        return None
    return Launch(str(doc["patient"]), str(doc["client_id"]), str(doc["user"]))


def use(db: Any, value: str, client_id: str, user: str, now: datetime) -> Launch | None:
    """Honour the launch once: for its app and its user only. A wrong user spends
    it too, so a leaked launch value cannot be tried again."""
    found = peek(db, value, client_id, now)
    if found is None or db[LAUNCHES].delete_one({"_id": value}).deleted_count != 1:
        return None
    return found if found.user == user else None
