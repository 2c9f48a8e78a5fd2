"""Bulk Data export (FHIR Bulk Data Access IG 2.0.0, export.html), end to end over
real HTTP with the client side written per the IG with ``requests``, the access
token obtained by SMART Backend Services (client credentials with a signed JWT
assertion); and the work outside the request: progress, cancel, expiry, and a job
that outlives the worker that started it."""

from __future__ import annotations

import json
import os
import stat
import time
from datetime import UTC, datetime, timedelta

import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session
from joserfc import jwt
from joserfc.jwk import RSAKey

from fhirserver.api.auditing import EXTENSION
from fhirserver.api.export import RUNNER
from fhirserver.audit.chain import RECORDS, event_of, verify
from fhirserver.auth import consent
from fhirserver.auth.access import record_care
from fhirserver.auth.clients import Client, register
from fhirserver.bulk import jobs
from fhirserver.bulk.runner import Runner, sweep
from tests import factories as f
from tests.conftest import Http, http_as, make_app, mint

from .test_oauth_live import SmartPrivateKeyJWT

RID = "https://fhirserver.example/sid/resident-id"
NUMBER = "110101199003071233"
SHOWN = "110101********1233"
SENSITIVE = {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                           "code": "HIV"}]}
KICKOFF = {"Accept": "application/fhir+json", "Prefer": "respond-async"}
ORG_A, ORG_B = "Organization/org-a", "Organization/org-b"


def backend_token(url: str, client_id: str, key: RSAKey, scope: str) -> str:
    """SMART Backend Services: client_credentials with a private_key_jwt assertion,
    by authlib's OAuth 2.0 client."""
    conf = requests.get(f"{url}/.well-known/smart-configuration", timeout=10).json()
    session = OAuth2Session(client_id, key.as_dict(private=True), scope=scope,
                            token_endpoint_auth_method=SmartPrivateKeyJWT(
                                conf["token_endpoint"], alg="RS384"))
    token = session.fetch_token(conf["token_endpoint"], grant_type="client_credentials")
    return str(token["access_token"])


def add_client(app, client_id: str, organization: str, scope: str) -> RSAKey:
    key = RSAKey.generate_key(2048, parameters={"kid": f"{client_id}-1", "alg": "RS384"})
    register(app.extensions["fhirserver"].repo.db, Client(
        client_id, "backend", scope, organization=organization,
        jwks={"keys": [key.as_dict(private=False)]}))
    return key


def setup_world(app, operator) -> dict:
    """Org A treats ``treated``; nobody treats ``other``. ``treated`` restricted their
    sensitive records to the organisation that wrote them (not org A)."""
    treated = operator.post("Patient", f.patient("Treated", identifier=[
        {"system": RID, "value": NUMBER}])).json()["id"]
    other = operator.post("Patient", f.patient("Other")).json()["id"]
    obs = [operator.post("Observation", f.observation(treated, code=c)).json()["id"]
           for c in ("1-1", "2-2", "3-3")]
    hidden = operator.post("Observation", {**f.observation(treated, code="hiv-1"),
                                           "meta": SENSITIVE}).json()["id"]
    foreign = [operator.post("Observation", f.observation(other)).json()["id"] for _ in range(2)]
    report = operator.post("DiagnosticReport", {
        "resourceType": "DiagnosticReport", "status": "final", "code": {"text": "panel"},
        "subject": {"reference": f"Patient/{treated}"},
        "result": [{"reference": f"Observation/{obs[0]}"}]}).json()["id"]
    db = app.extensions["fhirserver"].repo.db
    record_care(db, ORG_A, treated, datetime.now(UTC) + timedelta(hours=1), "test")
    consent.save(db, treated, consent.Choice(restrict_sensitive=True))
    return {"treated": treated, "other": other, "obs": obs, "hidden": hidden,
            "foreign": foreign, "report": report}


def wait_complete(http: Http, status_url: str, seconds: float = 60) -> requests.Response:
    """Poll the status URL as export.html#bulk-data-status-request says: 202 with
    X-Progress until 200, waiting Retry-After between polls."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        r = http.session.get(status_url, timeout=30)
        if r.status_code != 202:
            return r
        assert r.headers["X-Progress"]
        time.sleep(min(float(r.headers["Retry-After"]), 0.2))
    raise AssertionError("the export did not finish")


def ndjson(http: Http, url: str) -> list[dict]:
    r = http.session.get(url, headers={"Accept": "application/fhir+ndjson"}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("application/fhir+ndjson")
    return [json.loads(line) for line in r.text.splitlines() if line]


@pytest.fixture
def world(live):
    url, app = live
    data = setup_world(app, http_as(live))
    key = add_client(app, "lab-a", ORG_A, "system/*.rs")
    data["a"] = Http(url, backend_token(url, "lab-a", key, "system/*.rs"))
    key_b = add_client(app, "lab-b", ORG_B, "system/*.rs")
    data["b"] = Http(url, backend_token(url, "lab-b", key_b, "system/*.rs"))
    return data


def kickoff(http: Http, path: str = "$export", **kw) -> requests.Response:
    return http.get(path, headers={**KICKOFF, **kw.pop("headers", {})}, **kw)


def export(http: Http, path: str = "$export", **kw) -> tuple[dict, dict[str, list[dict]]]:
    """Kick off, poll, and download every file: the manifest and the files by type."""
    r = kickoff(http, path, **kw)
    assert r.status_code == 202, r.text
    assert r.json()["resourceType"] == "OperationOutcome"
    done = wait_complete(http, r.headers["Content-Location"])
    assert done.status_code == 200, done.text
    body = done.json()
    found: dict[str, list[dict]] = {}
    for item in body["output"]:
        found.setdefault(item["type"], []).extend(ndjson(http, item["url"]))
    return body, found


def test_kickoff_poll_manifest_download_export_html(live, world):
    """export.html#bulk-data-kick-off-request (202 + Content-Location),
    #bulk-data-status-request (200 + manifest with transactionTime, request,
    requiresAccessToken, output with counts), #file-request (NDJSON per type). Org A
    gets the patient it treats and nothing of the other; the record the patient
    restricted never appears; identity numbers are masked without the identity scope."""
    url, app = live
    before = datetime.now(UTC)
    manifest, found = export(world["a"])
    assert manifest["requiresAccessToken"] is True
    assert manifest["request"] == f"{url}/$export"
    assert datetime.fromisoformat(manifest["transactionTime"]) >= before - timedelta(seconds=1)
    assert manifest["error"] == []
    counts = {o["type"]: o["count"] for o in manifest["output"]}
    assert counts == {"Patient": 1, "Observation": 3, "DiagnosticReport": 1}
    assert [p["id"] for p in found["Patient"]] == [world["treated"]]
    assert sorted(o["id"] for o in found["Observation"]) == sorted(world["obs"])
    assert world["hidden"] not in {o["id"] for o in found["Observation"]}
    assert [d["id"] for d in found["DiagnosticReport"]] == [world["report"]]
    patient = found["Patient"][0]
    assert patient["identifier"][0]["value"] == SHOWN
    assert "MASKED" in {s["code"] for s in patient["meta"]["security"]}
    for o in manifest["output"]:
        job_id, name = o["url"].rsplit("/", 2)[1:]
        path = app.extensions["fhirserver"].settings.exports / job_id / name
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    # The patients see the export in their access trail; the other patient does not.
    mine = http_as(live, "patient", "patient/*.rs", patient=world["treated"])
    trail = mine.get("AuditEvent?_count=100").json()["entry"]
    assert any(e["resource"]["subtype"][0]["code"] == "export" and "bulk export" in
               e["resource"].get("outcomeDesc", "") for e in trail)
    theirs = http_as(live, "patient", "patient/*.rs", patient=world["other"])
    assert not any(e["resource"]["subtype"][0]["code"] == "export"
                   for e in theirs.get("AuditEvent?_count=100").json().get("entry", []))
    # Kick-off, polls and downloads are recorded as well, in the same unbroken chain
    # as the records the export thread appended.
    db = app.extensions["fhirserver"].repo.db
    codes = [event_of(d)["subtype"][0]["code"] for d in db[RECORDS].find({})]
    assert {"export", "export-status", "export-file"} <= set(codes)
    setup = app.extensions[EXTENSION]
    assert verify(db, setup.keys, [setup.checkpoints]).broken is None


def test_files_need_the_same_clients_token_requires_access_token(live, world):
    """export.html#file-request: requiresAccessToken true; another client's valid token
    answers as for a job that does not exist, no token is 401."""
    manifest, _ = export(world["a"])
    file_url = manifest["output"][0]["url"]
    status_url = file_url.replace("/bulk-files/", "/bulk-status/").rsplit("/", 1)[0]
    assert world["b"].session.get(file_url, timeout=10).status_code == 404
    assert world["b"].session.get(status_url, timeout=10).status_code == 404
    assert world["b"].session.delete(status_url, timeout=10).status_code == 404
    assert requests.get(file_url, timeout=10).status_code == 401
    assert world["a"].session.get(file_url, timeout=10).status_code == 200


def test_identity_scope_sees_numbers_whole(live, world):
    url, app = live
    key = add_client(app, "registry", ORG_A, "system/Patient.rs identity")
    http = Http(url, backend_token(url, "registry", key, "system/Patient.rs identity"))
    manifest, found = export(http)
    assert [o["type"] for o in manifest["output"]] == ["Patient"]  # its only scope
    assert found["Patient"][0]["identifier"][0]["value"] == NUMBER


def test_type_typefilter_since_and_patient_level(live, world):
    """export.html#query-parameters: _type limits the types, _typeFilter selects
    within a type, _since only what changed after it; Patient/$export the compartments,
    with ``patient`` naming some (one out of reach is reported in ``error``)."""
    a, operator = world["a"], http_as(live)
    _, found = export(a, params={"_type": "Patient"})
    assert list(found) == ["Patient"]
    _, found = export(a, params={"_type": "Observation",
                                 "_typeFilter": "Observation?code=http://loinc.org|2-2"})
    assert [o["id"] for o in found["Observation"]] == [world["obs"][1]]
    time.sleep(0.01)
    since = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    time.sleep(0.01)
    newer = operator.post("Observation", f.observation(world["treated"], code="9-9")).json()["id"]
    manifest, found = export(a, params={"_since": since})
    assert {t: [r["id"] for r in rs] for t, rs in found.items()} == {"Observation": [newer]}
    assert since in manifest["request"]

    r = a.post("Patient/$export", {"resourceType": "Parameters", "parameter": [
        {"name": "patient", "valueReference": {"reference": f"Patient/{world['treated']}"}},
        {"name": "patient", "valueReference": {"reference": f"Patient/{world['other']}"}},
        {"name": "_type", "valueString": "Patient,Observation"}]}, headers=KICKOFF)
    assert r.status_code == 202, r.text
    done = wait_complete(a, r.headers["Content-Location"]).json()
    assert {o["type"]: o["count"] for o in done["output"]} == {"Patient": 1, "Observation": 4}
    errors_ = ndjson(a, done["error"][0]["url"])
    assert errors_[0]["issue"][0]["code"] == "not-found"
    assert world["other"] in errors_[0]["issue"][0]["diagnostics"]


@pytest.mark.parametrize(("params", "headers", "status", "expression"), [
    ({"_outputFormat": "text/csv"}, {}, 400, "_outputFormat"),
    ({"_since": "yesterday"}, {}, 400, "_since"),
    ({"_type": "Medication"}, {}, 400, "_type"),
    ({"_elements": "id"}, {}, 400, "_elements"),
    ({"_typeFilter": "Observation?nonsense=1"}, {}, 400, "nonsense"),
    ({"_typeFilter": "Observation?_include=Observation:subject"}, {}, 400, "_typeFilter"),
    ({"patient": "Patient/x"}, {}, 400, "patient"),  # Patient level only
    ({}, {"Prefer": ""}, 400, "Prefer"),
])
def test_bad_kickoff_parameters_are_400_export_html_query_parameters(
        live, world, params, headers, status, expression):
    """export.html#query-parameters: a parameter the server does not support is an
    error unless Prefer: handling=lenient; each answer is an OperationOutcome naming it."""
    r = kickoff(world["a"], params=params, headers=headers)
    assert r.status_code == status, r.text
    issue = r.json()["issue"][0]
    assert expression in (issue.get("expression") or [""])[0] or expression in issue["diagnostics"]


def test_lenient_handling_ignores_what_is_not_supported(live, world):
    r = kickoff(world["a"], params={"_elements": "id", "_type": "Patient"},
                headers={"Prefer": "respond-async, handling=lenient"})
    assert r.status_code == 202, r.text
    assert any(i["severity"] == "warning" and "_elements" in i["diagnostics"]
               for i in r.json()["issue"])
    assert wait_complete(world["a"], r.headers["Content-Location"]).status_code == 200


def test_only_backend_clients_and_operators_export(live, world):
    """User and patient tokens are refused (403); a backend client may export only the
    types its scopes let it search."""
    url, app = live
    for kind, scope, extra in (("user", "user/*.rs", {"fhirUser": "Practitioner/dr"}),
                               ("patient", "patient/*.rs", {"patient": world["treated"]})):
        r = kickoff(http_as(live, kind, scope, **extra))
        assert r.status_code == 403 and r.json()["resourceType"] == "OperationOutcome"
    key = add_client(app, "narrow", ORG_A, "system/Patient.rs")
    narrow = Http(url, backend_token(url, "narrow", key, "system/Patient.rs"))
    r = kickoff(narrow, params={"_type": "Observation"})
    assert r.status_code == 403 and r.json()["issue"][0]["expression"] == ["_type"]


def test_fhirclient_backend_services_token(live, world):
    """fhirclient 4.4 takes a signed client assertion (``jwt_token``) and runs the
    client_credentials grant itself; the export then runs with its token."""
    from fhirclient import client as fhir_client

    url, app = live
    key = add_client(app, "fc-lab", ORG_A, "system/*.rs")
    conf = requests.get(f"{url}/.well-known/smart-configuration", timeout=10).json()
    now = int(time.time())
    assertion = jwt.encode({"alg": "RS384", "kid": "fc-lab-1"}, {
        "iss": "fc-lab", "sub": "fc-lab", "aud": conf["token_endpoint"], "exp": now + 240,
        "jti": os.urandom(8).hex()}, key, algorithms=["RS384"])
    smart = fhir_client.FHIRClient(settings={"app_id": "fc-lab", "api_base": url,
                                             "scope": "system/*.rs", "jwt_token": assertion})
    smart.wants_patient = False
    smart.prepare()
    smart.authorize()
    token = smart.server.auth.access_token
    assert token
    _, found = export(Http(url, token), params={"_type": "Patient"})
    assert [p["id"] for p in found["Patient"]] == [world["treated"]]


# -- the work outside the request: one process kicks off, runners do the work --------


@pytest.fixture
def quiet(settings):
    """An app whose processes run no export thread: the tests run the runners."""
    application = make_app(settings.with_(export_threads=0))
    yield application
    application.extensions["fhirserver"].repo.close()


def runner(app, page: int = 2, name: str = "w1") -> Runner:
    st = app.extensions["fhirserver"]
    return Runner(st.repo, st.settings, lambda job, patients, detail: None, st.clock,
                  page=page, name=name)


@pytest.fixture
def lab(quiet):
    operator = quiet.test_client()

    class Op:
        def post(self, path, body):
            r = operator.post(path, json=body, headers={"Content-Type": "application/fhir+json"})

            class R:
                def json(self_inner):
                    return r.get_json()
            return R()

    data = setup_world(quiet, Op())
    token = mint(quiet, "system", "system/*.rs", client_id="lab-a", organization=ORG_A)
    data["client"] = quiet.test_client()
    data["h"] = {"Authorization": f"Bearer {token}", **KICKOFF}
    return data


def _start(lab) -> str:
    r = lab["client"].get("/$export?_type=Observation", headers=lab["h"])
    assert r.status_code == 202, r.get_json()
    return r.headers["Content-Location"].rsplit("/", 1)[1]


def test_progress_then_manifest_export_html_status(quiet, lab):
    """export.html#response---in-progress-status: 202 with X-Progress (what is done of
    what) and Retry-After while running; one export at a time per client (429)."""
    job_id = _start(lab)
    client, h = lab["client"], {"Authorization": lab["h"]["Authorization"]}
    r = client.get(f"/bulk-status/{job_id}", headers=h)
    assert r.status_code == 202 and r.headers["X-Progress"] == "queued"
    assert int(r.headers["Retry-After"]) > 0
    busy = client.get("/$export", headers=lab["h"])
    assert busy.status_code == 429 and busy.get_json()["resourceType"] == "OperationOutcome"
    assert "Retry-After" in busy.headers

    pages = iter(range(100))
    runner(quiet).step(stop=lambda: next(pages) >= 1)  # one page of 2, then leaves it
    r = client.get(f"/bulk-status/{job_id}", headers=h)
    assert r.status_code == 202 and r.headers["X-Progress"] == "Observation 2/3 (type 1 of 1)"


def test_job_survives_the_death_of_its_worker(quiet, lab):
    """A worker that dies mid-export (no more lease renewals; bytes written after its
    last checkpoint) leaves a job another worker resumes once the lease ran out: every
    resource exactly once."""
    job_id = _start(lab)
    db = quiet.extensions["fhirserver"].repo.db
    pages = iter(range(100))
    runner(quiet, name="dead").step(stop=lambda: next(pages) >= 1)
    job = jobs.get(db, job_id)
    assert job["worker"] == "dead" and job["step"]["count"] == 2
    path = quiet.extensions["fhirserver"].settings.exports / job_id / "Observation.ndjson"
    with open(path, "ab") as half_written:
        half_written.write(b'{"resourceType": "Observ')  # cut off by the kill
    assert runner(quiet, name="other").step() is False  # the lease still holds
    db[jobs.JOBS].update_one({"_id": job_id},
                             {"$set": {"lease_until": datetime.now(UTC) - timedelta(seconds=1)}})
    assert runner(quiet, name="other").step() is True
    r = lab["client"].get(f"/bulk-status/{job_id}",
                          headers={"Authorization": lab["h"]["Authorization"]})
    assert r.status_code == 200, r.get_json()
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert sorted(o["id"] for o in lines) == sorted(lab["obs"])
    assert r.get_json()["output"][0]["count"] == 3


def test_cancel_and_expiry_remove_the_files_export_html_delete(quiet, lab):
    """export.html#bulk-data-delete-request: DELETE answers 202 and the status URL
    404 after; a finished export's files are removed after the retention time."""
    client, h = lab["client"], {"Authorization": lab["h"]["Authorization"]}
    job_id = _start(lab)
    r = client.delete(f"/bulk-status/{job_id}", headers=h)
    assert r.status_code == 202 and r.get_json()["resourceType"] == "OperationOutcome"
    assert client.get(f"/bulk-status/{job_id}", headers=h).status_code == 404
    assert runner(quiet).step() is False  # nothing left to run
    db = quiet.extensions["fhirserver"].repo.db
    assert "export-cancel" in [event_of(d)["subtype"][0]["code"] for d in db[RECORDS].find({})]

    job_id = _start(lab)
    assert runner(quiet, page=100).step() is True
    manifest = client.get(f"/bulk-status/{job_id}", headers=h)
    assert manifest.status_code == 200 and "Expires" in manifest.headers
    root = quiet.extensions["fhirserver"].settings.exports
    assert (root / job_id / "Observation.ndjson").is_file()
    sweep(db, root, datetime.now(UTC) + timedelta(minutes=59))
    assert (root / job_id).is_dir()  # FHIR_EXPORT_RETENTION_MINUTES is 60
    sweep(db, root, datetime.now(UTC) + timedelta(minutes=61))
    assert not (root / job_id).exists()
    assert client.get(f"/bulk-status/{job_id}", headers=h).status_code == 404
    assert client.get(manifest.get_json()["output"][0]["url"].split("/fhir", 1)[1],
                      headers=h).status_code == 404


def test_the_export_thread_starts_with_the_first_export_request(app):
    """Each process runs its own export thread (FHIR_EXPORT_THREADS), started by the
    first export request it serves."""
    token = mint(app, "system", "system/*.rs", client_id="lab-a", organization=ORG_A)
    r = app.test_client().get("/$export", headers={"Authorization": f"Bearer {token}", **KICKOFF})
    assert r.status_code == 202
    assert app.extensions[RUNNER].alive
    app.extensions[RUNNER].stop()


def test_simultaneous_kickoffs_of_one_client_start_one_export(quiet, lab):
    """One export at a time per client holds under a race: eight kick-offs at the same
    instant give one 202 and seven 429s (a count followed by an insert let several in).
    Once that export is cancelled, the client may start the next."""
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    barrier = Barrier(8)

    def kick(_: int) -> int:
        client = quiet.test_client()
        barrier.wait()
        return client.get("/$export?_type=Observation", headers=lab["h"]).status_code

    with ThreadPoolExecutor(8) as pool:
        codes = sorted(pool.map(kick, range(8)))
    assert codes == [202] + [429] * 7
    db = quiet.extensions["fhirserver"].repo.db
    active = list(db[jobs.JOBS].find({"owner": {"$exists": True},
                                      "status": {"$in": ["queued", "running", "reserving"]}}))
    assert len(active) == 1
    h = {"Authorization": lab["h"]["Authorization"]}
    assert lab["client"].delete(f"/bulk-status/{active[0]['_id']}", headers=h).status_code == 202
    assert lab["client"].get("/$export?_type=Observation", headers=lab["h"]).status_code == 202


def _opt_out_at(quiet, lab, monkeypatch, call: int):  # type: ignore[no-untyped-def]
    """A runner's ``stop`` that never stops, and at its ``call``-th asking (0: before
    the first page) the treated patient opts out of sharing across organisations."""
    monkeypatch.setattr(consent, "REFRESH", 0.0)
    calls = iter(range(100))
    db = quiet.extensions["fhirserver"].repo.db

    def stop() -> bool:
        if next(calls) == call:
            consent.save(db, lab["treated"], consent.Choice(opt_out=True))
        return False

    return stop


def test_a_choice_made_during_an_export_applies_to_its_next_pages(quiet, lab, monkeypatch):
    """An export runs after its request returned, page by page: a patient who opts out
    of sharing across organisations meanwhile (DESIGN.md section 1) is applied from the
    next page on, as for every request, not only to exports started later."""
    job_id = _start(lab)
    st = quiet.extensions["fhirserver"]
    assert runner(quiet, page=1).step(stop=_opt_out_at(quiet, lab, monkeypatch, 1)) is True
    path = st.settings.exports / job_id / "Observation.ndjson"
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert len(lines) == 1 and lines[0]["id"] in lab["obs"]


def test_a_choice_made_before_an_exports_first_page_applies_to_it(quiet, lab, monkeypatch):
    """The first page of a type too: a choice made after the job was claimed."""
    job_id = _start(lab)
    st = quiet.extensions["fhirserver"]
    assert runner(quiet, page=10).step(stop=_opt_out_at(quiet, lab, monkeypatch, 0)) is True
    assert not (st.settings.exports / job_id / "Observation.ndjson").exists()  # none written
    assert jobs.get(st.repo.db, job_id)["status"] == "complete"


def test_an_export_whose_choices_cannot_be_read_in_time_is_left_for_later(quiet, lab, monkeypatch):
    """Choices not read in time (503 for a request) end no export: the job keeps its
    checkpoint and files, and is resumed once its lease ran out."""
    from fhirserver import errors

    job_id = _start(lab)
    st = quiet.extensions["fhirserver"]
    pages = iter(range(100))
    runner(quiet, page=1).step(stop=lambda: next(pages) >= 1)  # one page written

    def not_in_time(db, patients):  # type: ignore[no-untyped-def]
        raise errors.Unavailable("The patients' sharing choices could not be read in time")

    db = st.repo.db
    db[jobs.JOBS].update_one({"_id": job_id},
                             {"$set": {"lease_until": datetime.now(UTC) - timedelta(seconds=1)}})
    with monkeypatch.context() as m:
        m.setattr(consent, "cached", not_in_time)
        assert runner(quiet, page=1, name="other").step() is True
    job = jobs.get(db, job_id)
    assert job["status"] != "failed" and job["step"]["count"] == 1
    db[jobs.JOBS].update_one({"_id": job_id},
                             {"$set": {"lease_until": datetime.now(UTC) - timedelta(seconds=1)}})
    assert runner(quiet, page=1, name="third").step() is True
    assert jobs.get(db, job_id)["status"] == "complete"
    lines = (st.settings.exports / job_id / "Observation.ndjson").read_text().splitlines()
    assert sorted(json.loads(x)["id"] for x in lines) == sorted(lab["obs"])


def test_an_export_stops_when_its_client_is_disabled(quiet, lab):
    """An export runs after its request returned: a client disabled meanwhile (its
    tokens cut off, as ``fhirserver clients disable`` does) exports nothing more. The
    job fails with 403 and its files are removed (SMART Backend Services: access ends
    with the client's authorization)."""
    from fhirserver.auth.tokens import client_holder

    job_id = _start(lab)
    st = quiet.extensions["fhirserver"]
    pages = iter(range(100))
    runner(quiet).step(stop=lambda: next(pages) >= 1)  # one page written
    now = int(datetime.now(UTC).timestamp())
    st.tokens.cut_off(client_holder("lab-a"), before=now, exp=now + 3600)
    db = st.repo.db
    db[jobs.JOBS].update_one({"_id": job_id},
                             {"$set": {"lease_until": datetime.now(UTC) - timedelta(seconds=1)}})
    runner(quiet, name="other").step()
    job = jobs.get(db, job_id)
    assert job["status"] == "failed" and job["failure"]["status"] == 403
    assert not (st.settings.exports / job_id).exists()
