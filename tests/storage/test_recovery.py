"""Rolling back what a dead process left half done, and only that (FHIR R4
http.html#transaction: a transaction's entries "either all succeed or all fail").

A transaction is written in full through the API, then a pending journal entry
naming its writes is put back, as the process would have left it had it died before
its last step; the entry's owner is a real process, alive or gone.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from fhirserver.interactions import write
from fhirserver.interactions.context import Context, Planner
from fhirserver.storage.journal import LEASE, Leases, journal_write, me, start_time
from fhirserver.storage.recovery import RECOVERY_LOCK
from fhirserver.storage.unit_of_work import Finished, VersionConflict, new_entry_id
from tests.conftest import FhirClient, make_app
from tests.factories import observation, patient


@pytest.fixture
def repo(app: Any) -> Any:
    return app.extensions["fhirserver"].repo


@pytest.fixture
def living() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


def owner_of(pid: int, start: str | None = None, host: str | None = None) -> dict[str, Any]:
    return {"host": host or me().host, "pid": pid,
            "start": start if start is not None else start_time(pid) or "",
            "token": uuid.uuid4().hex}


def dead_owner() -> dict[str, Any]:
    proc = subprocess.Popen(["true"])
    start = start_time(proc.pid) or "0"
    proc.wait()  # exited and reaped: no such process any more
    return owner_of(proc.pid, start)


def written(fhir: Any) -> tuple[str, list[dict[str, Any]]]:
    """A Patient updated and two Observations created in one transaction; returns the
    patient id and the journal's record of the writes."""
    pid = fhir.post("Patient", patient()).get_json()["id"]
    body = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {**patient(family="Renamed"), "id": pid},
         "request": {"method": "PUT", "url": f"Patient/{pid}"}},
        *({"resource": observation(pid, value=v), "request": {"method": "POST",
                                                              "url": "Observation"}}
          for v in (1, 2)),
    ]}
    r = fhir.post("", body)
    assert r.status_code == 200, r.get_json()
    writes = [{"type": "Patient", "id": pid, "expected": 1, "version": 2, "claims": [],
               "previous_claims": []}]
    for e in r.get_json()["entry"][1:]:
        writes.append({"type": "Observation", "id": e["response"]["location"].split("/")[1],
                       "expected": None, "version": 1, "claims": [], "previous_claims": []})
    return pid, writes


def written_by_another_process(repo: Any, settings: Any) -> tuple[str, list[dict[str, Any]], str]:
    """:func:`written` by another process (an app of its own); also returns the
    transaction's journal entry, as its records name it."""
    writer = make_app(settings)
    try:
        pid, writes = written(FhirClient(writer.test_client()))
    finally:
        writer.extensions["fhirserver"].repo.close()
    return pid, writes, repo.cols.current["Patient"].find_one({"_id": pid})["tx"]


def leave_pending(repo: Any, writes: list[dict[str, Any]], owner: dict[str, Any],
                  lease: timedelta, entry_id: str | None = None) -> str:
    entry_id = entry_id or uuid.uuid4().hex
    repo.cols.journal.insert_one({"_id": entry_id, "state": "pending",
                                  "started": datetime.now(UTC), "owner": owner,
                                  "lease": datetime.now(UTC) + lease, "writes": writes})
    return entry_id


def undone(fhir: Any, repo: Any, pid: str) -> bool:
    """The transaction is gone whole: Patient back at version 1, no Observation."""
    p = fhir.get(f"Patient/{pid}").get_json()
    return (p["meta"]["versionId"] == "1" and p["name"][0]["family"] == "Chalmers"
            and repo.cols.current["Observation"].count_documents({}) == 0
            and repo.cols.history["Observation"].count_documents({}) == 0
            and repo.cols.history["Patient"].find_one({"_id": f"{pid}/2"}) is None)


def intact(fhir: Any, repo: Any, pid: str) -> bool:
    p = fhir.get(f"Patient/{pid}").get_json()
    return (p["meta"]["versionId"] == "2"
            and repo.cols.current["Observation"].count_documents({}) == 2)


def test_entry_of_a_live_owner_is_never_rolled_back_http_transaction(fhir, repo, living):
    """Another process on this host still running the transaction: neither an expired
    lease nor a recovery at start takes it away from it."""
    pid, writes = written(fhir)
    entry = leave_pending(repo, writes, owner_of(living.pid), lease=-LEASE)
    assert repo.uow.recover(wait=True) == 0
    assert repo.uow.recover(wait=False) == 0
    assert intact(fhir, repo, pid)
    assert repo.cols.journal.find_one({"_id": entry}) is not None


def test_entry_of_a_dead_owner_is_rolled_back_at_once_http_transaction(fhir, repo):
    """Its process is gone: rolled back now, though its lease runs for an hour."""
    pid, writes = written(fhir)
    leave_pending(repo, writes, dead_owner(), lease=timedelta(hours=1))
    assert repo.uow.recover(wait=False) == 1
    assert undone(fhir, repo, pid)
    assert repo.cols.journal.count_documents({}) == 0


def test_a_reused_process_id_is_not_the_owner_http_transaction(fhir, repo, living):
    """Same process id, another start time: another process, the owner is gone."""
    pid, writes = written(fhir)
    leave_pending(repo, writes, owner_of(living.pid, start="1"), lease=timedelta(hours=1))
    assert repo.uow.recover() == 1
    assert undone(fhir, repo, pid)


def test_owner_on_another_host_is_judged_by_its_lease_http_transaction(fhir, repo):
    pid, writes = written(fhir)
    elsewhere = owner_of(1, host="another-host/boot/pid:[1]")
    entry = leave_pending(repo, writes, elsewhere, lease=LEASE)
    assert repo.uow.recover(wait=False) == 0
    assert intact(fhir, repo, pid)
    repo.cols.journal.update_one({"_id": entry},
                                 {"$set": {"lease": datetime.now(UTC) - timedelta(seconds=1)}})
    assert repo.uow.recover(wait=False) == 1
    assert undone(fhir, repo, pid)


def test_recovery_killed_part_way_converges_http_transaction(fhir, repo):
    """A recovery that died after undoing some writes (it had taken the entry over,
    so the entry's owner is that dead process) is finished by the next one."""
    pid, writes = written(fhir)
    leave_pending(repo, writes, dead_owner(), lease=LEASE)
    repo.cols.current["Observation"].delete_one({"_id": writes[2]["id"]})
    repo.cols.history["Observation"].delete_one({"_id": f"{writes[2]['id']}/1"})
    assert repo.uow.recover() == 1
    assert undone(fhir, repo, pid)
    assert repo.uow.recover() == 0  # nothing left: running again changes nothing


def test_recovery_lock_of_a_dead_holder_is_taken_over(fhir, repo):
    """A recovery killed while holding the lock does not block the next start."""
    pid, writes = written(fhir)
    repo.cols.journal.insert_one({"_id": RECOVERY_LOCK, "state": "lock", "owner": dead_owner(),
                                  "lease": datetime.now(UTC) + timedelta(hours=1)})
    leave_pending(repo, writes, dead_owner(), lease=LEASE)
    assert repo.uow.recover() == 1
    assert undone(fhir, repo, pid)
    assert repo.cols.journal.find_one({"_id": RECOVERY_LOCK}) is None


def test_heartbeat_renews_the_lease_of_entries_held(repo):
    entry = leave_pending(repo, [], me().document(), lease=timedelta(seconds=1))
    before = repo.cols.journal.find_one({"_id": entry})["lease"]
    leases = Leases(repo.cols.journal, lambda: None)
    leases._held.add(entry)
    leases.renew()
    after = repo.cols.journal.find_one({"_id": entry})["lease"]
    assert after - before > LEASE - timedelta(seconds=5)
    # Taken over by a recovery: the old owner's heartbeat no longer touches it.
    repo.cols.journal.update_one({"_id": entry}, {"$set": {"owner.token": "recoverer"}})
    leases.renew()
    assert repo.cols.journal.find_one({"_id": entry})["lease"] == after


def test_recovery_waits_for_another_live_recovery_http_transaction(fhir, repo, living):
    """Two processes starting on one database: while one holds the recovery lock the
    other rolls nothing back itself (a sweep skips; a start waits until the lock is
    released, then finds the entry and rolls it back before it answers)."""
    import threading
    import time

    pid, writes = written(fhir)
    repo.cols.journal.insert_one({"_id": RECOVERY_LOCK, "state": "lock",
                                  "owner": owner_of(living.pid), "lease": datetime.now(UTC)})
    leave_pending(repo, writes, dead_owner(), lease=LEASE)
    assert repo.uow.recover(wait=False) == 0
    assert intact(fhir, repo, pid)
    release = threading.Timer(1.5, lambda: repo.cols.journal.delete_one({"_id": RECOVERY_LOCK}))
    release.start()
    started = time.monotonic()
    assert repo.uow.recover(wait=True) == 1
    assert time.monotonic() - started >= 1.0
    assert undone(fhir, repo, pid)


def test_no_request_builds_on_a_transaction_in_flight_http_transaction(
        fhir, repo, settings, living):
    """R4 http.html#transaction ("either all succeed or all fail"): while another
    process's transaction is still running, an update or delete of a record it wrote
    is refused with 409, not built on; the transaction can then still be taken back
    whole (its process dies) and the record is updated from version 1 after that.
    Built on, the update left the rolled-back transaction's version of the Patient in
    place ("changed again since")."""
    pid, writes, entry = written_by_another_process(repo, settings)
    assert all(repo.cols.current[w["type"]].find_one({"_id": w["id"]})["tx"] == entry
               for w in writes)
    leave_pending(repo, writes, owner_of(living.pid), lease=timedelta(hours=1), entry_id=entry)

    r = fhir.put(f"Patient/{pid}", {**patient(family="Later"), "id": pid})
    assert r.status_code == 409, r.get_json()
    assert "being written by a request still in progress" in r.get_json()["issue"][0]["diagnostics"]
    r = fhir.put(f"Patient/{pid}", {**patient(family="Later"), "id": pid},
                 headers={"If-Match": 'W/"2"'})
    assert r.status_code == 409, r.get_json()  # not a 412: version 2 may yet stand
    assert fhir.delete(f"Observation/{writes[1]['id']}").status_code == 409
    assert fhir.get(f"Patient/{pid}").get_json()["meta"]["versionId"] == "2"

    living.kill()
    living.wait()
    assert repo.uow.recover() == 1
    assert undone(fhir, repo, pid)
    r = fhir.put(f"Patient/{pid}", {**patient(family="Later"), "id": pid})
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["meta"]["versionId"] == "2"


def created_by_a_pending_transaction(fhir: Any, repo: Any, settings: Any,
                                     owner: dict[str, Any]) -> str:
    """A Patient (and an Observation of theirs) created by a transaction whose journal
    entry is left pending, owned by ``owner``; returns the Patient's id."""
    writer = make_app(settings)  # the process that runs the transaction
    try:
        body = {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": "urn:uuid:5b0b0b0b-0000-4000-8000-000000000001",
             "resource": patient(family="Fresh"), "request": {"method": "POST", "url": "Patient"}},
            {"resource": {**observation(), "subject": {
                "reference": "urn:uuid:5b0b0b0b-0000-4000-8000-000000000001"}},
             "request": {"method": "POST", "url": "Observation"}}]}
        r = FhirClient(writer.test_client()).post("", body)
        assert r.status_code == 200, r.get_json()
    finally:
        writer.extensions["fhirserver"].repo.close()
    pid, oid = (e["response"]["location"].split("/")[1] for e in r.get_json()["entry"])
    entry = repo.cols.current["Patient"].find_one({"_id": pid})["tx"]
    writes = [{"type": t, "id": i, "expected": None, "version": 1, "claims": [],
               "previous_claims": []} for t, i in (("Patient", pid), ("Observation", oid))]
    leave_pending(repo, writes, owner, lease=timedelta(hours=1), entry_id=entry)
    return pid


def test_a_reference_to_a_record_a_transaction_in_flight_created_waits_for_it_http_transaction(
        fhir, repo, settings, living):
    """R4 http.html#transaction: a Patient created by a transaction still running is
    not referred to while it runs (409, try again): the transaction may yet fail and
    take the Patient back, leaving the reference dangling. Taken back (its process
    died), the reference does not resolve (422)."""
    pid = created_by_a_pending_transaction(fhir, repo, settings, owner_of(living.pid))
    r = fhir.post("Observation", observation(pid))
    assert r.status_code == 409, r.get_json()
    assert "in progress" in r.get_json()["issue"][0]["diagnostics"]

    living.kill()
    living.wait()
    assert repo.uow.recover() == 1
    assert fhir.get(f"Patient/{pid}").status_code == 404
    r = fhir.post("Observation", observation(pid))
    assert r.status_code == 422, r.get_json()
    assert repo.cols.current["Observation"].count_documents({}) == 0


def test_a_record_read_before_its_transaction_was_taken_back_is_read_again_http_transaction(
        fhir, app, repo, settings, living):
    """R4 http.html#transaction: a write read a Patient while the transaction creating
    it ran; the transaction was then taken back, and ended, before the write asked
    whether it still runs. Ended, it may have taken the Patient back after the read:
    the write reads the Patient again, finds it gone, and its reference does not
    resolve (422), where it would have pointed at nothing."""
    pid = created_by_a_pending_transaction(fhir, repo, settings, owner_of(living.pid))
    ctx = Context(repo, app.extensions["fhirserver"].settings, "")
    planner = Planner(ctx)
    assert planner.current("Patient", pid) is not None  # read while the transaction runs
    living.kill()
    living.wait()
    assert repo.uow.recover() == 1
    with pytest.raises(Exception) as refused:
        write.create(planner, "Observation", observation(pid))
        planner.check()
    assert getattr(refused.value, "status", None) == 422, refused.value
    assert repo.cols.current["Observation"].count_documents({}) == 0


def test_a_slow_write_referring_to_a_record_a_transaction_in_flight_updated_is_not_held_http_transaction(
        fhir, app, repo, settings, living, monkeypatch):
    """R4 http.html#transaction: another process's transaction still running updated
    a live Patient. A write referring to the Patient, slow enough to look at it again
    once stored, neither waits for that transaction nor fails: taken back or not,
    the update leaves the Patient there (only a create or delete in flight is waited
    for)."""
    from fhirserver.interactions import integrity

    monkeypatch.setattr(integrity, "QUICK", 0.0)  # every write looks again
    monkeypatch.setattr(integrity, "WAIT", 1.0)
    pid, writes, entry = written_by_another_process(repo, settings)
    leave_pending(repo, writes, owner_of(living.pid), lease=timedelta(hours=1), entry_id=entry)
    planner = Planner(Context(repo, app.extensions["fhirserver"].settings, ""))
    write.create(planner, "Observation", observation(pid))
    planner.commit()
    assert repo.cols.current["Observation"].count_documents({"refs": f"Patient/{pid}"}) == 3


def test_a_reference_to_the_version_a_transaction_in_flight_wrote_waits_for_it_http_transaction(
        fhir, repo, settings, living):
    """R4 references.html#versions: a reference to Patient/x/_history/2, the version a
    transaction still running wrote, is not stored while it runs (409, try again):
    taken back, that version would never have been; a reference to the Patient itself
    is stored (taken back or not, the Patient is there). Taken back (its process
    died), version 2 does not resolve (422)."""
    pid, writes, entry = written_by_another_process(repo, settings)
    leave_pending(repo, writes, owner_of(living.pid), lease=timedelta(hours=1), entry_id=entry)
    versioned = {**observation(), "subject": {"reference": f"Patient/{pid}/_history/2"}}
    r = fhir.post("Observation", versioned)
    assert r.status_code == 409, r.get_json()
    assert "in progress" in r.get_json()["issue"][0]["diagnostics"]
    assert fhir.post("Observation", observation(pid)).status_code == 201
    living.kill()
    living.wait()
    assert repo.uow.recover() == 1
    r = fhir.post("Observation", versioned)
    assert r.status_code == 422, r.get_json()


def test_a_reference_to_a_version_claimed_but_not_yet_written_does_not_resolve_http_update(
        fhir, app, repo):
    """R4 references.html#versions: an update first claims version 2 in the history,
    then replaces the current version. In between, a reference to
    Patient/x/_history/2 does not resolve (422): the update may still fail and give
    its claim back, and version 2 would never have been. Once written, it resolves."""
    pid = fhir.create(patient())["id"]
    planner = Planner(Context(repo, app.extensions["fhirserver"].settings, ""))
    write.update(planner, "Patient", pid, {**patient(family="Later"), "id": pid})
    claimed = planner.writes[0]
    repo.uow._claim(claimed, None)  # the update's first step, and no further
    versioned = {**observation(), "subject": {"reference": f"Patient/{pid}/_history/2"}}
    r = fhir.post("Observation", versioned)
    assert r.status_code == 422, r.get_json()
    repo.cols.history["Patient"].delete_one({"_id": f"{pid}/2"})  # the claim given back
    assert fhir.put(f"Patient/{pid}", {**patient(family="Later"), "id": pid}).status_code == 200
    assert fhir.post("Observation", versioned).status_code == 201


def test_a_unit_is_in_flight_while_its_journal_entry_is_there(repo, living):
    """What the check against building on a transaction in flight relies on: an entry
    in the journal is in flight, whether it began long ago (listed with the whole
    journal) or just now (looked up by id); one not there has ended, and stays ended
    for this process."""
    finished = Finished(repo.cols.journal)
    long_ago = datetime.now(UTC) - timedelta(hours=1)
    running, ended = new_entry_id(long_ago), new_entry_id(long_ago)
    just_now = new_entry_id(datetime.now(UTC))
    for entry in (running, just_now):
        leave_pending(repo, [], owner_of(living.pid), lease=LEASE, entry_id=entry)
    assert finished.in_flight(running) and finished.in_flight(just_now)
    assert not finished.in_flight(ended)
    assert not finished.in_flight(uuid.uuid4().hex)  # an id of the older form
    repo.cols.journal.delete_many({"_id": {"$in": [running, just_now]}})
    assert not finished.in_flight(running) and not finished.in_flight(just_now)


def test_the_units_a_delete_waits_for_are_polled_together(repo, living):
    """A stored delete waits for the older units in flight (interactions/integrity.py)
    and polls them all in one read: those whose journal entry is gone have ended,
    are known ended from then on, and are not read again."""
    finished = Finished(repo.cols.journal)
    first, second, gone = (new_entry_id(datetime.now(UTC)) for _ in range(3))
    for entry in (first, second):
        leave_pending(repo, [], owner_of(living.pid), lease=LEASE, entry_id=entry)
    before = time.monotonic()
    assert finished.still_in_flight([first, second, gone]) == [first, second]
    assert finished.ended_before(gone, time.monotonic()) and not finished.in_flight(gone)
    repo.cols.journal.delete_one({"_id": first})
    assert finished.still_in_flight([first, second]) == [second]
    assert not finished.ended_before(first, before) and finished.ended_before(first, time.monotonic())
    repo.cols.journal.delete_one({"_id": second})
    assert finished.still_in_flight([first, second]) == []


def test_a_plan_on_a_version_taken_back_does_not_land_on_its_successor_http_update(
        app, repo, settings):
    """R4 http.html#update: a write replaces the version it was planned on. Planned on
    a transaction's version 2 that is then rolled back (its process died), and with
    another transaction's version 2 written since, it is a conflict (planned again),
    not a replacement of a version it never saw, which would have dropped that
    transaction's change."""
    ctx = Context(repo, settings, "")

    def patient_v(gender: str, **more: str) -> dict[str, Any]:
        return {"resourceType": "Patient", "id": "vr", "gender": gender, **more}

    def unit(gender: str, **more: str) -> list[Any]:
        planner = Planner(ctx)
        write.update(planner, "Patient", "vr", patient_v(gender, **more))
        other = f"vr-{uuid.uuid4().hex[:8]}"
        write.update(planner, "Patient", other, {"resourceType": "Patient", "id": other})
        writes = list(planner.writes)
        planner.commit()
        return writes

    first = Planner(ctx)
    write.update(first, "Patient", "vr", patient_v("male"))
    first.commit()
    rolled_back = unit("female")  # version 2
    stale = Planner(ctx)
    write.update(stale, "Patient", "vr", patient_v("other"))  # planned on it
    leave_pending(repo, [journal_write(w) for w in rolled_back], dead_owner(),
                  lease=timedelta(hours=1))
    assert repo.uow.recover() == 1
    assert repo.get("Patient", "vr").version == 1
    unit("unknown", birthDate="2000-01-01")  # another version 2
    with pytest.raises(VersionConflict):
        stale.commit()
    now = repo.get("Patient", "vr")
    assert (now.version, now.resource["gender"], now.resource["birthDate"]) == \
        (2, "unknown", "2000-01-01")
