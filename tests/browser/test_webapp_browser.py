"""The web app at /app/ in a real browser (headless Chromium, selenium), against the
live server, with the server's own login and approval pages: a SMART standalone
launch with PKCE (SMART App Launch 2.x, app-launch.html#launch-app-standalone-launch)
for a clinician and for a patient, then what each does in the app.

Clinician: sign in, scan a health card from a photo of its QR code (the server's
``$card-qr`` payload rendered to PNG with segno), open the history and see a
laboratory value's trend with one point per Observation of that code (FHIR R4
observation.html: Observation.effective[x], valueQuantity, referenceRange).

Patient: sign in, a clinician reads the record, and the access appears in the
timeline of "who saw my record" (AuditEvent, auditevent.html), an emergency access
flagged with its reason (purposeOfEvent ETREAT).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest

from fhirserver.api.webapp import MODULES, VENDOR
from fhirserver.auth import users
from tests import factories as f
from tests.browser.conftest import unavailable
from tests.browser.test_smart_browser import diagnostics
from tests.conftest import Http, http_as

PASSWORD = "correct horse battery"
WAIT = 30
#: A family name that runs script if the app ever inserts data as HTML.
HOSTILE = '<img src=x onerror="window.pwned=1">Zhao'
LDL = "2089-1"  # LDL cholesterol
LDL_VALUES = [(f"2024-0{m}-15", v) for m, v in ((1, 3.1), (3, 3.6), (5, 4.2), (7, 3.9), (9, 3.4))]


@pytest.fixture
def webapp(browser_ready: None) -> None:
    for name, (rel, _) in VENDOR.items():
        if not (MODULES / rel).is_file():
            unavailable(f"the web app's library {name} is missing ({MODULES / rel})")


def ldl(pid: str, day: str, value: float) -> dict:
    return f.observation(pid, code=LDL, value=value, effectiveDateTime=f"{day}T08:00:00Z",
                         category=[{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                                "code": "laboratory"}]}],
                         referenceRange=[{"low": {"value": 0.5, "unit": "mmol/l"},
                                          "high": {"value": 3.4, "unit": "mmol/l"}}])


def seed(app) -> str:  # type: ignore[no-untyped-def]
    """A patient with a health card, five LDL results, another test and a report; a
    clinician (with emergency access) and the patient's own account."""
    client = app.test_client()

    def create(resource: dict) -> str:
        r = client.post(resource["resourceType"], json=resource, content_type="application/fhir+json")
        assert r.status_code == 201, r.get_json()
        return str(r.get_json()["id"])

    pid = create(f.patient("Wang", "Fang", gender="female", birthDate="1980-02-03"))
    obs = [create(ldl(pid, day, value)) for day, value in LDL_VALUES]
    create(f.observation(pid, code="718-7", value=13.5, effectiveDateTime="2024-05-15T08:00:00Z"))
    for day in range(1, 20):  # older results, beyond the first page of 20
        create(f.observation(pid, code="718-7", value=13.0 + day / 10,
                             effectiveDateTime=f"2023-01-{day:02d}T08:00:00Z"))
    create({"resourceType": "DiagnosticReport", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "57698-3"}], "text": "Lipid panel"},
            "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": "2024-09-15T08:00:00Z",
            "result": [{"reference": f"Observation/{obs[-1]}"}]})
    r = client.post(f"Patient/{pid}/$issue-card")
    assert r.status_code == 201, r.get_json()
    db = app.extensions["fhirserver"].repo.db
    users.add(db, users.User("dr-li", "practitioner", "Practitioner/dr-li", "Organization/clinic-1",
                             roles=(users.EMERGENCY_ACCESS,)), PASSWORD)
    users.add(db, users.User("fang", "patient", f"Patient/{pid}"), PASSWORD)
    return pid


def bind_member(app, holder: str) -> str:  # type: ignore[no-untyped-def]
    """A family member whose name is markup, bound to ``holder``'s card."""
    client = app.test_client()
    r = client.post("Patient", json=f.patient(HOSTILE, "Xiao", birthDate="1950-01-01"),
                    content_type="application/fhir+json")
    member = str(r.get_json()["id"])
    number = next(p["valueIdentifier"]["value"] for p in client.post(f"Patient/{member}/$issue-card").get_json()["parameter"]
                  if p["name"] == "number")
    r = client.post(f"Patient/{holder}/$bind-family?card={number}&relationship=MTH")
    assert r.status_code == 201, r.get_json()
    return member


def sign_in(driver, url: str, button: str, username: str, patient: str | None = None) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(driver, WAIT)
    driver.get(f"{url}/app/")
    try:
        wait.until(ec.element_to_be_clickable((By.ID, button))).click()
        wait.until(ec.presence_of_element_located((By.NAME, "username")))
    except Exception as exc:
        raise AssertionError(f"no login page: {diagnostics(driver)}") from exc
    query = dict(p.split("=", 1) for p in urlsplit(driver.current_url).query.split("&"))
    assert query["client_id"] == "fhirserver-app" and query["code_challenge_method"] == "S256"
    driver.find_element(By.NAME, "username").send_keys(username)
    driver.find_element(By.NAME, "password").send_keys(PASSWORD)
    driver.find_element(By.XPATH, "//button[normalize-space()='Sign in']").click()
    try:
        if patient is not None:
            wait.until(ec.element_to_be_clickable(
                (By.CSS_SELECTOR, f"input[type=radio][name=patient][value='{patient}']"))).click()
        wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "button[name=decision][value=approve]"))).click()
        wait.until(lambda d: d.current_url.startswith(f"{url}/app/") and d.find_element(
            By.ID, "status").get_attribute("data-state") in ("ready", "error"))
    except Exception as exc:
        raise AssertionError(f"sign-in did not finish: {diagnostics(driver)}") from exc
    status = driver.find_element(By.ID, "status")
    assert status.get_attribute("data-state") == "ready", f"{status.text}\n{diagnostics(driver)}"
    # The code is gone from the address bar, and no token is in it.
    assert "code=" not in driver.current_url and "token" not in driver.current_url


def test_clinician_scans_a_card_photo_and_sees_the_lab_trend(live, browser, webapp, tmp_path: Path):
    import segno
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    url, app = live
    pid = seed(app)
    operator = http_as(live)
    r = operator.get(f"Patient/{pid}/$card-qr", headers={"Accept": "application/fhir+json"})
    assert r.status_code == 200, r.text
    payload = next(p["valueString"] for p in r.json()["parameter"] if p["name"] == "payload")
    photo = tmp_path / "card.png"
    segno.make(payload, error="m").save(str(photo), scale=8, border=4)

    sign_in(browser, url, "signin-clinician", "dr-li")
    wait = WebDriverWait(browser, WAIT)
    # Not yet treating anyone: nothing but a card scan finds the patient.
    wait.until(lambda d: "open-patient" not in d.page_source and d.find_element(By.ID, "my-patients").text)
    browser.find_element(By.ID, "card-photo").send_keys(str(photo))
    try:
        name = wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, "#history .patient-name")))
        button = wait.until(ec.element_to_be_clickable(
            (By.CSS_SELECTOR, f"button.trend-button[data-code='http://loinc.org|{LDL}']")))
    except Exception as exc:
        raise AssertionError(f"no history after the scan: {diagnostics(browser)}") from exc
    assert name.text == "Fang Wang"
    button.click()
    canvas = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#trend canvas[data-points]")))
    assert canvas.get_attribute("data-points") == str(len(LDL_VALUES))
    assert canvas.get_attribute("data-range") == "yes"
    rows = browser.find_elements(By.CSS_SELECTOR, "#trend .trend-table tbody tr")
    assert [row.find_elements(By.TAG_NAME, "td")[1].text for row in rows] == \
        [f"{v} mmol/l" for _, v in LDL_VALUES]
    # The report with its result, resolved from the included Observation.
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".report .report-results tbody tr"))
    assert "Lipid panel" in browser.find_element(By.CSS_SELECTOR, ".report h3").text

    # All results, newest first, paged as the server pages (the Bundle's next link).
    def rows() -> list[str]:  # read at once: the list is replaced as pages load
        return browser.execute_script(
            "return [...document.querySelectorAll('.observations .observation-table tbody tr')]"
            ".map((r) => r.cells[0].textContent)")

    wait.until(lambda d: len(rows()) == 20)
    browser.find_element(By.CSS_SELECTOR, ".observations button.next").click()
    wait.until(lambda d: len(rows()) == 25 - 20)
    assert all("2023" in r for r in rows())
    assert not browser.find_element(By.CSS_SELECTOR, ".observations button.next").is_displayed()
    # Filtered by date and category: the laboratory results from June 2024 on.
    browser.execute_script("document.getElementById('filter-from').value = '2024-06-01'")
    Select(browser.find_element(By.ID, "filter-category")).select_by_value("laboratory")
    browser.find_element(By.CSS_SELECTOR, "form.filters button[type=submit]").click()
    wait.until(lambda d: len(rows()) == 2)
    assert [v for d, v in LDL_VALUES if d >= "2024-06"] == [3.9, 3.4]

    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, "\n".join(e["message"] for e in errors)


def y4m(payload: str, path: Path, scale: int = 8, border: int = 4, frames: int = 10) -> Path:
    """A video of the QR code for Chromium's fake camera (a YUV4MPEG2 file, 4:2:0:
    the luma plane is the code, black on white; chroma neutral)."""
    import segno

    matrix = [list(row) for row in segno.make(payload, error="m").matrix]
    side = (len(matrix) + 2 * border) * scale
    side += side % 2
    luma = bytearray([235]) * (side * side)
    for y, row in enumerate(matrix):
        for x, dark in enumerate(row):
            if dark:
                for dy in range(scale):
                    start = ((y + border) * scale + dy) * side + (x + border) * scale
                    luma[start:start + scale] = bytes([16]) * scale
    chroma = bytes([128]) * ((side // 2) * (side // 2) * 2)
    with path.open("wb") as out:
        out.write(f"YUV4MPEG2 W{side} H{side} F10:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            out.write(b"FRAME\n" + bytes(luma) + chroma)
    return path


@pytest.fixture
def browser_with(browser_ready: None, tmp_path: Path):  # type: ignore[no-untyped-def]
    """Chromium with more flags (a fake camera, another language), and preferences."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from tests.browser.conftest import CHROMEDRIVER, CHROMIUM, FLAGS

    def start(*flags: str, prefs: dict | None = None):  # type: ignore[no-untyped-def]
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in (*FLAGS, f"--user-data-dir={tmp_path / f'profile-{len(started)}'}", *flags):
            options.add_argument(flag)
        if prefs:
            options.add_experimental_option("prefs", prefs)
        started.append(webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options))
        return started[-1]

    started: list = []
    yield start
    for driver in started:
        driver.quit()


def test_clinician_scans_a_card_with_the_camera(live, browser_with, webapp, tmp_path: Path):
    """The camera (getUserMedia, Media Capture and Streams) films the card's QR code;
    jsQR reads it from the frames and the app opens the patient."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    url, app = live
    pid = seed(app)
    r = http_as(live).get(f"Patient/{pid}/$card-qr", headers={"Accept": "application/fhir+json"})
    payload = next(p["valueString"] for p in r.json()["parameter"] if p["name"] == "payload")
    # The camera films a file; the permission is granted as a person would.
    browser = browser_with("--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                           f"--use-file-for-fake-video-capture={y4m(payload, tmp_path / 'card.y4m')}")
    sign_in(browser, url, "signin-clinician", "dr-li")
    wait = WebDriverWait(browser, WAIT)
    wait.until(ec.element_to_be_clickable((By.ID, "scan-camera"))).click()
    try:
        name = wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, "#history .patient-name")))
    except Exception as exc:
        camera = browser.execute_script(
            "const v = document.getElementById('camera'); return [v.hidden, v.readyState, v.videoWidth, "
            "document.getElementById('scan-status').textContent]")
        raise AssertionError(f"the camera scan found no patient (camera: {camera}): "
                             f"{diagnostics(browser)}") from exc
    assert name.text == "Fang Wang"
    assert browser.find_element(By.ID, "camera").get_attribute("hidden") is not None  # camera off again


def test_patient_sees_a_clinicians_access_in_the_timeline(live, browser, webapp):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    url, app = live
    pid = seed(app)
    member = bind_member(app, pid)
    sign_in(browser, url, "signin-patient", "fang", patient=pid)
    wait = WebDriverWait(browser, WAIT)
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#panel-record .patient-name").text == "Fang Wang")

    # A clinician of another app breaks the glass and reads the record.
    clinician = http_as(live, "user", "user/*.rs", subject="dr-li", fhirUser="Practitioner/dr-li",
                        organization="Organization/clinic-1")
    r = clinician.post(f"Patient/{pid}/$break-glass", {"resourceType": "Parameters", "parameter": [
        {"name": "reason", "valueString": "unconscious in the emergency room"}]})
    assert r.status_code == 200, r.text
    assert clinician.get(f"Patient/{pid}").status_code == 200

    browser.find_element(By.CSS_SELECTOR, "#patient-tabs [data-tab=audit]").click()
    try:
        wait.until(lambda d: d.find_elements(
            By.CSS_SELECTOR, "#audit-box .event[data-who='Practitioner/dr-li']"))
    except Exception as exc:
        raise AssertionError(f"no access in the timeline: {diagnostics(browser)}") from exc
    events = browser.find_elements(By.CSS_SELECTOR, "#audit-box .event[data-who='Practitioner/dr-li']")
    flagged = [e for e in events if "emergency" in (e.get_attribute("class") or "")]
    assert flagged and all("unconscious in the emergency room" in e.text for e in flagged), \
        [e.text for e in events]
    assert any("Organization/clinic-1" in e.text for e in events)

    # On a phone the page is one column: nothing wider than the screen.
    browser.set_window_size(390, 844)
    assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    browser.set_window_size(1024, 768)

    # My health card's QR code, with its expiry, fetched again before it expires.
    st = app.extensions["fhirserver"]
    st.settings = st.settings.with_(card_code_seconds=8)
    browser.find_element(By.CSS_SELECTOR, "#patient-tabs [data-tab=card]").click()
    qr = wait.until(lambda d: d.find_element(By.ID, "card-qr"))
    first = qr.get_attribute("data-payload"), qr.get_attribute("data-expires")
    assert first[0].startswith("FHC") and qr.get_attribute("src").startswith("data:image/png")
    assert "Expires in" in browser.find_element(By.ID, "card-expires").text
    fresh = wait.until(lambda d: d.execute_script(
        "const q = document.getElementById('card-qr');"
        f"return q && q.dataset.expires !== {first[1]!r} ? [q.dataset.payload, q.dataset.expires] : null"))
    assert fresh[0] != first[0] and fresh[1] > first[1]

    # Sharing choices are saved with $consent.
    browser.find_element(By.CSS_SELECTOR, "#patient-tabs [data-tab=consent]").click()
    wait.until(lambda d: d.find_element(By.ID, "consent-status").get_attribute("data-state") == "ok")
    browser.find_element(By.ID, "consent-optOut").click()
    browser.find_element(By.CSS_SELECTOR, "#consent-form button[type=submit]").click()
    wait.until(lambda d: d.find_element(By.ID, "consent-status").text == "Saved")
    consent = http_as(live).get(f"Patient/{pid}/$consent").json()
    assert {p["name"]: p["valueBoolean"] for p in consent["parameter"]}["optOut"] is True

    # The family member's record, by the switch; their name, markup included, is text.
    whose = Select(browser.find_element(By.ID, "whose"))
    assert [o.get_attribute("value") for o in whose.options] == [pid, member]
    browser.find_element(By.CSS_SELECTOR, "#patient-tabs [data-tab=record]").click()
    whose.select_by_value(member)
    name = wait.until(lambda d: next((e for e in d.find_elements(By.CSS_SELECTOR, "#panel-record .patient-name")
                                      if "Xiao" in e.text), None))
    assert name.text == f"Xiao {HOSTILE}"
    assert not browser.find_elements(By.CSS_SELECTOR, "#panel-record .patient-name img, #whose img")
    assert browser.execute_script("return window.pwned") is None

    # Unbinding the member: the switch has only me again.
    browser.find_element(By.CSS_SELECTOR, "#patient-tabs [data-tab=family]").click()
    unbind = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#family-box table button"))
    unbind.click()
    wait.until(lambda d: d.execute_script("return document.getElementById('whose').options.length") == 1)
    assert http_as(live).get(f"Patient/{pid}/$family").json().get("total") == 0

    # Signing out revokes the token (RFC 7009) and forgets it.
    token = browser.execute_script(
        "const s = JSON.parse(sessionStorage.getItem(JSON.parse(sessionStorage.getItem('SMART_KEY'))));"
        "return s.tokenResponse.access_token;")
    assert Http(url, token).get(f"Patient/{pid}").status_code == 200
    browser.find_element(By.ID, "signout").click()
    wait.until(lambda d: d.execute_script(  # the page reloads: no element kept across
        "const b = document.getElementById('signin-patient'); return b !== null && !b.closest('[hidden]')"))
    assert browser.execute_script("return sessionStorage.length") == 0
    assert Http(url, token).get(f"Patient/{pid}").status_code == 401


def test_ehr_launch_opens_the_app_on_the_ehrs_patient(live, browser, webapp):
    """SMART App Launch 2.x app-launch.html#launch-app-ehr-launch: the EHR (here the
    clinician's token) makes a launch for this app, the app opens with ``launch`` and
    ``iss`` and, once the clinician approves, on that patient."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    url, app = live
    pid = seed(app)
    clinician = http_as(live, "user", "user/*.rs", subject="dr-li", fhirUser="Practitioner/dr-li",
                        organization="Organization/clinic-1")
    payload = next(p["valueString"] for p in http_as(live).get(
        f"Patient/{pid}/$card-qr", headers={"Accept": "application/fhir+json"}).json()["parameter"]
        if p["name"] == "payload")
    assert clinician.post("Patient/$scan-card", {"resourceType": "Parameters", "parameter": [
        {"name": "payload", "valueString": payload}]}).status_code == 200
    r = clinician.post("oauth/launch", {"patient": pid, "client_id": "fhirserver-app"},
                       headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    launch = r.json()["launch"]

    wait = WebDriverWait(browser, WAIT)
    browser.get(f"{url}/app/?launch={launch}&iss={url}")
    wait.until(ec.presence_of_element_located((By.NAME, "username"))).send_keys("dr-li")
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.XPATH, "//button[normalize-space()='Sign in']").click()
    wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "button[name=decision][value=approve]"))).click()
    try:
        name = wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, "#history .patient-name")))
    except Exception as exc:
        raise AssertionError(f"the app did not open on the patient: {diagnostics(browser)}") from exc
    assert name.text == "Fang Wang"
    assert "launch=" not in browser.current_url and "code=" not in browser.current_url


def test_a_launch_naming_another_server_is_refused(live, browser, webapp):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, _ = live
    browser.get(f"{url}/app/?launch=abc&iss=http://evil.example/fhir")
    status = WebDriverWait(browser, WAIT).until(
        lambda d: d.find_element(By.CSS_SELECTOR, "#status[data-state=error]"))
    assert "only with the server" in status.text and browser.current_url.startswith(url)


def test_the_app_speaks_chinese_to_a_chinese_browser(live, browser_with, webapp):
    """The browser's language (navigator.languages) picks Chinese or English."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    url, _ = live
    browser = browser_with("--lang=zh-CN", prefs={"intl.accept_languages": "zh-CN,zh"})
    browser.get(f"{url}/app/")
    button = WebDriverWait(browser, WAIT).until(ec.visibility_of_element_located((By.ID, "signin-clinician")))
    assert button.text == "医生登录"
    assert browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == "zh-CN"


def test_family_binding_by_card_number_is_accepted_by_the_member(live, browser, webapp):
    """Binding needs the member's consent: a request by card number (202) that the
    member accepts in their own app; then the holder switches to the member's record."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    url, app = live
    pid = seed(app)
    client = app.test_client()
    member = str(client.post("Patient", json=f.patient("Wang", "Lan", birthDate="1955-03-04"),
                             content_type="application/fhir+json").get_json()["id"])
    number = next(p["valueIdentifier"]["value"] for p in
                  client.post(f"Patient/{member}/$issue-card").get_json()["parameter"] if p["name"] == "number")
    users.add(app.extensions["fhirserver"].repo.db, users.User("lan", "patient", f"Patient/{member}"), PASSWORD)
    wait = WebDriverWait(browser, WAIT)

    def sign_out() -> None:
        browser.find_element(By.ID, "signout").click()
        wait.until(lambda d: d.execute_script(
            "const b = document.getElementById('signin-patient'); return b !== null && !b.closest('[hidden]')"))

    sign_in(browser, url, "signin-patient", "fang", patient=pid)
    browser.find_element(By.CSS_SELECTOR, "#patient-tabs [data-tab=family]").click()
    browser.find_element(By.ID, "bind-card").send_keys(number)
    Select(browser.find_element(By.ID, "bind-relationship")).select_by_value("MTH")
    browser.find_element(By.CSS_SELECTOR, "#bind-form button[type=submit]").click()
    wait.until(lambda d: d.find_element(By.ID, "family-status").get_attribute("data-state") in ("ok", "error")
               and d.find_element(By.ID, "family-status").text)
    status = browser.find_element(By.ID, "family-status")
    assert status.get_attribute("data-state") == "ok", status.text
    sign_out()

    sign_in(browser, url, "signin-patient", "lan", patient=member)
    browser.find_element(By.CSS_SELECTOR, "#patient-tabs [data-tab=family]").click()
    accept = wait.until(lambda d: next((b for b in d.find_elements(By.CSS_SELECTOR, "#family-box button")
                                        if b.text == "Accept"), None))
    assert "Fang Wang" in browser.find_element(By.ID, "family-box").text
    accept.click()
    wait.until(lambda d: "Accept" not in d.find_element(By.ID, "family-box").text
               and "Fang Wang" in d.find_element(By.ID, "family-box").text)
    sign_out()

    sign_in(browser, url, "signin-patient", "fang", patient=pid)
    wait.until(lambda d: d.execute_script("return document.getElementById('whose').options.length") == 2)
    Select(browser.find_element(By.ID, "whose")).select_by_value(member)
    wait.until(lambda d: any(e.text == "Lan Wang" for e in d.find_elements(By.CSS_SELECTOR, "#panel-record .patient-name")))
