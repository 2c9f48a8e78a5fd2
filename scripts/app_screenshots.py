"""Screenshots of every view of the web app (/app/), for a reviewer to look at.

    .venv/bin/python scripts/app_screenshots.py OUTDIR [--lang en|zh]

Starts its own server on the demo data (as ``fhirserver serve --demo`` does, with an
embedded database in a temporary directory, gone afterwards), adds five glucose
results with a reference range to one demo patient so the trend chart has a line,
then drives Debian's Chromium (headless, through chromedriver and selenium, as the
browser tests do) through both flows and saves one PNG per view:

* clinician: the search (card scan, patients treated), a card scanned from a photo
  of its QR code, the history, a laboratory trend chart, break-the-glass;
* patient: the record, the health card's QR code, "who saw my record", the sharing
  choices, the family; and the record and the card at phone size.

Needs what ``scripts/setup.sh`` installs: chromium, chromium-driver, and the web
app's npm packages (fhirserver/webapp/node_modules).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fhirserver.config import Settings

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT = 30
GLUCOSE = [("2024-01-10", 5.4), ("2024-03-12", 6.1), ("2024-05-14", 7.2), ("2024-08-02", 6.6),
           ("2024-11-20", 5.9)]
console = Console()


def step(text: str) -> None:
    console.print(f"[bold cyan]==>[/] {text}")


@contextmanager
def demo_server(tmp: Path) -> Iterator[tuple[str, Any, list[Any]]]:
    """The demo server on a free loopback port: its URL, the app, the demo accounts."""
    from werkzeug.serving import make_server

    from fhirserver import create_app
    from fhirserver.cli import DEMO_DIR, run_import
    from fhirserver.demo.accounts import create
    from fhirserver.storage.embedded import database
    from fhirserver.storage.ferretdb import free_port

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = Settings.from_env(host="127.0.0.1", port=port).with_(
        data_dir=tmp / "data", base_url=url, mongodb_uri=None)
    with database(settings, own=True) as live:
        step("loading the demo patients")
        run_import(live, sorted(DEMO_DIR.glob("*.json.gz")))
        accounts = create(live)
        app = create_app(live)
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
        server = make_server("127.0.0.1", port, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        step(f"server at {url}")
        try:
            yield url, app, accounts
        finally:
            server.shutdown()
            app.extensions["fhirserver"].repo.close()


def operator(app: Any) -> Callable[..., Any]:
    """Requests to ``app`` as the operator (as ``fhirserver token --operator``)."""
    from fhirserver.auth.tokens import TokenService
    from fhirserver.crypto.master import load
    from fhirserver.crypto.sealing import sealer

    st = app.extensions["fhirserver"]
    service = TokenService(st.repo.db, st.settings.issuer, sealer(load(st.settings)))
    token, _ = service.mint(subject="screenshots", scope="system/*.cruds", kind="operator",
                            lifetime=3600, now=datetime.now(UTC))
    client = app.test_client()

    def call(method: str, path: str, body: Any = None) -> Any:
        r = client.open(f"/{path}", method=method, json=body, headers={
            "Authorization": f"Bearer {token}", "Accept": "application/fhir+json"})
        assert r.status_code < 300, (path, r.status_code, r.get_data(as_text=True)[:300])
        return r.get_json()

    return call


def glucose(pid: str, day: str, value: float) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                      "code": "laboratory"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7",
                                 "display": "Glucose [Moles/volume] in Serum or Plasma"}]},
            "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": f"{day}T08:00:00Z",
            "valueQuantity": {"value": value, "unit": "mmol/L", "system": "http://unitsofmeasure.org",
                              "code": "mmol/L"},
            "referenceRange": [{"low": {"value": 3.9, "unit": "mmol/L"},
                                "high": {"value": 6.1, "unit": "mmol/L"}}]}


def browser(lang: str, profile: Path) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1100,900", f"--lang={lang}", f"--user-data-dir={profile}",
                 "--hide-scrollbars"):
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"intl.accept_languages": lang})
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


class Shots:
    def __init__(self, driver: Any, out: Path) -> None:
        self.driver, self.out, self.count = driver, out, 0

    def take(self, name: str, full: bool = True) -> None:
        self.count += 1
        path = self.out / f"{self.count:02d}-{name}.png"
        if full:  # the whole page, not only the window
            height = self.driver.execute_script("return document.documentElement.scrollHeight")
            width = self.driver.get_window_size()["width"]
            self.driver.set_window_size(width, max(900, min(int(height) + 120, 6000)))
        else:  # the window as a person sees it (after a full-page one made it tall)
            self.driver.set_window_size(self.driver.get_window_size()["width"], 900)
        self.driver.save_screenshot(str(path))
        console.print(f"    saved {path}")


def sign_in(driver: Any, url: str, button: str, username: str, password: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(driver, WAIT)
    driver.get(f"{url}/app/")
    wait.until(ec.element_to_be_clickable((By.ID, button))).click()
    wait.until(ec.presence_of_element_located((By.NAME, "username"))).send_keys(username)
    driver.find_element(By.NAME, "password").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "button[name=decision][value=approve]"))).click()
    wait.until(lambda d: d.find_element(By.ID, "status").get_attribute("data-state") in ("ready", "error"))
    status = driver.find_element(By.ID, "status")
    if status.get_attribute("data-state") != "ready":
        raise SystemExit(f"sign-in of {username} failed: {status.text}")


def settle(driver: Any) -> None:
    """Until no status line of the page says it is still loading."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, WAIT).until(lambda d: not [
        e for e in d.find_elements(By.CSS_SELECTOR, ".status[data-state=busy]") if e.is_displayed()])


def run(out: Path, lang: str) -> None:
    import segno
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="app-screenshots-") as name, demo_server(Path(name)) as (url, app, accounts):
        tmp = Path(name)
        call = operator(app)
        doctor, holder, member, treated = accounts[0], accounts[1], accounts[2], accounts[-1]
        treated_id = treated.who.removeprefix("Patient/")
        step(f"adding {len(GLUCOSE)} glucose results to {treated.note.split(';')[0]}")
        for day, value in GLUCOSE:
            call("POST", "Observation", glucose(treated_id, day, value))
        member_id = member.who.removeprefix("Patient/")
        qr = call("GET", f"Patient/{member_id}/$card-qr")
        payload = next(p["valueString"] for p in qr["parameter"] if p["name"] == "payload")
        photo = tmp / "card.png"
        segno.make(payload, error="m").save(str(photo), scale=8, border=4)

        driver = browser(lang, tmp / "profile")
        shots = Shots(driver, out)
        wait = WebDriverWait(driver, WAIT)
        try:
            step(f"clinician {doctor.username}: sign in")
            sign_in(driver, url, "signin-clinician", doctor.username, doctor.password)
            settle(driver)
            shots.take("clinician-search")

            step("clinician: scan a card from a photo of its QR code")
            driver.find_element(By.ID, "card-photo").send_keys(str(photo))
            wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, "#history .patient-name")))
            settle(driver)
            shots.take("clinician-scanned-history")

            step("clinician: a patient treated, the history and a lab trend")
            driver.find_element(By.ID, "history-back").click()
            wait.until(ec.element_to_be_clickable(
                (By.CSS_SELECTOR, f"button.open-patient[data-id='{treated_id}']"))).click()
            wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, "#history .patient-name")))
            settle(driver)
            shots.take("clinician-history")
            wait.until(ec.element_to_be_clickable(
                (By.CSS_SELECTOR, "button.trend-button[data-code='http://loinc.org|2345-7']"))).click()
            wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#trend canvas[data-points]")))
            settle(driver)
            driver.set_window_size(1100, 900)
            driver.execute_script("document.getElementById('trend').scrollIntoView()")
            shots.take("clinician-chart", full=False)

            step("clinician: break the glass for a patient not treated")
            driver.find_element(By.ID, "history-back").click()
            driver.find_element(By.ID, "emergency-patient").send_keys(holder.who.removeprefix("Patient/"))
            driver.find_element(By.ID, "emergency-reason").send_keys("Unconscious in the emergency room")
            shots.take("clinician-break-glass-form")
            driver.find_element(By.CSS_SELECTOR, "#emergency-form button[type=submit]").click()
            wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, "#history .patient-name")))
            settle(driver)
            shots.take("clinician-break-glass-history")
            driver.find_element(By.ID, "signout").click()
            wait.until(lambda d: d.execute_script(  # revoked and forgotten: the sign-in page
                "const b = document.getElementById('signin-patient'); return b !== null && !b.closest('[hidden]')"))

            step(f"patient {holder.username}: sign in")
            driver.set_window_size(1100, 900)
            sign_in(driver, url, "signin-patient", holder.username, holder.password)
            wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, "#panel-record .patient-name")))
            settle(driver)
            shots.take("patient-record")
            for tab, name in (("card", "patient-card"), ("audit", "patient-timeline"),
                              ("consent", "patient-consent"), ("family", "patient-family")):
                step(f"patient: {tab}")
                driver.set_window_size(1100, 900)
                driver.find_element(By.CSS_SELECTOR, f"#patient-tabs [data-tab={tab}]").click()
                settle(driver)
                if tab == "card":
                    wait.until(ec.visibility_of_element_located((By.ID, "card-qr")))
                shots.take(name)

            step("patient: at phone size")
            driver.set_window_size(390, 844)
            driver.find_element(By.CSS_SELECTOR, "#patient-tabs [data-tab=record]").click()
            wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, "#panel-record .patient-name")))
            settle(driver)
            shots.take("phone-patient-record", full=False)
            driver.find_element(By.CSS_SELECTOR, "#patient-tabs [data-tab=card]").click()
            wait.until(ec.visibility_of_element_located((By.ID, "card-qr")))
            shots.take("phone-patient-card", full=False)
        finally:
            driver.quit()
    step(f"{shots.count} screenshots in {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder for the PNG files (created if missing)")
    parser.add_argument("--lang", default="en", choices=("en", "zh"),
                        help="the browser's language, which the app follows")
    args = parser.parse_args()
    for path in (CHROMIUM, CHROMEDRIVER):
        if not Path(path).exists():
            raise SystemExit(f"{path} is missing: bash scripts/setup.sh installs it")
    if not (ROOT / "fhirserver" / "webapp" / "node_modules").is_dir():
        raise SystemExit("the web app's npm packages are missing: bash scripts/setup.sh installs them")
    run(args.out, args.lang)


if __name__ == "__main__":
    main()
