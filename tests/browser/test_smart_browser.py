"""A browser SMART app end to end: the npm ``fhirclient`` library in headless
Chromium, served from its own origin, makes a standalone launch against the live
server (SMART App Launch 2.x, app-launch.html: discovery, authorization code with
PKCE, token exchange, FHIR calls), every call of the app being a cross-origin
request that only works when the server speaks CORS (Fetch standard, #http-cors-protocol).

A person's part is done in the same browser: the server's login page (user name,
password, "Sign in") and approval page (the patient, "Allow" or "Deny").
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from fhirserver.auth import users
from fhirserver.auth.clients import Client, register
from tests import factories as f

SCOPES = "launch/patient patient/*.rs openid fhirUser"  # as app/launch.html asks
PASSWORD = "correct horse battery"
WAIT = 30  # seconds for any one step


def setup(app, app_origin: str) -> str:
    """A patient with two Observations (and someone else's), their sign-in, the app."""
    st = app.extensions["fhirserver"]
    client = app.test_client()

    def create(resource: dict) -> str:
        r = client.post(resource["resourceType"], json=resource, content_type="application/fhir+json")
        assert r.status_code == 201, r.get_json()
        return str(r.get_json()["id"])

    pid = create(f.patient("Browser", "Bella"))
    create(f.observation(pid, code="15074-8", value=6.3))
    create(f.observation(pid, code="2093-3", value=4.9))
    create(f.observation(create(f.patient("Other")), code="718-7", value=13.5))
    users.add(st.repo.db, users.User("bella", "patient", f"Patient/{pid}"), PASSWORD)
    register(st.repo.db, Client("browser-app", "public", SCOPES, (f"{app_origin}/index.html",),
                                name="Lab Results Viewer"))
    return pid


def diagnostics(driver) -> str:  # type: ignore[no-untyped-def]
    logs = "\n".join(entry["message"] for entry in driver.get_log("browser"))
    return f"at {driver.current_url}\n{driver.page_source[:2000]}\nconsole:\n{logs}"


def sign_in_and_decide(driver, url: str, app_origin: str, pid: str, decision: str) -> None:  # type: ignore[no-untyped-def]
    """Open the app, sign in on the server's page, then Allow or Deny; waits until the
    app's page reports success or an error."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(driver, WAIT)
    driver.get(f"{app_origin}/launch.html?iss={url}")
    try:
        wait.until(ec.presence_of_element_located((By.NAME, "username")))
    except Exception as exc:
        raise AssertionError(f"no login page: {diagnostics(driver)}") from exc
    assert driver.current_url.startswith(f"{url}/oauth/authorize?")
    query = parse_qs(urlsplit(driver.current_url).query)
    assert query["aud"] == [url] and query["code_challenge_method"] == ["S256"]
    driver.find_element(By.NAME, "username").send_keys("bella")
    driver.find_element(By.NAME, "password").send_keys(PASSWORD)
    driver.find_element(By.XPATH, "//button[normalize-space()='Sign in']").click()

    try:
        choice = wait.until(ec.element_to_be_clickable(
            (By.CSS_SELECTOR, f"input[type=radio][name=patient][value='{pid}']")))
    except Exception as exc:
        raise AssertionError(f"no approval page: {diagnostics(driver)}") from exc
    choice.click()
    driver.find_element(By.CSS_SELECTOR, f"button[name=decision][value={decision}]").click()

    try:
        wait.until(lambda d: d.current_url.startswith(app_origin) and d.find_element(
            By.ID, "status").get_attribute("data-state") in ("done", "error"))
    except Exception as exc:
        raise AssertionError(f"the app did not finish: {diagnostics(driver)}") from exc


def test_fhirclient_standalone_launch_reads_the_patients_observations(live, browser, app_origin):
    from selenium.webdriver.common.by import By

    url, app = live
    pid = setup(app, app_origin)
    sign_in_and_decide(browser, url, app_origin, pid, "approve")

    status = browser.find_element(By.ID, "status")
    assert status.get_attribute("data-state") == "done", f"{status.text}\n{diagnostics(browser)}"
    assert browser.find_element(By.ID, "patient").text == pid
    rows = sorted((row.find_element(By.CLASS_NAME, "code").text,
                   row.find_element(By.CLASS_NAME, "value").text)
                  for row in browser.find_elements(By.CSS_SELECTOR, "tr.observation"))
    assert rows == [("15074-8", "6.3 mmol/l"), ("2093-3", "4.9 mmol/l")]
    # fhirclient removed the code from the address bar once it had exchanged it.
    assert "code=" not in urlsplit(browser.current_url).query


def test_deny_returns_access_denied_to_the_app(live, browser, app_origin):
    from selenium.webdriver.common.by import By

    url, app = live
    pid = setup(app, app_origin)
    sign_in_and_decide(browser, url, app_origin, pid, "deny")

    assert browser.current_url.startswith(f"{app_origin}/index.html?")
    assert parse_qs(urlsplit(browser.current_url).query)["error"] == ["access_denied"]
    status = browser.find_element(By.ID, "status")
    assert status.get_attribute("data-state") == "error"
    assert status.text.startswith("access_denied"), status.text
    assert not browser.find_elements(By.CSS_SELECTOR, "tr.observation")
