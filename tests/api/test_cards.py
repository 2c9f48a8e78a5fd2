"""The electronic health card (DESIGN.md section 1): issue, QR code, scan, expiry
(injectable clock), suspend, revoke, reissue, and family binding with its limit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pymongo import MongoClient

from tests import factories as f
from tests.mpi.numbers import gb11643

CARD = "https://fhirserver.example/sid/health-card"
RID = "https://fhirserver.example/sid/resident-id"
DETAILS = "https://fhirserver.example/CodeSystem/outcome-details"


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock(app) -> Clock:
    c = Clock()
    app.extensions["fhirserver"].clock = c
    return c


def params(**values: str) -> dict:
    return {"resourceType": "Parameters",
            "parameter": [{"name": k, "valueString": v} for k, v in values.items()]}


def detail(r) -> str:
    return r.get_json()["issue"][0]["details"]["coding"][0]["code"]


def card_number(fhir, pid: str) -> str:
    patient = fhir.get(f"Patient/{pid}").get_json()
    return [i["value"] for i in patient["identifier"] if i["system"] == CARD][0]


def payload(fhir, pid: str) -> str:
    r = fhir.get(f"Patient/{pid}/$card-qr")
    assert r.status_code == 200, r.get_json()
    return [p["valueString"] for p in r.get_json()["parameter"] if p["name"] == "payload"][0]


def scan(fhir, code: str, **extra: str):
    return fhir.post("Patient/$scan-card", params(payload=code, **extra))


def test_issue_puts_the_card_number_on_the_patient_once(fhir, clock):
    pid = fhir.create(f.patient())["id"]
    r = fhir.post(f"Patient/{pid}/$issue-card", None)
    assert r.status_code == 201
    number = [p for p in r.get_json()["parameter"] if p["name"] == "number"][0]["valueIdentifier"]
    assert number["system"] == CARD and len(number["value"]) == 20
    assert card_number(fhir, pid) == number["value"]
    again = fhir.post(f"Patient/{pid}/$issue-card", None)
    assert again.status_code == 409 and detail(again) == "card-exists"
    # The card number finds the patient like any identifier.
    found = fhir.get(f"Patient?identifier={CARD}|{number['value']}").get_json()
    assert [e["resource"]["id"] for e in found["entry"]] == [pid]


def test_qr_code_as_svg_png_and_parameters(fhir, clock):
    pid = fhir.create(f.patient())["id"]
    fhir.post(f"Patient/{pid}/$issue-card", None)
    svg = fhir.get(f"Patient/{pid}/$card-qr", headers={"Accept": "image/svg+xml"})
    assert svg.status_code == 200 and svg.mimetype == "image/svg+xml"
    assert svg.data.lstrip().startswith(b"<?xml") and b"<svg" in svg.data
    png = fhir.get(f"Patient/{pid}/$card-qr", headers={"Accept": "image/png"})
    assert png.mimetype == "image/png" and png.data.startswith(b"\x89PNG")
    assert png.headers["Cache-Control"] == "no-store"
    body = fhir.get(f"Patient/{pid}/$card-qr").get_json()
    names = [p["name"] for p in body["parameter"]]
    assert names == ["payload", "expires", "svg", "png"]
    expires = [p["valueInstant"] for p in body["parameter"] if p["name"] == "expires"][0]
    assert expires == "2026-03-01T09:05:00.000Z"  # default lifetime: 5 minutes
    # The code names neither the card number nor the patient.
    code = body["parameter"][0]["valueString"]
    assert pid not in code and card_number(fhir, pid) not in code


def test_scan_returns_the_patient_and_records_who_scanned(fhir, clock, settings):
    pid = fhir.create(f.patient())["id"]
    fhir.post(f"Patient/{pid}/$issue-card", None)
    r = fhir.post("Patient/$scan-card", {"resourceType": "Parameters", "parameter": [
        {"name": "payload", "valueString": payload(fhir, pid)},
        {"name": "scanner", "valueReference": {"reference": "Practitioner/dr-li"}},
        {"name": "organization", "valueReference": {"reference": "Organization/hospital-1"}}]})
    assert r.status_code == 200
    assert r.get_json()["resourceType"] == "Patient" and r.get_json()["id"] == pid
    with MongoClient(settings.mongodb_uri) as client:
        scans = list(client[settings.mongodb_db]["_card_scans"].find({"patient": pid}))
    assert [(s["by"], s["organization"]) for s in scans] == [("Practitioner/dr-li", "Organization/hospital-1")]
    assert scans[0]["at"].replace(tzinfo=UTC) == clock.now


def test_bad_codes_get_distinct_outcomes_naming_no_patient(fhir, clock):
    pid = fhir.create(f.patient("Secretname"))["id"]
    fhir.post(f"Patient/{pid}/$issue-card", None)
    code = payload(fhir, pid)

    clock.now += timedelta(minutes=5)  # a screenshot taken five minutes ago
    expired = scan(fhir, code)
    assert expired.status_code == 410 and detail(expired) == "card-expired"
    clock.now -= timedelta(minutes=5)

    head, body, sig = code.split(".")
    tampered = scan(fhir, f"{head}.{body}.{sig[:-2]}AA")
    assert tampered.status_code == 400 and detail(tampered) == "card-tampered"
    malformed = scan(fhir, "hello")
    assert malformed.status_code == 400 and detail(malformed) == "card-malformed"
    for r in (expired, tampered, malformed):
        text = r.get_data(as_text=True)
        assert pid not in text and "Secretname" not in text
    assert scan(fhir, code).status_code == 200  # the same code while still current


def test_suspend_resume_revoke_and_reissue(fhir, clock):
    pid = fhir.create(f.patient())["id"]
    fhir.post(f"Patient/{pid}/$issue-card", None)
    code = payload(fhir, pid)
    first_number = card_number(fhir, pid)

    assert fhir.post(f"Patient/{pid}/$suspend-card", None).status_code == 200
    suspended = scan(fhir, code)
    assert suspended.status_code == 403 and detail(suspended) == "card-suspended"
    assert fhir.post(f"Patient/{pid}/$resume-card", None).status_code == 200
    assert scan(fhir, code).status_code == 200

    r = fhir.post(f"Patient/{pid}/$reissue-card", None)  # a lost phone
    assert r.status_code == 201, r.get_json()
    revoked = scan(fhir, code)  # the old phone's code stops at once
    assert revoked.status_code == 403 and detail(revoked) == "card-revoked"
    assert pid not in revoked.get_data(as_text=True)
    new_number = card_number(fhir, pid)
    assert new_number != first_number
    assert scan(fhir, payload(fhir, pid)).status_code == 200
    # The old number no longer identifies the patient.
    assert fhir.get(f"Patient?identifier={CARD}|{first_number}").get_json()["total"] == 0

    assert fhir.post(f"Patient/{pid}/$revoke-card", None).status_code == 200
    r = fhir.get(f"Patient/{pid}/$card-qr")
    assert r.status_code == 404 and detail(r) == "no-card"


def test_unknown_card_is_404(fhir, clock, app):
    pid = fhir.create(f.patient())["id"]
    fhir.post(f"Patient/{pid}/$issue-card", None)
    code = payload(fhir, pid)
    repo = app.extensions["fhirserver"].repo
    repo.db["_health_cards"].delete_many({"patient": pid})  # e.g. a card from another deployment
    r = scan(fhir, code)
    assert r.status_code == 404 and detail(r) == "card-unknown"


def _cardholder(fhir, family: str, born: str = "1960-01-01") -> tuple[str, str]:
    pid = fhir.create(f.patient(family, birthDate=born))["id"]
    fhir.post(f"Patient/{pid}/$issue-card", None)
    return pid, card_number(fhir, pid)


def test_family_binding_up_to_five_then_refused(fhir, clock):
    holder, _ = _cardholder(fhir, "Holder")
    members = [_cardholder(fhir, f"Member{i}") for i in range(6)]
    for member, number in members[:5]:
        r = fhir.post(f"Patient/{holder}/$bind-family", params(card=number, relationship="PRN"))
        assert r.status_code == 201, r.get_json()
        rp = r.get_json()
        assert rp["resourceType"] == "RelatedPerson"
        assert rp["patient"]["reference"] == f"Patient/{member}"
        assert rp["relationship"][0]["coding"][0]["code"] == "PRN"
    sixth = fhir.post(f"Patient/{holder}/$bind-family", params(card=members[5][1]))
    assert sixth.status_code == 422 and detail(sixth) == "binding-limit"
    assert "5 family members" in sixth.get_json()["issue"][0]["diagnostics"]
    listing = fhir.get(f"Patient/{holder}/$family").get_json()
    assert sorted(e["resource"]["patient"]["reference"] for e in listing["entry"]) == sorted(
        f"Patient/{m}" for m, _ in members[:5])

    again = fhir.post(f"Patient/{holder}/$bind-family", params(card=members[0][1]))
    assert again.status_code == 409
    r = fhir.post(f"Patient/{holder}/$unbind-family", params(member=f"Patient/{members[0][0]}"))
    assert r.status_code == 200
    assert fhir.post(f"Patient/{holder}/$bind-family", params(card=members[5][1])).status_code == 201
    assert fhir.post(f"Patient/{holder}/$unbind-family",
                     params(member=f"Patient/{members[0][0]}")).status_code == 404


def test_a_minors_card_is_held_by_the_guardian(fhir, clock):
    guardian, _ = _cardholder(fhir, "Parent", "1980-05-05")
    child, number = _cardholder(fhir, "Child", "2015-07-01")
    r = fhir.post(f"Patient/{guardian}/$bind-family", params(card=number, relationship="CHILD"))
    assert r.status_code == 201
    card = fhir.post(f"Patient/{child}/$suspend-card", None).get_json()
    assert {"name": "guardian", "valueReference": {"reference": f"Patient/{guardian}"}} in card["parameter"]
    fhir.post(f"Patient/{guardian}/$unbind-family", params(member=f"Patient/{child}"))
    card = fhir.post(f"Patient/{child}/$resume-card", None).get_json()
    assert all(p["name"] != "guardian" for p in card["parameter"])


def test_binding_needs_cards_on_both_sides(fhir, clock):
    holder = fhir.create(f.patient())["id"]
    _, number = _cardholder(fhir, "Member")
    r = fhir.post(f"Patient/{holder}/$bind-family", params(card=number))
    assert r.status_code == 422 and detail(r) == "no-card"
    holder2, own = _cardholder(fhir, "Holder2")
    assert fhir.post(f"Patient/{holder2}/$bind-family", params(card=own)).status_code == 422
    unknown = "6" + "0" * 18
    from stdnum import luhn
    r = fhir.post(f"Patient/{holder2}/$bind-family", params(card=unknown + luhn.calc_check_digit(unknown)))
    assert r.status_code == 404 and detail(r) == "card-unknown"


def test_card_for_a_patient_with_a_resident_id(fhir, clock):
    """Issuing a card updates the Patient through the normal write path, which keeps
    its validated identifiers."""
    number = gb11643("110105", "19700101", "011")
    pid = fhir.create(f.patient(birthDate="1970-01-01", gender="male",
                                identifier=[{"system": RID, "value": number}]))["id"]
    assert fhir.post(f"Patient/{pid}/$issue-card", None).status_code == 201
    idents = fhir.get(f"Patient/{pid}").get_json()["identifier"]
    assert {i["system"] for i in idents} == {RID, CARD}


def test_a_deleted_patients_card_opens_nobody_registered_at_the_id_later(fhir, clock):
    """http.html#delete and DESIGN.md (one card, one person): deleting a Patient
    revokes their card with the record. A new person registered at the same id later
    is not opened by the deleted person's card, and has no card until one is issued."""
    pid = fhir.create(f.patient("Leaving"))["id"]
    fhir.post(f"Patient/{pid}/$issue-card", None)
    code = payload(fhir, pid)
    assert fhir.delete(f"Patient/{pid}").status_code == 200
    again = fhir.put(f"Patient/{pid}", {**f.patient("Newcomer"), "id": pid})
    assert again.status_code in (200, 201), again.get_json()
    r = scan(fhir, code)
    assert r.status_code == 403 and detail(r) == "card-revoked"
    assert "Newcomer" not in r.get_data(as_text=True)
    assert fhir.get(f"Patient/{pid}/$card-qr").status_code == 404


@pytest.mark.parametrize("deleted", ["member", "holder"])
def test_a_deleted_patients_family_bindings_end_with_the_record(fhir, app, clock, deleted):
    """http.html#delete and DESIGN.md section 1 (family bound to the card read the
    record): deleting a Patient ends the family bindings they are in, either way. A
    new person registered at the id later is not read by the deleted member's
    family, and does not read the deleted holder's family."""
    from tests.api.test_access import As
    from tests.conftest import mint

    holder, _ = _cardholder(fhir, "Holder")
    member, number = _cardholder(fhir, "Member")
    bound = fhir.post(f"Patient/{holder}/$bind-family", params(card=number, relationship="PRN"))
    assert bound.status_code == 201, bound.get_json()
    gone, kept = (member, holder) if deleted == "member" else (holder, member)
    assert fhir.delete(f"Patient/{gone}").status_code == 200
    again = fhir.put(f"Patient/{gone}", {**f.patient("Newcomer"), "id": gone})
    assert again.status_code in (200, 201), again.get_json()
    as_holder = As(fhir, mint(app, "patient", "patient/*.rs", subject="holder",
                              fhirUser=f"Patient/{holder}", patient=holder))
    assert as_holder.get(f"Patient/{member}").status_code == 404
    assert fhir.get(f"Patient/{holder}/$family").get_json().get("total", 0) == 0
    newcomer = As(fhir, mint(app, "patient", "patient/*.rs", subject="newcomer",
                             fhirUser=f"Patient/{gone}", patient=gone))
    assert newcomer.get(f"Patient/{kept}").status_code == 404
