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


PATHS_ON_SCREEN = ("return Array.from(document.querySelectorAll('.opblock-summary-path'))"
                   ".map(e => e.getAttribute('data-path'))")


def scroll_through(browser, until: str | None = None) -> set[str]:
    """Scroll the page down half a screen at a time, as a reader does, and collect
    every operation path shown: Swagger UI renders a long operation list virtually,
    only the part in view. Stops at the bottom, or once ``until`` is on screen."""
    import time

    from selenium.webdriver.common.by import By

    seen: set[str] = set()
    last = -1
    browser.execute_script("window.scrollTo(0, 0)")
    for _ in range(2000):
        time.sleep(0.15)  # the list re-renders on the next animation frame
        seen |= set(browser.execute_script(PATHS_ON_SCREEN))
        if until and browser.find_elements(By.CSS_SELECTOR, until):
            return seen
        y = browser.execute_script("window.scrollBy(0, window.innerHeight / 2); "
                                   "return window.scrollY")
        if y == last:
            return seen
        last = y
    return seen


def test_docs_renders_the_operations_offline_under_its_csp(live, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    url, app = live
    browser.get(f"{url}/docs")
    wait = WebDriverWait(browser, WAIT)
    try:
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".opblock-summary-path")))
    except Exception:  # noqa: BLE001  # any failure: show the page and its console
        logs = "\n".join(e["message"] for e in browser.get_log("browser"))
        pytest.fail(f"Swagger UI did not render\n{browser.page_source[:1500]}\n{logs}")
    # Scrolled to the end, the page has shown every operation of the document.
    with app.test_client() as anonymous:
        document = anonymous.get("/openapi.json").get_json()
    paths = scroll_through(browser)
    assert paths == set(document["paths"]), sorted(set(document["paths"]) ^ paths)
    assert {"/Patient/$scan-card", "/Patient/{id}/$care-team", "/metadata",
            "/oauth/launch"} <= paths
    # An operation opens on its parameters: the Parameters body names "payload".
    scan = '.opblock-summary-path[data-path="/Patient/$scan-card"]'
    scroll_through(browser, until=scan)
    summary = browser.find_element(By.CSS_SELECTOR, scan)
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", summary)
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
