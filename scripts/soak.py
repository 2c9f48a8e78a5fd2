"""Mixed load against a running server, then the invariants that load must not break.

    .venv/bin/fhirserver serve &
    .venv/bin/python scripts/soak.py --url http://127.0.0.1:8080 --seconds 300 [-c 8]

``-c`` threads send, for ``--seconds``: creates, reads, version-aware updates
(If-Match), searches, conditional creates and conditional updates on a small pool
of identifiers (so that concurrent requests race for the same criteria),
transaction Bundles and deletes. Then it checks (and exits 1 when one fails):

* no answer was a 5xx or went unanswered;
* every resource it wrote has a contiguous version history (1..n, R4
  http.html#history) ending in the version a read gives;
* every conditional criteria it used matches at most one resource
  (http.html#ccreate, http.html#cond-update);
* every transaction that succeeded is there entirely (http.html#transaction);
* the audit log's chain verifies (`fhirserver audit verify`).

Prints requests by kind and status, p50 and p99 latencies. Tokens and the audit
check use the server's settings from the environment, as `fhirserver` does.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
CLI = ROOT / ".venv" / "bin" / "fhirserver"
FHIR = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
SYSTEM = "urn:soak:id"
console = Console()


def cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if not (env.get("FHIR_BASE_URL") or env.get("FHIR_PORT")):
        env["FHIR_PORT"] = str(urlsplit(url).port or 80)
    return subprocess.run([str(CLI), *args], env=env, capture_output=True, text=True, check=False)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def observation(patient: str, code: str) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final",
            "subject": {"reference": f"Patient/{patient}"},
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "effectiveDateTime": f"2024-{random.randint(1, 12):02d}-{random.randint(1, 28):02d}",
            "valueQuantity": {"value": round(random.uniform(1, 10), 2), "unit": "mmol/L"}}


class Soak:
    """The load and what it leaves to check."""

    def __init__(self, url: str, token: str, pool: int) -> None:
        self.url = url
        self.token = token
        self.lock = threading.Lock()
        self.local = threading.local()
        self.statuses: Counter[tuple[str, int]] = Counter()
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.written: set[str] = set()  # Type/id of everything written
        self.criteria: set[str] = set()  # conditional criteria used
        self.transactions: list[list[str]] = []  # Type/id of each committed transaction
        self.patients: list[str] = []
        self.pool = pool

    def session(self) -> requests.Session:
        if not hasattr(self.local, "session"):
            self.local.session = requests.Session()
            self.local.session.headers.update(FHIR | {"Authorization": f"Bearer {self.token}"})
        return self.local.session

    def call(self, kind: str, method: str, path: str, **kw: Any) -> requests.Response | None:
        started = time.perf_counter()
        try:
            r = self.session().request(method, self.url + path, timeout=120, **kw)
        except requests.RequestException:
            with self.lock:
                self.statuses[(kind, 0)] += 1
            return None
        with self.lock:
            self.latency[kind].append((time.perf_counter() - started) * 1000)
            self.statuses[(kind, r.status_code)] += 1
        return r

    def note(self, r: requests.Response | None, *, status: tuple[int, ...] = (200, 201)) -> None:
        if r is not None and r.status_code in status:
            body = r.json()
            if body.get("resourceType") not in (None, "OperationOutcome", "Bundle"):
                with self.lock:
                    self.written.add(f"{body['resourceType']}/{body['id']}")

    # -- the actions -------------------------------------------------------------------

    def create(self) -> None:
        r = self.call("create", "POST", "/Observation",
                      json=observation(random.choice(self.patients), random.choice(CODES)))
        self.note(r)

    def read(self) -> None:
        with self.lock:
            target = random.choice(sorted(self.written)) if self.written else None
        if target:
            self.call("read", "GET", f"/{target}")

    def update(self) -> None:
        with self.lock:
            target = random.choice(sorted(self.written)) if self.written else None
        if not target or not target.startswith("Observation/"):
            return
        r = self.call("read", "GET", f"/{target}")
        if r is None or r.status_code != 200:
            return
        body = r.json()
        body["valueQuantity"]["value"] = round(random.uniform(1, 10), 2)
        self.note(self.call("update", "PUT", f"/{target}", json=body,
                            headers={"If-Match": r.headers.get("ETag", "")}))

    def search(self) -> None:
        patient = random.choice(self.patients)
        query = random.choice((f"patient={patient}&code=http://loinc.org|{random.choice(CODES)}",
                               f"patient={patient}&_sort=-date&_count=10",
                               f"patient={patient}&date=ge2024-06-01"))
        self.call("search", "GET", f"/Observation?{query}")

    def conditional_create(self) -> None:
        value = f"c-{random.randrange(self.pool)}"
        with self.lock:
            self.criteria.add(f"identifier={SYSTEM}|{value}")
        patient = {"resourceType": "Patient", "identifier": [{"system": SYSTEM, "value": value}],
                   "name": [{"family": "Soak", "given": [value]}]}
        self.note(self.call("conditional create", "POST", "/Patient", json=patient,
                            headers={"If-None-Exist": f"identifier={SYSTEM}|{value}"}))

    def conditional_update(self) -> None:
        value = f"u-{random.randrange(self.pool)}"
        with self.lock:
            self.criteria.add(f"identifier={SYSTEM}|{value}")
        patient = {"resourceType": "Patient", "identifier": [{"system": SYSTEM, "value": value}],
                   "name": [{"family": "Soak", "given": [value, str(random.random())]}]}
        self.note(self.call("conditional update", "PUT",
                            f"/Patient?identifier={SYSTEM}|{value}", json=patient))

    def transaction(self) -> None:
        pid = f"urn:uuid:{uuid.uuid4()}"
        entries = [{"fullUrl": pid, "resource": {"resourceType": "Patient",
                                                 "name": [{"family": "SoakTx"}]},
                    "request": {"method": "POST", "url": "Patient"}}]
        for code in random.sample(CODES, 4):
            obs = observation("x", code) | {"subject": {"reference": pid}}
            entries.append({"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": obs,
                            "request": {"method": "POST", "url": "Observation"}})
        r = self.call("transaction", "POST", "/", json={"resourceType": "Bundle",
                                                         "type": "transaction", "entry": entries})
        if r is not None and r.status_code == 200:
            made = [e["response"]["location"].split("/_history")[0]
                    for e in r.json().get("entry", [])]
            with self.lock:
                self.transactions.append(made)
                self.written.update(made)

    def delete(self) -> None:
        with self.lock:
            target = random.choice(sorted(self.written)) if self.written else None
        if target and target.startswith("Observation/") and random.random() < 0.5:
            self.call("delete", "DELETE", f"/{target}")

    # -- checks ------------------------------------------------------------------------

    def check(self) -> list[str]:
        failures = [f"{n} × {kind} answered {status or 'nothing'}"
                    for (kind, status), n in sorted(self.statuses.items())
                    if status >= 500 or status == 0]
        s = self.session()
        for target in sorted(self.written):
            entries = s.get(f"{self.url}/{target}/_history?_count=1000", timeout=120).json() \
                .get("entry", [])
            versions = sorted(int(e["response"]["etag"].split('"')[1]) for e in entries
                              if "response" in e)
            if versions != list(range(1, len(versions) + 1)):
                failures.append(f"{target}: history versions {versions} are not 1..n")
                continue
            now = s.get(f"{self.url}/{target}", timeout=120)
            if now.status_code == 200 and int(now.json()["meta"]["versionId"]) != versions[-1]:
                failures.append(f"{target}: read gives version {now.json()['meta']['versionId']}, "
                                f"history ends at {versions[-1]}")
        for criteria in sorted(self.criteria):
            found = s.get(f"{self.url}/Patient?{criteria}&_count=10", timeout=120).json()
            ids = [e["resource"]["id"] for e in found.get("entry", [])]
            if len(ids) > 1:
                failures.append(f"Patient?{criteria} matches {len(ids)} resources: {ids}")
        for made in self.transactions:
            missing = [t for t in made if s.get(f"{self.url}/{t}", timeout=120).status_code
                       not in (200, 410)]
            if missing:
                failures.append(f"a committed transaction lacks {missing}")
        return failures


CODES = ["2339-0", "718-7", "8480-6", "8462-4", "29463-7", "8302-2", "2093-3", "4548-4"]
WEIGHTS: dict[str, int] = {"create": 20, "read": 30, "update": 10, "search": 20,
                           "conditional_create": 8, "conditional_update": 5, "transaction": 4,
                           "delete": 3}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("-c", "--concurrency", type=int, default=8)
    parser.add_argument("--pool", type=int, default=20,
                        help="identifiers the conditional requests race for")
    args = parser.parse_args()
    url = args.url.rstrip("/")
    minted = cli(url, "token", "--operator", "--scope", "system/*.cruds", "--lifetime", "43200")
    if minted.returncode:
        sys.exit(f"fhirserver token: {minted.stderr.strip()[-600:]}")
    soak = Soak(url, minted.stdout.strip(), args.pool)
    for i in range(8):
        r = soak.call("create", "POST", "/Patient", json={"resourceType": "Patient",
                                                           "name": [{"family": f"Soak{i}"}]})
        if r is None or r.status_code != 201:
            sys.exit(f"creating a Patient: {r.status_code if r else 'no answer'} "
                     f"{r.text[:300] if r else ''}")
        soak.patients.append(r.json()["id"])
    actions: list[Callable[[], None]] = [getattr(soak, name) for name in WEIGHTS]
    weights = list(WEIGHTS.values())
    deadline = time.monotonic() + args.seconds

    def worker() -> None:
        while time.monotonic() < deadline:
            random.choices(actions, weights)[0]()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(args.concurrency)]
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[n]}"),
                  TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task("soak", total=args.seconds, n="")
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            time.sleep(1)
            progress.update(task, completed=min(args.seconds, args.seconds - (deadline - time.monotonic())),
                            n=f"{sum(soak.statuses.values())} requests")
    table = Table(title=f"{sum(soak.statuses.values())} requests in {args.seconds:.0f} s "
                        f"from {args.concurrency} threads")
    for column in ("request", "statuses", "p50 ms", "p99 ms"):
        table.add_column(column)
    for kind in sorted(soak.latency):
        statuses = ", ".join(f"{status}: {n}" for (k, status), n in sorted(soak.statuses.items())
                             if k == kind)
        table.add_row(kind, statuses, f"{percentile(soak.latency[kind], 0.5):.0f}",
                      f"{percentile(soak.latency[kind], 0.99):.0f}")
    console.print(table)
    console.print(f"checking {len(soak.written)} resources, {len(soak.criteria)} conditional "
                  f"criteria, {len(soak.transactions)} transactions ...")
    failures = soak.check()
    verified = cli(url, "audit", "verify")
    console.print(f"audit verify: exit {verified.returncode}: {verified.stdout.strip()[-300:]}"
                  f"{verified.stderr.strip()[-300:]}")
    if verified.returncode:
        failures.append("the audit log's chain does not verify")
    for failure in failures[:40]:
        console.print(f"[red]FAILED[/red] {failure}", highlight=False)
    console.print("invariants: " + ("all hold" if not failures else f"{len(failures)} broken"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
