"""Master patient index at scale: card scan -> patient, and identifier lookups.

    .venv/bin/python scripts/bench_mpi.py --url http://127.0.0.1:8080 [--patients 100000]

Loads ``--patients`` generated Patients (valid GB 11643 resident IDs, agreeing
birth dates and genders) in transaction Bundles, resuming after the ones the server
already holds (they carry a marker tag), issues ``--cards`` health cards, then
times with ``-c`` client threads:

* card scan: ``$card-qr`` once per card, then ``POST Patient/$scan-card`` (the
  verified token -> card -> Patient path a clinic's scanner takes);
* PIXm lookup: ``Patient/$ihe-pix`` from a resident ID to the health card number;
* identifier search: ``Patient?identifier=system|value`` (``--searches`` requests;
  on the embedded FerretDB this reads every Patient, so keep it small there).

Prints p50/p99 latency and requests/s per phase.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

FHIR_JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
RID = "https://fhirserver.example/sid/resident-id"
CARD = "https://fhirserver.example/sid/health-card"
TAG = {"system": "https://fhirserver.example/bench", "code": "mpi-bench"}
AREAS = ("110101", "110105", "310101", "310104", "440103", "440106", "510104", "330102",
         "420102", "320102", "370102", "610102")
FAMILY = ("Wang", "Li", "Zhang", "Liu", "Chen", "Yang", "Huang", "Zhao", "Wu", "Zhou")
GIVEN = ("Wei", "Fang", "Na", "Min", "Jing", "Lei", "Qiang", "Yan", "Jun", "Xiu")
WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
console = Console()


def resident_id(i: int) -> tuple[str, str, str]:
    """A valid, unique resident ID for index ``i``, with its birth date and gender."""
    rnd = random.Random(i)
    year, month, day = 1930 + rnd.randrange(90), 1 + rnd.randrange(12), 1 + rnd.randrange(28)
    area = AREAS[i % len(AREAS)]
    seq = 1 + (i // len(AREAS)) % 999
    body = f"{area}{year:04d}{month:02d}{day:02d}{seq:03d}"
    number = body + "10X98765432"[sum(int(d) * w for d, w in zip(body, WEIGHTS, strict=True)) % 11]
    return number, f"{year:04d}-{month:02d}-{day:02d}", "male" if seq % 2 else "female"


def unique_ids(n: int) -> list[tuple[str, str, str]]:
    seen: set[str] = set()
    out: list[tuple[str, str, str]] = []
    i = 0
    while len(out) < n:
        rid = resident_id(i)
        if rid[0] not in seen:
            seen.add(rid[0])
            out.append(rid)
        i += 1
    return out


def patient(number: str, born: str, gender: str, i: int) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "meta": {"tag": [TAG]},
        "identifier": [{"system": RID, "value": number}],
        "name": [{"family": FAMILY[i % 10], "given": [GIVEN[(i // 10) % 10]]}],
        "gender": gender,
        "birthDate": born,
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def expect(r: requests.Response, *codes: int) -> requests.Response:
    if r.status_code not in codes:
        raise SystemExit(f"{r.request.method} {r.url}: {r.status_code} {r.text[:300]}")
    return r


def progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--patients", type=int, default=100_000)
    ap.add_argument("--cards", type=int, default=500)
    ap.add_argument("--requests", type=int, default=1000, help="requests per timed phase")
    ap.add_argument("--searches", type=int, default=5, help="requests for identifier search")
    ap.add_argument("--batch", type=int, default=500, help="Patients per transaction Bundle")
    ap.add_argument("-c", type=int, default=4, help="client threads")
    ap.add_argument("--loaded", action="store_true",
                    help="the patients are already there: skip counting them (a full scan on FerretDB)")
    ap.add_argument("--token", default=os.environ.get("FHIR_TOKEN", ""),
                    help="access token [FHIR_TOKEN]; e.g. from `fhirserver token --operator --scope 'system/*.cruds'`")
    args = ap.parse_args()
    if args.token:
        FHIR_JSON["Authorization"] = f"Bearer {args.token}"
    base = args.url.rstrip("/")
    session = requests.Session()
    ids = unique_ids(args.patients)

    have = args.patients if args.loaded else expect(session.get(
        f"{base}/Patient?_tag={TAG['system']}|{TAG['code']}&_summary=count",
        headers=FHIR_JSON, timeout=3600), 200).json()["total"]
    started = time.perf_counter()
    with progress() as bar:
        task = bar.add_task("load patients", total=args.patients, completed=min(have, args.patients))
        for lo in range(have, args.patients, args.batch):
            chunk = range(lo, min(lo + args.batch, args.patients))
            bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [{
                "resource": patient(*ids[i], i),
                "request": {"method": "POST", "url": "Patient"},
            } for i in chunk]}
            expect(session.post(base, json=bundle, headers=FHIR_JSON, timeout=3600), 200)
            bar.advance(task, len(chunk))
    loaded = args.patients - have
    if loaded > 0:
        console.print(f"loaded {loaded} patients in {time.perf_counter() - started:.0f} s "
                      f"({loaded / (time.perf_counter() - started):.0f} patients/s)")

    # Issue cards to a sample, found by resident ID through PIXm (one claim read).
    sample = random.Random(7).sample(range(args.patients), min(args.cards, args.patients))
    cards: list[tuple[str, str, str]] = []  # (patient id, resident id, card number)
    with progress() as bar:
        task = bar.add_task("issue cards", total=len(sample))
        for i in sample:
            number = ids[i][0]
            pix = expect(session.get(f"{base}/Patient/$ihe-pix?sourceIdentifier={RID}|{number}",
                                     headers=FHIR_JSON, timeout=60), 200).json()
            pid = [p["valueReference"]["reference"] for p in pix["parameter"]
                   if p["name"] == "targetId"][0].split("/")[1]
            card = [p["valueIdentifier"]["value"] for p in pix["parameter"]
                    if p["name"] == "targetIdentifier" and p["valueIdentifier"]["system"] == CARD]
            if not card:
                r = expect(session.post(f"{base}/Patient/{pid}/$issue-card", headers=FHIR_JSON,
                                        timeout=60), 201).json()
                card = [r["parameter"][0]["valueIdentifier"]["value"]]
            cards.append((pid, number, card[0]))
            bar.advance(task)

    sessions: dict[int, requests.Session] = {}

    def client() -> requests.Session:
        return sessions.setdefault(threading.get_ident(), requests.Session())

    def timed_phase(name: str, jobs: list[Callable[[requests.Session], None]]) -> tuple[str, float, list[float]]:
        lat: list[float] = []
        with progress() as bar:
            task = bar.add_task(name, total=len(jobs))

            def run(job: Callable[[requests.Session], None]) -> None:
                t0 = time.perf_counter()
                job(client())
                lat.append(time.perf_counter() - t0)
                bar.advance(task)

            t0 = time.perf_counter()
            with ThreadPoolExecutor(args.c) as pool:
                list(pool.map(run, jobs))
            return name, time.perf_counter() - t0, lat

    codes: dict[str, str] = {}
    for pid, _, _ in cards:
        r = expect(session.get(f"{base}/Patient/{pid}/$card-qr", headers=FHIR_JSON, timeout=60), 200)
        codes[pid] = r.json()["parameter"][0]["valueString"]

    def scan(pid: str) -> Callable[[requests.Session], None]:
        body = {"resourceType": "Parameters", "parameter": [
            {"name": "payload", "valueString": codes[pid]},
            {"name": "organization", "valueReference": {"reference": "Organization/bench"}}]}

        def job(s: requests.Session) -> None:
            r = expect(s.post(f"{base}/Patient/$scan-card", json=body, headers=FHIR_JSON, timeout=60), 200)
            assert r.json()["id"] == pid
        return job

    def pix(number: str, card: str) -> Callable[[requests.Session], None]:
        def job(s: requests.Session) -> None:
            r = expect(s.get(f"{base}/Patient/$ihe-pix?sourceIdentifier={RID}|{number}&targetSystem={CARD}",
                             headers=FHIR_JSON, timeout=60), 200)
            assert r.json()["parameter"][0]["valueIdentifier"]["value"] == card
        return job

    def search(number: str) -> Callable[[requests.Session], None]:
        def job(s: requests.Session) -> None:
            r = expect(s.get(f"{base}/Patient?identifier={RID}|{number}", headers=FHIR_JSON,
                             timeout=3600), 200)
            assert r.json()["total"] == 1
        return job

    pick = random.Random(11)
    results = [
        timed_phase("card scan -> patient", [scan(pick.choice(cards)[0]) for _ in range(args.requests)]),
        timed_phase("$ihe-pix resident ID -> card", [pix(*pick.choice(cards)[1:]) for _ in range(args.requests)]),
    ]
    if args.searches:
        results.append(timed_phase("Patient?identifier=",
                                   [search(pick.choice(cards)[1]) for _ in range(args.searches)]))
    table = Table(title=f"MPI bench: {args.patients} patients, {len(cards)} cards, {args.c} client threads")
    for col in ("phase", "requests", "req/s", "p50 ms", "p99 ms"):
        table.add_column(col, justify="left" if col == "phase" else "right")
    for name, seconds, lat in results:
        table.add_row(name, str(len(lat)), f"{len(lat) / seconds:.1f}",
                      f"{statistics.median(lat) * 1000:.1f}", f"{percentile(lat, 0.99) * 1000:.1f}")
    console.print(table)


if __name__ == "__main__":
    main()
