"""Trust: the paths that handed a stranger a full record, tried again over real HTTP
as an attacker with a valid token of the wrong patient, clinician or backend client
would (DESIGN.md section 1: only clinicians treating the patient read the record;
SMART App Launch 2.x; RFC 6749; RFC 9700).

Each test names the point of the trust review it covers.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from pymongo import monitoring
from pymongo.monitoring import CommandListener

from fhirserver.audit.chain import event_of
from fhirserver.auth import users
from fhirserver.auth.access import record_care
from fhirserver.auth.clients import Client, register
from fhirserver.auth.grants import s256
from tests import factories as f
from tests.conftest import Http, http_as

REDIRECT = "http://app.example/callback"
CARD = "https://fhirserver.example/sid/health-card"
RID = "https://fhirserver.example/sid/resident-id"
PASSWORD = "correct horse battery"
HIV = {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "HIV"}]}


def params(**values: str | bool) -> dict:
    return {"resourceType": "Parameters", "parameter": [
        {"name": k, "valueBoolean" if isinstance(v, bool) else "valueString": v}
        for k, v in values.items()]}


def shown_request(page: str) -> str:
    """The pending request an approval page answers (its hidden form field)."""
    return re.search(r'name="request" value="([^"]+)"', page)[1]  # type: ignore[index]


def details(r: requests.Response) -> str:
    return r.json()["issue"][0].get("details", {}).get("coding", [{}])[0].get("code", "")


class World:
    """A live server, an operator, two adult patients with cards and records, and
    the accounts and app that sign in."""

    def __init__(self, live) -> None:  # type: ignore[no-untyped-def]
        self.url, self.app = live
        self.db = self.app.extensions["fhirserver"].repo.db
        self.op = http_as(live)
        self.alice = self.patient("Alice", "1980-02-02")
        self.bob = self.patient("Bob", "1975-03-03")
        self.bob_obs = self.op.post("Observation", f.observation(self.bob, code="1-1")).json()["id"]
        self.bob_hiv = self.op.post("Observation", {**f.observation(self.bob, code="hiv-1"),
                                                    "meta": HIV}).json()["id"]
        register(self.db, Client("app-1", "public", "patient/*.rs patient/*.cruds user/*.rs launch "
                                 "launch/patient openid fhirUser offline_access", (REDIRECT,),
                                 name="Health Diary"))
        users.add(self.db, users.User("alice", "patient", f"Patient/{self.alice}"), PASSWORD)
        users.add(self.db, users.User("bob", "patient", f"Patient/{self.bob}"), PASSWORD)

    def patient(self, name: str, born: str) -> str:
        pid = self.op.post("Patient", f.patient(name, birthDate=born)).json()["id"]
        assert self.op.post(f"Patient/{pid}/$issue-card").status_code == 201
        return pid

    def card_number(self, pid: str) -> str:
        return [i["value"] for i in self.op.get(f"Patient/{pid}").json()["identifier"]
                if i["system"] == CARD][0]

    def live_code(self, pid: str) -> str:
        """What the patient's phone shows: a fresh code."""
        r = self.op.get(f"Patient/{pid}/$card-qr", headers={"Accept": "application/fhir+json"})
        return r.json()["parameter"][0]["valueString"]

    def as_patient(self, pid: str, scope: str = "patient/*.cruds") -> Http:
        return http_as((self.url, self.app), "patient", scope, patient=pid, subject=pid)

    def clinician(self, name: str, org: str = "Organization/hospital-1",
                  scope: str = "user/*.cruds") -> Http:
        return http_as((self.url, self.app), "user", scope, subject=name,
                       fhirUser=f"Practitioner/{name}", organization=org)

    def backend(self, client_id: str, org: str, scope: str = "system/*.cruds") -> Http:
        return http_as((self.url, self.app), "system", scope, subject=client_id,
                       client_id=client_id, organization=org)

    def treat(self, who: str, pid: str, hours: int = 1) -> None:
        record_care(self.db, who, pid, datetime.now(UTC) + timedelta(hours=hours), "card-scan")

    def authorize_url(self, challenge: str, **extra: str) -> str:
        values = {"response_type": "code", "client_id": "app-1", "redirect_uri": REDIRECT,
                  "scope": "patient/*.rs launch/patient openid fhirUser offline_access",
                  "state": "s1", "aud": self.url, "code_challenge": challenge,
                  "code_challenge_method": "S256"}
        values.update(extra)
        return f"{self.url}/oauth/authorize?{urlencode(values)}"

    def sign_in(self, username: str, challenge: str, patient: str | None = None,
                session: requests.Session | None = None, **extra: str) -> str:
        """A person in a browser: sign in, allow; the Location the server answers."""
        b = session or requests.Session()
        page = b.get(self.authorize_url(challenge, **extra), timeout=10, allow_redirects=False)
        if page.status_code == 302:
            return page.headers["Location"]
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)[1]  # type: ignore[index]
        page = b.post(f"{self.url}/oauth/login", timeout=10,
                      data={"csrf": csrf, "username": username, "password": PASSWORD})
        assert page.status_code == 200 and "Allow access?" in page.text, page.text[:400]
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)[1]  # type: ignore[index]
        form = {"csrf": csrf, "request": shown_request(page.text), "decision": "approve",
                **({"patient": patient} if patient else {})}
        done = b.post(f"{self.url}/oauth/approve", data=form, allow_redirects=False, timeout=10)
        assert done.status_code == 302, done.text[:400]
        return done.headers["Location"]

    def exchange(self, location: str, verifier: str) -> requests.Response:
        code = parse_qs(urlsplit(location).query)["code"][0]
        return requests.post(f"{self.url}/oauth/token", timeout=10, data={
            "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
            "client_id": "app-1", "code_verifier": verifier})


@pytest.fixture
def world(live) -> World:  # type: ignore[no-untyped-def]
    return World(live)


VERIFIER = "v" * 50


# -- 1. launch context takeover ---------------------------------------------------------------


def test_1_a_backend_cannot_launch_on_a_patient_it_does_not_reach(world):
    """Point 1: a backend token's launch for a patient its organisation does not
    treat answers exactly like one for a patient that does not exist."""
    ehr = world.backend("ehr-1", "Organization/hospital-9")
    hidden = ehr.post("oauth/launch", {"patient": world.bob, "client_id": "app-1",
                                       "user": "Patient/" + world.alice})
    missing = ehr.post("oauth/launch", {"patient": "no-such-patient", "client_id": "app-1",
                                        "user": "Patient/" + world.alice})
    assert hidden.status_code == missing.status_code == 404
    assert details(hidden) == details(missing)
    assert hidden.json()["issue"][0]["code"] == missing.json()["issue"][0]["code"] == "not-found"


def test_1_a_patient_cannot_take_over_a_launch_made_for_someone_else(world):
    """Point 1: the takeover itself: a launch made for a clinician, used by a patient
    account, gives no token at all, and the launch is spent."""
    world.treat("Organization/hospital-1", world.bob)
    ehr = world.backend("ehr-1", "Organization/hospital-1")
    r = ehr.post("oauth/launch", {"patient": world.bob, "client_id": "app-1",
                                  "user": "Practitioner/dr-li"})
    assert r.status_code == 200, r.text
    launch = r.json()["launch"]
    location = world.sign_in("alice", s256(VERIFIER), launch=launch,
                             scope="launch patient/*.rs openid fhirUser")
    assert parse_qs(urlsplit(location).query)["error"] == ["access_denied"]
    # Spent: nobody can try it again, not even the user it was for.
    again = requests.get(world.authorize_url(s256(VERIFIER), launch=launch), timeout=10,
                         allow_redirects=False)
    assert parse_qs(urlsplit(again.headers["Location"]).query)["error"] == ["invalid_request"]


def test_1_a_launch_names_its_app_and_its_user_and_expires(world):
    """Point 1: a launch works for its user in its app, once, for minutes."""
    users.add(world.db, users.User("dr-li", "practitioner", "Practitioner/dr-li",
                                   "Organization/hospital-1"), PASSWORD)
    register(world.db, Client("app-2", "public", "patient/*.rs launch", (REDIRECT,)))
    world.treat("Practitioner/dr-li", world.bob)
    dr = world.clinician("dr-li")
    launch = dr.post("oauth/launch", {"patient": world.bob, "client_id": "app-1"}).json()["launch"]
    other_app = requests.get(world.authorize_url(s256(VERIFIER), launch=launch, client_id="app-2"),
                             timeout=10, allow_redirects=False)
    assert parse_qs(urlsplit(other_app.headers["Location"]).query)["error"] == ["invalid_request"]
    assert dr.post("oauth/launch", {"patient": world.bob, "client_id": "app-1",
                                    "user": "Practitioner/dr-wu"}).status_code == 403
    location = world.sign_in("dr-li", s256(VERIFIER), launch=launch,
                             scope="launch patient/*.rs openid fhirUser")
    tokens = world.exchange(location, VERIFIER).json()
    assert tokens["patient"] == world.bob
    # Minutes, not hours.
    late = dr.post("oauth/launch", {"patient": world.bob, "client_id": "app-1"}).json()["launch"]
    later = datetime.now(UTC) + timedelta(minutes=6)
    world.app.extensions["fhirserver"].clock = lambda: later
    expired = requests.get(world.authorize_url(s256(VERIFIER), launch=late), timeout=10,
                           allow_redirects=False)
    assert parse_qs(urlsplit(expired.headers["Location"]).query)["error"] == ["invalid_request"]


def test_1_a_patient_picks_only_themself_or_consenting_family(world):
    """Point 1: a forged patient choice on the approval form is refused."""
    b = requests.Session()
    page = b.get(world.authorize_url(s256(VERIFIER)), timeout=10)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)[1]
    page = b.post(f"{world.url}/oauth/login", timeout=10,
                  data={"csrf": csrf, "username": "alice", "password": PASSWORD})
    assert f'value="{world.bob}"' not in page.text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)[1]
    forged = b.post(f"{world.url}/oauth/approve", allow_redirects=False, timeout=10,
                    data={"csrf": csrf, "request": shown_request(page.text), "decision": "approve",
                          "patient": world.bob})
    assert forged.status_code == 200 and "Choose one of the listed patients" in forged.text


# -- 2. family binding ------------------------------------------------------------------------


def test_2_a_card_number_alone_binds_nothing(world):
    """Point 2: the attack: Alice binds Bob's card number. She gets a request, not
    Bob's record, QR code, audit trail or card."""
    alice = world.as_patient(world.alice)
    r = alice.post(f"Patient/{world.alice}/$bind-family", params(card=world.card_number(world.bob)))
    assert r.status_code == 202
    from stdnum import luhn

    nobody = "6" + "0" * 17 + "7"
    unknown = alice.post(f"Patient/{world.alice}/$bind-family",
                         params(card=nobody + luhn.calc_check_digit(nobody)))
    assert unknown.status_code == 202 and unknown.json() == r.json()  # tells nothing about the card
    assert alice.get(f"Patient/{world.bob}").status_code == 404
    assert alice.get(f"Observation/{world.bob_obs}").status_code == 404
    assert alice.get(f"Patient/{world.bob}/$card-qr").status_code in (403, 404)
    assert alice.post(f"Patient/{world.bob}/$reissue-card").status_code in (403, 404)
    assert world.bob not in alice.get("AuditEvent?_count=100").text
    # Bob sees who asks, and decides.
    bob = world.as_patient(world.bob)
    listing = bob.get(f"Patient/{world.bob}/$family").json()
    pending = [e["resource"] for e in listing["entry"] if not e["resource"]["active"]]
    assert len(pending) == 1 and pending[0]["name"][0]["family"] == "Alice"


def test_2_the_member_accepts_reads_are_read_only_and_sensitive_stays_private(world):
    """Point 2: after Bob accepts, Alice reads Bob's record (not his HIV result until
    he shares it), cannot write into it nor manage his card, and Bob ends it."""
    alice, bob = world.as_patient(world.alice), world.as_patient(world.bob)
    alice.post(f"Patient/{world.alice}/$bind-family", params(card=world.card_number(world.bob),
                                                             relationship="SPS"))
    request_id = [e["resource"]["id"] for e in bob.get(f"Patient/{world.bob}/$family").json()["entry"]][0]
    r = bob.post(f"Patient/{world.bob}/$accept-family", params(request=request_id))
    assert r.status_code == 201, r.text
    assert alice.get(f"Observation/{world.bob_obs}").status_code == 200
    assert alice.get(f"Observation/{world.bob_hiv}").status_code == 404
    assert alice.ids(f"Observation?patient={world.bob}") == [world.bob_obs]
    assert alice.post("Observation", f.observation(world.bob)).status_code == 403
    bob_patient = alice.get(f"Patient/{world.bob}").json()
    assert alice.put(f"Patient/{world.bob}", {**bob_patient, "gender": "other"}).status_code == 403
    assert alice.get(f"Patient/{world.bob}/$card-qr").status_code == 403
    assert alice.post(f"Patient/{world.bob}/$revoke-card").status_code in (403, 404)
    assert world.bob not in alice.get("AuditEvent?_count=100").text  # his log is his
    bob.post(f"Patient/{world.bob}/$consent", params(shareWithFamily=True))
    assert alice.get(f"Observation/{world.bob_hiv}").status_code == 200
    # Bob sees who holds his card and ends it.
    holders = [e["resource"] for e in bob.get(f"Patient/{world.bob}/$family").json()["entry"]]
    assert [h["patient"]["reference"] for h in holders] == [f"Patient/{world.bob}"]
    assert holders[0]["name"][0]["family"] == "Alice"
    assert bob.post(f"Patient/{world.bob}/$unbind-family",
                    params(holder=f"Patient/{world.alice}")).status_code == 200
    assert alice.get(f"Observation/{world.bob_obs}").status_code == 404


def test_2_a_live_code_binds_and_a_child_gets_a_guardian(world):
    """Point 2: the member's live code is proof; a child under 14 is bound only so,
    and the guardian (only) manages the child's card."""
    child = world.patient("Child", (datetime.now(UTC) - timedelta(days=365 * 8)).date().isoformat())
    alice, bob = world.as_patient(world.alice), world.as_patient(world.bob)
    by_number = bob.post(f"Patient/{world.bob}/$bind-family", params(card=world.card_number(child)))
    assert by_number.status_code == 202
    assert alice.post(f"Patient/{world.alice}/$bind-family",
                      params(code=world.live_code(child), relationship="CHILD")).status_code == 201
    assert bob.get(f"Patient/{child}").status_code == 404
    assert alice.get(f"Patient/{child}/$card-qr").status_code == 200
    assert alice.post(f"Patient/{child}/$suspend-card").status_code == 200
    # An adult's live code binds at once, read-only.
    assert alice.post(f"Patient/{world.alice}/$bind-family",
                      params(code=world.live_code(world.bob))).status_code == 201
    assert alice.get(f"Observation/{world.bob_obs}").status_code == 200
    assert alice.get(f"Patient/{world.bob}/$card-qr").status_code == 403


# -- 3. authorship ----------------------------------------------------------------------------


def test_3_naming_a_performer_or_writing_opens_no_record(world):
    """Point 3: a backend client naming a practitioner as performer gives them
    nothing; a client writes only for patients its organisation treats."""
    lab = world.backend("lab-1", "Organization/lab")
    r = lab.post("Observation", f.observation(world.bob, performer=[
        {"reference": "Practitioner/dr-mole"}]))
    assert r.status_code == 403
    world.treat("Organization/lab", world.bob)
    assert lab.post("Observation", f.observation(world.bob, performer=[
        {"reference": "Practitioner/dr-mole"}])).status_code == 201
    mole = world.clinician("dr-mole")
    assert mole.get(f"Patient/{world.bob}").status_code == 404
    assert mole.get(f"Observation/{world.bob_hiv}").status_code == 404
    assert mole.ids("Observation") == []
    assert world.db["_care_relationships"].count_documents({"reason": "author"}) == 0


# -- 7. existence oracles ---------------------------------------------------------------------


def test_7_references_to_hidden_and_missing_records_answer_alike(world):
    """Point 7: a reference to a record the caller may not see is as unresolvable as
    one to a record that does not exist (versioned too)."""
    dr = world.clinician("dr-li")
    world.treat("Practitioner/dr-li", world.alice)
    answers = []
    for target in (f"Observation/{world.bob_obs}", "Observation/not-there",
                   f"Observation/{world.bob_obs}/_history/1", "Observation/not-there/_history/1"):
        r = dr.post("Observation", {**f.observation(world.alice), "focus": [{"reference": target}]})
        answers.append((r.status_code, r.json()["issue"][0]["code"]))
    assert answers == [(422, "not-found")] * 4


def test_7_update_as_create_does_not_tell_hidden_ids_from_free_ones(world):
    """Point 7: PUT on a hidden id and on a free id answer the same."""
    dr = world.clinician("dr-li")
    world.treat("Practitioner/dr-li", world.alice)
    hidden = dr.put(f"Observation/{world.bob_obs}", {**f.observation(world.alice), "id": world.bob_obs})
    free = dr.put("Observation/free-id-1", {**f.observation(world.alice), "id": "free-id-1"})
    assert hidden.status_code == free.status_code == 404
    assert hidden.json()["issue"][0]["diagnostics"].replace(world.bob_obs, "X") == \
        free.json()["issue"][0]["diagnostics"].replace("free-id-1", "X")


def test_7_backend_writes_for_hidden_and_missing_subjects_answer_alike(world):
    """Point 7: a result for a patient the client's organisation does not treat and
    one for a patient that does not exist get the same answer."""
    lab = world.backend("lab-1", "Organization/lab")
    hidden = lab.post("Observation", f.observation(world.bob))
    missing = lab.post("Observation", f.observation("no-such-patient"))
    assert hidden.status_code == missing.status_code == 403
    assert hidden.json()["issue"][0]["diagnostics"] == missing.json()["issue"][0]["diagnostics"]


def test_7_only_registration_learns_that_an_identity_number_is_taken(world):
    """Point 7: a clinician without the registration scope cannot write identity
    documents at all (so learns nothing); a registration desk gets the 409, which is
    audited; a patient cannot change their own resident ID."""
    from tests.mpi.numbers import gb11643

    number = gb11643("110105", "19700101", "011")
    holder = world.op.post("Patient", f.patient("Holder", birthDate="1970-01-01", gender="male",
                                                identifier=[{"system": RID, "value": number}])).json()["id"]
    free = gb11643("110105", "19700101", "013")
    dr = world.clinician("dr-li")
    taken = dr.post("Patient", f.patient("Copy", birthDate="1970-01-01", gender="male",
                                         identifier=[{"system": RID, "value": number}]))
    unused = dr.post("Patient", f.patient("Copy", birthDate="1970-01-01", gender="male",
                                          identifier=[{"system": RID, "value": free}]))
    assert taken.status_code == unused.status_code == 403
    desk = world.clinician("dr-desk", scope="user/*.cruds registration")
    r = desk.post("Patient", f.patient("Copy", birthDate="1970-01-01", gender="male",
                                       identifier=[{"system": RID, "value": number}]))
    assert r.status_code == 409 and holder not in r.text
    events = [e for e in map(event_of, world.db["_audit"].find({})) if e.get("outcomeDesc")]
    assert any("identifier-taken" in e["outcomeDesc"] for e in events)
    # A patient cannot change their own resident ID.
    me = world.as_patient(holder, "patient/*.cruds")
    own = me.get(f"Patient/{holder}").json()
    changed = {**own, "identifier": [{"system": RID, "value": free}]}
    assert me.put(f"Patient/{holder}", changed).status_code == 403
    assert me.put(f"Patient/{holder}", {**own, "gender": "male", "active": True}).status_code == 200


# -- 10. refresh token replay -----------------------------------------------------------------


def test_10_a_replayed_refresh_token_revokes_its_whole_family(world):
    """Point 10 (RFC 9700 section 4.14.2): replaying a used refresh token revokes the
    rotated refresh token and every access token of the authorization."""
    location = world.sign_in("alice", s256(VERIFIER), patient=world.alice)
    first = world.exchange(location, VERIFIER).json()

    def refresh(token: str) -> requests.Response:
        return requests.post(f"{world.url}/oauth/token", timeout=10, data={
            "grant_type": "refresh_token", "refresh_token": token, "client_id": "app-1"})

    second = refresh(first["refresh_token"]).json()
    reader = lambda token: requests.get(f"{world.url}/Patient/{world.alice}", timeout=10,  # noqa: E731
                                        headers={"Authorization": f"Bearer {token}"})
    assert reader(second["access_token"]).status_code == 200
    replay = refresh(first["refresh_token"])
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    assert refresh(second["refresh_token"]).json()["error"] == "invalid_grant"
    assert reader(second["access_token"]).status_code == 401
    assert reader(first["access_token"]).status_code == 401


# -- 11. break-the-glass ----------------------------------------------------------------------


def test_11_break_the_glass_needs_the_emergency_role_and_the_patient_sees_it(world):
    """Point 11: a clinician without the emergency-access role cannot break the
    glass; one with it can, and the patient's access log flags it with the reason."""
    dr = world.clinician("dr-li")
    reason = params(reason="unconscious, no card")
    assert dr.post(f"Patient/{world.bob}/$break-glass", reason).status_code == 403
    users.add(world.db, users.User("dr-li", "practitioner", "Practitioner/dr-li",
                                   "Organization/hospital-1", (users.EMERGENCY_ACCESS,)), PASSWORD)
    assert dr.post(f"Patient/{world.bob}/$break-glass", reason).status_code == 200
    assert dr.get(f"Patient/{world.bob}").status_code == 200
    log = world.as_patient(world.bob, "patient/*.rs").get("AuditEvent?_count=50").json()
    flagged = [e["resource"] for e in log["entry"]
               if e["resource"]["purposeOfEvent"][0]["coding"][0]["code"] == "ETREAT"]
    assert flagged and any("unconscious, no card" in e.get("outcomeDesc", "") for e in flagged)
    users.set_roles(world.db, "dr-li", (), (users.EMERGENCY_ACCESS,))
    assert dr.post(f"Patient/{world.alice}/$break-glass", reason).status_code == 403


# -- 12. no lockout ---------------------------------------------------------------------------


class SourceAddress(requests.adapters.HTTPAdapter):
    """Connections from another loopback address: another client machine."""

    def __init__(self, address: str) -> None:
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        kwargs["source_address"] = (self.address, 0)
        super().init_poolmanager(*args, **kwargs)


def test_12_an_attacker_cannot_lock_a_clinician_out(world):
    """Point 12: ten wrong passwords from one address slow that address down; the
    clinician signs in at once from their own."""
    attacker = requests.Session()
    attacker.mount("http://", SourceAddress("127.0.0.2"))
    page = attacker.get(world.authorize_url(s256(VERIFIER)), timeout=10)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)[1]
    statuses = [attacker.post(f"{world.url}/oauth/login", timeout=10, data={
        "csrf": csrf, "username": "alice", "password": f"guess-{i}"}).status_code for i in range(10)]
    assert statuses[:3] == [401, 401, 401] and 429 in statuses
    location = world.sign_in("alice", s256(VERIFIER), patient=world.alice)
    assert "code=" in location


# -- 13. session cookie -----------------------------------------------------------------------


def test_13_the_sign_in_cookie_is_an_opaque_httponly_lax_identifier(world):
    """Point 13: the pending request (and any launch patient) stays on the server;
    the cookie is HttpOnly, SameSite=Lax, limited to /oauth/ and changes at sign-in."""
    world.treat("Organization/hospital-1", world.bob)
    launch = world.backend("ehr-1", "Organization/hospital-1").post(
        "oauth/launch", {"patient": world.bob, "client_id": "app-1",
                         "user": "Practitioner/dr-li"}).json()["launch"]
    b = requests.Session()
    page = b.get(world.authorize_url(s256(VERIFIER), launch=launch), timeout=10)
    header = page.headers["Set-Cookie"]
    assert "HttpOnly" in header and "SameSite=Lax" in header and "Path=/oauth/" in header
    assert "Secure" not in header  # the issuer is http here
    value = b.cookies["fhirserver_auth"]
    assert len(value) < 64 and world.bob not in value and launch not in value
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)[1]
    b.post(f"{world.url}/oauth/login", timeout=10,
           data={"csrf": csrf, "username": "alice", "password": PASSWORD})
    assert b.cookies["fhirserver_auth"] != value  # a new identifier once signed in


def test_13_the_cookie_is_secure_when_the_issuer_is_https(settings):
    """Point 13: with an https issuer the cookie carries Secure."""
    import threading

    from werkzeug.serving import make_server

    from fhirserver.storage.ferretdb import free_port
    from tests.conftest import make_app

    port = free_port()
    app = make_app(settings.with_(base_url=f"http://127.0.0.1:{port}",
                                  auth_issuer="https://fhir.example.org"))
    register(app.extensions["fhirserver"].repo.db,
             Client("app-1", "public", "patient/*.rs", (REDIRECT,)))
    server = make_server("127.0.0.1", port, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        page = requests.get(f"http://127.0.0.1:{port}/oauth/authorize?" + urlencode({
            "response_type": "code", "client_id": "app-1", "redirect_uri": REDIRECT,
            "scope": "patient/*.rs", "aud": "https://fhir.example.org",
            "code_challenge": s256(VERIFIER), "code_challenge_method": "S256"}), timeout=10)
        assert page.status_code == 200 and "Secure" in page.headers["Set-Cookie"]
    finally:
        server.shutdown()
        app.extensions["fhirserver"].repo.close()


# -- 14. the approval page's CSP --------------------------------------------------------------


def test_14_the_approval_page_lets_its_form_return_to_the_app_only(world):
    """Point 14 (CSP Level 3 form-action applies to the redirect after a form post):
    the approval page allows exactly the registered redirect origin of the client."""
    b = requests.Session()
    page = b.get(world.authorize_url(s256(VERIFIER)), timeout=10)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)[1]
    page = b.post(f"{world.url}/oauth/login", timeout=10,
                  data={"csrf": csrf, "username": "alice", "password": PASSWORD})
    csp = page.headers["Content-Security-Policy"]
    assert "form-action 'self' http://app.example;" in csp and "frame-ancestors 'none'" in csp


# -- also found: server-owned identifiers -----------------------------------------------------


def test_the_card_number_survives_client_updates(world):
    """A PUT (or a re-import) of a Patient without the health card identifier keeps
    it; a client cannot set one either."""
    number = world.card_number(world.alice)
    stored = world.op.get(f"Patient/{world.alice}").json()
    without = {**stored, "identifier": [i for i in stored["identifier"] if i["system"] != CARD]}
    without.pop("identifier") if not without["identifier"] else None
    assert world.op.put(f"Patient/{world.alice}", {**without, "gender": "female"}).status_code == 200
    assert world.op.ids(f"Patient?identifier={CARD}|{number}") == [world.alice]
    forged = {**stored, "identifier": [{"system": CARD, "value": "60000000000000000001"}]}
    world.op.put(f"Patient/{world.alice}", forged)
    idents = world.op.get(f"Patient/{world.alice}").json()["identifier"]
    assert [i["value"] for i in idents if i["system"] == CARD] == [number]


# -- 7. the timing oracle ---------------------------------------------------------------------


class Commands(CommandListener):
    """The database commands a request sends (pymongo command monitoring), to show
    that a hidden record and a missing one cost the same work."""

    def __init__(self) -> None:
        self.active = False
        self.seen: list[tuple[str, str, tuple[str, ...]]] = []

    def started(self, event) -> None:  # type: ignore[no-untyped-def]
        if not self.active or event.command_name not in ("find", "count", "aggregate"):
            return
        collection = str(event.command.get(event.command_name))
        if collection.startswith(("_audit", "_auth_", "_consents")):
            return  # the audit record and per-process caches, alike for both answers
        flt = event.command.get("filter") or {}
        self.seen.append((event.command_name, collection, tuple(sorted(flt))))

    def succeeded(self, event) -> None:  # type: ignore[no-untyped-def]
        pass

    def failed(self, event) -> None:  # type: ignore[no-untyped-def]
        pass


COMMANDS = Commands()
monitoring.register(COMMANDS)  # applies to the clients of apps created afterwards


def test_7_a_hidden_record_and_a_missing_one_cost_the_same_database_work(live):
    """Point 7: reading a hidden Patient took longer than reading a missing id (a
    timing oracle); both now make the same database round trips."""
    world = World(live)
    dr = world.clinician("dr-li")
    world.treat("Practitioner/dr-li", world.alice)
    assert dr.get(f"Patient/{world.alice}").status_code == 200  # the care index is cached
    work = {}
    for name, pid in (("hidden", world.bob), ("missing", "no-such-patient-0000")):
        COMMANDS.seen, COMMANDS.active = [], True
        r = dr.get(f"Patient/{pid}")
        COMMANDS.active = False
        assert r.status_code == 404
        work[name] = [c for c in COMMANDS.seen if c[2] != ("who",)]  # a cache refresh, if any
    assert work["hidden"] == work["missing"]
    assert ("find", "_care_relationships", ("_id",)) in work["hidden"]


def test_1_a_launch_is_audited_with_its_patient(world):
    """Point 1: creating a launch reads who the patient is: the patient sees it."""
    world.treat("Organization/hospital-1", world.bob)
    ehr = world.backend("ehr-1", "Organization/hospital-1")
    assert ehr.post("oauth/launch", {"patient": world.bob, "client_id": "app-1",
                                     "user": "Practitioner/dr-li"}).status_code == 200
    log = world.as_patient(world.bob, "patient/*.rs").get("AuditEvent?_count=50").json()
    assert any(e["resource"]["subtype"][0]["code"] == "launch" for e in log["entry"])


def test_6_a_conditional_create_is_no_way_around_the_identity_lookup(world):
    """Point 6: ``If-None-Exist: identifier=S|v`` matches within the caller's reach
    only; it never hands back a Patient the client may not see."""
    from tests.mpi.numbers import gb11643

    number = gb11643("110105", "19700101", "011")
    holder = world.op.post("Patient", f.patient("Holder", birthDate="1970-01-01", gender="male",
                                                identifier=[{"system": RID, "value": number}])).json()["id"]
    ehr = world.backend("ehr-1", "Organization/hospital-9", "system/*.cruds registration")
    r = ehr.post("Patient", f.patient("Copy", birthDate="1970-01-01", gender="male",
                                      identifier=[{"system": RID, "value": number}]),
                 headers={"If-None-Exist": f"identifier={RID}|{number}"})
    assert r.status_code == 409 and holder not in r.text


def test_12_guesses_sent_at_once_are_not_all_checked(world):
    """Point 12: twenty wrong passwords sent at the same time from one address get no
    more password checks than three sent one after the other."""
    from concurrent.futures import ThreadPoolExecutor

    from fhirserver.auth.throttle import FREE_FAILURES

    frozen = datetime.now(UTC)
    world.app.extensions["fhirserver"].clock = lambda: frozen
    sessions = []
    for _ in range(20):
        b = requests.Session()
        page = b.get(world.authorize_url(s256(VERIFIER)), timeout=10)
        sessions.append((b, re.search(r'name="csrf" value="([^"]+)"', page.text)[1]))

    def guess(pair: tuple[requests.Session, str]) -> int:
        b, csrf = pair
        return b.post(f"{world.url}/oauth/login", timeout=30, data={
            "csrf": csrf, "username": "alice", "password": "wrong guess"}).status_code

    with ThreadPoolExecutor(20) as pool:
        statuses = list(pool.map(guess, sessions))
    assert statuses.count(401) <= FREE_FAILURES and statuses.count(429) >= 20 - FREE_FAILURES


# -- found by attacking the changes above -----------------------------------------------------


def bound_by_request(world: World) -> tuple[Http, Http]:
    """Bob accepts Alice's request: Alice reads Bob's record (read-only)."""
    alice, bob = world.as_patient(world.alice), world.as_patient(world.bob)
    alice.post(f"Patient/{world.alice}/$bind-family", params(card=world.card_number(world.bob)))
    request_id = [e["resource"]["id"] for e in bob.get(f"Patient/{world.bob}/$family").json()["entry"]][0]
    assert bob.post(f"Patient/{world.bob}/$accept-family", params(request=request_id)).status_code == 201
    return alice, bob


def test_2_an_app_opened_on_a_family_member_is_still_the_holder(world):
    """Point 2 (and 1): a patient's token whose launch context is a family member
    acts as the patient it belongs to: reading the member's record as family does,
    never writing it, holding their card or reading their log; it stops with the
    binding, refresh included."""
    _, bob = bound_by_request(world)
    location = world.sign_in("alice", s256(VERIFIER), patient=world.bob,
                             scope="patient/*.cruds launch/patient openid fhirUser offline_access")
    tokens = world.exchange(location, VERIFIER).json()
    assert tokens["patient"] == world.bob
    app = Http(world.url, tokens["access_token"])
    assert app.get(f"Observation/{world.bob_obs}").status_code == 200
    assert app.get(f"Observation/{world.bob_hiv}").status_code == 404
    assert app.get(f"Patient/{world.bob}/$card-qr").status_code == 403
    assert app.post("Observation", f.observation(world.bob)).status_code == 403
    assert app.post(f"Patient/{world.bob}/$consent", params(optOut=True)).status_code == 403
    assert world.bob not in app.get("AuditEvent?_count=100").text
    bob.post(f"Patient/{world.bob}/$unbind-family", params(holder=f"Patient/{world.alice}"))
    later = datetime.now(UTC) + timedelta(seconds=5)  # past the per-process reach cache
    world.app.extensions["fhirserver"].clock = lambda: later
    import time

    time.sleep(2.1)
    assert app.get(f"Observation/{world.bob_obs}").status_code == 404
    refreshed = requests.post(f"{world.url}/oauth/token", timeout=10, data={
        "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "client_id": "app-1"})
    assert refreshed.status_code == 400 and refreshed.json()["error"] == "invalid_grant"


def test_2_history_keeps_a_members_records_out_unless_shared(world):
    """Point 2: type and system history carry no label marks on old versions, so a
    member's results stay out of a holder's history unless the member shares them."""
    alice, bob = bound_by_request(world)
    for path in ("Observation/_history", "_history"):
        assert world.bob_hiv not in alice.get(path).text
    bob.post(f"Patient/{world.bob}/$consent", params(shareWithFamily=True))
    import time

    time.sleep(2.1)  # the per-process consent cache
    assert world.bob_hiv in alice.get("Observation/_history").text


def test_2_a_guardian_sets_the_childs_sharing_choices(world):
    """Point 2: a guardian acts for the child: consent included."""
    child = world.patient("Child", (datetime.now(UTC) - timedelta(days=365 * 8)).date().isoformat())
    alice = world.as_patient(world.alice)
    alice.post(f"Patient/{world.alice}/$bind-family", params(code=world.live_code(child)))
    assert alice.post(f"Patient/{child}/$consent", params(restrictSensitive=True)).status_code == 200


def test_2_declined_requests_stay_declined_and_a_holder_asks_a_few_at_a_time(world):
    """Point 2: a declined holder cannot ask again at once; one holder keeps only a
    few requests open."""
    alice, bob = world.as_patient(world.alice), world.as_patient(world.bob)
    alice.post(f"Patient/{world.alice}/$bind-family", params(card=world.card_number(world.bob)))
    request_id = [e["resource"]["id"] for e in bob.get(f"Patient/{world.bob}/$family").json()["entry"]][0]
    assert bob.post(f"Patient/{world.bob}/$accept-family",
                    params(request=request_id, decision="decline")).status_code == 200
    assert alice.post(f"Patient/{world.alice}/$bind-family",
                      params(card=world.card_number(world.bob))).status_code == 202
    assert bob.get(f"Patient/{world.bob}/$family").json().get("entry") is None


def test_2_a_request_by_card_number_costs_the_same_for_any_number(world):
    """Point 2: whether the number is an adult's active card or no card at all, the
    request does the same database work (no timing oracle on card numbers)."""
    from stdnum import luhn

    alice = world.as_patient(world.alice)
    nobody = "6" + "1" * 18
    alice.post(f"Patient/{world.alice}/$bind-family", params(card=world.card_number(world.alice)))
    work = {}  # (the first request above filled the caller's per-process caches)
    for name, number in (("card", world.card_number(world.bob)),
                         ("none", nobody + luhn.calc_check_digit(nobody))):
        COMMANDS.seen, COMMANDS.active = [], True
        assert alice.post(f"Patient/{world.alice}/$bind-family", params(card=number)).status_code == 202
        COMMANDS.active = False
        # Reads of the caller's own family slots refresh a per-process cache now and
        # then: alike for any number, so they are left out of the comparison.
        work[name] = [c for c in COMMANDS.seen if c[1] != "_card_bindings" or c[2] != ("_id",)]
    assert work["card"] == work["none"]


def test_3_updating_a_record_never_makes_the_updater_its_author(world):
    """Point 3: an imported record (no author) updated by a clinician during care is
    not theirs afterwards."""
    world.db["Observation"].update_one({"_id": world.bob_obs}, {"$set": {"by": None, "org": None}})
    dr = world.clinician("dr-temp", org="Organization/clinic-z")
    world.treat("Practitioner/dr-temp", world.bob)
    body = dr.get(f"Observation/{world.bob_obs}").json()
    assert dr.put(f"Observation/{world.bob_obs}", {**body, "status": "amended"}).status_code == 200
    stored = world.db["Observation"].find_one({"_id": world.bob_obs})
    assert stored["by"] is None and stored["org"] is None


def test_3_a_care_team_lasts_no_longer_than_the_organisations_care(world):
    """Point 3: a clinic system's team member gets the organisation's own time, and
    another organisation cannot take the member off."""
    world.treat("Organization/clinic-y", world.bob, hours=1)
    world.treat("Organization/clinic-z", world.bob, hours=1)
    y = world.backend("ehr-y", "Organization/clinic-y")
    z = world.backend("ehr-z", "Organization/clinic-z")
    assert y.post(f"Patient/{world.bob}/$care-team", params(member="Practitioner/dr-y")).status_code == 200
    until = world.db["_care_relationships"].find_one({"_id": f"Practitioner/dr-y|{world.bob}"})["until"]
    assert until.replace(tzinfo=UTC) < datetime.now(UTC) + timedelta(hours=2)
    assert z.post(f"Patient/{world.bob}/$care-team",
                  params(member="Practitioner/dr-y", remove=True)).status_code == 403
    outsider = world.backend("ehr-x", "Organization/clinic-x")
    assert outsider.post(f"Patient/{world.bob}/$care-team",
                         params(member="Practitioner/dr-x")).status_code == 404


def test_7_hidden_and_missing_cost_the_same_for_every_interaction(world):
    """Point 7: vread, history, PATCH, DELETE and $ihe-pix on a hidden id and on a
    missing one make the same database round trips."""
    from tests.mpi.numbers import gb11643

    number = gb11643("110105", "19700101", "011")
    world.op.post("Patient", f.patient("H", birthDate="1970-01-01", gender="male",
                                       identifier=[{"system": RID, "value": number}]))
    unused = gb11643("110105", "19700101", "013")
    dr = world.clinician("dr-li")
    world.treat("Practitioner/dr-li", world.alice)
    dr.get(f"Patient/{world.alice}")
    patch = [{"op": "replace", "path": "/status", "value": "amended"}]
    calls = {
        "vread": lambda rid: dr.get(f"Observation/{rid}/_history/1"),
        "history": lambda rid: dr.get(f"Observation/{rid}/_history"),
        "patch": lambda rid: dr.call("PATCH", f"Observation/{rid}", __import__("json").dumps(patch),
                                     headers={"Content-Type": "application/json-patch+json"}),
        "delete": lambda rid: dr.delete(f"Observation/{rid}"),
    }
    for name, call in calls.items():
        work = []
        for rid in (world.bob_obs, f"missing-{name}"):
            COMMANDS.seen, COMMANDS.active = [], True
            call(rid)
            COMMANDS.active = False
            work.append([c for c in COMMANDS.seen if c[2] != ("who",)])
        assert work[0] == work[1], name
    pix = []
    for value in (number, unused):
        COMMANDS.seen, COMMANDS.active = [], True
        assert dr.get(f"Patient/$ihe-pix?sourceIdentifier={RID}|{value}").status_code == 404
        COMMANDS.active = False
        pix.append(COMMANDS.seen)
    assert pix[0] == pix[1]


def test_7_merge_and_delete_name_no_hidden_record(world):
    """Point 7: merging is registration's (and moves hidden records without naming
    them); a refused delete neither names nor counts hidden referrers."""
    source = world.op.post("Patient", f.patient("Dup", birthDate="1975-03-03")).json()["id"]
    hidden = world.op.post("Observation", {**f.observation(source, code="hiv-2"), "meta": HIV}).json()["id"]
    from fhirserver.auth import consent

    consent.save(world.db, source, consent.Choice(restrict_sensitive=True))
    import time

    time.sleep(2.1)
    world.treat("Organization/hospital-1", source)
    world.treat("Organization/hospital-1", world.alice)
    ehr = world.backend("ehr-1", "Organization/hospital-1")
    merge = params(**{"source-patient": f"Patient/{source}", "target-patient": f"Patient/{world.alice}",
                      "preview": "true"})
    assert ehr.post("Patient/$merge", merge).status_code == 403
    desk = world.backend("desk-1", "Organization/hospital-1", "system/*.cruds registration")
    r = desk.post("Patient/$merge", merge)
    assert r.status_code == 200 and hidden not in r.text
    refused = ehr.delete(f"Patient/{source}")
    assert refused.status_code == 409 and hidden not in refused.text
    assert not re.search(r"\d+ other", refused.text)


def test_audit_names_the_patient_whatever_the_answer_shows(world):
    """Every access is visible to the patient: element-filtered, counted, minimal
    and bundled answers name the patient in the audit record too."""
    import json

    dr = world.clinician("dr-li")
    world.treat("Practitioner/dr-li", world.bob)
    reader = world.as_patient(world.bob, "patient/*.rs")

    def seen() -> int:
        return len(reader.get("AuditEvent?_count=1000").json().get("entry", []))

    requests_ = [
        lambda: dr.get(f"Observation?patient={world.bob}&_elements=code"),
        lambda: dr.get(f"Observation?patient={world.bob}&_summary=count"),
        lambda: dr.post("", {"resourceType": "Bundle", "type": "batch", "entry": [
            {"request": {"method": "GET", "url": f"Observation?patient={world.bob}"}}]}),
        lambda: dr.post("Observation", f.observation(world.bob), headers={"Prefer": "return=minimal"}),
        lambda: dr.post("", {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": f.observation(world.bob), "request": {"method": "POST", "url": "Observation"}}]}),
    ]
    for make in requests_:
        before = seen()
        r = make()
        assert r.status_code in (200, 201), r.text
        assert seen() == before + 1, json.dumps(r.json())[:200]
    created = dr.post("Observation", f.observation(world.bob)).json()["id"]
    before = seen()
    assert dr.delete(f"Observation/{created}").status_code == 200
    assert seen() == before + 1


# -- found by attacking the sign-in, concurrency and crashes ---------------------------------


def signed_in_page(world: World, session: requests.Session, **extra: str) -> str:
    page = session.get(world.authorize_url(s256(VERIFIER), **extra), timeout=10)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)[1]
    page = session.post(f"{world.url}/oauth/login", timeout=10,
                        data={"csrf": csrf, "username": "alice", "password": PASSWORD})
    assert "Allow access?" in page.text
    return page.text


def test_13_an_approval_page_answers_only_the_request_it_shows(world):
    """Point 13: a request started in the same browser after the page was shown (a
    hidden image, another tab) cannot ride on the user's Allow; a double click
    gives one code; the sign-in ends with the answer."""
    b = requests.Session()
    page = signed_in_page(world, b)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page)[1]
    swapped = b.get(world.authorize_url(s256("w" * 50), scope="patient/*.cruds offline_access"),
                    timeout=10)
    assert swapped.status_code == 200  # the attacker's request, now the session's latest
    r = b.post(f"{world.url}/oauth/approve", allow_redirects=False, timeout=10, data={
        "csrf": csrf, "request": shown_request(page), "decision": "approve", "patient": world.alice})
    assert r.status_code == 400 and "code=" not in r.headers.get("Location", "")

    from concurrent.futures import ThreadPoolExecutor

    b = requests.Session()
    page = signed_in_page(world, b)
    form = {"csrf": re.search(r'name="csrf" value="([^"]+)"', page)[1],
            "request": shown_request(page), "decision": "approve", "patient": world.alice}
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda _: b.post(f"{world.url}/oauth/approve", data=form,
                                                 allow_redirects=False, timeout=10), range(2)))
    assert sorted(a.status_code for a in answers) == [302, 400]
    again = b.get(world.authorize_url(s256(VERIFIER)), timeout=10)
    assert "Sign in" in again.text  # no approval without signing in again


def test_14_a_native_apps_redirect_is_allowed_by_its_scheme(world):
    """Point 14 (CSP Level 3 section 2.3.1): a private-use scheme is a scheme-source."""
    from fhirserver.api.authorize import origin_of

    assert origin_of("com.example.app:/callback") == "com.example.app:"
    assert origin_of("https://app.example:8443/cb?x=1") == "https://app.example:8443"


def test_10_two_refreshes_with_one_token_revoke_the_family(world):
    """Point 10: the same refresh token sent twice at the same instant is a replay:
    exactly one answer can succeed, and then nothing of the family works."""
    from concurrent.futures import ThreadPoolExecutor

    for _ in range(3):
        location = world.sign_in("alice", s256(VERIFIER), patient=world.alice)
        first = world.exchange(location, VERIFIER).json()
        with ThreadPoolExecutor(2) as pool:
            answers = list(pool.map(lambda _: requests.post(
                f"{world.url}/oauth/token", timeout=10, data={
                    "grant_type": "refresh_token", "refresh_token": first["refresh_token"],
                    "client_id": "app-1"}), range(2)))
        assert [a.status_code for a in answers].count(200) <= 1
        import time

        time.sleep(2.1)  # the per-process revocation list
        for a in answers:
            if a.status_code == 200:
                assert requests.get(f"{world.url}/Patient/{world.alice}", timeout=10, headers={
                    "Authorization": f"Bearer {a.json()['access_token']}"}).status_code == 401
                assert requests.post(f"{world.url}/oauth/token", timeout=10, data={
                    "grant_type": "refresh_token", "refresh_token": a.json()["refresh_token"],
                    "client_id": "app-1"}).status_code == 400


def test_8_a_revoked_card_stays_revoked_whatever_raced_it(world):
    """Point 8: a resume that raced a revocation cannot bring the card back: codes
    issued before the revocation no longer scan."""
    code = world.live_code(world.bob)
    assert world.op.post(f"Patient/{world.bob}/$revoke-card").status_code == 200
    world.db["_health_cards"].update_one({"patient": world.bob, "status": "revoked"},
                                         {"$set": {"status": "active"}})  # the racing resume
    dr = world.clinician("dr-li")
    r = dr.post("Patient/$scan-card", params(payload=code))
    assert r.status_code == 403 and details(r) == "card-revoked"


def test_2_a_binding_half_written_by_a_crash_does_not_block_the_member(world):
    """Point 2: a crash between the pair record and the binding slot leaves a pair
    with no binding: the next binding with consent goes through."""
    world.db["_card_bindings"].insert_one({"_id": f"pair|{world.alice}|{world.bob}", "kind": "pair",
                                           "at": datetime.now(UTC) - timedelta(minutes=5)})
    alice = world.as_patient(world.alice)
    assert alice.post(f"Patient/{world.alice}/$bind-family",
                      params(code=world.live_code(world.bob))).status_code == 201


def test_a_public_client_cannot_introspect(world):
    """RFC 7662 section 2.1: introspection needs an authenticated caller."""
    location = world.sign_in("alice", s256(VERIFIER), patient=world.alice)
    access = world.exchange(location, VERIFIER).json()["access_token"]
    r = requests.post(f"{world.url}/oauth/introspect", timeout=10,
                      data={"token": access, "client_id": "app-1"})
    assert r.status_code == 401 and "active" not in r.json()


def test_expired_sign_in_state_is_swept(world):
    """Anyone may start authorization requests: what they leave expires and goes."""
    from fhirserver.auth import sweep

    old = datetime.now(UTC) - timedelta(hours=1)
    world.db["_oauth_sessions"].insert_many([{"_id": f"old-{i}", "exp": old} for i in range(50)])
    world.db["_oauth_pending"].insert_many([{"_id": f"old-{i}", "exp": old} for i in range(50)])
    sweep._last.clear()
    requests.get(world.authorize_url(s256(VERIFIER)), timeout=10)
    assert world.db["_oauth_sessions"].count_documents({"_id": {"$regex": "^old-"}}) == 0
    assert world.db["_oauth_pending"].count_documents({"_id": {"$regex": "^old-"}}) == 0


def test_15_a_doubled_slash_is_no_way_around_cors():
    """Point 15: paths are judged as the router reads them."""
    from fhirserver.api.cors import shared

    assert not shared("//oauth/authorize") and not shared("/oauth//login")
    assert shared("//Patient")
