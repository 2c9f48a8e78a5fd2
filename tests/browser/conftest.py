"""A real browser for the tests of browser apps: Debian's Chromium, headless, driven
through chromedriver (W3C WebDriver, via selenium), and a static server for the app's
pages on an origin of its own.

``scripts/setup.sh`` installs Chromium, chromedriver and the pages' npm packages
(``tests/browser/package-lock.json``). Where any of them is missing, or Chromium
does not start, the tests skip with one line saying why; under ``CI=true`` they fail
instead, so a CI machine that lost its browser cannot pass by skipping.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar, NoReturn

import pytest

from fhirserver.storage.ferretdb import free_port

HERE = Path(__file__).resolve().parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FHIR_CLIENT_JS = HERE / "node_modules" / "fhirclient" / "build" / "fhir-client.js"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1024,768")
INSTALL = ("`bash scripts/setup.sh` installs chromium and chromium-driver (as root or with sudo) "
           "and the npm packages")
_skipped: list[str] = []


def unavailable(reason: str) -> NoReturn:
    """Skip, except in CI, where a browser test that cannot run is a failure."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"browser tests cannot run under CI=true: {reason}", pytrace=False)
    line = f"browser tests skipped: {reason}; {INSTALL}"
    if line not in _skipped:
        _skipped.append(line)
    pytest.skip(line)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The reason shows in every run, not only with ``-rs``."""
    for line in _skipped:
        terminalreporter.write_line(line, yellow=True)


@pytest.fixture(scope="session")
def browser_ready() -> None:
    for path, what in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromedriver"),
                       (FHIR_CLIENT_JS, "the npm package fhirclient")):
        if not path.is_file():
            unavailable(f"{what} is missing ({path})")
    try:
        import selenium  # noqa: F401
    except ImportError:
        unavailable("the Python package selenium is missing")


@pytest.fixture
def browser(browser_ready: None, tmp_path: Path) -> Iterator[Any]:
    """A fresh headless Chromium (its own profile: no cookies, no storage)."""
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # A driver path given: selenium does not look for (or download) one itself.
    service = Service(executable_path=str(CHROMEDRIVER), log_output=str(tmp_path / "chromedriver.log"))
    try:
        driver = webdriver.Chrome(service=service, options=options)
    except WebDriverException as exc:
        unavailable(f"chromium did not start ({(exc.msg or str(exc)).splitlines()[0]})")
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


class _Pages(BaseHTTPRequestHandler):
    """The app's pages and fhirclient's browser build, nothing else."""

    files: ClassVar[dict[str, Path]] = {
        "/launch.html": HERE / "app" / "launch.html",
        "/index.html": HERE / "app" / "index.html",
        "/fhir-client.js": FHIR_CLIENT_JS,
    }

    def do_GET(self) -> None:
        path = self.files.get(self.path.split("?", 1)[0])
        if path is None:
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        body = path.read_bytes()
        self.send_response(HTTPStatus.OK)
        kind = "text/javascript" if path.suffix == ".js" else "text/html"
        self.send_header("Content-Type", f"{kind}; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def app_origin(browser_ready: None) -> Iterator[str]:
    """Where the app's pages are served: a loopback port other than the FHIR server's,
    so every call the app makes to the server is cross-origin."""
    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), _Pages)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    server.shutdown()
    server.server_close()
