"""A patient's care team is a CareTeam resource (R4 careteam.html) in the patient's
compartment (compartmentdefinition-patient.html: CareTeam.subject): ``$care-team``
returns and changes it, its members hold a care relationship, and nobody writes
themselves onto it through REST."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from pymongo.errors import AutoReconnect

from fhirserver.auth.access import CARE, record_care
from fhirserver.storage.unit_of_work import UnitOfWork
from tests import factories as f
from tests.api.test_access import As, clinician, emergency_role
from tests.conftest import mint


def member(ref: str, remove: bool = False) -> dict:
    params = [{"name": "member", "valueReference": {"reference": ref}}]
    if remove:
        params.append({"name": "remove", "valueBoolean": True})
    return {"resourceType": "Parameters", "parameter": params}


@pytest.fixture
def pid(fhir) -> str:
    pid = fhir.create(f.patient("Teamed"))["id"]
    fhir.create(f.observation(pid, code="1-1"))
    return pid


def test_care_team_is_a_readable_versioned_careteam_resource(fhir, pid):
    empty = fhir.get(f"Patient/{pid}/$care-team")
    assert empty.status_code == 200 and "participant" not in empty.get_json()
    team_id = empty.get_json()["id"]
    assert team_id == f"care-team-{pid}" and empty.headers["ETag"] == 'W/"1"'
    r = fhir.post(f"Patient/{pid}/$care-team", member("Practitioner/dr-a"))
    assert r.status_code == 200 and r.headers["ETag"] == 'W/"2"'
    read = fhir.get(f"CareTeam/{team_id}").get_json()
    assert read["participant"] == [{"member": {"reference": "Practitioner/dr-a"}}]
    assert read["subject"] == {"reference": f"Patient/{pid}"} and read["status"] == "active"
    # Reading the operation again writes nothing new (same content, http.html#update).
    assert fhir.get(f"Patient/{pid}/$care-team").headers["ETag"] == 'W/"2"'
    fhir.post(f"Patient/{pid}/$care-team", member("Practitioner/dr-a", remove=True))
    versions = fhir.get(f"CareTeam/{team_id}/_history").get_json()["entry"]
    assert [e["resource"]["meta"]["versionId"] for e in versions] == ["3", "2", "1"]
    assert "participant" not in versions[0]["resource"]


def test_care_team_search_parameters_and_compartment_careteam_html_search(fhir, pid):
    fhir.post(f"Patient/{pid}/$care-team", member("Practitioner/dr-a"))
    other = fhir.create({"resourceType": "CareTeam", "status": "proposed",
                         "subject": {"reference": f"Patient/{pid}"},
                         "period": {"start": "2019-03-01", "end": "2019-04-01"},
                         "category": [{"coding": [{"system": "http://loinc.org", "code": "LA27976-2"}]}],
                         "participant": [{"member": {"reference": "Practitioner/dr-b"}}]})["id"]

    def found(query: str) -> list[str]:
        return sorted(e["resource"]["id"] for e in fhir.get(query).get_json().get("entry", []))

    team = f"care-team-{pid}"
    assert found(f"CareTeam?patient={pid}") == sorted([team, other])
    assert found("CareTeam?participant=Practitioner/dr-a") == [team]
    assert found(f"CareTeam?subject=Patient/{pid}&status=proposed") == [other]
    assert found("CareTeam?category=http://loinc.org|LA27976-2&date=ge2019-03-15&date=lt2019-05") == [other]
    assert found(f"Patient/{pid}/CareTeam") == sorted([team, other])
    everything = fhir.get(f"Patient/{pid}/$everything").get_json()
    assert {team, other} <= {e["resource"]["id"] for e in everything["entry"]}


def test_membership_is_a_care_relationship_and_ends_with_the_organisations_care(fhir, app, pid):
    """A clinic system's member: readable by the member while the organisation treats the
    patient, with the end shown as participant.period.end."""
    db = app.extensions["fhirserver"].repo.db
    record_care(db, "Organization/clinic-y", pid, datetime.now(UTC) + timedelta(hours=2),
                "card-scan")
    ehr = As(fhir, mint(app, "system", "system/*.cruds", client_id="ehr-y",
                        organization="Organization/clinic-y"))
    r = ehr.post(f"Patient/{pid}/$care-team", member("Practitioner/dr-y"))
    assert r.status_code == 200, r.get_json()
    assert "end" in r.get_json()["participant"][0]["period"]
    dr = clinician(app, fhir, "dr-y", scope="user/*.rs", lifetime=86400)
    assert dr.get(f"CareTeam/care-team-{pid}").status_code == 200
    assert dr.get(f"Patient/{pid}").status_code == 200
    later = datetime.now(UTC) + timedelta(hours=3)
    app.extensions["fhirserver"].clock = lambda: later
    assert dr.get(f"CareTeam/care-team-{pid}").status_code == 404
    assert "participant" not in fhir.get(f"Patient/{pid}/$care-team").get_json()


def test_a_stranger_sees_no_care_team_and_cannot_join_one(fhir, app, pid):
    """Attacker with a valid token for someone else: the team of a patient they do not
    treat is hidden (404, like any record), and neither the operation nor a REST
    write of the team puts them on it."""
    team = f"care-team-{pid}"
    fhir.post(f"Patient/{pid}/$care-team", member("Practitioner/dr-a"))
    mallory = clinician(app, fhir, "dr-mallory")
    assert mallory.get(f"CareTeam/{team}").status_code == 404
    assert mallory.ids(f"CareTeam?patient={pid}") == []
    assert mallory.ids("CareTeam?participant=Practitioner/dr-a") == []
    assert mallory.post(f"Patient/{pid}/$care-team", member("Practitioner/dr-mallory")).status_code == 403
    joined = {"resourceType": "CareTeam", "id": team, "status": "active",
              "subject": {"reference": f"Patient/{pid}"},
              "participant": [{"member": {"reference": "Practitioner/dr-mallory"}}]}
    assert mallory.put(f"CareTeam/{team}", joined).status_code in (403, 404)
    # Even with a care relationship (a card scan), the team is the operation's alone,
    # and a CareTeam of one's own making opens nothing.
    record_care(app.extensions["fhirserver"].repo.db, "Practitioner/dr-mallory", pid,
                datetime.now(UTC) + timedelta(hours=1), "card-scan")
    assert mallory.put(f"CareTeam/{team}", joined).status_code == 403
    assert mallory.delete(f"CareTeam/{team}").status_code == 403
    assert fhir.put(f"CareTeam/{team}", joined).status_code == 403  # operators too
    own = mallory.post("CareTeam", {**joined, "id": "x", "participant": [
        {"member": {"reference": "Practitioner/dr-friend"}}]})
    assert own.status_code == 201
    friend = clinician(app, fhir, "dr-friend")
    assert friend.get(f"Patient/{pid}").status_code == 404
    patch = mallory.fhir.patch(f"CareTeam/{team}", [{"op": "add", "path": "/participant/-",
                                                     "value": {"member": {"reference": "Practitioner/dr-mallory"}}}],
                               headers=mallory.h)
    assert patch.status_code == 403
    assert fhir.get(f"CareTeam/{team}").get_json()["participant"] == [
        {"member": {"reference": "Practitioner/dr-a"}}]


def test_a_deleted_patient_takes_their_care_team_along(fhir):
    pid = fhir.create(f.patient("Leaving"))["id"]
    fhir.post(f"Patient/{pid}/$care-team", member("Practitioner/dr-a"))
    assert fhir.delete(f"Patient/{pid}").status_code == 200
    assert fhir.get(f"CareTeam/care-team-{pid}").status_code == 410


def _meanwhile(monkeypatch, key: str, other_request) -> None:
    """Run ``other_request`` right after the next read of the care relationship ``key``:
    two requests changing one relationship at once, in the order that loses a write
    when each writes back the document it read."""
    import pymongo.collection

    from fhirserver.auth.access import CARE

    real = pymongo.collection.Collection.find_one
    armed = [True]

    def find_one(self, filter=None, *args, **kwargs):
        found = real(self, filter, *args, **kwargs)
        if armed[0] and self.name == CARE and isinstance(filter, dict) and filter.get("_id") == key:
            armed[0] = False
            other_request()
        return found

    monkeypatch.setattr(pymongo.collection.Collection, "find_one", find_one)


def test_a_member_taken_off_the_team_while_breaking_the_glass_keeps_only_the_emergency(
        fhir, app, pid, monkeypatch):
    """DESIGN.md section 1: only clinicians actually treating the patient read the
    record, for a limited time; emergency access is flagged. A member taken off the
    team at the very moment they break the glass keeps the emergency's minutes, not
    their place on the team; taken off while the glass is being broken the other way
    round, they keep the emergency they were just given. Neither request writes back
    the relationship it read over the one the other just wrote."""
    from fhirserver.auth.access import set_team_member

    from .test_access import emergency_role

    st = app.extensions["fhirserver"]
    db = st.repo.db
    emergency_role(app, "dr-team", "dr-other")
    glass = {"resourceType": "Parameters", "parameter": [
        {"name": "reason", "valueString": "cardiac arrest"}]}
    later = datetime.now(UTC) + timedelta(hours=2)  # the emergency time is over

    # The member breaks the glass; the team's organisation takes them off meanwhile.
    assert fhir.post(f"Patient/{pid}/$care-team", member("Practitioner/dr-team")).status_code == 200
    dr = clinician(app, fhir, "dr-team", lifetime=3 * 3600)
    _meanwhile(monkeypatch, f"Practitioner/dr-team|{pid}", lambda: set_team_member(
        db, pid, "Practitioner/dr-team", datetime.now(UTC), remove=True))
    assert dr.post(f"Patient/{pid}/$break-glass", glass).status_code == 200
    monkeypatch.undo()
    assert dr.get(f"Patient/{pid}").status_code == 200
    st.clock = lambda: later
    assert dr.get(f"Patient/{pid}").status_code == 404
    assert "participant" not in fhir.get(f"Patient/{pid}/$care-team").get_json()

    # Taken off the team while their break-the-glass is being written.
    st.clock = lambda: datetime.now(UTC)
    assert fhir.post(f"Patient/{pid}/$care-team", member("Practitioner/dr-other")).status_code == 200
    other = clinician(app, fhir, "dr-other", lifetime=3 * 3600)
    now = datetime.now(UTC)
    _meanwhile(monkeypatch, f"Practitioner/dr-other|{pid}", lambda: record_care(
        db, "Practitioner/dr-other", pid, now + timedelta(minutes=60), "break-glass",
        emergency=True, now=now))
    r = fhir.post(f"Patient/{pid}/$care-team", member("Practitioner/dr-other", remove=True))
    assert r.status_code == 200, r.get_json()
    monkeypatch.undo()
    assert other.get(f"Patient/{pid}").status_code == 200
    st.clock = lambda: later
    assert other.get(f"Patient/{pid}").status_code == 404


def _team(fhir, pid) -> list[str]:
    return [p["member"]["reference"]
            for p in fhir.get(f"Patient/{pid}/$care-team").get_json().get("participant", [])]


def test_a_members_own_card_scan_neither_ends_nor_outlives_their_place_on_the_team(
        fhir, app, pid):
    """careteam.html: the team lists its members while their place lasts. A member who
    scans the patient's card stays on the team, with the team's end, and the
    organisation can still take them off; their own scan, which outlasts the team,
    keeps their access to its end (DESIGN.md section 1: treating clinicians only, for
    a limited time)."""
    st = app.extensions["fhirserver"]
    db = st.repo.db
    now = datetime.now(UTC)
    record_care(db, "Organization/clinic-y", pid, now + timedelta(hours=2), "card-scan")
    ehr = As(fhir, mint(app, "system", "system/*.cruds", client_id="ehr-y",
                        organization="Organization/clinic-y"))
    assert ehr.post(f"Patient/{pid}/$care-team", member("Practitioner/dr-y")).status_code == 200
    team_end = ehr.get(f"Patient/{pid}/$care-team").get_json()["participant"][0]["period"]["end"]
    record_care(db, "Practitioner/dr-y", pid, now + timedelta(hours=24), "card-scan", now=now)
    listed = ehr.get(f"Patient/{pid}/$care-team").get_json()["participant"]
    assert [p["member"]["reference"] for p in listed] == ["Practitioner/dr-y"]
    assert listed[0]["period"]["end"] == team_end

    r = ehr.post(f"Patient/{pid}/$care-team", member("Practitioner/dr-y", remove=True))
    assert r.status_code == 200, r.get_json()
    assert _team(fhir, pid) == []
    dr = clinician(app, fhir, "dr-y", scope="user/*.rs", lifetime=2 * 86400)
    assert dr.get(f"Patient/{pid}").status_code == 200  # their own scan
    st.clock = lambda: now + timedelta(hours=25)
    assert dr.get(f"Patient/{pid}").status_code == 404


def test_a_card_scan_made_before_joining_the_team_outlasts_leaving_it(fhir, app, pid):
    """A clinician who scanned the card, then was put on the team and taken off it
    again, keeps the access of their scan to its end; the team shows them only while
    their place lasts."""
    st = app.extensions["fhirserver"]
    db = st.repo.db
    now = datetime.now(UTC)
    record_care(db, "Practitioner/dr-z", pid, now + timedelta(hours=24), "card-scan", now=now)
    record_care(db, "Organization/clinic-z", pid, now + timedelta(hours=2), "card-scan")
    ehr = As(fhir, mint(app, "system", "system/*.cruds", client_id="ehr-z",
                        organization="Organization/clinic-z"))
    assert ehr.post(f"Patient/{pid}/$care-team", member("Practitioner/dr-z")).status_code == 200
    assert _team(fhir, pid) == ["Practitioner/dr-z"]
    dr = clinician(app, fhir, "dr-z", scope="user/*.rs", lifetime=2 * 86400)
    st.clock = lambda: now + timedelta(hours=3)  # the organisation's care, and the place, ended
    assert _team(fhir, pid) == []
    assert dr.get(f"Patient/{pid}").status_code == 200
    st.clock = lambda: now
    assert ehr.post(f"Patient/{pid}/$care-team",
                    member("Practitioner/dr-z", remove=True)).status_code == 200
    assert _team(fhir, pid) == []
    assert dr.get(f"Patient/{pid}").status_code == 200
    st.clock = lambda: now + timedelta(hours=25)
    assert dr.get(f"Patient/{pid}").status_code == 404


def test_a_place_that_ended_with_its_organisations_care_keeps_no_other_organisation_out(
        fhir, app, pid):
    """A place on the team lasts as long as its organisation treats the patient. Once
    it has ended (the member's own card scan still running), that organisation can
    no longer take the member off (it no longer reaches the patient), and another
    organisation treating the patient puts them on its own team; their scan stays."""
    st = app.extensions["fhirserver"]
    db = st.repo.db
    now = datetime.now(UTC)
    st.clock = lambda: now
    record_care(db, "Organization/clinic-a", pid, now + timedelta(hours=2), "card-scan", now=now)
    a, b = (As(fhir, mint(app, "system", "system/*.cruds", client_id=f"ehr-{o}", lifetime=86400,
                          organization=f"Organization/clinic-{o}")) for o in ("a", "b"))
    assert a.post(f"Patient/{pid}/$care-team", member("Practitioner/dr-m")).status_code == 200
    later = now + timedelta(hours=3)  # clinic a's care, and the place it gave, ended
    st.clock = lambda: later
    record_care(db, "Practitioner/dr-m", pid, later + timedelta(hours=24), "card-scan", now=later)
    record_care(db, "Organization/clinic-b", pid, later + timedelta(hours=10), "card-scan",
                now=later)
    assert a.post(f"Patient/{pid}/$care-team",
                  member("Practitioner/dr-m", remove=True)).status_code == 404
    r = b.post(f"Patient/{pid}/$care-team", member("Practitioner/dr-m"))
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["participant"] == [{"member": {"reference": "Practitioner/dr-m"},
                                            "period": {"end": (later + timedelta(hours=10))
                                                       .isoformat(timespec="seconds")
                                                       .replace("+00:00", "Z")}}]
    assert b.post(f"Patient/{pid}/$care-team",
                  member("Practitioner/dr-m", remove=True)).status_code == 200
    assert _team(b, pid) == []
    dr = clinician(app, fhir, "dr-m", scope="user/*.rs", lifetime=3 * 86400)
    assert dr.get(f"Patient/{pid}").status_code == 200  # their own scan
    st.clock = lambda: later + timedelta(hours=25)
    assert dr.get(f"Patient/{pid}").status_code == 404


def test_a_card_scan_over_a_place_written_before_places_had_their_own_end_is_not_lost(
        fhir, app, pid, monkeypatch):
    """A place on the team written by an earlier version (no end of its own, no record
    of the member's own access): the member scans the card while the place is being
    ended. Ending the place must not write over the scan it did not see: the member
    keeps the scan's access to its end."""
    from fhirserver.auth.access import CARE

    st = app.extensions["fhirserver"]
    db = st.repo.db
    now = datetime.now(UTC).replace(microsecond=0)
    st.clock = lambda: now
    key = f"Practitioner/dr-old|{pid}"
    db[CARE].insert_one({  # an operator's placement, as the earlier version wrote it
        "_id": key, "who": "Practitioner/dr-old", "patient": pid,
        "until": now + timedelta(days=365 * 100), "reason": "care-team", "emergency": False,
        "at": now, "team": True, "team_org": None})
    _meanwhile(monkeypatch, key, lambda: record_care(
        db, "Practitioner/dr-old", pid, now + timedelta(hours=24), "card-scan", now=now))
    r = fhir.post(f"Patient/{pid}/$care-team", member("Practitioner/dr-old", remove=True))
    assert r.status_code == 200, r.get_json()
    monkeypatch.undo()
    assert _team(fhir, pid) == []
    dr = clinician(app, fhir, "dr-old", scope="user/*.rs", lifetime=2 * 86400)
    assert dr.get(f"Patient/{pid}").status_code == 200
    st.clock = lambda: now + timedelta(hours=25)
    assert dr.get(f"Patient/{pid}").status_code == 404


@pytest.mark.parametrize("registered_again", [False, True])
@pytest.mark.parametrize("opening", ["scan", "break-glass"])
def test_a_relationship_opened_while_the_patient_is_deleted_does_not_outlive_it(
        fhir, app, monkeypatch, opening, registered_again):
    """DESIGN.md section 1 (only clinicians treating the patient read the record) and
    http.html#delete: a Patient deleted while a clinician's card scan or break-the-glass
    is being written, after the request found the Patient and before it wrote the
    relationship, leaves no relationship behind: neither with the deleted patient nor
    with a new person registered at the same id meanwhile. The request answers 404."""
    from fhirserver.auth.access import CARE

    from .test_access import emergency_role

    db = app.extensions["fhirserver"].repo.db
    emergency_role(app, "dr-race")
    pid = fhir.create(f.patient("Leaving"))["id"]
    dr = clinician(app, fhir, "dr-race")
    fhir.post(f"Patient/{pid}/$issue-card", None)
    code = fhir.get(f"Patient/{pid}/$card-qr").get_json()["parameter"][0]["valueString"]

    answers: list[int] = []

    def delete() -> None:  # another request, on a thread of its own as a server runs it
        answers.append(fhir.delete(f"Patient/{pid}").status_code)
        if registered_again:
            answers.append(fhir.put(f"Patient/{pid}", {**f.patient("Newcomer"), "id": pid})
                           .status_code)

    def delete_meanwhile() -> None:
        other = threading.Thread(target=delete)
        other.start()
        other.join()

    _meanwhile(monkeypatch, f"Practitioner/dr-race|{pid}", delete_meanwhile)
    if opening == "scan":
        r = dr.post("Patient/$scan-card", {"resourceType": "Parameters", "parameter": [
            {"name": "payload", "valueString": code}]})
    else:
        r = dr.post(f"Patient/{pid}/$break-glass", {"resourceType": "Parameters", "parameter": [
            {"name": "reason", "valueString": "collapse"}]})
    monkeypatch.undo()
    assert answers == ([200, 201] if registered_again else [200])
    assert r.status_code == 404, r.get_json()
    assert db[CARE].count_documents({"patient": pid}) == 0
    assert dr.get(f"Patient/{pid}").status_code in (404, 410)


def test_a_delete_taken_back_does_not_end_the_patients_other_relationships(
        fhir, app, monkeypatch):
    """transaction.html (all or nothing): a transaction deletes the Patient, then fails
    on a later entry and is taken back (storage/unit_of_work.py: readers see a unit's
    first writes before its last). A break-the-glass that found the Patient before, and
    reads it again while the delete is in flight, waits for the unit, and does not end
    the care of a patient who, in the end, was never deleted."""
    db = app.extensions["fhirserver"].repo.db
    emergency_role(app, "dr-race")
    pid = fhir.create(f.patient("Staying"))["id"]
    org = fhir.create({"resourceType": "Organization", "name": "A"})["id"]
    now = datetime.now(UTC)
    record_care(db, "Practitioner/dr-other", pid, now + timedelta(days=30), "card-scan", now=now)
    dr = clinician(app, fhir, "dr-race")
    go, deleted, done = threading.Event(), threading.Event(), threading.Event()
    answers: list[int] = []

    def glass() -> None:
        try:
            answers.append(dr.post(f"Patient/{pid}/$break-glass", {
                "resourceType": "Parameters",
                "parameter": [{"name": "reason", "valueString": "collapse"}]}).status_code)
        finally:
            done.set()

    def in_flight() -> None:      # break-glass found the Patient; about to write the care
        go.set()
        assert deleted.wait(10)

    _meanwhile(monkeypatch, f"Practitioner/dr-race|{pid}", in_flight)
    real = UnitOfWork._apply
    armed = [True]

    def apply(self, w, session=None):
        if armed[0] and w.type == "Organization":   # the Patient delete is applied already
            armed[0] = False
            deleted.set()
            done.wait(1.0)  # break-glass re-reads meanwhile (or waits for the unit)
            raise AutoReconnect("the database went away mid-transaction")
        return real(self, w, session)

    monkeypatch.setattr(UnitOfWork, "_apply", apply)
    b = threading.Thread(target=glass)
    b.start()
    assert go.wait(10)
    r = fhir.post("", {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "DELETE", "url": f"Patient/{pid}"}},
        {"resource": {"resourceType": "Organization", "id": org, "name": "B"},
         "request": {"method": "PUT", "url": f"Organization/{org}"}}]})
    b.join()
    monkeypatch.undo()
    assert r.status_code >= 500, r.get_json()
    assert fhir.get(f"Patient/{pid}").status_code == 200      # never deleted
    assert db[CARE].count_documents({"_id": f"Practitioner/dr-other|{pid}"}) == 1
    assert answers == [200]


def test_a_break_the_glass_while_the_patient_is_updated_keeps_its_relationship(
        fhir, app, monkeypatch):
    """A break-the-glass racing updates of the Patient (not a delete) opens the
    relationship as ever: only a delete since the Patient was found ends it."""
    db = app.extensions["fhirserver"].repo.db
    emergency_role(app, "dr-race")
    pid = fhir.create(f.patient("Busy"))["id"]
    dr = clinician(app, fhir, "dr-race")

    def update() -> None:
        t = threading.Thread(target=lambda: [
            fhir.put(f"Patient/{pid}", {**f.patient(f"Busy{i}"), "id": pid}) for i in range(3)])
        t.start()
        t.join()

    _meanwhile(monkeypatch, f"Practitioner/dr-race|{pid}", update)
    r = dr.post(f"Patient/{pid}/$break-glass", {"resourceType": "Parameters", "parameter": [
        {"name": "reason", "valueString": "collapse"}]})
    monkeypatch.undo()
    assert r.status_code == 200, r.get_json()
    assert db[CARE].count_documents({"patient": pid}) == 1
