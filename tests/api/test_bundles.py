"""batch and transaction Bundles (FHIR R4 http.html#transaction, bundle.html)."""

from __future__ import annotations

import base64
import json

import pytest

from tests.factories import observation, patient

SYS = "http://example.org/mrn"


def tx(*entries: dict, kind: str = "transaction") -> dict:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def post(resource: dict, full_url: str | None = None, **request: str) -> dict:
    entry: dict = {"resource": resource, "request": {"method": "POST", "url": resource["resourceType"], **request}}
    if full_url:
        entry["fullUrl"] = full_url
    return entry


def total(fhir, rtype: str) -> int:
    return fhir.get(f"{rtype}?_summary=count").get_json()["total"]


def test_transaction_resolves_urn_uuid_references_http_transaction(fhir):
    p = "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a"
    o = "urn:uuid:88f151c0-a954-468a-88da-3a0c4f3de8b1"
    report = {"resourceType": "DiagnosticReport", "status": "final", "code": {"text": "panel"},
              "subject": {"reference": p}, "result": [{"reference": o}]}
    r = fhir.post("", tx(post(report), post(observation(None, subject={"reference": p}), o),
                     post(patient(), p)))
    assert r.status_code == 200, r.get_json()
    out = r.get_json()
    assert out["type"] == "transaction-response"
    statuses = [e["response"]["status"] for e in out["entry"]]
    assert statuses == ["201 Created"] * 3
    locations = [e["response"]["location"] for e in out["entry"]]
    assert locations[0].startswith("DiagnosticReport/") and locations[2].startswith("Patient/")
    assert all(e["response"]["etag"] == 'W/"1"' for e in out["entry"])
    pid = locations[2].split("/")[1]
    oid = locations[1].split("/")[1]
    dr = fhir.get("/".join(locations[0].split("/")[:2])).get_json()
    assert dr["subject"]["reference"] == f"Patient/{pid}"
    assert dr["result"][0]["reference"] == f"Observation/{oid}"


def test_transaction_failure_leaves_nothing_written_http_transaction(fhir):
    """All or nothing, on a database without multi-document transactions too."""
    existing = fhir.create(patient(family="Before"))
    before = {"Patient": total(fhir, "Patient"), "Observation": total(fhir, "Observation")}
    bad = tx(
        post(patient(family="New")),
        {"resource": {**existing, "name": [{"family": "Changed"}]},
         "request": {"method": "PUT", "url": f"Patient/{existing['id']}"}},
        post(observation(None)),
        post(observation("does-not-exist")),
    )
    r = fhir.post("", bad)
    assert r.status_code == 422
    issue = r.get_json()["issue"][0]
    assert issue["expression"][0].startswith("Bundle.entry[3]")
    assert total(fhir, "Patient") == before["Patient"]
    assert total(fhir, "Observation") == before["Observation"]
    assert fhir.get(f"Patient/{existing['id']}").get_json()["name"][0]["family"] == "Before"
    assert len(fhir.get(f"Patient/{existing['id']}/_history").get_json()["entry"]) == 1


def test_transaction_failing_at_write_time_rolls_back_http_transaction(fhir):
    """A version conflict found only while writing undoes the writes already made."""
    a = fhir.create(patient(family="A"))
    b = fhir.create(patient(family="B"))
    bundle = tx(
        {"resource": {**a, "name": [{"family": "A2"}]}, "request": {"method": "PUT", "url": f"Patient/{a['id']}"}},
        {"resource": {**b, "name": [{"family": "B2"}]},
         "request": {"method": "PUT", "url": f"Patient/{b['id']}", "ifMatch": 'W/"7"'}},
        post(patient(family="C")),
    )
    r = fhir.post("", bundle)
    assert r.status_code == 412
    assert fhir.get(f"Patient/{a['id']}").get_json()["name"][0]["family"] == "A"
    assert total(fhir, "Patient") == 2


def test_transaction_processing_order_delete_post_put_get_http_transaction(fhir):
    doomed = fhir.create(patient(family="Doomed"))
    r = fhir.post("", tx(
        {"request": {"method": "GET", "url": "Patient?family=Doomed"}},
        {"resource": patient(id="kept", family="Kept"), "request": {"method": "PUT", "url": "Patient/kept"}},
        post(patient(family="Posted")),
        {"request": {"method": "DELETE", "url": f"Patient/{doomed['id']}"}},
    ))
    assert r.status_code == 200, r.get_json()
    entries = r.get_json()["entry"]
    assert entries[0]["resource"]["type"] == "searchset"
    assert entries[0]["resource"].get("total", 0) == 0  # GET ran after the DELETE
    assert entries[1]["response"]["status"] == "201 Created"
    assert entries[3]["response"]["status"] == "200 OK"


def test_transaction_conditional_create_and_update_http_transaction(fhir):
    existing = fhir.create(patient(identifier=[{"system": SYS, "value": "m1"}]))
    p = "urn:uuid:0c3d2f6e-2d0e-4a57-9f0e-1a3f3c1d2e4f"
    r = fhir.post("", tx(
        post(patient(identifier=[{"system": SYS, "value": "m1"}]), p, ifNoneExist=f"identifier={SYS}|m1"),
        post(observation(None, subject={"reference": p})),
        {"resource": patient(identifier=[{"system": SYS, "value": "m2"}], gender="other"),
         "request": {"method": "PUT", "url": f"Patient?identifier={SYS}|m2"}},
    ))
    assert r.status_code == 200, r.get_json()
    entries = r.get_json()["entry"]
    assert entries[0]["response"]["status"] == "200 OK"
    assert entries[0]["response"]["location"].startswith(f"Patient/{existing['id']}/")
    obs_id = entries[1]["response"]["location"].split("/")[1]
    assert fhir.get(f"Observation/{obs_id}").get_json()["subject"]["reference"] == f"Patient/{existing['id']}"
    assert entries[2]["response"]["status"] == "201 Created"
    assert total(fhir, "Patient") == 2


def test_transaction_conditional_reference_http_transaction(fhir):
    pid = fhir.create(patient(identifier=[{"system": SYS, "value": "cr"}]))["id"]
    r = fhir.post("", tx(post(observation(None, subject={"reference": f"Patient?identifier={SYS}|cr"}))))
    assert r.status_code == 200, r.get_json()
    oid = r.get_json()["entry"][0]["response"]["location"].split("/")[1]
    assert fhir.get(f"Observation/{oid}").get_json()["subject"]["reference"] == f"Patient/{pid}"


def test_transaction_patch_entry_as_binary_http_patch(fhir):
    rid = fhir.create(patient())["id"]
    ops = [{"op": "add", "path": "/active", "value": True}]
    binary = {"resourceType": "Binary", "contentType": "application/json-patch+json",
              "data": base64.b64encode(json.dumps(ops).encode()).decode()}
    r = fhir.post("", tx({"resource": binary, "request": {"method": "PATCH", "url": f"Patient/{rid}"}}))
    assert r.status_code == 200, r.get_json()
    assert fhir.get(f"Patient/{rid}").get_json()["active"] is True


def test_transaction_duplicate_full_url_is_400(fhir):
    p = "urn:uuid:11111111-2222-3333-4444-555555555555"
    r = fhir.post("", tx(post(patient(), p), post(patient(), p)))
    assert r.status_code == 400
    assert total(fhir, "Patient") == 0


def test_transaction_dangling_urn_uuid_is_400(fhir):
    r = fhir.post("", tx(post(observation(None, subject={"reference": "urn:uuid:0000-nope"}))))
    assert r.status_code == 400
    assert total(fhir, "Observation") == 0


def test_batch_entries_succeed_or_fail_independently_http_batch(fhir):
    r = fhir.post("", tx(
        post(patient(family="Good")),
        post(observation("missing")),
        {"request": {"method": "GET", "url": "Patient/nope"}},
        post({"resourceType": "Patient", "gender": "sometimes"}),
        kind="batch",
    ))
    assert r.status_code == 200
    out = r.get_json()
    assert out["type"] == "batch-response"
    statuses = [e["response"]["status"] for e in out["entry"]]
    assert statuses[0] == "201 Created"
    assert statuses[1].startswith("422") and statuses[2].startswith("404")
    assert statuses[3].startswith("4")
    assert out["entry"][1]["response"]["outcome"]["resourceType"] == "OperationOutcome"
    assert total(fhir, "Patient") == 1


def test_bundle_limits_and_types(fhir, app):
    limit = app.extensions["fhirserver"].settings.max_bundle_entries
    r = fhir.post("", tx(*[post(patient()) for _ in range(limit + 1)]))
    assert r.status_code == 413
    assert str(limit) in r.get_json()["issue"][0]["diagnostics"]
    assert total(fhir, "Patient") == 0
    assert fhir.post("", {"resourceType": "Bundle", "type": "collection"}).status_code == 400
    assert fhir.post("", patient()).status_code == 400
    bad = fhir.post("", tx({"request": {"method": "FETCH", "url": "Patient"}}))
    assert bad.status_code == 400
    assert bad.get_json()["issue"][0]["expression"][0].startswith("Bundle.entry[0]")


def test_a_transaction_that_moves_some_referrers_cannot_delete_what_the_rest_refer_to_http_transaction(fhir):
    """http.html#delete (referential integrity, as HAPI) within a transaction
    (http.html#trules): the records the transaction itself re-points are judged by what
    it writes, and every other referrer is still found however many it re-points, so
    the delete is 409 and nothing of the transaction is stored while one record still
    refers to the Patient; once it re-points them all, the delete goes through."""
    pid = fhir.create(patient())["id"]
    other = fhir.create(patient())["id"]
    oids = [fhir.create(observation(pid, code=f"1-{i}"))["id"] for i in range(12)]

    def moved(oid: str) -> dict:
        body = fhir.get(f"Observation/{oid}").get_json()
        body["subject"] = {"reference": f"Patient/{other}"}
        return {"resource": body, "request": {"method": "PUT", "url": f"Observation/{oid}"}}

    delete = {"request": {"method": "DELETE", "url": f"Patient/{pid}"}}
    r = fhir.post("", tx(*(moved(oid) for oid in oids[:11]), delete))
    assert r.status_code == 409, r.get_json()
    assert f"Observation/{oids[11]}" in r.get_json()["issue"][0]["diagnostics"]
    assert fhir.get(f"Patient/{pid}").status_code == 200
    assert fhir.get(f"Observation/{oids[0]}").get_json()["subject"]["reference"] == f"Patient/{pid}"

    r = fhir.post("", tx(*(moved(oid) for oid in oids), delete))
    assert r.status_code == 200, r.get_json()
    assert fhir.get(f"Patient/{pid}").status_code == 410
    assert fhir.get(f"Observation/{oids[11]}").get_json()["subject"]["reference"] == f"Patient/{other}"


def test_a_transaction_that_deletes_what_its_own_entry_refers_to_names_that_entry_http_transaction(fhir):
    """http.html#delete (referential integrity, as HAPI) within a transaction
    (http.html#trules): an entry of the same transaction that refers to the Patient it
    deletes keeps it (409, nothing stored), and the answer names that entry as the
    transaction's own, by its entry (its id is the server's choice), not as "other
    resources"."""
    pid = fhir.create(patient())["id"]
    before = total(fhir, "Observation")
    r = fhir.post("", tx(post(observation(pid)),
                         {"request": {"method": "DELETE", "url": f"Patient/{pid}"}}))
    assert r.status_code == 409, r.get_json()
    text = r.get_json()["issue"][0]["diagnostics"]
    assert "other resources" not in text, text
    assert text == (f"Bundle.entry[1]: Patient/{pid} cannot be deleted: it is referenced by the "
                    "Observation of Bundle.entry[0] (written by this transaction)"), text
    assert fhir.get(f"Patient/{pid}").status_code == 200
    assert total(fhir, "Observation") == before


@pytest.mark.parametrize("full_urls", [False, True])
def test_two_conditional_writes_of_one_criteria_in_a_transaction_are_400_http_transaction(
        fhir, full_urls):
    """http.html#trules: a transaction whose entries write one resource twice fails
    (400, naming both entries, nothing stored). Two conditional creates, or a
    conditional create and a conditional update, of the same criteria write the one
    resource it identifies, however their parameters are ordered."""
    before = total(fhir, "Patient")
    family = "Twice" + ("Url" if full_urls else "")
    urls = ("urn:uuid:2a0a9e0c-6b1e-4a55-9a38-3f0c1e7d0a11",
            "urn:uuid:2a0a9e0c-6b1e-4a55-9a38-3f0c1e7d0a12") if full_urls else (None, None)
    for second in (post(patient(family=family), urls[1],
                        ifNoneExist=f"gender=female&family={family}"),
                   post(patient(family=family), urls[1],
                        ifNoneExist=f"?family={family}&gender=female"),
                   {"resource": patient(family=family),
                    "request": {"method": "PUT", "url": f"Patient?family={family}&gender=female"},
                    **({"fullUrl": urls[1]} if full_urls else {})}):
        r = fhir.post("", tx(post(patient(family=family), urls[0],
                                  ifNoneExist=f"family={family}&gender=female"), second))
        assert r.status_code == 400, r.get_json()
        issue = r.get_json()["issue"][0]
        assert issue["expression"] == ["Bundle.entry[0]", "Bundle.entry[1]"], issue
        assert total(fhir, "Patient") == before
    r = fhir.post("", tx(post(patient(family=family), urls[0],
                              ifNoneExist=f"family={family}&gender=female"), kind="batch"))
    assert r.status_code == 200


def _delete(ref: str) -> dict:
    return {"request": {"method": "DELETE", "url": ref}}


def test_a_batchs_deletes_of_distinct_records_wait_for_their_second_look_side_by_side_http_batch(
        fhir, monkeypatch):
    """R4 http.html#brules: a batch's entries are independent, so its deletes of
    distinct records need not run one after the other. Each stored delete waits before
    it looks for referrers again (interactions/integrity.py); those waits overlap."""
    from fhirserver.interactions import integrity

    pid = fhir.create(patient(family="Many"))["id"]
    oids = [fhir.create(observation(pid, code=f"9-{i}"))["id"] for i in range(4)]
    waiting, most = [0], [0]
    look = integrity.before_second_look

    def counted(planner, target):  # the real wait, counted while it runs
        waiting[0] += 1
        most[0] = max(most[0], waiting[0])
        try:
            look(planner, target)
        finally:
            waiting[0] -= 1

    monkeypatch.setattr(integrity, "before_second_look", counted)
    r = fhir.post("", tx(*[_delete(f"Observation/{o}") for o in oids],
                         {"request": {"method": "GET", "url": f"Observation/{oids[0]}"}},
                         kind="batch"))
    assert r.status_code == 200, r.get_json()
    statuses = [e["response"]["status"] for e in r.get_json()["entry"]]
    assert all(s.startswith("20") for s in statuses[:4]), statuses
    assert statuses[4].startswith("410")  # the GET after them sees the delete done
    assert most[0] > 1
    assert all(fhir.get(f"Observation/{o}").status_code == 410 for o in oids)


@pytest.mark.parametrize("patient_first", [False, True])
def test_a_batch_deleting_a_patient_and_the_observation_referring_to_it_deletes_both_http_batch(
        fhir, patient_first):
    """R4 http.html#brules: the order of a batch's entries should not matter. A delete
    refused because another delete of the batch had not yet removed its referrer runs
    again once the others have ended."""
    pid = fhir.create(patient(family="Leaving"))["id"]
    oid = fhir.create(observation(pid, code="9-9"))["id"]
    deletes = [_delete(f"Observation/{oid}"), _delete(f"Patient/{pid}")]
    r = fhir.post("", tx(*(deletes[::-1] if patient_first else deletes), kind="batch"))
    assert r.status_code == 200, r.get_json()
    statuses = [e["response"]["status"] for e in r.get_json()["entry"]]
    assert all(s.startswith("20") for s in statuses), r.get_json()
    assert fhir.get(f"Patient/{pid}").status_code == 410
    assert fhir.get(f"Observation/{oid}").status_code == 410


def test_a_batch_delete_still_refused_when_a_record_outside_it_refers_to_the_target_http_batch(
        fhir):
    """R4 http.html#delete: a record still referred to is not deleted (409); run side
    by side or again, the batch's delete of it is refused, the other stands."""
    pid = fhir.create(patient(family="Kept"))["id"]
    oid = fhir.create(observation(pid, code="9-8"))["id"]
    other = fhir.create(patient(family="Other"))["id"]
    lone = fhir.create(observation(other, code="9-7"))["id"]
    r = fhir.post("", tx(_delete(f"Patient/{pid}"), _delete(f"Observation/{lone}"), kind="batch"))
    statuses = [e["response"]["status"] for e in r.get_json()["entry"]]
    assert statuses[0].startswith("409") and statuses[1].startswith("20"), statuses
    assert fhir.get(f"Patient/{pid}").status_code == 200
    assert fhir.get(f"Observation/{oid}").status_code == 200


def test_concurrent_batches_share_the_side_by_side_deletes_of_a_process_http_batch(
        live, monkeypatch):
    """R4 http.html#brules. Every stored delete waits for the older deletes in flight
    (interactions/integrity.py), so batches that each ran their deletes side by side
    would make every delete of the server wait for all of theirs: a process runs at
    most SIDE_BY_SIDE at once, whoever sends them."""
    import threading

    from fhirserver.interactions import integrity, transaction
    from tests.conftest import http_as

    monkeypatch.setattr(transaction, "_SLOTS", threading.BoundedSemaphore(2))
    http = http_as(live)
    pid = http.post("Patient", patient(family="Shared")).json()["id"]
    batches = [[http.post("Observation", observation(pid, code=f"8-{b}{i}")).json()["id"]
                for i in range(3)] for b in range(3)]
    waiting, most, lock = [0], [0], threading.Lock()
    look = integrity.before_second_look

    def counted(planner, target):  # the real wait, counted while it runs
        with lock:
            waiting[0] += 1
            most[0] = max(most[0], waiting[0])
        try:
            look(planner, target)
        finally:
            with lock:
                waiting[0] -= 1

    monkeypatch.setattr(integrity, "before_second_look", counted)
    answers: list = []

    def send(oids: list[str]) -> None:
        answers.append(http_as(live).post("", tx(*[_delete(f"Observation/{o}") for o in oids],
                                                 kind="batch")))

    senders = [threading.Thread(target=send, args=(oids,)) for oids in batches]
    for t in senders:
        t.start()
    for t in senders:
        t.join()
    assert [r.status_code for r in answers] == [200, 200, 200]
    assert all(e["response"]["status"].startswith("20")
               for r in answers for e in r.json()["entry"])
    assert most[0] == 2
    assert all(http.get(f"Observation/{o}").status_code == 410 for oids in batches for o in oids)
