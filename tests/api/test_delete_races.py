"""A delete of a referenced record and a write referring to it, at the same moment.

The server refuses to delete a record other records refer to (409, as HAPI does
with referential integrity enforced on delete: R4 http.html#delete leaves the rule
to the server, and this one promises that a stored reference to a supported type
resolves). A create that checked its reference just before the delete looked for
referrers, and was stored just after, used to be left pointing at a deleted Patient.
The protocol is interactions/integrity.py: each side reads the other again once its
own write is stored.

The interleavings are made with the planner's own steps: a plan's checks run
(``Planner.check``), the other request runs whole, then the plan commits.
"""

from __future__ import annotations

import random
import threading
import time
from datetime import timedelta
from typing import Any

import pytest

from fhirserver.interactions import integrity, write
from fhirserver.interactions.context import Context, Planner
from tests import factories as f
from tests.api.test_access import clinician
from tests.conftest import FhirClient, make_app
from tests.storage.test_recovery import leave_pending, living, owner_of  # noqa: F401

ROUNDS = 12


@pytest.fixture
def repo(app: Any) -> Any:
    return app.extensions["fhirserver"].repo


@pytest.fixture
def ctx(app: Any, repo: Any) -> Context:
    return Context(repo, app.extensions["fhirserver"].settings, "")


def referring(repo: Any, pid: str) -> int:
    """Live records of any type that refer to the Patient."""
    return sum(col.count_documents({"refs": f"Patient/{pid}", "del": False})
               for col in repo.cols.current.values())


def test_a_create_whose_patient_was_deleted_after_its_check_is_taken_back_http_delete(
        fhir, repo, ctx):
    """The create's reference resolved; the Patient was then deleted (no referrer
    yet); the create, once stored, finds it deleted and is taken back: 409 naming the
    reference, and nothing refers to the deleted Patient, in its history neither."""
    pid = fhir.create(f.patient("Leaving"))["id"]
    creating = Planner(ctx)
    write.create(creating, "Observation", f.observation(pid))
    creating.check()  # the reference resolves: the Patient is there
    assert fhir.delete(f"Patient/{pid}").status_code == 200
    with pytest.raises(Exception) as refused:
        creating.commit()
    assert getattr(refused.value, "status", None) == 409
    issue = refused.value.outcome()["issue"][0]  # type: ignore[attr-defined]
    assert f"Patient/{pid} was deleted while this request was written" in issue["diagnostics"]
    assert issue["expression"] == ["Observation.subject.reference"]
    assert referring(repo, pid) == 0
    assert repo.cols.history["Observation"].count_documents({}) == 0


def test_a_transaction_entry_whose_patient_was_deleted_after_its_check_is_named_http_transaction(
        fhir, repo, monkeypatch):
    """R4 http.html#transaction: a transaction whose entry refers to a Patient deleted
    after the entry's reference resolved is taken back whole (409), and the error
    names the entry's reference by its place in the Bundle."""
    pid = fhir.create(f.patient("Leaving"))["id"]
    other = fhir.create(f.patient("Staying"))["id"]
    commit = repo.commit
    deleted: list[int] = []

    def delete_first(*args: Any, **kw: Any) -> None:
        """The transaction's writes, checked, are about to be stored: the delete runs."""
        if not deleted:  # once: the transaction's (the delete's own passes through)
            deleted.append(0)
            deleted[0] = fhir.delete(f"Patient/{pid}").status_code
        commit(*args, **kw)

    monkeypatch.setattr(repo, "commit", delete_first)
    body = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": f.observation(other), "request": {"method": "POST", "url": "Observation"}},
        {"resource": f.observation(pid), "request": {"method": "POST", "url": "Observation"}}]}
    r = fhir.post("", body)
    assert deleted == [200]
    assert r.status_code == 409, r.get_json()
    issue = r.get_json()["issue"][0]
    assert f"Patient/{pid} was deleted while this request was written" in issue["diagnostics"]
    assert issue["expression"] == ["Bundle.entry[1].resource.subject.reference"]
    assert repo.cols.current["Observation"].count_documents({}) == 0


def test_a_delete_that_a_create_got_in_before_is_taken_back_http_delete(fhir, repo, ctx):
    """The delete found no referrer; a create referring to the Patient was then stored;
    the delete, once stored, looks again, finds it and is taken back: 409 naming it,
    and the Patient is there at its version as before."""
    pid = fhir.create(f.patient("Staying"))["id"]
    deleting = Planner(ctx)
    write.delete(deleting, "Patient", pid)
    deleting.check()  # no referrer yet
    oid = fhir.create(f.observation(pid))["id"]
    with pytest.raises(Exception) as refused:
        deleting.commit()
    assert getattr(refused.value, "status", None) == 409
    assert f"referenced by Observation/{oid}" in str(refused.value)
    p = fhir.get(f"Patient/{pid}")
    assert p.status_code == 200 and p.get_json()["meta"]["versionId"] == "1"
    assert repo.cols.history["Patient"].count_documents({"rid": pid}) == 1
    assert fhir.get(f"Observation/{oid}").status_code == 200


def test_a_quick_write_stored_after_a_delete_is_seen_by_its_second_look_http_delete(
        fhir, app, repo, ctx, monkeypatch):
    """A create read its Patient alive; the Patient's delete was then stored; the
    create, stored at once, is quick enough to skip its own second look
    (integrity.QUICK): the delete, which waits integrity.GRACE before looking for
    referrers again, finds it and is taken back. Both windows are widened here so
    that the create certainly falls inside them."""
    monkeypatch.setattr(integrity, "GRACE", 3.0)
    monkeypatch.setattr(integrity, "QUICK", 2.5)
    pid = fhir.create(f.patient("Staying"))["id"]
    creating = Planner(ctx)
    write.create(creating, "Observation", f.observation(pid))
    creating.check()  # the reference resolves: the Patient is there
    answer: dict[str, Any] = {}
    deleter = threading.Thread(target=lambda: answer.update(
        r=FhirClient(app.test_client()).delete(f"Patient/{pid}")))
    deleter.start()
    deadline = time.monotonic() + 10
    while not (repo.cols.current["Patient"].find_one({"_id": pid}) or {}).get("del"):
        assert time.monotonic() < deadline, "the delete was never stored"
        time.sleep(0.005)
    creating.commit()  # stored while the delete waits: no error
    deleter.join(30)
    assert answer["r"].status_code == 409, answer["r"].get_json()
    assert "is referenced by Observation/" in answer["r"].get_json()["issue"][0]["diagnostics"]
    assert fhir.get(f"Patient/{pid}").get_json()["meta"]["versionId"] == "1"
    assert referring(repo, pid) == 1


def test_nobody_refers_to_a_record_that_a_slow_writes_second_look_takes_back_http_delete(
        fhir, repo, ctx, monkeypatch):
    """A create of an Observation read its Patient alive; the Patient was then deleted,
    which took long enough for the create to look again once stored, and take itself
    back. While it looks, a DiagnosticReport referring to the new Observation is
    planned again and answered 409 (try again), not stored: the create, slow, is a
    journalled unit. Stored, the report would have pointed at an Observation taken
    back an instant later."""
    pid = fhir.create(f.patient("Leaving"))["id"]
    other = fhir.create(f.patient("Staying"))["id"]
    creating = Planner(ctx)
    created = write.create(creating, "Observation", f.observation(pid))
    creating.check()
    assert fhir.delete(f"Patient/{pid}").status_code == 200  # takes integrity.GRACE
    standing = repo.standing
    reports: list[Any] = []

    def report_first(rtype: str, rid: str) -> Any:
        """The create's second look is about to read the Patient: a report is sent."""
        if not reports:
            reports.append(fhir.post("DiagnosticReport", {
                "resourceType": "DiagnosticReport", "status": "final", "code": {"text": "x"},
                "subject": {"reference": f"Patient/{other}"},
                "result": [{"reference": f"Observation/{created.stored.id}"}]}))
        return standing(rtype, rid)

    monkeypatch.setattr(repo, "standing", report_first)
    with pytest.raises(Exception) as refused:
        creating.commit()
    assert getattr(refused.value, "status", None) == 409
    assert reports[0].status_code == 409, reports[0].get_json()
    assert "in progress" in reports[0].get_json()["issue"][0]["diagnostics"]
    assert repo.cols.current["Observation"].count_documents({}) == 0
    assert repo.cols.current["DiagnosticReport"].count_documents({}) == 0


def test_an_update_between_a_create_and_its_second_look_reads_the_patient_again_http_delete(
        fhir, repo, ctx, monkeypatch):
    """A create of an Observation, quick when it came to store (not journalled), whose
    insert then stalls while its Patient is deleted (no referrer yet: the delete
    stands); once stored it is slow, looks again, finds the Patient gone and is taken
    back. An update of that Observation landing between its store and that look must
    read the Patient again, though it keeps the reference: the version it replaces may
    still be taken back, and the update would then be left referring to a deleted
    Patient (the take-back cannot restore a record changed since). It is refused
    (422), the create is taken back, and nothing refers to the deleted Patient."""
    pid = fhir.create(f.patient("Leaving"))["id"]
    creating = Planner(ctx)
    oid = write.create(creating, "Observation", f.observation(pid)).stored.id
    creating.check()  # the Patient is there

    uow, standing = repo.uow, repo.standing
    apply_version = uow._apply_version
    deleted: list[int] = []
    updates: list[Any] = []

    def stalled(w: Any, session: Any = None) -> Any:
        if w.type == "Observation" and w.id == oid and not deleted:
            deleted.append(fhir.delete(f"Patient/{pid}").status_code)  # runs whole
        return apply_version(w, session)

    def update_first(rtype: str, rid: str) -> Any:
        if not updates:  # the create's second look is about to read: the update runs whole
            body = fhir.get(f"Observation/{oid}").get_json()
            updates.append(fhir.put(f"Observation/{oid}", {**body, "status": "amended"}))
        return standing(rtype, rid)

    monkeypatch.setattr(uow, "_apply_version", stalled)
    monkeypatch.setattr(repo, "standing", update_first)
    with pytest.raises(Exception) as refused:
        creating.commit()
    assert getattr(refused.value, "status", None) == 409
    assert deleted == [200]
    assert updates[0].status_code == 422, updates[0].get_json()
    assert fhir.get(f"Patient/{pid}").status_code in (404, 410)
    assert referring(repo, pid) == 0


def test_a_reference_to_a_record_whose_delete_is_in_flight_waits_for_it_http_delete(
        fhir, app, repo, settings, living):  # noqa: F811
    """A delete still running (its unit in the journal, its process alive): a write
    referring to the record is planned again while it runs and answered 409 (try
    again), not 422, since the delete may yet be taken back; rolled back (its process
    died), the record is there and the write succeeds."""
    pid = fhir.create(f.patient("Pending"))["id"]
    deleter = make_app(settings)  # the process that runs the delete
    try:
        client = FhirClient(deleter.test_client())
        assert client.delete(f"Patient/{pid}").status_code == 200
    finally:
        deleter.extensions["fhirserver"].repo.close()
    doc = repo.cols.current["Patient"].find_one({"_id": pid})
    assert doc["del"] and doc["tx"]
    history = repo.cols.history["Patient"].find_one({"_id": f"{pid}/2"})
    deleted = {"type": "Patient", "id": pid, "expected": 1, "version": 2, "claims": [],
               "previous_claims": [], "lu": history["lu"], "h": ""}
    leave_pending(repo, [deleted], owner_of(living.pid), lease=timedelta(hours=1),
                  entry_id=doc["tx"])
    r = fhir.post("Observation", f.observation(pid))
    assert r.status_code == 409, r.get_json()
    assert "in progress" in r.get_json()["issue"][0]["diagnostics"]
    # A clinician who does not treat the patient learns nothing of the delete.
    stranger = clinician(app, fhir, dr="dr-stranger")
    r = stranger.post("Observation", f.observation(pid))
    assert r.status_code in (403, 422), r.get_json()
    living.kill()
    living.wait()
    assert repo.uow.recover() == 1
    assert fhir.get(f"Patient/{pid}").status_code == 200
    assert fhir.post("Observation", f.observation(pid)).status_code == 201


@pytest.mark.parametrize("writers", ["create", "put"])
def test_delete_and_writes_at_once_never_leave_a_reference_to_a_deleted_patient_http_delete(
        fhir, app, repo, writers):
    """A delete and three writes referring to the Patient at the same moment, many
    times over (three creates; or three updates of one Observation, re-pointing it at
    the Patient, which build on each other): either the delete is refused and the
    Patient is there, or it is deleted and nothing refers to it. A write answered
    with an error left nothing: the Observation is as before, or absent."""
    outcomes = set()
    for _ in range(ROUNDS):
        pid = fhir.create(f.patient("Raced"))["id"]
        elsewhere = fhir.create(f.patient("Elsewhere"))["id"]
        moved = fhir.create(f.observation(elsewhere))
        start = threading.Barrier(4)
        answers: dict[str, Any] = {}

        def run(name: str, call: Any) -> None:
            client = FhirClient(app.test_client())
            start.wait()
            time.sleep(random.uniform(0, 0.03))  # each round another interleaving
            answers[name] = call(client).status_code

        calls = {"delete": lambda c: c.delete(f"Patient/{pid}")}
        for i in range(3):
            if writers == "create":
                calls[f"w{i}"] = lambda c: c.post("Observation", f.observation(pid))
            else:
                calls[f"w{i}"] = lambda c, i=i: c.put(
                    f"Observation/{moved['id']}",
                    {**moved, "subject": {"reference": f"Patient/{pid}"},
                     "valueQuantity": {"value": i, "unit": "mmol/l"}})
        threads = [threading.Thread(target=run, args=item) for item in calls.items()]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert all(code < 500 for code in answers.values()), answers
        alive = fhir.get(f"Patient/{pid}").status_code == 200
        wrote = sum(1 for k, code in answers.items() if k != "delete" and code in (200, 201))
        outcomes.add((answers["delete"], wrote))
        if alive:
            assert answers["delete"] == 409, answers
        else:
            assert answers["delete"] == 200 and wrote == 0, answers
            assert referring(repo, pid) == 0
        if writers == "put" and not wrote:
            now = fhir.get(f"Observation/{moved['id']}").get_json()
            assert now["subject"]["reference"] == f"Patient/{elsewhere}", now
        if writers == "create":
            assert referring(repo, pid) == wrote
    print(sorted(outcomes))
