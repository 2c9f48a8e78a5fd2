"""What one request of a treating clinician asks the database for.

On the embedded database every command costs a round trip through FerretDB and
PostgreSQL, about as much CPU as the rest of the request: a clinician's read, create
and update are bounded here by the commands they send (issue: speed, "create / update
>= 150 req/s"), not by time. A write is audited twice (before and after: nothing
changes that the log does not show) and looks up the clinician's emergencies for it
(test_audit.py: a cached reach may predate another worker's break-the-glass), reads
what its references point to, and writes the record and its history version. A
write stored quickly needs no second read of what it refers to (a delete at the same
moment waits long enough to see it: interactions/integrity.py)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from pymongo import monitoring
from pymongo.monitoring import CommandListener

from tests import factories as f

from .test_access import clinician, scan_card

#: What the policy reloads now and then (whom a caller reaches, the patients'
#: consents: cached per process and brought up to date by change logs every few
#: seconds, auth/reach_cache.py and auth/consent.py), not per request.
POLICY_RELOADS = {("find", "_consents"), ("find", "_consents_changes"),
                  ("find", "_care_relationships"), ("find", "_care_relationships_changes")}


class Commands(CommandListener):
    """Every command sent while active, as "name collection", but the policy's
    reloads; the audit's look-up of emergencies (``emergency`` in its filter) counts."""

    def __init__(self) -> None:
        self.active = False
        self.seen: Counter[str] = Counter()

    def started(self, event: Any) -> None:
        if not self.active:
            return
        name = event.command_name
        collection = event.command.get(name)
        if (name, collection) in POLICY_RELOADS \
                and "emergency" not in (event.command.get("filter") or {}):
            return
        self.seen[f"{name} {collection}"] += 1

    def succeeded(self, event: Any) -> None:
        pass

    def failed(self, event: Any) -> None:
        pass


COMMANDS = Commands()
monitoring.register(COMMANDS)


def sent(call: Any) -> tuple[Any, Counter[str]]:
    COMMANDS.seen, COMMANDS.active = Counter(), True
    try:
        r = call()
    finally:
        COMMANDS.active = False
    return r, COMMANDS.seen


def test_a_clinicians_read_create_and_update_send_only_what_they_need_http_crud(fhir, app):
    """R4 http.html#read, #create, #update by a clinician treating the patient: the
    read is one find and one audit record; a create or an update looks up the
    clinician's emergencies once (for its audit record), sends no count of the month
    per create (search/buckets.py: COUNT_STEP), reads the Patient it refers to once,
    and an update reads its record once."""
    pid = fhir.create(f.patient("Treated"))["id"]
    oid = fhir.create(f.observation(pid, code="1-1"))["id"]
    dr = clinician(app, fhir)
    scan_card(fhir, app, pid, dr)
    assert dr.post("Observation", f.observation(pid, code="1-2")).status_code == 201

    r, seen = sent(lambda: dr.get(f"Observation/{oid}"))
    assert r.status_code == 200
    assert seen == Counter({"find Observation": 1, "insert _audit": 1})

    for _ in range(3):
        r, seen = sent(lambda: dr.post("Observation", f.observation(pid, code="1-2")))
        assert r.status_code == 201, r.get_json()
        assert seen == Counter({"insert _audit": 2, "find Patient": 1, "insert Observation": 1,
                                "insert Observation_history": 1,
                                "find _care_relationships": 1}), seen

    body = dr.get(f"Observation/{oid}").get_json()
    for value in (5, 6):
        body["valueQuantity"] = {"value": value, "unit": "mg"}
        r, seen = sent(lambda body=body: dr.put(f"Observation/{oid}", body))
        assert r.status_code == 200, r.get_json()
        assert seen == Counter({"insert _audit": 2, "find Observation": 1, "find Patient": 1,
                                "update Observation": 1, "insert Observation_history": 1,
                                "find _care_relationships": 1}), seen
        body = r.get_json()


def test_a_months_count_reaches_the_registry_in_steps_and_at_once_past_dense(fhir, app):
    """The count of a month's creates (search/buckets.py) is written every COUNT_STEP
    single creates of a process, at once when the process's own additions pass DENSE
    (from then on the month is read by day), at once for a Bundle's creates, and what
    is left when the repository closes."""
    from fhirserver.search.buckets import COUNT_STEP, DENSE, REGISTRY, by_day

    pid = fhir.create(f.patient("Busy"))["id"]
    st = app.extensions["fhirserver"]
    registry = st.repo.db[REGISTRY]

    def month() -> dict[str, Any]:
        doc = registry.find_one({"_id": f"Observation|{pid}|date>2024-05"})
        assert doc is not None
        return doc

    def create() -> None:
        fhir.create(f.observation(pid, code="1-1", effectiveDateTime="2024-05-10T08:00:00Z"))

    create()
    assert month()["n"] == 1  # a new month is inserted with its count
    for _ in range(COUNT_STEP):
        create()
    assert month()["n"] == 1 + COUNT_STEP
    create()
    assert month()["n"] == 1 + COUNT_STEP  # one more waits for the next step
    while month()["n"] <= DENSE:
        assert not by_day(month())
        create()
    assert month()["n"] == DENSE + 1 and by_day(month())
    create()  # past DENSE this process counts no more
    assert month()["n"] == DENSE + 1

    other = fhir.create(f.patient("Quiet"))["id"]
    for day in (10, 11, 12):
        fhir.create(f.observation(other, code="1-1", effectiveDateTime=f"2024-05-{day}T08:00:00Z"))
    months = [f"Observation|{other}|date{way}2024-05" for way in "<>"]
    assert [registry.find_one({"_id": m})["n"] for m in months] == [1, 1]
    st.repo.flush_counts()
    assert [registry.find_one({"_id": m})["n"] for m in months] == [3, 3]

    # several writes at once (a Bundle, an import's group) write their counts at once
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": f.observation(other, code="1-1",
                                   effectiveDateTime=f"2024-05-{day}T08:00:00Z"),
         "request": {"method": "POST", "url": "Observation"}} for day in (13, 14)]}
    assert fhir.post("", bundle).status_code == 200
    assert [registry.find_one({"_id": m})["n"] for m in months] == [5, 5]


def test_deleting_a_patient_asks_every_type_for_referrers_but_group_http_delete(fhir):
    """R4 http.html#delete with referential integrity (as HAPI): a Patient is deleted
    only when no current record refers to it. A Group's membership never keeps it
    (interactions/write.py), so the Group collection is not asked; every other
    collection of a type that may refer to it is, twice: before the delete and once
    it is stored (a write referring to it at the same moment: interactions/integrity.py)."""
    pid = fhir.create(f.patient("Leaving"))["id"]
    r, seen = sent(lambda: fhir.delete(f"Patient/{pid}"))
    assert r.status_code == 200, r.get_json()
    assert "find Group" not in seen, seen
    assert seen["find Observation"] == 2 and seen["find DiagnosticReport"] == 2, seen


def test_a_patients_months_come_in_one_reply_however_many_search_sort(fhir, app):
    """search.html#sort, patient-operation-everything.html, observation-operation-lastn:
    a sorted page first reads the registry of the patient's months (search/buckets.py),
    one small document a month. A patient with results in 110 months (more than the
    driver's first batch of 101) gets them in one reply, not a second round trip."""
    pid = fhir.create(f.patient("Decades"))["id"]
    months = [f"{2010 + i // 12}-{i % 12 + 1:02d}-15T08:00:00Z" for i in range(110)]
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": f.observation(pid, code="1-1", effectiveDateTime=when),
         "request": {"method": "POST", "url": "Observation"}} for when in months]}
    assert fhir.post("", bundle).status_code == 200
    dr = clinician(app, fhir)
    scan_card(fhir, app, pid, dr)
    for url in (f"Observation?patient={pid}&_sort=-date&_count=5",
                f"Observation?patient={pid}&_sort=date&_count=5",
                f"Patient/{pid}/$everything?_count=5",
                f"Observation/$lastn?patient={pid}"):
        r, seen = sent(lambda url=url: dr.get(url))
        assert r.status_code == 200, r.get_json()
        assert not [c for c in seen if c.startswith("getMore")], (url, seen)
        assert len([e for e in r.get_json()["entry"] if e["search"]["mode"] == "match"]) \
            == (1 if "lastn" in url else 5), url


def test_whom_a_clinician_treats_is_loaded_in_one_reply_however_many(fhir, app):
    """The access policy loads a caller's care relationships once per process
    (auth/reach_cache.py). A clinician treating 150 patients (more than the driver's first batch of
    101) gets them in one reply, and reaches the last of them (DESIGN.md section 1)."""
    from datetime import timedelta

    from fhirserver.auth import access, reach_cache

    st = app.extensions["fhirserver"]
    now = st.clock()
    treated = [fhir.create(f.patient(f"Ward{n:03d}"))["id"] for n in range(3)]
    for n in range(150):
        access.record_care(st.repo.db, "Practitioner/dr-li", treated[n] if n < 3 else f"p-{n}",
                           now + timedelta(hours=24), "card-scan", now=now)
    dr = clinician(app, fhir)
    reach_cache.clear()  # a process that has not read them yet
    COMMANDS.seen, COMMANDS.active = Counter(), True
    try:
        found = dr.get("Patient?family=Ward")
    finally:
        COMMANDS.active = False
    assert found.status_code == 200, found.get_json()
    assert sorted(e["resource"]["id"] for e in found.get_json()["entry"]) == sorted(treated)
    assert not [c for c in COMMANDS.seen if c.startswith("getMore")], COMMANDS.seen
