"""Throughput and latency of a live fhirserver: create, read, update, transaction import.

    .venv/bin/python scripts/bench.py --url http://127.0.0.1:8080 [-n 500] [-c 4]

Each phase sends requests from ``-c`` client threads and prints requests/s with
p50 and p99 latency; the transaction phase posts Synthea-shaped transaction Bundles
and reports resources/s; the search phases (--searches requests each) query the patients
those transactions created and report entries returned per second as resources/s. Bundles come from --bundles (default: the shared Synthea
sample if present, else the demo patients shipped with the package).
"""

from __future__ import annotations

import argparse
import os
import gzip
import json
import statistics
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
FHIR_JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
console = Console()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_phase(name: str, jobs: list[Callable[[requests.Session], int]], concurrency: int,
              progress: Progress) -> tuple[float, list[float], int]:
    """Run jobs on a thread pool; returns (seconds, latencies, units of work)."""
    task = progress.add_task(name, total=len(jobs))
    sessions: dict[int, requests.Session] = {}

    def timed(job: Callable[[requests.Session], int]) -> tuple[float, int]:
        import threading

        s = sessions.setdefault(threading.get_ident(), requests.Session())
        t0 = time.perf_counter()
        units = job(s)
        dt = time.perf_counter() - t0
        progress.advance(task)
        return dt, units

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(timed, jobs))
    return time.perf_counter() - started, [r[0] for r in results], sum(r[1] for r in results)


def patient(i: int) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": "http://example.org/bench", "value": f"b{i}-{uuid.uuid4().hex[:8]}"}],
        "name": [{"family": f"Bench{i}", "given": ["Load"]}],
        "gender": "female" if i % 2 else "male",
        "birthDate": f"19{50 + i % 50:02d}-0{1 + i % 9}-1{i % 10}",
    }


def expect(r: requests.Response, *codes: int) -> None:
    if r.status_code not in codes:
        raise SystemExit(f"{r.request.method} {r.url}: {r.status_code} {r.text[:300]}")


def load_bundles(paths: list[Path]) -> list[dict[str, Any]]:
    out = []
    for p in paths:
        with gzip.open(p) if p.suffix == ".gz" else p.open("rb") as fh:
            bundle = json.load(fh)
        # Keep the stored types; other entries would be refused as unsupported.
        keep = {"Patient", "Observation", "DiagnosticReport"}
        entries = [e for e in bundle["entry"] if e["resource"]["resourceType"] in keep]
        for e in entries:  # references to dropped entries become plain relative ones
            e["resource"] = json.loads(_rewrite(json.dumps(e["resource"]), bundle, keep))
        out.append({"resourceType": "Bundle", "type": "transaction", "entry": entries})
    return out


def _rewrite(text: str, bundle: dict[str, Any], keep: set[str]) -> str:
    for e in bundle["entry"]:
        res = e["resource"]
        if res["resourceType"] not in keep:
            text = text.replace(f'"{e["fullUrl"]}"', f'"{res["resourceType"]}/{res["id"]}"')
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("-n", type=int, default=500, help="requests per phase")
    ap.add_argument("-c", type=int, default=4, help="client threads")
    ap.add_argument("--bundles", type=Path, nargs="*", help="transaction bundles to post")
    ap.add_argument("--max-bundles", type=int, default=10)
    ap.add_argument("--searches", type=int, default=100, help="requests per search phase")
    ap.add_argument("--token", default=os.environ.get("FHIR_TOKEN", ""),
                    help="access token [FHIR_TOKEN]; e.g. from `fhirserver token --operator --scope 'system/*.cruds'`")
    args = ap.parse_args()
    if args.token:
        FHIR_JSON["Authorization"] = f"Bearer {args.token}"
    base = args.url.rstrip("/")
    expect(requests.get(f"{base}/metadata", timeout=10), 200)

    shared = ROOT.parent / "shared" / "data" / "synthea"
    paths = args.bundles or sorted(shared.glob("*.json.gz")) or sorted((ROOT / "fhirserver" / "demo").glob("*.json.gz"))
    bundles = load_bundles(paths[: args.max_bundles])

    ids: list[str] = []

    def create(i: int) -> Callable[[requests.Session], int]:
        def job(s: requests.Session) -> int:
            r = s.post(f"{base}/Patient", json=patient(i), headers=FHIR_JSON, timeout=60)
            expect(r, 201)
            ids.append(r.json()["id"])
            return 1
        return job

    def read(i: int) -> Callable[[requests.Session], int]:
        def job(s: requests.Session) -> int:
            expect(s.get(f"{base}/Patient/{ids[i % len(ids)]}", headers=FHIR_JSON, timeout=60), 200)
            return 1
        return job

    def update(i: int) -> Callable[[requests.Session], int]:
        def job(s: requests.Session) -> int:
            rid = ids[i]
            body = {**patient(i), "id": rid, "active": bool(i % 2)}
            expect(s.put(f"{base}/Patient/{rid}", json=body, headers=FHIR_JSON, timeout=60), 200)
            return 1
        return job

    loaded: list[str] = []  # Patient ids the transactions created

    def transaction(bundle: dict[str, Any]) -> Callable[[requests.Session], int]:
        def job(s: requests.Session) -> int:
            r = s.post(base, json=bundle, headers=FHIR_JSON, timeout=600)
            expect(r, 200)
            loaded.extend(e["response"]["location"].split("/")[1] for e in r.json()["entry"]
                          if e["response"]["location"].startswith("Patient/"))
            return len(bundle["entry"])
        return job

    def searching(make_url: Callable[[str], str]) -> Callable[[int], Callable[[requests.Session], int]]:
        """A search phase: one request per job over the loaded patients; units = entries."""
        def make(i: int) -> Callable[[requests.Session], int]:
            def job(s: requests.Session) -> int:
                r = s.get(f"{base}/{make_url(loaded[i % len(loaded)])}", headers=FHIR_JSON, timeout=60)
                expect(r, 200)
                return len(r.json().get("entry", []))
            return job
        return make

    searches = [
        ("search patient+code", searching(lambda p: f"Observation?patient={p}&code=http://loinc.org|8302-2")),
        ("search sorted page", searching(lambda p: f"Observation?patient={p}&_sort=-date&_count=20")),
        ("search chained", searching(lambda p: f"Observation?subject:Patient._id={p}&category=vital-signs&_count=20")),
        ("search _revinclude", searching(lambda p: f"Patient?_id={p}&_revinclude=DiagnosticReport:subject")),
        ("$everything page", searching(lambda p: f"Patient/{p}/$everything?_count=50")),
    ]

    table = Table(title=f"fhirserver bench: {base}, {args.c} client threads")
    for col in ("phase", "requests", "req/s", "resources/s", "p50 ms", "p99 ms"):
        table.add_column(col, justify="right" if col != "phase" else "left")
    with Progress(console=console, transient=True) as progress:
        phases = [
            ("create", [create(i) for i in range(args.n)]),
            ("read", [read(i) for i in range(args.n)]),
            ("update", [update(i) for i in range(args.n)]),
            ("transaction", [transaction(b) for b in bundles]),
        ]
        searches_n = args.searches
        for name, make in searches:
            phases.append((name, [make(i) for i in range(searches_n)]))
        for name, jobs in phases:
            seconds, lat, units = run_phase(name, jobs, args.c, progress)
            table.add_row(
                name, str(len(jobs)), f"{len(jobs) / seconds:.1f}", f"{units / seconds:.1f}",
                f"{statistics.median(lat) * 1000:.1f}", f"{percentile(lat, 0.99) * 1000:.1f}",
            )
    console.print(table)


if __name__ == "__main__":
    main()
