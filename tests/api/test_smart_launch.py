"""SMART App Launch end to end over real HTTP, driven by the SMART Python client
``fhirclient`` (authorization code + PKCE), with a scripted browser for the login and
approval pages (SMART App Launch 2.x app-launch.html; RFC 6749; RFC 7636; OIDC)."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import requests
from fhirclient import client as smart_client
from joserfc import jwt
from joserfc.jwk import KeySet

from fhirserver.auth import throttle, users
from fhirserver.auth.clients import Client, register
from fhirserver.auth.grants import s256
from tests import factories as f


REDIRECT = "http://app.example/callback"
APP_SCOPES = "patient/*.rs user/*.rs launch launch/patient openid fhirUser offline_access"


def setup(app) -> tuple[str, str]:
    """A patient with an Observation, a user for them, and a public app."""
    st = app.extensions["fhirserver"]
    client = app.test_client()
    pid = client.post("/Patient", json=f.patient("Smart"), content_type="application/fhir+json").get_json()["id"]
    client.post("/Observation", json=f.observation(pid), content_type="application/fhir+json")
    users.add(st.repo.db, users.User("alice", "patient", f"Patient/{pid}"), "correct horse battery")
    register(st.repo.db, Client("app-1", "public", APP_SCOPES, (REDIRECT,), name="Health Diary"))
    return pid, "alice"


def browser_approves(authorize_url: str, username: str, password: str, patient: str | None = None,
                     decision: str = "approve") -> str:
    """What a person does in the browser: sign in, read the scopes, allow. Returns the
    Location the server redirects to."""
    b = requests.Session()
    page = b.get(authorize_url, timeout=10)
    assert page.status_code == 200 and "Sign in" in page.text, page.text[:500]
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)[1]  # type: ignore[index]
    base = authorize_url.split("/oauth/authorize")[0]
    page = b.post(f"{base}/oauth/login", data={"csrf": csrf, "username": username, "password": password},
                  timeout=10)
    assert page.status_code == 200 and "Allow access?" in page.text, page.text[:500]
    assert "Read and search your records of every kind" in page.text  # scopes in plain words
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)[1]  # type: ignore[index]
    shown = re.search(r'name="request" value="([^"]+)"', page.text)[1]  # type: ignore[index]
    form = {"csrf": csrf, "request": shown, "decision": decision}
    if patient:
        form["patient"] = patient
    done = b.post(f"{base}/oauth/approve", data=form, allow_redirects=False, timeout=10)
    assert done.status_code == 302
    return done.headers["Location"]


def test_standalone_patient_launch_with_fhirclient_pkce(live):
    url, app = live
    pid, username = setup(app)
    smart = smart_client.FHIRClient(settings={
        "app_id": "app-1", "api_base": url, "redirect_uri": REDIRECT, "scope": APP_SCOPES})
    location = browser_approves(smart.authorize_url, username, "correct horse battery", patient=pid)
    assert location.startswith(REDIRECT)
    smart.handle_callback(location)
    assert smart.patient_id == pid
    patient = smart.server.request_json(f"Patient/{pid}")
    assert patient["id"] == pid
    obs = smart.server.request_json("Observation")
    assert obs["total"] == 1

    assert smart.server.auth.refresh_token  # offline_access was granted
    # The patient's token reaches only their own compartment.
    other = app.test_client().post("/Patient", json=f.patient("Else"),
                                   content_type="application/fhir+json").get_json()["id"]
    r = requests.get(f"{url}/Patient/{other}", timeout=10,
                     headers={"Authorization": f"Bearer {smart.server.auth.access_token}"})
    assert r.status_code == 404


def _authorize_url(url: str, challenge: str, **extra: str) -> str:
    from urllib.parse import urlencode

    params = {"response_type": "code", "client_id": "app-1", "redirect_uri": REDIRECT,
              "scope": "patient/*.rs launch/patient openid fhirUser offline_access",
              "state": "st-1", "aud": url, "code_challenge": challenge, "code_challenge_method": "S256"}
    params.update(extra)
    return f"{url}/oauth/authorize?{urlencode(params)}"


def _exchange(url: str, code: str, verifier: str) -> requests.Response:
    return requests.post(f"{url}/oauth/token", timeout=10, data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
        "client_id": "app-1", "code_verifier": verifier})


def test_pkce_mismatch_code_reuse_refresh_and_id_token(live):
    url, app = live
    pid, username = setup(app)
    verifier = "v" * 50
    location = browser_approves(_authorize_url(url, s256(verifier)), username,
                                "correct horse battery", patient=pid)
    code = parse_qs(urlsplit(location).query)["code"][0]
    wrong = _exchange(url, code, "w" * 50)
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    # The code was consumed by the failed attempt: single use.
    assert _exchange(url, code, verifier).json()["error"] == "invalid_grant"

    location = browser_approves(_authorize_url(url, s256(verifier)), username,
                                "correct horse battery", patient=pid)
    code = parse_qs(urlsplit(location).query)["code"][0]
    tokens = _exchange(url, code, verifier).json()
    assert tokens["patient"] == pid and "refresh_token" in tokens
    keys = KeySet.import_key_set(requests.get(f"{url}/oauth/jwks", timeout=10).json())
    claims = jwt.decode(tokens["id_token"], keys, algorithms=["RS256"]).claims
    assert claims["fhirUser"] == f"{url}/Patient/{pid}" and claims["aud"] == "app-1"
    fresh = requests.post(f"{url}/oauth/token", timeout=10, data={
        "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "client_id": "app-1"})
    assert fresh.status_code == 200 and fresh.json()["access_token"] != tokens["access_token"]
    reused = requests.post(f"{url}/oauth/token", timeout=10, data={
        "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "client_id": "app-1"})
    assert reused.json()["error"] == "invalid_grant"  # refresh tokens rotate


def test_authorize_request_errors(live):
    url, app = live
    setup(app)
    bad_redirect = requests.get(_authorize_url(url, s256("v" * 50), redirect_uri="http://evil.example/cb"),
                                allow_redirects=False, timeout=10)
    assert bad_redirect.status_code == 400 and "Location" not in bad_redirect.headers
    plain = requests.get(_authorize_url(url, "v" * 50, code_challenge_method="plain"),
                         allow_redirects=False, timeout=10)
    assert plain.status_code == 302
    assert parse_qs(urlsplit(plain.headers["Location"]).query)["error"] == ["invalid_request"]
    wrong_aud = requests.get(_authorize_url(url, s256("v" * 50), aud="https://other.example"),
                             allow_redirects=False, timeout=10)
    assert parse_qs(urlsplit(wrong_aud.headers["Location"]).query)["error"] == ["invalid_request"]


def test_login_throttle_and_csrf(live):
    """Failed sign-ins slow the (user, address) pair down with growing delays; the
    form needs its CSRF token (RFC 6749 section 10.12)."""
    url, app = live
    setup(app)
    from datetime import UTC, datetime

    frozen = datetime.now(UTC)
    app.extensions["fhirserver"].clock = lambda: frozen  # the delays do not run out meanwhile
    b = requests.Session()
    page = b.get(_authorize_url(url, s256("v" * 50)), timeout=10)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)[1]  # type: ignore[index]
    no_csrf = b.post(f"{url}/oauth/login", data={"username": "alice", "password": "x"}, timeout=10)
    assert no_csrf.status_code == 400
    for _ in range(throttle.FREE_FAILURES):
        r = b.post(f"{url}/oauth/login", data={"csrf": csrf, "username": "alice", "password": "wrong"},
                   timeout=10)
        assert r.status_code == 401
    assert "Wait 1 seconds" in r.text
    right = b.post(f"{url}/oauth/login", data={"csrf": csrf, "username": "alice",
                                               "password": "correct horse battery"}, timeout=10)
    assert right.status_code == 429 and right.headers["Retry-After"] == "1"  # even the right one waits


def test_clinician_standalone_picks_among_treated_patients_and_ehr_launch(live):
    url, app = live
    pid, _ = setup(app)
    st = app.extensions["fhirserver"]
    other = app.test_client().post("/Patient", json=f.patient("Untreated"),
                                   content_type="application/fhir+json").get_json()["id"]
    users.add(st.repo.db, users.User("dr-li", "practitioner", "Practitioner/dr-li", "Organization/h"),
              "another long password")
    from datetime import UTC, datetime, timedelta

    from fhirserver.auth.access import record_care

    record_care(st.repo.db, "Practitioner/dr-li", pid, datetime.now(UTC) + timedelta(hours=1), "card-scan")
    b = requests.Session()
    page = b.get(_authorize_url(url, s256("v" * 50)), timeout=10)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)[1]  # type: ignore[index]
    page = b.post(f"{url}/oauth/login", data={"csrf": csrf, "username": "dr-li",
                                              "password": "another long password"}, timeout=10)
    assert f'value="{pid}"' in page.text and f'value="{other}"' not in page.text

    # EHR launch: the EHR names the patient, the app passes `launch`.
    ehr = app.test_client()
    launch = ehr.post("/oauth/launch", data={"patient": pid, "client_id": "app-1",
                                             "user": "Practitioner/dr-li"}).get_json()["launch"]
    location = browser_approves(_authorize_url(url, s256("v" * 50), launch=launch,
                                               scope="launch patient/*.rs openid fhirUser"),
                                "dr-li", "another long password")
    code = parse_qs(urlsplit(location).query)["code"][0]
    tokens = _exchange(url, code, "v" * 50).json()
    assert tokens["patient"] == pid
    r = requests.get(f"{url}/Patient/{pid}", headers={"Authorization": f"Bearer {tokens['access_token']}"},
                     timeout=10)
    assert r.status_code == 200
