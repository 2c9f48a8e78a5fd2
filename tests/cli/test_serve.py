"""`fhirserver serve --demo` end to end: the README's first command, as a process.

Runs the real command (gunicorn, embedded FerretDB in a fresh data directory), waits
for /metadata, reads the demo patients over HTTP, stops the server with SIGTERM and
checks that FerretDB went with it and the data survives a restart.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from fhirserver.storage.ferretdb import free_port

DEMO_PATIENTS = 3


def start(data_dir: Path, port: int, *args: str, workers: int = 1) -> subprocess.Popen[bytes]:
    """``serve`` with its output appended to ``serve.log`` beside ``data_dir``."""
    env = {k: v for k, v in os.environ.items() if k != "MONGODB_URI"}
    env.update({"FHIR_DATA_DIR": str(data_dir), "FHIR_PORT": str(port),
                "FHIR_WORKERS": str(workers)})
    exe = Path(sys.executable).parent / "fhirserver"
    with open(data_dir.parent / f"{data_dir.name}-serve.log", "ab") as log:
        return subprocess.Popen([str(exe), "serve", *args], env=env, stdout=log,
                                stderr=subprocess.STDOUT)


def operator_token(data_dir: Path, port: int, *who: str,
                   scope: str = "system/*.cruds") -> dict[str, str]:
    """``fhirserver token --operator`` (or for ``who``), as an operator's script gets one."""
    env = {k: v for k, v in os.environ.items() if k != "MONGODB_URI"}
    env.update({"FHIR_DATA_DIR": str(data_dir), "FHIR_PORT": str(port)})
    exe = Path(sys.executable).parent / "fhirserver"
    out = subprocess.run([str(exe), "token", *(who or ("--operator",)), "--scope", scope], env=env,
                         capture_output=True, text=True, check=True, timeout=120)
    return {"Authorization": f"Bearer {out.stdout.strip()}"}


def wait_up(url: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"fhirserver serve exited with {proc.returncode}")
        try:
            if requests.get(f"{url}/metadata", timeout=5).status_code == 200:
                return
        except (requests.ConnectionError, requests.Timeout):
            pass  # still starting: the worker answers once the app is built
        time.sleep(0.3)
    pytest.fail("fhirserver serve did not answer in time")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def ferretdb_running(data_dir: Path) -> bool:
    out = subprocess.run(["pgrep", "-f", f"file:{data_dir}"], capture_output=True, text=True)
    return bool(out.stdout.strip())


@pytest.mark.skipif(bool(os.environ.get("MONGODB_URI")), reason="tests the embedded database")
def test_serve_demo_then_restart_keeps_data(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data = tmp_path / "data"
    # Two workers boot at once, each registering the built-in web app client.
    proc = start(data, port, "--demo", workers=2)
    try:
        wait_up(url, proc)
        # Closed by default: nothing but /metadata without a token.
        assert requests.get(f"{url}/Patient", timeout=10).status_code == 401
        auth = operator_token(data, port)
        bundle = requests.get(f"{url}/Patient?_summary=count", headers=auth, timeout=10).json()
        assert bundle["total"] == DEMO_PATIENTS
        obs = requests.get(f"{url}/Observation?_count=1&_total=accurate", headers=auth, timeout=10)
        assert obs.status_code == 200 and obs.json()["total"] > 0
        # The demo clinician's fhirUser reads as a resource (SMART App Launch 2.x,
        # scopes-and-launch-context.html#fhiruser), tied to its organisation.
        dr = operator_token(data, port, "--practitioner", "Practitioner/dr-smith",
                            "--organization", "Organization/demo-hospital",
                            scope="user/Practitioner.rs user/PractitionerRole.rs")
        me = requests.get(f"{url}/Practitioner/dr-smith", headers=dr, timeout=10)
        assert me.status_code == 200 and me.json()["name"][0]["family"] == "Smith"
        roles = requests.get(f"{url}/PractitionerRole?practitioner=Practitioner/dr-smith"
                             "&organization=Organization/demo-hospital", headers=dr, timeout=10)
        assert roles.json()["total"] == 1
        created = requests.post(
            f"{url}/Patient", json={"resourceType": "Patient", "gender": "other"},
            headers={"Content-Type": "application/fhir+json", **auth}, timeout=10,
        )
        assert created.status_code == 201
        new_id = created.json()["id"]
    finally:
        stop(proc)
    assert proc.returncode == 0
    time.sleep(0.5)
    assert not ferretdb_running(data)
    log = (tmp_path / "data-serve.log").read_text()
    assert "Worker failed to boot" not in log and "Traceback" not in log, log
    # A new database is only ever written encrypted: nothing to encrypt "once".
    assert "stored in clear" not in log, log

    proc = start(data, port)
    try:
        wait_up(url, proc)
        # Signing keys are kept in the database: the token still works after a restart.
        assert requests.get(f"{url}/Patient/{new_id}", headers=auth, timeout=10).status_code == 200
        total = requests.get(f"{url}/Patient?_summary=count", headers=auth, timeout=10).json()["total"]
        assert total == DEMO_PATIENTS + 1
        # Bulk Data export (export.html) runs in the gunicorn worker's export thread.
        kick = requests.get(f"{url}/$export?_type=Patient", timeout=10, headers={
            **auth, "Accept": "application/fhir+json", "Prefer": "respond-async"})
        assert kick.status_code == 202, kick.text
        deadline = time.monotonic() + 60
        status = requests.get(kick.headers["Content-Location"], headers=auth, timeout=10)
        while status.status_code == 202 and time.monotonic() < deadline:
            time.sleep(0.2)
            status = requests.get(kick.headers["Content-Location"], headers=auth, timeout=10)
        assert status.status_code == 200, status.text
        output = status.json()["output"]
        assert [(o["type"], o["count"]) for o in output] == [("Patient", DEMO_PATIENTS + 1)]
        lines = requests.get(output[0]["url"], headers=auth, timeout=10).text.splitlines()
        assert len(lines) == DEMO_PATIENTS + 1
        assert (data / "exports").is_dir()
    finally:
        stop(proc)
