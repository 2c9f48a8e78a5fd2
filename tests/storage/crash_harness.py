"""Kill a real `fhirserver serve` in the middle of a large transaction and look at
what the restarted server shows (FHIR R4 http.html#transaction: "either all succeed
or all fail"). Used by tests/storage/test_transaction_crash.py (a few kill points)
and scripts/soak_transactions.py (many).

The server runs in its own process group with the embedded database in ``data_dir``:
``os.killpg(SIGKILL)`` takes gunicorn's master, its workers, FerretDB and PostgreSQL
down at once, as a power cut or an OOM kill of the group would. The restarted
server's first answer is a count of what is stored; the database is then read
directly too.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from pymongo import MongoClient
from pymongo.database import Database

from fhirserver.storage.ferretdb import free_port

OBSERVATIONS = 299  # with their Patient, a 300-entry transaction
UP_TIMEOUT = 300.0


def transaction(observations: int = OBSERVATIONS) -> dict[str, Any]:
    """One Patient and ``observations`` Observations referring to it by urn:uuid."""
    patient = f"urn:uuid:{uuid.uuid4()}"
    entries: list[dict[str, Any]] = [{
        "fullUrl": patient, "request": {"method": "POST", "url": "Patient"},
        "resource": {"resourceType": "Patient", "gender": "female",
                     "name": [{"family": "Crash", "given": ["Test"]}]}}]
    for i in range(observations):
        entries.append({
            "fullUrl": f"urn:uuid:{uuid.uuid4()}",
            "request": {"method": "POST", "url": "Observation"},
            "resource": {"resourceType": "Observation", "status": "final",
                         "code": {"coding": [{"system": "http://loinc.org", "code": "15074-8"}]},
                         "subject": {"reference": patient},
                         "effectiveDateTime": "2024-05-01T08:00:00+08:00",
                         "valueQuantity": {"value": 5 + i / 100, "unit": "mmol/L"}}})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


class Server:
    """`fhirserver serve` on ``data_dir``, started and killed as a process group."""

    def __init__(self, data_dir: Path, workers: int = 2) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items() if k != "MONGODB_URI"}
        self.env.update({"FHIR_DATA_DIR": str(data_dir), "FHIR_PORT": str(self.port),
                         "FHIR_WORKERS": str(workers)})
        self.exe = str(Path(sys.executable).parent / "fhirserver")
        self.proc: subprocess.Popen[bytes] | None = None
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        self.log = data_dir.parent / f"{data_dir.name}-serve.log"
        self._token = ""

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([self.exe, "serve"], env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def kill(self) -> None:
        """SIGKILL to the whole process group: nothing gets to clean up."""
        assert self.proc is not None
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        deadline = time.monotonic() + 30
        while _group_alive(self.proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.kill()

    @property
    def token(self) -> str:
        """An operator token (`fhirserver token --operator`); the signing keys are in
        the database, so it outlives restarts."""
        if not self._token:
            out = subprocess.run([self.exe, "token", "--operator", "--scope", "system/*.cruds"],
                                 env=self.env, capture_output=True, text=True, check=True,
                                 timeout=180)
            self._token = out.stdout.strip()
        return self._token

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "Content-Type": "application/fhir+json"}

    def database(self) -> tuple[MongoClient[dict[str, Any]], Database[dict[str, Any]]]:
        state = json.loads((self.data_dir / "ferretdb.json").read_text())
        client: MongoClient[dict[str, Any]] = MongoClient(state["uri"], tz_aware=True)
        return client, client[self.env.get("MONGODB_DB", "fhir")]

    def wait_up(self) -> None:
        """Wait for /metadata, then fetch the token: `fhirserver token` run while the
        server starts could start the embedded database first and stop it on exit."""
        started = time.monotonic()
        while time.monotonic() - started < UP_TIMEOUT:
            self._check_running()
            try:
                if requests.get(f"{self.url}/metadata", timeout=30).status_code == 200:
                    _ = self.token
                    return
            except (requests.ConnectionError, requests.Timeout):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the server did not answer within {UP_TIMEOUT:.0f} s; see {self.log}")

    def _check_running(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"fhirserver serve exited with {self.proc.returncode}; "
                               f"see {self.log}")

    def first_answer(self) -> tuple[float, dict[str, int]]:
        """Seconds from now until the server's first answer, and that answer: the
        numbers of Patients and Observations it stores."""
        started = time.monotonic()
        while time.monotonic() - started < UP_TIMEOUT:
            self._check_running()
            try:
                r = requests.get(f"{self.url}/Observation?_summary=count", headers=self.headers(),
                                 timeout=30)
            except (requests.ConnectionError, requests.Timeout):
                time.sleep(0.05)
                continue
            elapsed = time.monotonic() - started
            assert r.status_code == 200, r.text
            p = requests.get(f"{self.url}/Patient?_summary=count", headers=self.headers(),
                             timeout=30)
            return elapsed, {"Observation": r.json()["total"], "Patient": p.json()["total"]}
        raise RuntimeError(f"the server did not answer within {UP_TIMEOUT:.0f} s; see {self.log}")


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def stored(db: Database[dict[str, Any]]) -> dict[str, int]:
    return {"Patient": db["Patient"].count_documents({}),
            "Observation": db["Observation"].count_documents({}),
            "pending": db["_journal"].count_documents({"state": "pending"})}


@dataclass
class Crash:
    """What one kill left: counts before, at the kill, and after the restart."""

    before: dict[str, int]
    at_kill: dict[str, int]  # what the transaction had stored when the kill came
    answered: int | None  # the transaction's own HTTP status, if it got one
    api: dict[str, int]
    after: dict[str, int]
    restart_seconds: float

    @property
    def outcome(self) -> str:
        added = {t: self.api[t] - self.before[t] for t in ("Patient", "Observation")}
        direct = {t: self.after[t] - self.before[t] for t in ("Patient", "Observation")}
        if added != direct or self.after["pending"]:
            return "inconsistent"
        if added == {"Patient": 0, "Observation": 0}:
            return "none"
        if added == {"Patient": 1, "Observation": OBSERVATIONS}:
            return "all"
        return "partial"

    @property
    def whole(self) -> bool:
        """All or nothing; all if the transaction was answered with success."""
        return self.outcome == "all" or (self.outcome == "none" and self.answered != 200)


def crash_once(server: Server, kill_when: Callable[[dict[str, int]], bool]) -> Crash:
    """Post a 300-entry transaction, SIGKILL the server group once ``kill_when``
    holds for what the transaction has stored so far (see :func:`_watch`), restart,
    and read the outcome."""
    client, db = server.database()
    before = stored(db)
    answered: list[int] = []
    body = json.dumps(transaction())

    def post() -> None:
        try:
            r = requests.post(server.url, data=body, headers=server.headers(), timeout=300)
            answered.append(r.status_code)
        except requests.RequestException:
            pass

    poster = threading.Thread(target=post, daemon=True)
    poster.start()
    at_kill: dict[str, int] = {}
    try:
        at_kill = _watch(db, poster, kill_when)
    finally:
        client.close()
    server.kill()
    poster.join(timeout=30)
    restart = time.monotonic()
    server.start()
    _, api = server.first_answer()
    seconds = time.monotonic() - restart
    client, db = server.database()
    try:
        after = stored(db)
    finally:
        client.close()
    return Crash(before, at_kill, answered[0] if answered else None, api, after, seconds)


def _watch(db: Database[dict[str, Any]], poster: threading.Thread,
           kill_when: Callable[[dict[str, int]], bool]) -> dict[str, int]:
    """Wait for the transaction's journal entry, then poll what it has stored (by its
    patient's compartment key: an indexed count, whatever the database holds) until
    ``kill_when`` holds, the entry is gone, or the request ended; returns the last
    state seen."""
    deadline = time.monotonic() + 120
    entry = None
    while entry is None and poster.is_alive() and time.monotonic() < deadline:
        entry = db["_journal"].find_one({"state": "pending"})
        time.sleep(0.002)
    if entry is None:
        return {"Patient": 0, "Observation": 0, "pending": 0}
    patient = entry["writes"][0]["id"]
    seen = {"Patient": 0, "Observation": 0, "pending": 1}
    while poster.is_alive() and time.monotonic() < deadline:
        seen = {
            "Patient": int(db["Patient"].find_one({"_id": patient}, {"_id": 1}) is not None),
            "Observation": int(db.command("count", "Observation", query={"pat": patient})["n"]),
            "pending": int(db["_journal"].find_one({"_id": entry["_id"]}, {"_id": 1}) is not None),
        }
        if not seen["pending"] or kill_when(seen):
            break
    return seen


def kill_points() -> dict[str, Callable[[dict[str, int]], bool]]:
    """Named moments of the transaction, as the database shows them."""
    return {
        "journal written": lambda s: True,
        "first Observations stored": lambda s: s["Observation"] > 0,
        "most Observations stored": lambda s: s["Observation"] >= 200,
    }


def kill_at(threshold: int) -> Callable[[dict[str, int]], bool]:
    """Once ``threshold`` of the transaction's Observations are stored."""
    return lambda s: s["Observation"] >= threshold
