"""Identity look-ups over real HTTP (issue point 6): a backend client without a care
relationship resolves one ``system|value`` per request, a limited number a minute
(429 with Retry-After, RFC 6585 section 4, counted in the database for every
worker), marked in the audit log, with health card numbers only for the
``card-number`` scope; ``$match`` beyond the caller's reach only for ``registration``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from werkzeug.serving import make_server

from fhirserver.storage.ferretdb import free_port
from tests.conftest import Http, http_as, make_app
from tests.mpi.numbers import gb11643

RID = "https://fhirserver.example/sid/resident-id"
CARD = "https://fhirserver.example/sid/health-card"
LIMIT = 4  # FHIR_LOOKUPS_PER_MINUTE for these tests


@pytest.fixture
def settings(settings):
    return settings.with_(lookups_per_minute=LIMIT)


class Clock:
    """The server's time, fixed so that a test never straddles two minute windows."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(second=5, microsecond=0)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock(live) -> Clock:
    c = Clock()
    live[1].extensions["fhirserver"].clock = c
    return c


def resident(seq: str) -> str:
    return gb11643("110105", "19800101", seq)  # even sequence: female


@pytest.fixture
def people(live, clock) -> dict[str, str]:
    """Three registered residents; the first holds a health card."""
    op = http_as(live)
    ids = {}
    for n, seq in enumerate(("002", "004", "006")):
        r = op.post(
            "Patient",
            {
                "resourceType": "Patient",
                "gender": "female",
                "birthDate": "1980-01-01",
                "name": [{"family": f"Resident{n}", "given": ["Mei"]}],
                "telecom": [{"system": "phone", "value": f"1380013800{n}"}],
                "identifier": [{"system": RID, "value": resident(seq)}],
            },
        )
        assert r.status_code == 201, r.text
        ids[seq] = r.json()["id"]
    assert op.post(f"Patient/{ids['002']}/$issue-card").status_code == 201
    return ids


def backend(
    live, client: str = "lab-1", scope: str = "system/Patient.rs", org: str = "Organization/lab"
) -> Http:
    return http_as(live, "system", scope, subject=client, client_id=client, organization=org)


def card_of(patient: dict) -> list[str]:
    return [i["value"] for i in patient.get("identifier", []) if i["system"] == CARD]


def lookup(who: Http, *values: str) -> list[str]:
    return who.ids("Patient?identifier=" + ",".join(f"{RID}|{v}" for v in values))


def pix(who: Http, value: str) -> requests.Response:
    return who.get(f"Patient/$ihe-pix?sourceIdentifier={RID}|{value}")


def match(who: Http, value: str) -> requests.Response:
    return who.post(
        "Patient/$match",
        {
            "resourceType": "Parameters",
            "parameter": [
                {
                    "name": "resource",
                    "resource": {
                        "resourceType": "Patient",
                        "gender": "female",
                        "birthDate": "1980-01-01",
                        "identifier": [{"system": RID, "value": value}],
                    },
                }
            ],
        },
    )


def test_one_identifier_per_request_without_a_relationship(live, people, clock):
    """Point 6: the look-up exception covers exactly one system|value; a comma list
    (search.html#combining, OR) or a repeated parameter is an ordinary search,
    limited to the caller's reach (here: nobody), whose numbers still count as
    look-ups (the minute is moved on between the checks)."""
    lab = backend(live)
    assert lookup(lab, resident("002")) == [people["002"]]
    assert lookup(lab, resident("002"), resident("004"), resident("006")) == []
    clock.now += timedelta(seconds=60)
    repeated = lab.ids(
        f"Patient?identifier={RID}|{resident('002')}&identifier={RID}|{resident('004')}"
    )
    assert repeated == []
    form = lab.post(
        "Patient/_search",
        f"identifier={RID}|{resident('002')},{RID}|{resident('004')}",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert form.status_code == 200 and "entry" not in form.json()


def test_lookups_are_limited_per_client_across_workers_with_429(live, settings, people, clock):
    """Point 6: FHIR_LOOKUPS_PER_MINUTE look-ups (identifier search, POST _search,
    $ihe-pix) per client and minute, counted in the database so that a second worker
    process of the deployment shares the count; then 429, OperationOutcome
    ``throttled`` and Retry-After (RFC 6585 section 4); the next minute is fresh."""
    lab = backend(live)
    with second_worker(live, settings, clock) as other:
        other_lab = Http(other, lab.session.headers["Authorization"].split()[1])
        assert lookup(lab, resident("002")) == [people["002"]]  # 1
        # An ordinary search (beyond its reach it finds nothing) that still asks
        # about two numbers: each is a look-up for a caller who sees them masked.
        assert lookup(lab, resident("002"), resident("004")) == []  # 2, 3
        assert pix(lab, resident("006")).status_code == 200  # 4
        refused_form = lab.post(
            "Patient/_search",
            f"identifier={RID}|{resident('004')}",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert refused_form.status_code == 429  # POST _search counts the same
    clock.now += timedelta(seconds=60)
    with second_worker(live, settings, clock) as other:
        other_lab = Http(other, lab.session.headers["Authorization"].split()[1])
        form = lab.post(
            "Patient/_search",
            f"identifier={RID}|{resident('004')}",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert form.status_code == 200  # 1
        assert lookup(lab, resident("002")) == [people["002"]]  # 2
        assert pix(lab, resident("006")).status_code == 200  # 3
        assert lookup(other_lab, resident("004")) == [people["004"]]  # 4, on the other worker
        refused = lookup_response(other_lab, resident("006"))
        assert refused.status_code == 429, refused.text
        issue = refused.json()["issue"][0]
        assert refused.json()["resourceType"] == "OperationOutcome" and issue["code"] == "throttled"
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert resident("006") not in refused.text and people["006"] not in refused.text
        assert pix(lab, resident("006")).status_code == 429
        assert match_registration(live).status_code == 200  # another client has its own budget
    clock.now += timedelta(seconds=60)
    assert lookup(lab, resident("006")) == [people["006"]]


def lookup_response(who: Http, value: str) -> requests.Response:
    return who.get(f"Patient?identifier={RID}|{value}")


def match_registration(live) -> requests.Response:
    return match(
        backend(live, "desk-9", "system/Patient.rs registration", "Organization/desk"),
        resident("002"),
    )


@contextmanager
def second_worker(live, settings, clock: Clock) -> Iterator[str]:
    """Another server process of the same deployment: same database and issuer."""
    url, _ = live
    app = make_app(settings.with_(base_url=url))
    app.extensions["fhirserver"].clock = clock
    port = free_port()
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        app.extensions["fhirserver"].repo.close()


def test_lookups_are_marked_in_the_audit_log_without_the_number(live, people):
    """Point 6: every request leaves an AuditEvent (api/auditing.py); an identity
    look-up says so in outcomeDesc, never with the number asked."""
    lab = backend(live)
    assert lookup(lab, resident("002")) == [people["002"]]
    assert pix(lab, resident("004")).status_code == 200
    assert lookup(lab, resident("002"), resident("004")) == []
    events = http_as(live).get("AuditEvent?_count=100").json()["entry"]
    descs = [
        e["resource"].get("outcomeDesc", "")
        for e in events
        if e["resource"].get("agent") and "lab-1" in str(e["resource"]["agent"])
    ]
    marked = sorted(d for d in descs if d.startswith("identity look-up"))
    # The look-up, $ihe-pix, and the ordinary search that asked about two numbers.
    assert marked == ["identity look-up: $ihe-pix", "identity look-up: Patient search by identifier",
                      "identity look-up: search by identity number"], descs
    assert not any(resident(s) in d for d in descs for s in ("002", "004"))


def test_ihe_pix_answers_card_numbers_only_to_the_card_number_scope(live, people):
    """Point 6: $ihe-pix (IHE PIXm ITI-83) gives the health card number only to
    callers granted ``card-number`` (operators always); others get the other
    identifiers. A look-up by identifier search shows no card number either."""
    op = http_as(live)
    number = card_of(op.get(f"Patient/{people['002']}").json())
    assert number
    plain = pix(backend(live), resident("002"))
    assert plain.status_code == 200
    assert number[0] not in plain.text
    assert {
        "name": "targetId",
        "valueReference": {"reference": f"Patient/{people['002']}"},
    } in plain.json()["parameter"]
    granted = pix(backend(live, "desk-1", "system/Patient.rs card-number"), resident("002"))
    assert {
        "name": "targetIdentifier",
        "valueIdentifier": {"use": "official", "system": CARD, "value": number[0]},
    } in granted.json()["parameter"]
    assert number[0] in pix(op, resident("002")).text
    found = (
        backend(live)
        .get(f"Patient?identifier={RID}|{resident('002')}")
        .json()["entry"][0]["resource"]
    )
    assert card_of(found) == [] and found["name"][0]["family"] == "Resident0"
    found = (
        backend(live, "desk-1", "system/Patient.rs card-number")
        .get(f"Patient?identifier={RID}|{resident('002')}")
        .json()["entry"][0]["resource"]
    )
    assert card_of(found) == number


def test_a_registered_client_gets_the_card_number_scope_by_client_credentials(
    live, settings, people
):
    """Point 6: ``fhirserver clients add ... --scopes "system/Patient.rs card-number"``
    and the client_credentials grant (SMART Backend Services, RFC 6749 section 4.4)
    grants the server's own scope next to the system/ one."""
    url, _ = live
    env = {
        **os.environ,
        "MONGODB_URI": settings.mongodb_uri,
        "MONGODB_DB": settings.mongodb_db,
        "FHIR_DATA_DIR": str(settings.data_dir),
        "FHIR_BASE_URL": url,
    }
    exe = Path(sys.executable).parent / "fhirserver"
    out = subprocess.run(
        [
            str(exe),
            "clients",
            "add",
            "desk-2",
            "--kind",
            "confidential",
            "--scopes",
            "system/Patient.rs card-number",
            "--organization",
            "Organization/desk",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    secret = out.stdout.split("client secret (shown once):")[1].strip()
    token = requests.post(
        f"{url}/oauth/token",
        auth=("desk-2", secret),
        timeout=30,
        data={"grant_type": "client_credentials", "scope": "system/Patient.rs card-number"},
    )
    assert token.status_code == 200, token.text
    assert token.json()["scope"].split() == ["system/Patient.rs", "card-number"]
    desk = Http(url, token.json()["access_token"])
    number = card_of(http_as(live).get(f"Patient/{people['002']}").json())
    assert number[0] in pix(desk, resident("002")).text


def test_match_beyond_reach_only_for_registration_and_counted(live, people, clock):
    """Point 6, R4 patient-operation-match.html: a backend client without
    ``registration`` gets only candidates it reaches; a registration desk gets the
    others too (without card numbers unless ``card-number``), each counted as a
    look-up."""
    lab = backend(live)
    r = match(lab, resident("002"))
    assert r.status_code == 200 and "entry" not in r.json()
    op = http_as(live)
    code = op.get(
        f"Patient/{people['002']}/$card-qr", headers={"Accept": "application/fhir+json"}
    ).json()["parameter"][0]["valueString"]
    scanned = op.post(
        "Patient/$scan-card",
        {
            "resourceType": "Parameters",
            "parameter": [
                {"name": "payload", "valueString": code},
                {"name": "organization", "valueReference": {"reference": "Organization/lab"}},
            ],
        },
    )
    assert scanned.status_code == 200, scanned.text
    reached = match(lab, resident("002")).json()["entry"]
    assert [e["resource"]["id"] for e in reached] == [people["002"]]  # in reach: found
    desk = backend(live, "desk-3", "system/Patient.rs registration", "Organization/desk")
    for _ in range(LIMIT):
        found = match(desk, resident("004"))
        assert [e["resource"]["id"] for e in found.json()["entry"]] == [people["004"]]
    assert match(desk, resident("004")).status_code == 429
    candidate = match(
        backend(live, "desk-4", "system/Patient.rs registration", "Organization/desk"),
        resident("002"),
    ).json()["entry"][0]["resource"]
    assert candidate["id"] == people["002"] and card_of(candidate) == []


def test_concurrent_lookups_on_two_workers_never_exceed_the_limit(live, settings, people, clock):
    """Point 6: the count is one ``$inc`` on one document per client and minute, so
    look-ups racing on two workers are all counted: exactly the limit get through."""
    lab = backend(live)
    token = lab.session.headers["Authorization"].split()[1]
    with second_worker(live, settings, clock) as other:
        clients = [lab, Http(other, token)] * LIMIT
        barrier = threading.Barrier(len(clients))
        statuses: list[int] = []

        def run(who: Http) -> None:
            barrier.wait()
            statuses.append(lookup_response(who, resident("004")).status_code)

        threads = [threading.Thread(target=run, args=(who,)) for who in clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sorted(statuses) == [200] * LIMIT + [429] * LIMIT


def test_pix_finds_a_registered_non_unique_number_by_its_blind_index(settings, tmp_path):
    """A deployment may register an identity system whose numbers are not unique (no
    uniqueness claim): ``$ihe-pix`` (IHE ITI-83) then searches, and finds the holder
    by the blind index the database keeps instead of the number."""
    import json
    from dataclasses import replace

    from fhirserver.model.identifier_systems import DEFAULT_FILE
    from tests.conftest import make_app

    registry = json.loads(DEFAULT_FILE.read_text())
    for entry in registry["systems"]:
        if entry["key"] == "hospital-record":
            entry["unique"] = False
    path = tmp_path / "systems.json"
    path.write_text(json.dumps(registry))
    app = make_app(replace(settings, identifier_systems=str(path)))
    fhir = app.test_client()
    mrn = "https://fhirserver.example/sid/mrn/hospital-1"
    created = [fhir.post("Patient", json={
        "resourceType": "Patient", "identifier": [{"system": mrn, "value": "MRN-77001"}],
        "gender": "male", "birthDate": "1970-01-01"}) for _ in range(2)]
    assert [r.status_code for r in created] == [201, 201]
    stored = app.extensions["fhirserver"].repo.db["Patient"].find_one({})
    assert "MRN-77001" not in str(stored)
    r = fhir.get(f"Patient/$ihe-pix?sourceIdentifier={mrn}|MRN-77001")
    assert r.status_code == 200, r.get_json()
    targets = {p["valueReference"]["reference"] for p in r.get_json().get("parameter", [])
               if p["name"] == "targetId"}
    assert targets == {f"Patient/{c.get_json()['id']}" for c in created}
