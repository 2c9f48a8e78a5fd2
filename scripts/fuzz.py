"""Hostile requests against a running server for as long as asked: the generators of
the suite's fuzz test (tests/fuzz_cases.py), every route, operation and search
parameter, bodies that are valid resources with one part broken.

    .venv/bin/fhirserver serve &
    .venv/bin/python scripts/fuzz.py --url http://127.0.0.1:8080 --seconds 600 [-c 4]

Seeds a few resources, then sends generated requests from ``-c`` threads with an
operator token (from `fhirserver token`, so the server's settings must be in the
environment, as for `fhirserver`). Prints totals by status and every request whose
answer broke a rule: a 5xx, an error that is no OperationOutcome, or a refused
write that changed a resource or its history (checked through the API). Exits 1
when any did.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import requests
from hypothesis import HealthCheck, Phase, given, settings
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fuzz_cases import (
    TYPES,
    Call,
    calls,
    problems,
    route_table,
    seed_resources,
)

console = Console()


def token(url: str) -> str:
    env = dict(os.environ)
    if not (env.get("FHIR_BASE_URL") or env.get("FHIR_PORT")):
        env["FHIR_PORT"] = str(urlsplit(url).port or 80)
    proc = subprocess.run([str(ROOT / ".venv" / "bin" / "fhirserver"), "token", "--operator",
                           "--scope", "system/*.cruds", "--lifetime", "43200"],
                          env=env, capture_output=True, text=True, check=False)
    if proc.returncode:
        sys.exit(f"fhirserver token: {proc.stderr.strip()[-600:]}")
    return proc.stdout.strip()


def seed(session: requests.Session, url: str) -> dict[str, list[str]]:
    ids: dict[str, list[str]] = {t: [] for t in TYPES}
    patient = seed_resources("none")[0]
    r = session.post(f"{url}/Patient", json=patient,
                     headers={"Content-Type": "application/fhir+json"})
    if r.status_code != 201:
        sys.exit(f"seeding a Patient: {r.status_code} {r.text[:400]}")
    ids["Patient"].append(r.json()["id"])
    for rtype in ("Observation", "DiagnosticReport"):
        resources = seed_resources(ids["Patient"][0], (ids["Observation"] or ["none"])[0])
        r = session.post(f"{url}/{rtype}", json=next(x for x in resources
                                                     if x["resourceType"] == rtype),
                         headers={"Content-Type": "application/fhir+json"})
        if r.status_code != 201:
            sys.exit(f"seeding a {rtype}: {r.status_code} {r.text[:400]}")
        ids[rtype].append(r.json()["id"])
    return ids


def histories(session: requests.Session, url: str, ids: dict[str, list[str]]) -> dict[str, str]:
    """The seeded resources' version histories: what a refused write must not change."""
    return {f"{t}/{i}": ",".join(e.get("response", {}).get("etag", "") for e in session.get(
        f"{url}/{t}/{i}/_history").json().get("entry", [])) for t, ids_ in ids.items() for i in ids_}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("-c", "--concurrency", type=int, default=4)
    args = parser.parse_args()
    url = args.url.rstrip("/")
    bearer = token(url)
    admin = requests.Session()
    admin.headers["Authorization"] = f"Bearer {bearer}"
    ids = seed(admin, url)
    strategy = calls(route_table(), ids, seed_resources(ids["Patient"][0], ids["Observation"][0]))
    statuses: Counter[int] = Counter()
    broken: list[str] = []
    lock = threading.Lock()
    written: list[str] = []
    slowest: list[tuple[float, int, str]] = []
    batch: list[Call] = []
    local = threading.local()
    deadline = time.monotonic() + args.seconds

    def send(call: Call) -> None:
        if not hasattr(local, "session"):
            local.session = requests.Session()
            local.session.headers["Authorization"] = f"Bearer {bearer}"
        started = time.perf_counter()
        try:
            r = local.session.request(call.method, url + call.path, headers=call.headers,
                                      data=call.body, timeout=120, allow_redirects=False)
            status, ctype, body = r.status_code, r.headers.get("Content-Type", ""), r.content
        except requests.RequestException as exc:
            with lock:
                statuses[0] += 1
                broken.append(f"{call}\n -> no answer: {exc}")
            return
        found = problems(call, status, ctype, body)
        took = time.perf_counter() - started
        with lock:
            statuses[status] += 1
            slowest.append((took, status, str(call)[:300]))
            slowest.sort(reverse=True)
            del slowest[5:]
            if status < 400 and call.method != "GET":
                written.append(call.path)
            if found:
                broken.append(f"{call}\n -> " + "; ".join(found))

    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[s]}"),
                  TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task("fuzzing", total=args.seconds, s="")
        with ThreadPoolExecutor(args.concurrency) as pool:
            while time.monotonic() < deadline:
                before = histories(admin, url, ids)
                written.clear()
                batch.clear()

                @settings(max_examples=50 * args.concurrency, deadline=None, database=None,
                          phases=[Phase.generate], suppress_health_check=list(HealthCheck))
                @given(call=strategy)
                def draw(call: Call) -> None:
                    batch.append(call)

                draw()
                list(pool.map(send, batch))
                after = histories(admin, url, ids)
                # A seed may change only by a write that succeeded: to it, by
                # criteria, or in a Bundle.
                changed = [k for k in before if before[k] != after[k] and not any(
                    k.split("/")[1] in p or "?" in p or p.split("?")[0] == "/" for p in written)]
                if changed:
                    broken.append(f"seeded resources changed with no write that succeeded: {changed}")
                progress.update(task, completed=args.seconds - max(0.0, deadline - time.monotonic()),
                                s=f"{sum(statuses.values())} requests, {len(broken)} broken")
    console.print(f"{sum(statuses.values())} requests in {args.seconds:.0f} s")
    for status, n in sorted(statuses.items()):
        console.print(f"  {status or 'no answer'}: {n}")
    for took, status, call in slowest:
        console.print(f"slowest: {took * 1000:.0f} ms {status} {call}", highlight=False)
    for line in broken[:50]:
        console.print(f"[red]broken[/red] {line}", markup=True, highlight=False)
    if len(broken) > 50:
        console.print(f"... and {len(broken) - 50} more")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
