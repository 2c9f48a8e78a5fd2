"""AuditEvent resources for what happens here (R4 auditevent.html, with the DICOM
audit codes FHIR uses), pure: facts about one request in, an AuditEvent out.

* type: DICOM 110110 "Patient Record" for FHIR interactions on patient data,
  110112 "Query" for searches, 110114 "User Authenticated" for logins and token
  issue; subtype: the FHIR restful interaction (or the operation's name);
* action: C R U D E (create, read, update, delete, execute), from the interaction;
* outcome: 0 success, 4 the client's failure, 8 the server's;
* purposeOfEvent: TREAT, or ETREAT when access rests on break-the-glass;
* agent: the user (Practitioner or Patient) as requestor, the client application,
  the organisation;
* entity: each patient whose data was returned or changed, the resource itself,
  and for a search its query (base64, as AuditEvent.entity.query requires) with
  the identity values already replaced by keyed hashes (:mod:`.queries`), and its
  shape in plain words (entity.description), which is what a patient sees of it.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from ..storage.indexing import instant

DCM = "http://dicom.nema.org/resources/ontology/DCM"
RESTFUL = "http://hl7.org/fhir/restful-interaction"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
EXTRA_ROLE = "http://terminology.hl7.org/CodeSystem/extra-security-role-type"
QUERY_ROLE = "24"  # object-role: Query

ACTIONS = {"create": "C", "read": "R", "vread": "R", "search-type": "E", "search-system": "E",
           "history-instance": "R", "history-type": "R", "history-system": "R",
           "update": "U", "patch": "U", "delete": "D"}
TYPES = {"query": ("110112", "Query"), "record": ("110110", "Patient Record"),
         "login": ("110114", "User Authenticated")}


@dataclass(frozen=True)
class Facts:
    """What one request did, as the API layer saw it."""

    interaction: str  # restful interaction code, or "operation:<name>", "token", "login"
    at: datetime
    status: int
    method: str
    path: str
    query: str = ""  # identity values already pseudonymised (queries.pseudonymise)
    query_description: str = ""  # queries.describe
    who: str | None = None  # Practitioner/x, Patient/x, or None
    client_id: str = ""
    organization: str | None = None
    kind: str = ""  # caller kind
    patients: tuple[str, ...] = ()
    resource: str | None = None  # Type/id the interaction was about
    emergency: bool = False
    detail: str = ""
    extra: dict[str, str] = field(default_factory=dict)
    #: recorded before a request that may change data runs: its outcome follows in
    #: a second record, so a change never stands without a record of it
    intent: bool = False


def _outcome(status: int) -> str:
    return "0" if status < 400 else "4" if status < 500 else "8"


def audit_event(f: Facts) -> dict[str, Any]:
    kind = "query" if f.interaction.startswith("search") else \
        "login" if f.interaction in ("token", "login") else "record"
    code, display = TYPES[kind]
    action = ACTIONS.get(f.interaction, "E")
    agents: list[dict[str, Any]] = []
    if f.who:
        agents.append({"type": {"coding": [{"system": EXTRA_ROLE, "code": "humanuser"}]},
                       "who": {"reference": f.who}, "requestor": True})
    if f.client_id:
        agents.append({"type": {"coding": [{"system": DCM, "code": "110150", "display": "Application"}]},
                       "who": {"identifier": {"system": "urn:fhirserver:client", "value": f.client_id}},
                       "requestor": not f.who})
    if f.organization:
        agents.append({"who": {"reference": f.organization}, "requestor": False})
    if not agents:
        agents.append({"who": {"display": "unauthenticated caller"}, "requestor": True})
    entities: list[dict[str, Any]] = [
        {"what": {"reference": f"Patient/{p}"},
         "type": {"system": ENTITY_TYPE, "code": "1", "display": "Person"},
         "role": {"system": OBJECT_ROLE, "code": "1", "display": "Patient"}}
        for p in f.patients
    ]
    if f.resource and not (f.resource.startswith("Patient/") and f.resource[8:] in f.patients):
        entities.append({"what": {"reference": f.resource},
                         "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"}})
    if kind == "query":
        query: dict[str, Any] = {
            "type": {"system": ENTITY_TYPE, "code": "2"},
            "role": {"system": OBJECT_ROLE, "code": QUERY_ROLE, "display": "Query"},
            "query": base64.b64encode(f"{f.path}?{f.query}".encode(errors="replace")).decode()}
        if f.query_description:
            query["description"] = f.query_description
        entities.append(query)
    subtype = f.interaction if not f.interaction.startswith("operation:") else f.interaction[10:]
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "type": {"system": DCM, "code": code, "display": display},
        "subtype": [{"system": RESTFUL if f.interaction in ACTIONS else "urn:fhirserver:operation",
                     "code": subtype}],
        "action": action,
        "recorded": instant(f.at),
        "outcome": _outcome(f.status),
        "purposeOfEvent": [{"coding": [{"system": ACT_REASON,
                                        "code": "ETREAT" if f.emergency else "TREAT"}]}],
        "agent": agents,
        "source": {"observer": {"display": "fhirserver"},
                   "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                             "code": "4", "display": "Application Server"}]},
    }
    if f.intent:
        del event["outcome"]
        event["outcomeDesc"] = "started (the outcome is recorded when the request ends)"
    elif f.status >= 400 or f.detail:
        event["outcomeDesc"] = f.detail or f"HTTP {f.status}"
    if entities:
        event["entity"] = entities
    return event


#: What no database of ours stores in a string: NUL (PostgreSQL's jsonb under
#: FerretDB refuses it) and lone UTF-16 surrogates (not encodable as UTF-8).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(value: Any) -> Any:
    """``value`` with every unstorable character replaced by U+FFFD. A request's
    path or query is the caller's text: a NUL in it must not make the record (and,
    written in one group, the records of everyone else) fail to store.

    Every request's AuditEvent passes here, and almost none holds such a character:
    orjson refuses a lone surrogate and writes NUL as ``\\u0000``, so one C pass
    over the whole value finds the usual case, returned as it is, in a thirtieth of
    the time a walk takes. Anything else (a hit, a false alarm from a literal
    backslash, a value orjson cannot write) is walked."""
    try:
        if b"\\u0000" not in orjson.dumps(value):
            return value
    except TypeError:  # orjson.JSONEncodeError too: a lone surrogate, a non-JSON value
        pass
    return _replaced(value)


def _replaced(value: Any) -> Any:
    if isinstance(value, str):
        return _UNSTORABLE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_replaced(k): _replaced(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_replaced(v) for v in value]
    return value
