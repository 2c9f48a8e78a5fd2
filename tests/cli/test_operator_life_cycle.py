"""The life cycle of sign-in accounts and OAuth clients, as an operator runs it:
``fhirserver users list|disable|enable|remove`` and ``fhirserver clients
list|disable|enable|remove``, against a live server over real HTTP.

Disabling ends what is already held, not only what comes next: refresh tokens
(RFC 6749 section 6) are refused with ``invalid_grant``, access tokens with 401
``invalid_token`` (RFC 6750 section 3.1), a disabled client at the token endpoint
with ``invalid_client`` (RFC 6749 section 5.2)."""

from __future__ import annotations

import base64
import os
import time
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from click.testing import CliRunner, Result

from fhirserver.audit.chain import RECORDS, event_of
from fhirserver.auth import users
from fhirserver.auth.clients import Client, register
from fhirserver.auth.grants import s256
from fhirserver.auth.tokens import REVOCATION_REFRESH
from fhirserver.cli import main
from tests import factories as f
from tests.api.test_smart_launch import REDIRECT, _authorize_url, _exchange, browser_approves
from tests.conftest import http_as

PASSWORD = "correct horse battery"
APP_SCOPES = "patient/*.rs launch/patient openid fhirUser offline_access"
VERIFIER = "v" * 50


def run(live, *args: str, stdin: str | None = None) -> Result:
    """``fhirserver ARGS`` run by an operator against the live server's database."""
    url, app = live
    s = app.extensions["fhirserver"].settings
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FHIR_", "MONGODB_"))}
    env.update({"MONGODB_URI": s.mongodb_uri, "MONGODB_DB": s.mongodb_db,
                "FHIR_DATA_DIR": str(s.data_dir), "FHIR_BASE_URL": url, "COLUMNS": "250"})
    return CliRunner().invoke(main, list(args), env=env, input=stdin)


def patient_with_app(live) -> str:
    """A Patient with an Observation and a public app that may open it."""
    _, app = live
    op = http_as(live)
    pid = op.post("Patient", f.patient("Lifecycle")).json()["id"]
    op.post("Observation", f.observation(pid))
    register(app.extensions["fhirserver"].repo.db,
             Client("app-1", "public", APP_SCOPES, (REDIRECT,), name="Health Diary"))
    return pid


def signed_in(url: str, username: str, pid: str, scope: str = APP_SCOPES) -> dict:
    """The tokens of ``username`` for app-1, through the browser pages."""
    location = browser_approves(_authorize_url(url, s256(VERIFIER), scope=scope), username,
                                PASSWORD, patient=pid)
    code = parse_qs(urlsplit(location).query)["code"][0]
    tokens = _exchange(url, code, VERIFIER)
    assert tokens.status_code == 200, tokens.text
    return tokens.json()


def read(url: str, token: str, path: str) -> requests.Response:
    return requests.get(f"{url}/{path}", headers={"Authorization": f"Bearer {token}"}, timeout=10)


def refused_soon(url: str, token: str, path: str) -> requests.Response:
    """The answer to a token once revocations have reached every worker (at most
    REVOCATION_REFRESH seconds)."""
    deadline = time.monotonic() + REVOCATION_REFRESH + 1
    r = read(url, token, path)
    while r.status_code != 401 and time.monotonic() < deadline:
        time.sleep(0.2)
        r = read(url, token, path)
    return r


def refresh(url: str, token: str) -> requests.Response:
    return requests.post(f"{url}/oauth/token", timeout=10, data={
        "grant_type": "refresh_token", "refresh_token": token, "client_id": "app-1"})


def sign_in_page(url: str, username: str) -> requests.Response:
    import re

    b = requests.Session()
    page = b.get(_authorize_url(url, s256(VERIFIER)), timeout=10)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)[1]  # type: ignore[index]
    return b.post(f"{url}/oauth/login", timeout=10,
                  data={"csrf": csrf, "username": username, "password": PASSWORD})


def add_patient_user(live, username: str, pid: str) -> Result:
    return run(live, "users", "add", username, "--patient", pid, "--password-stdin",
               stdin=PASSWORD + "\n")


def test_users_add_refuses_a_patient_that_does_not_exist_or_was_deleted(live):
    """An account must point at a Patient of this server (Patient read, http.html#read:
    404 for an unknown id, 410 for a deleted one): exit 1, and no account is made."""
    _, app = live
    db = app.extensions["fhirserver"].repo.db
    unknown = add_patient_user(live, "nobody-here", "no-such-patient")
    assert unknown.exit_code == 1, unknown.output
    assert "no Patient/no-such-patient on this server" in unknown.output
    assert users.find(db, "nobody-here") is None

    op = http_as(live)
    pid = op.post("Patient", f.patient("Gone")).json()["id"]
    assert op.delete(f"Patient/{pid}").status_code in (200, 204)
    deleted = add_patient_user(live, "gone-user", pid)
    assert deleted.exit_code == 1 and "it was deleted" in deleted.output
    assert users.find(db, "gone-user") is None

    bad_id = add_patient_user(live, "odd-user", "not/an id")
    assert bad_id.exit_code == 1 and users.find(db, "odd-user") is None

    kept = op.post("Patient", f.patient("Kept")).json()["id"]
    ok = add_patient_user(live, "kept-user", kept)
    assert ok.exit_code == 0, ok.output
    assert users.find(db, "kept-user").fhir_user == f"Patient/{kept}"


def directory_entries(live, *refs: str) -> None:
    """Registration has entered these Practitioners and Organizations."""
    op = http_as(live)
    for ref in refs:
        rtype, rid = ref.split("/")
        body = {"resourceType": rtype, "id": rid, "active": True}
        assert op.put(ref, body).status_code in (200, 201)


def test_users_add_refuses_a_practitioner_the_directory_does_not_hold(live):
    """A clinician's fhirUser must read as a resource (SMART App Launch 2.x, scopes-and-
    launch-context.html#fhiruser): an unknown or deleted Practitioner or Organization
    is refused (exit 1), and no account is made."""
    _, app = live
    db = app.extensions["fhirserver"].repo.db
    unknown = run(live, "users", "add", "dr-new", "--practitioner", "Practitioner/dr-new",
                  "--organization", "Organization/h", "--password-stdin", stdin=PASSWORD + "\n")
    assert unknown.exit_code == 1 and "no Practitioner/dr-new on this server" in unknown.output
    directory_entries(live, "Practitioner/dr-new")
    no_org = run(live, "users", "add", "dr-new", "--practitioner", "Practitioner/dr-new",
                 "--organization", "Organization/h", "--password-stdin", stdin=PASSWORD + "\n")
    assert no_org.exit_code == 1 and "no Organization/h on this server" in no_org.output
    assert users.find(db, "dr-new") is None
    assert http_as(live).delete("Practitioner/dr-new").status_code == 200
    gone = run(live, "users", "add", "dr-new", "--practitioner", "Practitioner/dr-new",
               "--password-stdin", stdin=PASSWORD + "\n")
    assert gone.exit_code == 1 and "it was deleted" in gone.output


def test_users_add_links_the_clinician_to_their_organisation_by_a_practitionerrole(live):
    """practitionerrole.html: the role ties the Practitioner to the Organization the
    account acts for; made once, found again when the account is added again."""
    directory_entries(live, "Practitioner/dr-new", "Organization/h")
    op = http_as(live)
    for _ in range(2):
        dr = run(live, "users", "add", "dr-new", "--practitioner", "Practitioner/dr-new",
                 "--organization", "Organization/h", "--password-stdin", stdin=PASSWORD + "\n")
        assert dr.exit_code == 0, dr.output
        roles = op.get("PractitionerRole?practitioner=Practitioner/dr-new"
                       "&organization=Organization/h").json().get("entry", [])
        assert len(roles) == 1 and f"PractitionerRole/{roles[0]['resource']['id']}" in dr.output
    assert roles[0]["resource"]["meta"]["versionId"] == "1"
    # An existing role (registration's own) is used, not a second one made.
    directory_entries(live, "Practitioner/dr-two", "Organization/h")
    op.put("PractitionerRole/desk-made", {
        "resourceType": "PractitionerRole", "id": "desk-made", "active": True,
        "practitioner": {"reference": "Practitioner/dr-two"},
        "organization": {"reference": "Organization/h"}})
    two = run(live, "users", "add", "dr-two", "--practitioner", "Practitioner/dr-two",
              "--organization", "Organization/h", "--password-stdin", stdin=PASSWORD + "\n")
    assert two.exit_code == 0 and "PractitionerRole/desk-made" in two.output


def test_users_add_enforces_the_password_rules(live):
    """The rules the README states: at least 12 characters, not the user name."""
    op = http_as(live)
    pid = op.post("Patient", f.patient("Rules")).json()["id"]
    short = run(live, "users", "add", "rule-user", "--patient", pid, "--password-stdin",
                stdin="eleven char\n")
    assert short.exit_code == 2 and "at least 12 characters" in short.output
    named = run(live, "users", "add", "rule-user", "--patient", pid, "--password-stdin",
                stdin="my name is Rule-User\n")
    assert named.exit_code == 2 and "must not contain the user name" in named.output
    assert users.find(live[1].extensions["fhirserver"].repo.db, "rule-user") is None


def test_users_list_shows_every_account_and_no_password_hash(live):
    pid = patient_with_app(live)
    assert add_patient_user(live, "alice", pid).exit_code == 0
    directory_entries(live, "Practitioner/dr-li", "Organization/h")
    dr = run(live, "users", "add", "dr-li", "--practitioner", "Practitioner/dr-li",
             "--organization", "Organization/h", "--role", "registration", "--password-stdin",
             stdin="another long password\n")
    assert dr.exit_code == 0, dr.output
    assert run(live, "users", "disable", "dr-li").exit_code == 0
    listed = run(live, "users", "list")
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    alice = next(line for line in lines if "alice" in line)
    assert "patient" in alice and f"Patient/{pid}" in alice and "disabled" not in alice
    assert str(time.gmtime().tm_year) in alice  # created
    li = next(line for line in lines if "dr-li" in line)
    assert all(v in li for v in ("clinician", "Practitioner/dr-li", "Organization/h",
                                 "registration", "disabled"))
    assert "scrypt" not in listed.output and "2 users" in listed.output


def test_a_disabled_user_signs_in_no_more_and_their_tokens_end(live):
    """users disable: the sign-in page refuses the account, its live access token gets
    401 from the API and is inactive at introspection (RFC 7662), its refresh token
    gets invalid_grant. users enable: sign-in works again; old tokens stay revoked."""
    url, _ = live
    pid = patient_with_app(live)
    assert add_patient_user(live, "alice", pid).exit_code == 0
    tokens = signed_in(url, "alice", pid)
    assert read(url, tokens["access_token"], f"Patient/{pid}").status_code == 200
    # A second authorization without offline_access: an access token with no refresh token.
    other_device = signed_in(url, "alice", pid, scope="patient/*.rs launch/patient openid")
    assert "refresh_token" not in other_device

    disabled = run(live, "users", "disable", "alice")
    assert disabled.exit_code == 0, disabled.output
    assert "user alice disabled" in disabled.output and "1 refresh token family revoked" in disabled.output

    r = refused_soon(url, tokens["access_token"], f"Patient/{pid}")
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["WWW-Authenticate"]
    assert refused_soon(url, other_device["access_token"], "Observation").status_code == 401
    again = refresh(url, tokens["refresh_token"])
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    assert sign_in_page(url, "alice").status_code == 401

    enabled = run(live, "users", "enable", "alice")
    assert enabled.exit_code == 0 and "user alice enabled" in enabled.output
    assert read(url, tokens["access_token"], f"Patient/{pid}").status_code == 401
    assert read(url, other_device["access_token"], "Observation").status_code == 401
    fresh = signed_in(url, "alice", pid)
    assert read(url, fresh["access_token"], f"Patient/{pid}").status_code == 200


def test_a_code_issued_before_disable_gives_no_token(live):
    """An authorization code approved before the account was disabled is refused at
    the token endpoint (invalid_grant, RFC 6749 section 5.2)."""
    url, _ = live
    pid = patient_with_app(live)
    assert add_patient_user(live, "alice", pid).exit_code == 0
    location = browser_approves(_authorize_url(url, s256(VERIFIER)), "alice", PASSWORD, patient=pid)
    code = parse_qs(urlsplit(location).query)["code"][0]
    assert run(live, "users", "disable", "alice").exit_code == 0
    r = _exchange(url, code, VERIFIER)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    assert "disabled or removed" in r.json()["error_description"]


def test_users_remove_revokes_deletes_and_keeps_the_audit_records(live):
    """users remove: the account is gone and its tokens end, but the audit log keeps
    what it did (AuditEvent, and the chain still verifies)."""
    url, app = live
    db = app.extensions["fhirserver"].repo.db
    pid = patient_with_app(live)
    assert add_patient_user(live, "alice", pid).exit_code == 0
    tokens = signed_in(url, "alice", pid)
    assert read(url, tokens["access_token"], f"Patient/{pid}").status_code == 200
    def mine() -> list[str]:
        return sorted(d["_id"] for d in db[RECORDS].find({}) if f"Patient/{pid}" in
                      [a.get("who", {}).get("reference") for a in event_of(d)["agent"]])
    before = mine()
    assert before

    removed = run(live, "users", "remove", "alice")
    assert removed.exit_code == 0 and "user alice removed" in removed.output
    assert users.find(db, "alice") is None
    assert refused_soon(url, tokens["access_token"], f"Patient/{pid}").status_code == 401
    assert refresh(url, tokens["refresh_token"]).json()["error"] == "invalid_grant"
    assert mine()[:len(before)] == before
    verified = run(live, "audit", "verify")
    assert verified.exit_code == 0 and "audit log intact" in verified.output

    # The same name made again is a new account: the old tokens stay revoked.
    assert add_patient_user(live, "alice", pid).exit_code == 0
    assert read(url, tokens["access_token"], f"Patient/{pid}").status_code == 401


def basic(client_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


def client_credentials(url: str, client_id: str, secret: str) -> requests.Response:
    return requests.post(f"{url}/oauth/token", headers=basic(client_id, secret), timeout=10,
                         data={"grant_type": "client_credentials", "scope": "system/Patient.rs"})


def confidential(live) -> str:
    """clients add: a confidential client; its secret as printed once."""
    added = run(live, "clients", "add", "ehr-1", "--kind", "confidential", "--scopes",
                "system/*.rs", "--organization", "Organization/h")
    assert added.exit_code == 0, added.output
    return added.output.split("client secret (shown once): ")[1].strip()


def test_a_disabled_client_is_refused_invalid_client_and_its_tokens_end(live):
    """clients disable: client_credentials answers 401 invalid_client (RFC 6749
    section 5.2), the access token it held gets 401; clients enable: new tokens again,
    the old one stays revoked."""
    url, _ = live
    secret = confidential(live)
    issued = client_credentials(url, "ehr-1", secret)
    assert issued.status_code == 200, issued.text
    access = issued.json()["access_token"]
    assert read(url, access, "Patient").status_code == 200

    disabled = run(live, "clients", "disable", "ehr-1")
    assert disabled.exit_code == 0 and "client ehr-1 disabled" in disabled.output
    refused = client_credentials(url, "ehr-1", secret)
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"
    assert refused.json()["error_description"] == "This client has been disabled"
    assert refused_soon(url, access, "Patient").status_code == 401
    inactive = requests.post(f"{url}/oauth/introspect", timeout=10, data={"token": access},
                             headers=basic("ehr-1", secret))
    assert inactive.status_code == 401  # a disabled client may not introspect either

    assert run(live, "clients", "enable", "ehr-1").exit_code == 0
    again = client_credentials(url, "ehr-1", secret)
    assert again.status_code == 200
    assert read(url, again.json()["access_token"], "Patient").status_code == 200
    assert read(url, access, "Patient").status_code == 401


def test_disabling_an_app_ends_the_tokens_its_users_approved(live):
    """A public app disabled: its users' refresh and access tokens end, and it cannot
    start a new authorization (RFC 6749 section 4.1.2.1: the error is shown, not
    redirected)."""
    url, _ = live
    pid = patient_with_app(live)
    assert add_patient_user(live, "alice", pid).exit_code == 0
    tokens = signed_in(url, "alice", pid)
    assert run(live, "clients", "disable", "app-1").exit_code == 0
    assert refused_soon(url, tokens["access_token"], f"Patient/{pid}").status_code == 401
    r = refresh(url, tokens["refresh_token"])
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    page = requests.get(_authorize_url(url, s256(VERIFIER)), allow_redirects=False, timeout=10)
    assert page.status_code == 400 and "disabled" in page.text
    assert run(live, "clients", "enable", "app-1").exit_code == 0
    assert refresh(url, tokens["refresh_token"]).json()["error"] == "invalid_grant"


def test_clients_list_and_remove(live):
    url, _ = live
    secret = confidential(live)
    patient_with_app(live)
    listed = run(live, "clients", "list")
    assert listed.exit_code == 0, listed.output
    ehr = next(line for line in listed.output.splitlines() if "ehr-1" in line)
    assert all(v in ehr for v in ("confidential", "system/*.rs", "Organization/h"))
    app_line = next(line for line in listed.output.splitlines() if "app-1" in line)
    assert "public" in app_line and REDIRECT in app_line and "disabled" not in app_line
    # with the server's own web app (/app/), registered at start-up
    assert "fhirserver-app" in listed.output
    assert "scrypt" not in listed.output and "3 clients" in listed.output

    access = client_credentials(url, "ehr-1", secret).json()["access_token"]
    removed = run(live, "clients", "remove", "ehr-1")
    assert removed.exit_code == 0 and "client ehr-1 removed" in removed.output
    assert "ehr-1" not in run(live, "clients", "list").output
    gone = client_credentials(url, "ehr-1", secret)
    assert gone.status_code == 401 and gone.json()["error"] == "invalid_client"
    assert refused_soon(url, access, "Patient").status_code == 401
    assert run(live, "clients", "disable", "ehr-1").exit_code == 2


@pytest.mark.parametrize("command", ["disable", "enable", "remove"])
def test_unknown_names_are_usage_errors(live, command):
    missing = run(live, "users", command, "nobody")
    assert missing.exit_code == 2 and "no user 'nobody'" in missing.output
    assert run(live, "clients", command, "nothing").exit_code == 2


def test_the_web_apps_client_is_disabled_not_removed(live):
    """The built-in client of /app/ is registered again at every start, so removing it
    would silently bring it back enabled: the operator is told to disable it, which
    lasts across restarts (RFC 9700 section 2.1: clients are under the AS's control)."""
    refused = run(live, "clients", "remove", "fhirserver-app")
    assert refused.exit_code == 2 and "clients disable fhirserver-app" in refused.output
    assert "fhirserver-app" in run(live, "clients", "list").output
