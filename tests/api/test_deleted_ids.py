"""What a deleted Patient's id leaves for the next person registered at it
(http.html#delete; DESIGN.md section 1: one card, one person; only those treating a
patient, and their bound family, read the record): nothing. The deleted person's
binding requests, sharing choices, accounts and card end with the record, and the
ending neither runs ahead of a delete that may be taken back nor reaches a newcomer
registered since."""

from __future__ import annotations

import threading

import pytest

from fhirserver import errors
from fhirserver.interactions import write
from fhirserver.interactions.context import Context, Planner
from fhirserver.storage.unit_of_work import VersionConflict
from tests import factories as f
from tests.api.test_access import As, clinician
from tests.api.test_cards import _cardholder, clock, params, payload  # noqa: F401
from tests.conftest import FhirClient, mint

pytestmark = pytest.mark.usefixtures("clock")


def patient_as(fhir, app, pid: str, scope: str = "patient/*.cruds") -> As:
    return As(fhir, mint(app, "patient", scope, subject=f"u-{pid}", fhirUser=f"Patient/{pid}",
                         patient=pid))


def newcomer_at(fhir, pid: str) -> None:
    r = fhir.put(f"Patient/{pid}", {**f.patient("Newcomer"), "id": pid})
    assert r.status_code in (200, 201), r.get_json()


def in_thread(fn):
    out: list = []
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start()
    t.join()
    return out[0]


def test_a_deleted_holders_open_request_ends_with_the_record(fhir, app):
    holder, _ = _cardholder(fhir, "Holder")
    member, number = _cardholder(fhir, "Member")
    r = patient_as(fhir, app, holder).post(f"Patient/{holder}/$bind-family",
                                           params(card=number, relationship="PRN"))
    assert r.status_code == 202
    assert fhir.delete(f"Patient/{holder}").status_code == 200
    newcomer_at(fhir, holder)
    assert fhir.post(f"Patient/{holder}/$issue-card", None).status_code == 201
    as_member = patient_as(fhir, app, member)
    listing = as_member.get(f"Patient/{member}/$family").get_json()
    pending = [e["resource"] for e in listing.get("entry", []) if not e["resource"]["active"]]
    assert pending == []  # neither accepted for the newcomer nor shown under their name
    assert patient_as(fhir, app, holder, "patient/*.rs").get(f"Patient/{member}").status_code == 404


def test_a_deleted_persons_sharing_choices_end_with_the_record(fhir):
    pid = fhir.create(f.patient("Leaving"))["id"]
    assert fhir.post(f"Patient/{pid}/$consent", params(shareWithFamily="true")).status_code == 200
    assert fhir.delete(f"Patient/{pid}").status_code == 200
    newcomer_at(fhir, pid)
    got = {p["name"]: p["valueBoolean"]
           for p in fhir.get(f"Patient/{pid}/$consent").get_json()["parameter"]}
    assert got == {"restrictSensitive": False, "optOut": False, "shareWithFamily": False}


def test_sharing_choices_of_an_id_without_a_patient_are_not_found(fhir):
    """GET $consent of an id that holds no Patient (never did, or deleted) is 404 as
    its POST is (http.html#read: an unknown resource is 404), not defaults that an
    operator would read as the person's own choices."""
    pid = fhir.create(f.patient("Leaving"))["id"]
    assert fhir.delete(f"Patient/{pid}").status_code == 200
    for rid in (pid, "never-registered"):
        for r in (fhir.get(f"Patient/{rid}/$consent"),
                  fhir.post(f"Patient/{rid}/$consent", params(optOut="true"))):
            assert r.status_code == 404, r.get_json()
            assert r.get_json()["resourceType"] == "OperationOutcome"


def test_a_scan_that_found_the_deleted_person_leaves_the_newcomers_card(
        fhir, app, monkeypatch):
    """A scan of the deleted person's card that found their record, then waited while
    the record was deleted, a newcomer registered at the id and given a card: the
    scan answers 404 and ends only the relationship it opened."""
    pid, _ = _cardholder(fhir, "Leaving")
    code = payload(fhir, pid)
    original = Context.open_care

    def racing(self, *a, **kw):  # between the scan's read and open_care
        other = FhirClient(app.test_client())

        def reregister():
            assert other.delete(f"Patient/{pid}").status_code == 200
            newcomer_at(other, pid)
            issued = other.post(f"Patient/{pid}/$issue-card", None).status_code
            return issued, other.get(f"Patient/{pid}/$card-qr").status_code

        assert in_thread(reregister) == (201, 200)  # the newcomer's card works
        return original(self, *a, **kw)

    monkeypatch.setattr(Context, "open_care", racing)
    r = clinician(app, fhir).post("Patient/$scan-card", params(payload=code))
    assert r.status_code == 404
    monkeypatch.setattr(Context, "open_care", original)
    assert fhir.get(f"Patient/{pid}/$card-qr").status_code == 200  # the newcomer's card


def test_a_put_while_a_delete_is_in_flight_ends_nothing_of_a_patient_kept(fhir, app):
    """transaction.html (all or nothing): a PUT at the id while the Patient's delete is
    in flight answers 409, and when the delete is taken back the Patient keeps its
    card."""
    st = app.extensions["fhirserver"]
    pid, _ = _cardholder(fhir, "Staying")
    planner = Planner(Context(st.repo, st.settings, ""))
    write.delete(planner, "Patient", pid)
    put = []

    def meanwhile() -> None:
        other = FhirClient(app.test_client())
        put.append(in_thread(lambda: other.put(
            f"Patient/{pid}", {**f.patient("Newcomer"), "id": pid}).status_code))
        raise errors.Conflict("a referrer appeared: the delete is taken back")

    planner.settles.append(meanwhile)
    with pytest.raises(errors.Conflict):
        planner.commit()
    planner.release_claims()
    assert put == [409]  # the PUT did not happen ...
    r = fhir.get(f"Patient/{pid}")
    assert r.status_code == 200 and r.get_json()["name"][0]["family"] == "Staying"  # not deleted
    assert fhir.get(f"Patient/{pid}/$card-qr").status_code == 200  # and keeps its card


def test_ending_a_persons_bindings_scans_no_collection(
        fhir, app, database_server, db_name, monkeypatch):
    """Speed (issue: every query from an index): the bindings, and the cards whose
    guardian they clear, are found by index or key, the cards counted as large."""
    from tests import seq_scans

    pg_url = database_server[1]
    if not pg_url:
        pytest.skip("embedded database only")
    holder, _ = _cardholder(fhir, "Holder")
    member, number = _cardholder(fhir, "Member")
    assert fhir.post(f"Patient/{holder}/$bind-family", params(card=number)).status_code == 201
    large = seq_scans._large
    monkeypatch.setattr(seq_scans, "_large",
                        lambda schema, sql: large(schema, sql) or '"_health_cards_' in sql)
    checked: list[str] = []
    from fhirserver.auth.bindings import end_bindings
    with seq_scans.no_seq_scans(pg_url, db_name, checked) as scans:
        end_bindings(st_db(app), member)
    assert any("_card_bindings" in s for s in checked)
    assert not scans


def st_db(app):
    return app.extensions["fhirserver"].repo.db


def test_a_deleted_persons_account_and_refresh_token_do_not_reach_the_newcomer(live):
    """RFC 6749 section 6 (refresh): the deleted person's account is disabled with the
    record, so their refresh token opens nothing registered at the id later, and the
    access token their app holds is revoked (RFC 7009 section 2)."""
    from urllib.parse import parse_qs, urlsplit

    import requests

    from fhirserver.auth.grants import s256
    from tests.api.test_smart_launch import _authorize_url, _exchange, browser_approves, setup
    from tests.conftest import http_as

    url, app = live
    pid, username = setup(app)  # the account "alice" -> Patient/pid, app-1
    verifier = "v" * 50
    location = browser_approves(_authorize_url(url, s256(verifier)), username,
                                "correct horse battery", patient=pid)
    tokens = _exchange(url, parse_qs(urlsplit(location).query)["code"][0], verifier).json()
    op = http_as(live)
    for obs in op.ids(f"Observation?patient={pid}"):
        assert op.delete(f"Observation/{obs}").status_code == 200
    assert op.delete(f"Patient/{pid}").status_code == 200
    r = op.put(f"Patient/{pid}", {**f.patient("Newcomer"), "id": pid})
    assert r.status_code in (200, 201), r.text
    fresh = requests.post(f"{url}/oauth/token", timeout=10, data={
        "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"],
        "client_id": "app-1"})
    assert fresh.status_code == 400, fresh.text
    old = requests.get(f"{url}/Patient/{pid}", timeout=10,
                       headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert old.status_code == 401, old.text  # the app's access token ended with the record
    from fhirserver.auth import users

    assert users.find(app.extensions["fhirserver"].repo.db, username).disabled


def test_a_deleted_persons_access_tokens_do_not_open_the_newcomer(fhir, app):
    """RFC 7009 section 2 (revocation) and SMART App Launch (a token's ``patient``
    context): the access tokens issued for the deleted person end with the record,
    their own and those of apps launched for them, so none opens a new person
    registered at the id within its lifetime; tokens issued for the newcomer later
    work, and so do tokens for other patients."""
    pid = fhir.create(f.patient("Leaving"))["id"]
    other = fhir.create(f.patient("Staying"))["id"]
    own = patient_as(fhir, app, pid)
    launched = As(fhir, mint(app, "patient", "patient/*.rs", subject="someone-else",
                             client_id="app-1", patient=pid))
    staying = patient_as(fhir, app, other)
    assert own.get(f"Patient/{pid}").status_code == 200
    assert launched.get(f"Patient/{pid}").status_code == 200
    assert fhir.delete(f"Patient/{pid}").status_code == 200
    newcomer_at(fhir, pid)
    for old in (own, launched):
        r = old.get(f"Patient/{pid}")
        assert r.status_code == 401, r.get_json()
        assert "revoked" in r.headers["WWW-Authenticate"]
    assert staying.get(f"Patient/{other}").status_code == 200
    newcomers = patient_as(fhir, app, pid)
    found = newcomers.get(f"Patient/{pid}")
    assert found.status_code == 200
    assert found.get_json()["name"][0]["family"] == "Newcomer"


def _family_app(fhir, app, scope: str):
    """A holder's app opened on a bound family member's record (SMART launch/patient
    picks the member): signed in as the holder, the member in context."""
    holder, _ = _cardholder(fhir, "Holder")
    member, number = _cardholder(fhir, "Member")
    assert fhir.post(f"Patient/{holder}/$bind-family",
                     params(card=number)).status_code == 201
    return holder, member, As(fhir, mint(app, "patient", scope, subject=f"u-{holder}",
                                         client_id="app-1", fhirUser=f"Patient/{holder}",
                                         patient=member))


def test_a_deleted_holders_family_app_token_does_not_open_the_newcomer(fhir, app):
    """SMART App Launch (fhirUser, patient context): a token signed in as the deleted
    person but opened on a family member's record ends with the deleted record too:
    it would read, and with a write scope set the sharing choices of, a newcomer
    registered at the id as its own."""
    holder, member, family_app = _family_app(fhir, app, "patient/*.cruds")
    assert family_app.get(f"Patient/{member}").status_code == 200
    assert fhir.delete(f"Patient/{holder}").status_code == 200
    newcomer_at(fhir, holder)
    assert family_app.get(f"Patient/{holder}").status_code == 401
    r = family_app.post(f"Patient/{holder}/$consent", params(optOut="true"))
    assert r.status_code == 401, r.get_json()


def test_a_delete_slow_to_end_the_person_leaves_a_newcomer_registered_meanwhile_alone(
        fhir, app, monkeypatch):
    """What a deleted person held is ended after the delete's commit; a newcomer
    registered at the id before that comes (the deleting thread stalled) ended it
    already, at their registration: the late ending finds the id re-registered and
    revokes none of the newcomer's tokens."""
    import time

    from fhirserver.interactions import context as ctxmod

    pid = fhir.create(f.patient("Leaving"))["id"]
    original = ctxmod.end_person
    seen: dict = {}

    def stalled(repo, patient, deleted):
        if not seen:
            seen["token"] = None
            other = FhirClient(app.test_client())
            in_thread(lambda: newcomer_at(other, pid))
            seen["token"] = mint(app, "patient", "patient/*.rs", subject=f"new-{pid}",
                                 fhirUser=f"Patient/{pid}", patient=pid)
            time.sleep(1.1)  # past the second of the newcomer's token
        return original(repo, patient, deleted)

    monkeypatch.setattr(ctxmod, "end_person", stalled)
    assert fhir.delete(f"Patient/{pid}").status_code == 200
    monkeypatch.setattr(ctxmod, "end_person", original)
    r = As(fhir, seen["token"]).get(f"Patient/{pid}")
    assert r.status_code == 200, r.headers.get("WWW-Authenticate")


def test_a_registration_racing_another_at_a_deleted_id_leaves_the_winners_tokens(fhir, app):
    """Two registrations at one deleted id at once (a client retrying, two desks):
    the one that read the id deleted before the other committed ends nothing of the
    newcomer who won; it fails its commit and is planned again as an update."""
    import time

    from fhirserver.interactions.context import Context, Planner

    st = app.extensions["fhirserver"]
    pid = fhir.create(f.patient("Leaving"))["id"]
    assert fhir.delete(f"Patient/{pid}").status_code == 200
    slow = Planner(Context(st.repo, st.settings, ""))
    write.update(slow, "Patient", pid, {**f.patient("Newcomer"), "id": pid})  # read: deleted
    newcomer_at(fhir, pid)  # the other desk commits first
    newcomer = As(fhir, mint(app, "patient", "patient/*.rs", subject=f"new-{pid}",
                             fhirUser=f"Patient/{pid}", patient=pid))
    assert newcomer.get(f"Patient/{pid}").status_code == 200
    time.sleep(1.1)
    with pytest.raises(VersionConflict):  # run_single plans it again as an update
        slow.commit()
    slow.release_claims()
    r = newcomer.get(f"Patient/{pid}")
    assert r.status_code == 200, r.headers.get("WWW-Authenticate")


def test_a_token_lives_no_longer_than_the_revocations_that_end_it(app):
    """RFC 7009: a revoked token stays revoked for its whole life; the cut-offs that
    end a deleted person's tokens are kept 30 days, so no token is issued for longer,
    whatever the lifetime asked."""
    from datetime import UTC, datetime

    from fhirserver.auth.tokens import MAX_LIFETIME, TokenService
    from fhirserver.crypto.master import load
    from fhirserver.crypto.sealing import sealer

    st = app.extensions["fhirserver"]
    service = TokenService(st.repo.db, st.settings.issuer, sealer(load(st.settings)))
    _, claims = service.mint(subject="x", scope="patient/*.rs", kind="patient",
                             lifetime=40 * 24 * 3600, now=datetime.now(UTC), patient="x")
    assert claims["exp"] - claims["iat"] == MAX_LIFETIME == 30 * 24 * 3600
