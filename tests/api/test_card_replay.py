"""A health card code belongs to the first organisation that scans it (issue point
8): scanning it again in the same visit works, another organisation replaying a
screenshot within the code's lifetime is refused (409, ``card-code-used``, naming no
patient) and needs a fresh code, even when both scan at the same instant. The
record of a code's first use lasts no longer than the code."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from pymongo import MongoClient

from tests.conftest import Http, http_as

DETAILS = "https://fhirserver.example/CodeSystem/outcome-details"
FHIR_JSON = {"Accept": "application/fhir+json"}


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock(live) -> Clock:
    c = Clock()
    live[1].extensions["fhirserver"].clock = c
    return c


@pytest.fixture
def patient(live, clock) -> str:
    op = http_as(live)
    pid = op.post(
        "Patient", {"resourceType": "Patient", "name": [{"family": "Secretname"}]}
    ).json()["id"]
    assert op.post(f"Patient/{pid}/$issue-card").status_code == 201
    return pid


def fresh_code(live, pid: str) -> str:
    r = http_as(live).get(f"Patient/{pid}/$card-qr", headers=FHIR_JSON)
    assert r.status_code == 200, r.text
    return next(p["valueString"] for p in r.json()["parameter"] if p["name"] == "payload")


def clinician(live, dr: str, org: str) -> Http:
    return http_as(
        live, "user", "user/*.cruds", subject=dr, fhirUser=f"Practitioner/{dr}", organization=org
    )


def scan(who: Http, code: str, **named: str):
    return who.post(
        "Patient/$scan-card",
        {
            "resourceType": "Parameters",
            "parameter": [
                {"name": "payload", "valueString": code},
                *({"name": k, "valueReference": {"reference": v}} for k, v in named.items()),
            ],
        },
    )


def detail(r) -> str:
    coding = r.json()["issue"][0]["details"]["coding"][0]
    assert coding["system"] == DETAILS
    return coding["code"]


def test_another_organisation_needs_a_fresh_code(live, patient):
    """Point 8: the scanning party is the caller's organisation; a second scan by
    the same organisation (another of its clinicians, or its backend system) in the
    same visit works; another organisation's replay is a 409 naming no patient and
    opens nothing; with a fresh code it scans."""
    code = fresh_code(live, patient)
    li = clinician(live, "dr-li", "Organization/hospital-1")
    assert scan(li, code).status_code == 200
    assert scan(li, code).status_code == 200
    assert scan(clinician(live, "dr-wu", "Organization/hospital-1"), code).status_code == 200
    h1_system = http_as(
        live,
        "system",
        "system/Patient.rs",
        subject="his-1",
        client_id="his-1",
        organization="Organization/hospital-1",
    )
    assert scan(h1_system, code).status_code == 200

    ma = clinician(live, "dr-ma", "Organization/hospital-2")
    for replayer in (
        ma,
        http_as(
            live,
            "system",
            "system/Patient.rs",
            subject="his-2",
            client_id="his-2",
            organization="Organization/hospital-2",
        ),
    ):
        replay = scan(replayer, code)
        assert replay.status_code == 409 and detail(replay) == "card-code-used"
        assert replay.json()["resourceType"] == "OperationOutcome"
        for secret in (patient, "Secretname", "hospital-1", "dr-li"):
            assert secret not in replay.text
    assert ma.get(f"Patient/{patient}").status_code == 404  # the replay opened nothing
    assert scan(ma, fresh_code(live, patient)).status_code == 200
    assert ma.get(f"Patient/{patient}").status_code == 200


def test_operator_scripts_are_told_apart_by_identity_or_the_organisation_named(live, patient):
    """Point 8: a caller without an organisation (an operator's script) is the party
    itself; a script scanning for an organisation it names counts as that one."""
    code = fresh_code(live, patient)
    script = http_as(live, subject="script-a")
    assert scan(script, code).status_code == 200
    assert scan(script, code).status_code == 200
    assert detail(scan(http_as(live, subject="script-b"), code)) == "card-code-used"
    assert detail(scan(script, code, organization="Organization/hospital-9")) == "card-code-used"

    other = fresh_code(live, patient)
    assert scan(script, other, organization="Organization/hospital-9").status_code == 200
    assert scan(clinician(live, "dr-x", "Organization/hospital-9"), other).status_code == 200
    assert detail(scan(script, other)) == "card-code-used"


def test_two_organisations_scanning_one_code_at_once_cannot_both_win(live, patient):
    """Point 8: the first use is a primary-key insert, so of concurrent scans by two
    organisations exactly one succeeds (MongoDB duplicate key, error 11000)."""
    scanners = [
        clinician(live, "dr-a", "Organization/hospital-a"),
        clinician(live, "dr-b", "Organization/hospital-b"),
    ]
    for _ in range(4):
        code = fresh_code(live, patient)
        barrier = threading.Barrier(len(scanners))
        statuses: dict[int, int] = {}

        def run(
            i: int,
            code: str = code,
            barrier: threading.Barrier = barrier,
            statuses: dict[int, int] = statuses,
        ) -> None:
            barrier.wait()
            statuses[i] = scan(scanners[i], code).status_code

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(scanners))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(statuses.values()) == [200, 409], statuses
        winner = next(i for i, s in statuses.items() if s == 200)
        assert scan(scanners[winner], code).status_code == 200
        assert detail(scan(scanners[1 - winner], code)) == "card-code-used"


def test_first_use_records_last_no_longer_than_the_code(live, settings, patient, clock):
    """Point 8: records are keyed by a hash of the code (the code itself is not
    kept) and go once the code has expired (FHIR_CARD_CODE_SECONDS)."""
    li = clinician(live, "dr-li", "Organization/hospital-1")
    code = fresh_code(live, patient)
    assert scan(li, code).status_code == 200
    with MongoClient(settings.mongodb_uri) as client:
        uses = client[settings.mongodb_db]["_card_code_uses"]
        (record,) = list(uses.find())
        assert code not in str(record) and patient not in str(record)
        assert record["exp"].replace(tzinfo=UTC) == clock.now + timedelta(
            seconds=settings.card_code_seconds
        )

        clock.now += timedelta(seconds=settings.card_code_seconds + 60)
        expired = scan(clinician(live, "dr-ma", "Organization/hospital-2"), code)
        assert expired.status_code == 410 and detail(expired) == "card-expired"  # not 409
        assert scan(li, fresh_code(live, patient)).status_code == 200
        assert uses.count_documents({"_id": record["_id"]}) == 0
