"""Conditional create and update under real concurrency: at most one resource per
criteria (FHIR R4 http.html#ccreate, http.html#cond-update, http.html#trules).

Eight clients send the same conditional write at the same moment, over real HTTP to a
live threaded server, round after round. The spec's promise is that a conditional
create makes at most one resource for its criteria; without a lock on the criteria
each client finds no match and creates its own. These tests count what is stored.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from fhirserver.storage.search_claims import criteria_key
from tests.conftest import Http, http_as
from tests.factories import observation, patient

THREADS = 8
ROUNDS = 20
SYS = "http://example.org/race-mrn"  # not a unique system of the patient index


def _race(clients: list[Http], call: Callable[[Http, int], Any]) -> list[Any]:
    """Every client runs ``call`` at once (a barrier releases them together)."""
    barrier = threading.Barrier(len(clients))
    out: list[Any] = [None] * len(clients)

    def run(i: int) -> None:
        barrier.wait()
        try:
            out[i] = call(clients[i], i)
        except Exception as exc:  # noqa: BLE001 - reported, not lost in the thread
            out[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(clients))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return out


@pytest.fixture
def clients(live) -> list[Http]:  # type: ignore[no-untyped-def]
    return [http_as(live) for _ in range(THREADS)]


def _ids(op: Http, query: str) -> list[str]:
    return op.ids(f"{query}&_count=50")


def test_concurrent_conditional_creates_make_exactly_one_http_ccreate(clients):
    """http.html#ccreate: 8 clients × 20 rounds of POST with If-None-Exist; each round
    stores exactly one Patient, and every answer (201 for the creator, 200 for the
    others) names it."""
    tag = uuid.uuid4().hex[:8]
    duplicates = []
    for n in range(ROUNDS):
        value = f"value-{tag}-{n}"
        body = patient(identifier=[{"system": SYS, "value": value}])
        headers = {"If-None-Exist": f"identifier={SYS}|{value}"}
        answers = _race(clients, lambda c, i, body=body, headers=headers: c.post(
            "Patient", body, headers=headers))
        stored = _ids(clients[0], f"Patient?identifier={SYS}|{value}")
        if len(stored) != 1:
            duplicates.append(len(stored))
            continue
        statuses = sorted(a.status_code for a in answers)
        assert statuses == [200] * (THREADS - 1) + [201], [a.text for a in answers]
        assert {a.json()["id"] for a in answers} == set(stored)
    assert duplicates == [], f"rounds with more than one Patient: {duplicates}"


def test_concurrent_conditional_updates_make_exactly_one_http_cond_update(clients):
    """http.html#cond-update: with no match the first PUT creates, every other one
    updates that resource; versions are contiguous from 1 (no lost or doubled one)."""
    tag = uuid.uuid4().hex[:8]
    duplicates = []
    for n in range(ROUNDS):
        value = f"value-{tag}-{n}"

        def put(c: Http, i: int, value: str = value) -> Any:
            body = patient(family=f"writer-{i}", identifier=[{"system": SYS, "value": value}])
            return c.put(f"Patient?identifier={SYS}|{value}", body)

        answers = _race(clients, put)
        stored = _ids(clients[0], f"Patient?identifier={SYS}|{value}")
        if len(stored) != 1:
            duplicates.append(len(stored))
            continue
        assert sorted(a.status_code for a in answers) == [200] * (THREADS - 1) + [201], \
            [a.text for a in answers]
        assert {a.json()["id"] for a in answers} == set(stored)
        versions = sorted(int(a.json()["meta"]["versionId"]) for a in answers)
        assert versions == list(range(1, THREADS + 1))
        history = clients[0].get(f"Patient/{stored[0]}/_history?_count=50").json()
        assert len(history["entry"]) == THREADS
    assert duplicates == [], f"rounds with more than one Patient: {duplicates}"


def test_concurrent_conditional_creates_on_any_criteria_http_ccreate(clients):
    """http.html#ccreate: criteria that are no unique identifier (a code and a patient,
    given in either order) are guarded the same way."""
    op = clients[0]
    pid = op.post("Patient", patient()).json()["id"]
    duplicates = []
    for n in range(ROUNDS):
        code = f"race-{uuid.uuid4().hex[:6]}-{n}"
        body = observation(pid, code=code)
        orders = [f"code=http://loinc.org|{code}&patient=Patient/{pid}",
                  f"patient=Patient/{pid}&code=http://loinc.org|{code}"]
        answers = _race(clients, lambda c, i, body=body, orders=orders: c.post(
            "Observation", body, headers={"If-None-Exist": orders[i % 2]}))
        stored = _ids(op, f"Observation?code=http://loinc.org|{code}")
        if len(stored) != 1:
            duplicates.append(len(stored))
            continue
        assert sorted(a.status_code for a in answers) == [200] * (THREADS - 1) + [201]
    assert duplicates == [], f"rounds with more than one Observation: {duplicates}"


def test_concurrent_transactions_with_conditional_entries_http_trules(clients):
    """http.html#trules: a transaction's conditional create and conditional update are
    resolved before its writes, under the same guard: one Patient per criteria."""
    tag = uuid.uuid4().hex[:8]
    duplicates: list[list[int]] = []
    failures: list[list[int]] = []
    for n in range(ROUNDS):
        a, b = f"tx-a-{tag}-{n}", f"tx-b-{tag}-{n}"

        def send(c: Http, i: int, a: str = a, b: str = b) -> Any:
            return c.post("", {"resourceType": "Bundle", "type": "transaction", "entry": [
                {"fullUrl": f"urn:uuid:{uuid.uuid4()}",
                 "resource": patient(identifier=[{"system": SYS, "value": a}]),
                 "request": {"method": "POST", "url": "Patient",
                             "ifNoneExist": f"identifier={SYS}|{a}"}},
                {"resource": patient(family=f"writer-{i}", identifier=[{"system": SYS, "value": b}]),
                 "request": {"method": "PUT", "url": f"Patient?identifier={SYS}|{b}"}},
            ]})

        answers = _race(clients, send)
        counts = [len(_ids(clients[0], f"Patient?identifier={SYS}|{v}")) for v in (a, b)]
        if counts != [1, 1]:
            duplicates.append(counts)
        refused = [x.status_code for x in answers if x.status_code != 200]
        if refused:
            failures.append(refused)
        elif counts == [1, 1]:
            created = [x.json()["entry"][0]["response"]["status"] for x in answers]
            assert sorted(created) == ["200 OK"] * (THREADS - 1) + ["201 Created"]
    assert (duplicates, failures) == ([], []), \
        f"rounds with more than one Patient: {duplicates}; failed transactions: {failures}"


def _claims(live):  # type: ignore[no-untyped-def]
    return live[1].extensions["fhirserver"].repo.search_claims


def test_a_claim_left_by_a_writer_that_died_does_not_block_http_ccreate(live):
    """A writer that took the criteria and died before creating leaves a claim; once
    its lease has run out the next conditional create takes it over and creates."""
    op = http_as(live)
    value = f"dead-{uuid.uuid4().hex[:8]}"
    key = criteria_key("Patient", [("identifier", f"{SYS}|{value}")],
                       live[1].extensions["fhirserver"].repo.protection.blinder.keyed)
    past = datetime.now(UTC) - timedelta(minutes=5)
    _claims(live).collection.insert_one(
        {"_id": key, "owner": "dead-writer", "rid": "never-written", "until": past})
    r = op.post("Patient", patient(identifier=[{"system": SYS, "value": value}]),
                headers={"If-None-Exist": f"identifier={SYS}|{value}"})
    assert r.status_code == 201, r.text
    assert _ids(op, f"Patient?identifier={SYS}|{value}") == [r.json()["id"]]
    assert _claims(live).collection.find_one({"_id": key}) is None  # given back after the write


def test_a_live_claim_makes_the_second_writer_wait_for_the_first_http_ccreate(live):
    """While a writer holds the criteria, another conditional create waits for its
    resource instead of creating a second one; a writer that never finishes is
    overtaken once its lease ends, not after a fixed long age."""
    op = http_as(live)
    value = f"slow-{uuid.uuid4().hex[:8]}"
    key = criteria_key("Patient", [("identifier", f"{SYS}|{value}")],
                       live[1].extensions["fhirserver"].repo.protection.blinder.keyed)
    soon = datetime.now(UTC) + timedelta(seconds=1)
    _claims(live).collection.insert_one(
        {"_id": key, "owner": "slow-writer", "rid": "x", "until": soon})
    started = datetime.now(UTC)
    r = op.post("Patient", patient(identifier=[{"system": SYS, "value": value}]),
                headers={"If-None-Exist": f"identifier={SYS}|{value}"})
    waited = datetime.now(UTC) - started
    assert r.status_code == 201, r.text
    assert timedelta(seconds=0.5) < waited < timedelta(seconds=10)


def test_conditional_create_after_the_match_was_deleted_creates_anew_http_ccreate(live):
    """http.html#ccreate: the criteria's truth is the stored resources; a deleted match
    no longer counts, whatever was claimed when it was created."""
    op = http_as(live)
    value = f"gone-{uuid.uuid4().hex[:8]}"
    headers = {"If-None-Exist": f"identifier={SYS}|{value}"}
    body = patient(identifier=[{"system": SYS, "value": value}])
    first = op.post("Patient", body, headers=headers)
    assert first.status_code == 201
    assert op.delete(f"Patient/{first.json()['id']}").status_code == 200
    second = op.post("Patient", body, headers=headers)
    assert second.status_code == 201
    assert second.json()["id"] != first.json()["id"]
    again = op.post("Patient", body, headers=headers)
    assert again.status_code == 200 and again.json()["id"] == second.json()["id"]


def test_a_failed_transaction_gives_its_claims_back_http_trules(live):
    """http.html#transaction: a transaction that fails writes nothing, and the criteria
    its conditional entries claimed are free again at once (no wait for a lease)."""
    op = http_as(live)
    value = f"failed-{uuid.uuid4().hex[:8]}"
    key = criteria_key("Patient", [("identifier", f"{SYS}|{value}")],
                       live[1].extensions["fhirserver"].repo.protection.blinder.keyed)
    body = patient(identifier=[{"system": SYS, "value": value}])
    r = op.post("", {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": body,
         "request": {"method": "POST", "url": "Patient",
                     "ifNoneExist": f"identifier={SYS}|{value}"}},
        {"resource": observation("no-such-patient"),
         "request": {"method": "POST", "url": "Observation"}},
    ]})
    assert r.status_code in (400, 404, 409, 422), r.text
    assert _claims(live).collection.find_one({"_id": key}) is None
    assert _ids(op, f"Patient?identifier={SYS}|{value}") == []
    started = datetime.now(UTC)
    again = op.post("Patient", body, headers={"If-None-Exist": f"identifier={SYS}|{value}"})
    assert again.status_code == 201
    assert datetime.now(UTC) - started < timedelta(seconds=5)


def test_a_conditional_put_entry_that_creates_gets_its_fullurl_id_http_transaction(live):
    """http.html#transaction: a reference to the fullUrl of a conditional PUT entry
    that creates names the resource it creates."""
    op = http_as(live)
    value = f"put-{uuid.uuid4().hex[:8]}"
    full = f"urn:uuid:{uuid.uuid4()}"
    r = op.post("", {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": full, "resource": patient(identifier=[{"system": SYS, "value": value}]),
         "request": {"method": "PUT", "url": f"Patient?identifier={SYS}|{value}"}},
        {"resource": {**observation(), "subject": {"reference": full}},
         "request": {"method": "POST", "url": "Observation"}},
    ]})
    assert r.status_code == 200, r.text
    [pid] = _ids(op, f"Patient?identifier={SYS}|{value}")
    obs = op.get(r.json()["entry"][1]["response"]["location"]).json()
    assert obs["subject"]["reference"] == f"Patient/{pid}"
