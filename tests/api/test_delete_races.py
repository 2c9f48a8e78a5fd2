"""A delete of a referenced record and a write referring to it, at the same moment.

The server refuses to delete a record other records refer to (409, as HAPI does
with referential integrity enforced on delete: R4 http.html#delete leaves the rule
to the server, and this one promises that a stored reference to a supported type
resolves). A create that checked its reference just before the delete looked for
referrers, and stored it just after, used to be left pointing at a deleted Patient.
The protocol (storage/deletions.py): the deleter marks its target first, and the
writer looks for that mark after its write.

A delete in flight is played here by its mark, written as the deleting process
leaves it, with a real process (alive or gone) as its owner.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from fhirserver.storage.indexing import make_write
from tests import factories as f
from tests.conftest import FhirClient
from tests.storage.test_recovery import dead_owner, living, owner_of  # noqa: F401

ROUNDS = 12


@pytest.fixture
def repo(app: Any) -> Any:
    return app.extensions["fhirserver"].repo


def mark(repo: Any, pid: str, owner: dict[str, Any], version: int = 1) -> None:
    repo.deletions.marks.insert_one({"_id": f"Patient/{pid}", "t": "a-deleter", "v": version,
                                     "at": datetime.now(UTC), "owner": owner})


def referring(repo: Any, pid: str) -> int:
    """Live records of any type that refer to the Patient."""
    return sum(col.count_documents({"refs": f"Patient/{pid}", "del": False})
               for col in repo.cols.current.values())


def until(condition: Any, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_create_that_meets_a_delete_in_flight_is_taken_back_once_it_lands_http_delete(
        fhir, app, repo, living):  # noqa: F811
    """The create's reference resolved, and its Observation is stored; a delete of the
    Patient is in flight. The create waits for it, and the Patient deleted, it is
    taken back: 409, and nothing refers to the deleted Patient."""
    pid = fhir.create(f.patient("Leaving"))["id"]
    mark(repo, pid, owner_of(living.pid))
    answer: dict[str, Any] = {}
    other = FhirClient(app.test_client())
    poster = threading.Thread(target=lambda: answer.update(
        r=other.post("Observation", f.observation(pid))))
    poster.start()
    until(lambda: referring(repo, pid) == 1)  # stored, and waiting on the mark
    time.sleep(0.1)
    assert poster.is_alive()
    repo.commit([make_write("Patient", pid, None, version=2, expected=1, method="DELETE",
                            tz=repo.tz, protection=repo.protection)])  # the delete lands
    poster.join(20)
    r = answer["r"]
    assert r.status_code == 409, r.get_json()
    issue = r.get_json()["issue"][0]
    assert f"Patient/{pid} was deleted while this request was written" in issue["diagnostics"]
    assert issue["expression"] == ["Observation.subject.reference"]
    assert referring(repo, pid) == 0
    assert repo.cols.history["Observation"].count_documents({}) == 0


def test_a_create_stands_when_the_delete_in_flight_is_refused_http_delete(
        fhir, app, repo, living):  # noqa: F811
    """The delete then finds the create's reference and gives up (its mark removed):
    the create stands, 201."""
    pid = fhir.create(f.patient("Staying"))["id"]
    mark(repo, pid, owner_of(living.pid))
    answer: dict[str, Any] = {}
    other = FhirClient(app.test_client())
    poster = threading.Thread(target=lambda: answer.update(
        r=other.post("Observation", f.observation(pid))))
    poster.start()
    until(lambda: referring(repo, pid) == 1)
    repo.deletions.marks.delete_one({"_id": f"Patient/{pid}"})  # the deleter gives up
    poster.join(20)
    assert answer["r"].status_code == 201, answer["r"].get_json()
    assert referring(repo, pid) == 1


def test_a_dead_deleters_mark_is_cleared_and_the_create_stands_http_delete(fhir, repo):
    """A deleter that died between its mark and its delete holds nothing up: the next
    write referring to the Patient clears the mark, and a delete then sees the
    reference (409)."""
    pid = fhir.create(f.patient("Kept"))["id"]
    mark(repo, pid, dead_owner())
    r = fhir.post("Observation", f.observation(pid))
    assert r.status_code == 201, r.get_json()
    assert repo.deletions.marks.find_one({"_id": f"Patient/{pid}"}) is None
    r = fhir.delete(f"Patient/{pid}")
    assert r.status_code == 409, r.get_json()
    assert repo.deletions.marks.find_one({"_id": f"Patient/{pid}"}) is None  # given back


def test_a_second_delete_waits_for_the_first_http_delete(fhir, repo, living):  # noqa: F811
    """Another request deleting the same Patient holds its mark: this delete is planned
    again until it ends, then answers 409 (try again) rather than deleting twice."""
    pid = fhir.create(f.patient("Twice"))["id"]
    mark(repo, pid, owner_of(living.pid))
    r = fhir.delete(f"Patient/{pid}")
    assert r.status_code == 409, r.get_json()
    assert "changed by another request" in r.get_json()["issue"][0]["diagnostics"]
    assert fhir.get(f"Patient/{pid}").status_code == 200


def test_a_recreated_patient_is_referred_to_at_once_http_delete(fhir, repo):
    """A successful delete keeps its mark; once the Patient is written again (update as
    create) the mark is for a version it no longer has and holds nothing up."""
    pid = fhir.create(f.patient("Back"))["id"]
    assert fhir.delete(f"Patient/{pid}").status_code == 200
    assert repo.deletions.marks.find_one({"_id": f"Patient/{pid}"})["v"] == 1
    assert fhir.post("Observation", f.observation(pid)).status_code == 422
    assert fhir.put(f"Patient/{pid}", {**f.patient("Back"), "id": pid}).status_code in (200, 201)
    started = time.monotonic()
    assert fhir.post("Observation", f.observation(pid)).status_code == 201
    assert time.monotonic() - started < 5
    assert fhir.delete(f"Patient/{pid}").status_code == 409  # a new mark, and a referrer


def test_delete_and_create_at_once_never_leave_a_reference_to_a_deleted_patient_http_delete(
        fhir, app, repo):
    """Both requests at the same moment, many times over: either the delete is refused
    and the Observation stored, or the Patient is deleted and nothing refers to it."""
    outcomes = set()
    for _ in range(ROUNDS):
        pid = fhir.create(f.patient("Raced"))["id"]
        start = threading.Barrier(2)
        answers: dict[str, Any] = {}

        def run(name: str, call: Any, client: FhirClient) -> None:
            start.wait()
            answers[name] = call(client)

        threads = [
            threading.Thread(target=run, args=("delete", lambda c: c.delete(f"Patient/{pid}"),
                                               FhirClient(app.test_client()))),
            threading.Thread(target=run, args=("create", lambda c: c.post(
                "Observation", f.observation(pid)), FhirClient(app.test_client()))),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        deleted, created = answers["delete"].status_code, answers["create"].status_code
        outcomes.add((deleted, created))
        alive = fhir.get(f"Patient/{pid}").status_code == 200
        if alive:
            assert deleted == 409 and created == 201, (deleted, created)
            assert referring(repo, pid) == 1
        else:
            assert deleted == 200 and created in (409, 422), (deleted, created)
            assert referring(repo, pid) == 0
    print(sorted(outcomes))
