"""Resources stored as JSON text (storage/stored_form.py): a database whose resources
an older version kept as BSON documents reads the same before and after the one-time
pass that turns them into text (storage/record_passes.py), and the pass changes
nothing else (FHIR R4 http.html#read: the resource as it was stored)."""

from __future__ import annotations

from typing import Any

import orjson

from tests import factories as f
from tests.conftest import FhirClient, make_app


def test_resources_kept_as_documents_read_the_same_before_and_after_the_text_pass(
        settings: Any) -> None:
    app = make_app(settings)
    fhir = FhirClient(app.test_client())
    pid = fhir.create(f.patient())["id"]
    plain = fhir.create(f.observation(pid, effectiveDateTime="2024-03-01"))["id"]
    exact = f.observation(pid, effectiveDateTime="2024-03-02")
    exact_text = orjson.dumps(exact).decode().replace('"value":6.3', '"value":6.30')
    r = fhir.client.post("/Observation", data=exact_text,
                         headers={"Content-Type": "application/fhir+json"})
    assert r.status_code == 201, r.get_data(as_text=True)
    exact_id = r.get_json()["id"]
    repo = app.extensions["fhirserver"].repo
    reads = {f"Patient/{pid}", f"Observation/{plain}", f"Observation/{exact_id}"}
    before = {path: fhir.get(path).get_data() for path in reads}
    assert b'"value":6.30' in before[f"Observation/{exact_id}"]

    # The form an older version wrote: plain resources as BSON documents, no marker.
    for rtype in ("Patient", "Observation"):
        for doc in repo.db[rtype].find({}, {"res": 1}):
            if doc["res"].startswith(" "):
                repo.db[rtype].update_one({"_id": doc["_id"]},
                                          {"$set": {"res": orjson.loads(doc["res"])}})
    repo.db["_schema"].delete_many({"_id": "resource-text"})
    exact_raw = repo.db["Observation"].find_one({"_id": exact_id})["res"]
    assert isinstance(repo.db["Observation"].find_one({"_id": plain})["res"], dict)
    assert {path: fhir.get(path).get_data() for path in reads} == before

    assert repo.resource_text_pending()
    assert repo.store_resources_as_text() == 2
    assert not repo.resource_text_pending() and repo.store_resources_as_text() == 0
    for rtype in ("Patient", "Observation"):
        for doc in repo.db[rtype].find({}, {"res": 1}):
            assert isinstance(doc["res"], str), doc["_id"]
    assert repo.db["Observation"].find_one({"_id": exact_id})["res"] == exact_raw
    assert {path: fhir.get(path).get_data() for path in reads} == before
    found = fhir.get(f"Observation?patient={pid}&_sort=date").get_json()
    assert [e["resource"]["id"] for e in found["entry"]] == [plain, exact_id]
    repo.close()
