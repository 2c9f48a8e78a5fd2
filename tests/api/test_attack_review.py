"""Hostile input and hostile callers against conditional writes, exact decimals and
the NUL checks: every refusal a 4xx OperationOutcome naming the problem, never a
500, and nothing stored (http.html#ccreate, datatypes.html#string,
search.html#errors)."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from tests import factories as f

PATIENT = {"resourceType": "Patient", "name": [{"family": "Nul"}]}


def _refused(r: Any) -> dict[str, Any]:
    body = r.get_json()
    assert r.status_code == 400, body
    assert body["resourceType"] == "OperationOutcome"
    assert "NUL" in body["issue"][0]["diagnostics"], body
    return body


def _bundle(kind: str, *entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def _entry_outcome(r: Any, kind: str) -> dict[str, Any]:
    """The refusal of a batch's only entry, or of the whole transaction (but for a
    read, which a transaction answers entry by entry after its writes)."""
    if kind == "transaction" and r.status_code != 200:
        return _refused(r)
    assert r.status_code == 200, r.get_json()
    response = r.get_json()["entry"][0]["response"]
    assert response["status"].startswith("400"), response
    assert "NUL" in response["outcome"]["issue"][0]["diagnostics"], response
    return response["outcome"]


def _count(fhir: Any, rtype: str = "Patient") -> int:
    return fhir.get(f"{rtype}?_total=accurate&_count=0").get_json()["total"]


# -- NUL in search criteria that do not come from the request's query ------------------

def test_a_nul_in_if_none_exist_is_400_http_ccreate(fhir: Any) -> None:
    """http.html#ccreate: If-None-Exist holds search criteria; a NUL in them
    (percent-encoded, as a header cannot carry one raw) is a 400, not a 500."""
    for criteria in ("identifier=a%00b", "family=a%00b", "fam%00ily=a"):
        _refused(fhir.post("Patient", PATIENT, headers={"If-None-Exist": criteria}))
    assert _count(fhir) == 0


def test_a_nul_in_a_form_encoded_search_body_is_400_http_search(fhir: Any) -> None:
    """http.html#search: POST _search carries the parameters form-encoded in the
    body; a NUL there is refused as it is in the URL."""
    for body in ("family=a%00b", b"family=a\x00b"):
        _refused(fhir.post("Patient/_search", body,
                           content_type="application/x-www-form-urlencoded"))


@pytest.mark.parametrize("kind", ["batch", "transaction"])
@pytest.mark.parametrize("entry", [
    {"request": {"method": "GET", "url": "Patient?family=a%00b"}},
    {"fullUrl": "urn:uuid:1", "resource": PATIENT,
     "request": {"method": "POST", "url": "Patient", "ifNoneExist": "family=a%00b"}},
    {"fullUrl": "urn:uuid:2", "resource": PATIENT,
     "request": {"method": "PUT", "url": "Patient?family=a%00b"}},
    {"request": {"method": "DELETE", "url": "Patient?family=a%00b"}},
], ids=["search", "conditional-create", "conditional-update", "conditional-delete"])
def test_a_nul_in_a_bundle_entrys_criteria_is_400_http_trules(fhir: Any, kind: str,
                                                              entry: dict[str, Any]) -> None:
    """http.html#trules: a Bundle entry's request.url and ifNoneExist are search
    criteria like a URL's query; a NUL in them fails that entry (the transaction)
    with a 400 naming it."""
    _entry_outcome(fhir.post("", _bundle(kind, entry)), kind)
    assert _count(fhir) == 0


def test_a_nul_in_a_conditional_reference_is_400_http_trules(fhir: Any) -> None:
    """http.html#trules: a conditional reference (``Patient?criteria``) in a
    transaction is resolved by a search; a NUL in it is a 400."""
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
           "subject": {"reference": "Patient?family=a%00b"}}
    _refused(fhir.post("", _bundle("transaction", {
        "fullUrl": "urn:uuid:3", "resource": obs,
        "request": {"method": "POST", "url": "Observation"}})))
    assert _count(fhir, "Observation") == 0


# -- NUL in a resource that does not arrive as the request body ------------------------

@pytest.mark.parametrize("kind", ["batch", "transaction"])
def test_a_nul_put_in_by_a_binary_json_patch_is_400_http_patch(fhir: Any, kind: str) -> None:
    """http.html#patch, http.html#transaction: in a Bundle a JSON Patch travels as a
    Binary, base64 in ``data``, so the body's NUL check never sees it; a string the
    patch puts a NUL in is refused (datatypes.html#string), and the resource is
    unchanged."""
    pid = fhir.post("Patient", PATIENT).get_json()["id"]
    ops = b'[{"op": "replace", "path": "/name/0/family", "value": "a\\u0000b"}]'
    binary = {"resourceType": "Binary", "contentType": "application/json-patch+json",
              "data": base64.b64encode(ops).decode()}
    r = fhir.post("", _bundle(kind, {"resource": binary,
                                     "request": {"method": "PATCH", "url": f"Patient/{pid}"}}))
    outcome = _entry_outcome(r, kind)
    assert str(outcome["issue"][0].get("expression")).endswith("name[0].family']"), outcome
    stored = fhir.get(f"Patient/{pid}").get_json()
    assert stored["name"][0]["family"] == "Nul" and stored["meta"]["versionId"] == "1"


def test_an_imported_resource_with_a_nul_is_rejected_alone(settings: Any, fhir: Any,
                                                           tmp_path: Any) -> None:
    """datatypes.html#string: `fhirserver import` reads files without the API's body
    check; a resource holding a NUL is rejected by name and the others of its group
    are imported (the database's refusal aborted the whole import)."""
    from fhirserver.cli import run_import

    ndjson = tmp_path / "nul.ndjson"
    ndjson.write_text('{"resourceType": "Patient", "id": "ok-1"}\n'
                      '{"resourceType": "Patient", "id": "nul-1", "name": [{"family": "a\\u0000b"}]}\n')
    stats = run_import(settings, [ndjson])
    assert stats.created["Patient"] == 1 and stats.rejected["Patient"] == 1, stats.problems
    assert "NUL" in " ".join(stats.problems)
    assert fhir.get("Patient/ok-1").status_code == 200
    assert fhir.get("Patient/nul-1").status_code == 404


# -- conditional writes by a caller who cannot see the match ----------------------------

SECRET = "http://example.org/lab-accession"


def test_conditional_writes_never_reveal_or_touch_a_hidden_match_http_ccreate(live):
    """http.html#ccreate, http.html#cond-update: criteria are matched within the
    caller's view. A clinician who does not treat Bob, naming the identifier of
    Bob's Observation, gets what criteria naming nothing would give: a new
    resource, never Bob's id, and Bob's Observation unchanged; no claim is left."""
    from tests.api.test_trust import World

    world = World(live)
    db = world.db
    dr = world.clinician("dr-li")
    world.treat("Practitioner/dr-li", world.alice)
    obs = {**f.observation(world.bob, code="acc-1"),
           "identifier": [{"system": SECRET, "value": "bob-1"}]}
    bobs = world.op.post("Observation", obs).json()["id"]

    def mine(value: str) -> dict[str, Any]:
        return {**f.observation(world.alice, code="acc-1"),
                "identifier": [{"system": SECRET, "value": value}]}

    for value in ("bob-1", "nobody-1"):
        created = dr.post("Observation", mine(value),
                          headers={"If-None-Exist": f"identifier={SECRET}|{value}"})
        assert created.status_code == 201, created.text
        assert created.json()["id"] != bobs and bobs not in created.text
    answers = []
    for value in ("bob-1", "nobody-2"):
        put = dr.put(f"Observation?identifier={SECRET}|{value}&subject=Patient/{world.bob}",
                     mine(value))
        assert put.status_code in (201, 403, 404), put.text
        assert bobs not in put.text
        answers.append(put.status_code)
    assert answers[0] == answers[1]  # a hidden match and no match answer alike
    stored = world.op.get(f"Observation/{bobs}").json()
    assert stored["meta"]["versionId"] == "1" and stored["subject"]["reference"].endswith(world.bob)
    assert db["_search_claims"].count_documents({}) == 0



def test_claims_left_by_dead_writers_are_swept_http_ccreate(live):
    """http.html#ccreate: a writer killed while it held criteria (kill -9, a worker
    past its timeout) leaves its claims; criteria nobody sends again must not keep
    theirs for ever. Once their lease has long ended, the next conditional create,
    on any criteria, clears them."""
    import uuid
    from datetime import UTC, datetime, timedelta

    from tests.conftest import http_as

    op = http_as(live)
    collection = live[1].extensions["fhirserver"].repo.search_claims.collection
    long_ago = datetime.now(UTC) - timedelta(minutes=5)
    collection.insert_many([{"_id": f"dead-{n}", "owner": "killed", "rid": "x", "until": long_ago}
                            for n in range(50)] + [{"_id": "dead-0~killed", "until": long_ago}])
    value = uuid.uuid4().hex
    r = op.post("Patient", {**PATIENT, "identifier": [{"system": SECRET, "value": value}]},
                headers={"If-None-Exist": f"identifier={SECRET}|{value}"})
    assert r.status_code == 201, r.text
    assert collection.count_documents({}) == 0


# -- NUL in the sign-in form ------------------------------------------------------------

def test_a_nul_in_a_sign_in_user_name_is_a_failed_sign_in(live):
    """A user name with a NUL (typed or posted by a script) names no account: the
    sign-in fails as for an unknown user (401, the form again), not a 500."""
    import re

    import requests

    from fhirserver.auth.grants import s256
    from tests.api.test_trust import VERIFIER, World

    world = World(live)
    browser = requests.Session()
    page = browser.get(world.authorize_url(s256(VERIFIER)), timeout=10, allow_redirects=False)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)[1]  # type: ignore[index]
    r = browser.post(f"{world.url}/oauth/login", timeout=10,
                     data={"csrf": csrf, "username": "alice\x00", "password": "x"})
    assert r.status_code == 401, r.text[:300]
    assert "Unknown user name or wrong password" in r.text
