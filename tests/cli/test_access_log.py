"""The access log of `fhirserver serve` (gunicorn, ``accesslog -``) shows requests
without the identifiers in their query strings (DESIGN.md section 1: leaks and
tracking are what residents fear; R4 search.html section 3.1.1.5: only the values of
result-control parameters are kept)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from fhirserver.storage.ferretdb import free_port

from .test_serve import operator_token, stop, wait_up

NUMBER = "11010519491231002X"
PHONE = "13800138000"
RESIDENT = "https://fhirserver.example/sid/resident-id"


@pytest.mark.skipif(bool(os.environ.get("MONGODB_URI")), reason="tests the embedded database")
def test_the_access_log_shows_no_resident_id_or_phone(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k != "MONGODB_URI"}
    env.update({"FHIR_DATA_DIR": str(tmp_path), "FHIR_PORT": str(port), "FHIR_WORKERS": "1"})
    access_log = tmp_path / "access.log"
    exe = Path(sys.executable).parent / "fhirserver"
    with open(access_log, "wb") as out:
        proc = subprocess.Popen([str(exe), "serve"], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_up(url, proc)
        auth = operator_token(tmp_path, port)
        r = requests.get(f"{url}/Patient", headers=auth, timeout=10, params={
            "identifier": f"{RESIDENT}|{NUMBER}", "phone": PHONE, "_count": "5"})
        assert r.status_code == 200
        r = requests.get(f"{url}/Observation?subject=Patient/p-1&_has:Observation:subject:code="
                         f"75622-1&_sort=-date", headers=auth, timeout=10)
        assert r.status_code in (200, 400)
    finally:
        stop(proc)
    text = access_log.read_text()
    lines = [line for line in text.splitlines() if '"GET /Patient?' in line]
    assert len(lines) == 1, text
    assert '"GET /Patient?identifier=***&phone=***&_count=5 HTTP/1.1" 200' in lines[0]
    assert "GET /Observation?subject=***&_has:Observation:subject:code=***&_sort=-date" in text
    assert NUMBER not in text and PHONE not in text and "75622-1" not in text and "p-1" not in text
