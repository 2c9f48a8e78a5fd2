"""The /docs page in a real browser: Swagger UI renders the operations list from the
server's own assets, under the server's Content-Security-Policy (CSP Level 3), with
no token and no request leaving the server's origin, as on an offline hospital
network (OpenAPI 3.1 document at /openapi.json)."""

from __future__ import annotations

import pytest

from .conftest import CHROMEDRIVER, CHROMIUM, unavailable

WAIT = 60  # seconds: the Swagger UI bundle is large for a loaded machine


@pytest.fixture(scope="session")
def browser_ready() -> None:
    """This page needs Chromium and its driver, not the apps' npm packages."""
    for path, what in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromedriver")):
        if not path.is_file():
            unavailable(f"{what} is missing ({path})")
    try:
        import selenium  # noqa: F401
    except ImportError:
        unavailable("the Python package selenium is missing")


def test_docs_renders_the_operations_offline_under_its_csp(live, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    url, _ = live
    browser.get(f"{url}/docs")
    wait = WebDriverWait(browser, WAIT)
    try:
        # The page renders its tags in turn: wait for an operation of a later one.
        wait.until(ec.presence_of_element_located(
            (By.CSS_SELECTOR, '.opblock-summary-path[data-path="/oauth/launch"]')))
    except Exception:  # noqa: BLE001  # any failure: show the page and its console
        logs = "\n".join(e["message"] for e in browser.get_log("browser"))
        pytest.fail(f"Swagger UI did not render\n{browser.page_source[:1500]}\n{logs}")
    paths = {e.get_attribute("data-path") for e in
             browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
    assert {"/Patient/$scan-card", "/Patient/{id}/$care-team", "/metadata",
            "/oauth/launch"} <= paths, sorted(p for p in paths if p)[:20]
    # An operation opens on its parameters: the Parameters body names "payload".
    summary = browser.find_element(
        By.CSS_SELECTOR, '.opblock-summary-path[data-path="/Patient/$scan-card"]')
    browser.execute_script("arguments[0].scrollIntoView()", summary)
    summary.click()
    wait.until(lambda d: "payload" in d.find_element(By.CSS_SELECTOR, ".opblock.is-open").text)
    # Every resource the page loaded (scripts, styles, the document, images) came
    # from the server itself.
    loaded = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)")
    assert loaded and all(u.startswith((f"{url}/", "data:")) for u in loaded), loaded
    assert f"{url}/openapi.json" in loaded
    # Nothing was refused by the page's Content-Security-Policy, and nothing failed.
    problems = [e["message"] for e in browser.get_log("browser")
                if e["level"] == "SEVERE" or "Content Security Policy" in e["message"]]
    assert not problems, problems
