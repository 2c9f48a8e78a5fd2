"""The ``run`` step of ``bench_search.py``: every row of the search performance table
against a live server, each answer checked against what the data set predicts.

Callers: a clinician (user token of Practitioner/bench-search-dr, on the care team of
every patient it queries) for reads, writes and patient-scoped searches, the way a
clinic works; an operator token for the name search and the population query, because
only an operator reaches every patient (a clinician sees the patients they treat, a
backend client those of its organisation), so only its searches run over the whole
population; and for the identifier search, as a registration desk would run it (a
clinician sees identity numbers masked and each search by one is an identity look-up,
limited to FHIR_LOOKUPS_PER_MINUTE).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import bench_search_data as data
from bench_cpu import KINDS, ServerCpu
from bench_search_data import BenchError
from bench_search_rows import Api, DataSet, Row, Target, crowded_observations, rows
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

console = Console()
if not console.is_terminal:
    console.width = 160  # a log file gets the whole table
CLINICIAN = "Practitioner/bench-search-dr"
ORGANIZATION = "Organization/bench-search"
SAMPLE = 50  # regular patients queried (besides the heavy ones)
WRITERS = 4  # patients the create/update rows write into, queried by no other row


def mint(cli: str, url: str, *args: str) -> str:
    """An access token from `fhirserver token`, for the issuer the server at ``url``
    has when no setting names it otherwise."""
    env = dict(os.environ)
    if not (env.get("FHIR_BASE_URL") or env.get("FHIR_AUTH_ISSUER") or env.get("FHIR_PORT")):
        parts = urlsplit(url)
        env["FHIR_PORT"] = str(parts.port or 80)
        env.setdefault("FHIR_HOST", parts.hostname or "127.0.0.1")
    proc = subprocess.run([cli, "token", "--lifetime", "43200", *args], env=env,
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BenchError(f"fhirserver token {' '.join(args)}: {proc.stderr.strip()[-800:]}")
    return proc.stdout.strip()


def time_row(api: Api, row: Row, warmup: int, n: int, threads: int,
             meter: ServerCpu | None = None) -> tuple[list[float], float, dict[str, float]]:
    """Warm-up, then ``n`` timed requests from ``threads`` threads: (latencies, seconds,
    the server's CPU seconds over the timed requests by kind of process, when
    ``meter`` reads them). The first failure stops the row and is raised."""
    failed: list[BaseException] = []

    def one(i: int) -> float:
        if failed:
            return 0.0
        try:
            return row.job(i)(api)
        except BaseException as exc:  # noqa: BLE001 - re-raised below, after the pool stops
            failed.append(exc)
            return 0.0

    columns = (TextColumn(f"{row.key:<11}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar, \
            ThreadPoolExecutor(threads) as pool:
        task = bar.add_task(row.key, total=warmup + n)

        def tracked(i: int) -> float:
            took = one(i)
            bar.advance(task)
            return took

        list(pool.map(tracked, range(warmup)))
        before = meter.sample() if meter else {}
        started = time.perf_counter()
        latencies = list(pool.map(tracked, range(warmup, warmup + n)))
        seconds = time.perf_counter() - started
        after = meter.sample() if meter else {}
    if failed:
        raise BenchError(f"{row.label}: {failed[0]}") from failed[0]
    return latencies, seconds, {k: after[k] - before[k] for k in after}


#: The fixed pure-Python work of :func:`machine_pace`: multiply-adds.
PACE_STEPS = 1_000_000


def machine_pace() -> float:
    """CPU milliseconds this process takes for a fixed pure-Python loop, best of three,
    taken with the server idle just before a row. This machine's speed can change
    severalfold from one minute to the next, and a row's latencies move with it: the
    figure printed beside the row says which kind of minute it was measured in (a
    bigger figure is a slower machine). One thread on an idle machine does not see
    what contention for both cores costs, so it tells fast minutes from slow ones,
    not by how much."""
    best = float("inf")
    for _ in range(3):
        started, total = time.process_time(), 0
        for i in range(PACE_STEPS):
            total += i * 3
        best = min(best, time.process_time() - started)
    return best * 1000


def server_cpu(url: str) -> ServerCpu:
    """The meter of ``--cpu``: the server must run on this machine."""
    parts = urlsplit(url)
    try:
        return ServerCpu(parts.port or (443 if parts.scheme == "https" else 80))
    except LookupError as exc:
        raise BenchError(f"--cpu reads the server's processes on this machine: {exc}") from exc


def local_server(url: str) -> ServerCpu | None:
    """The server's processes when it runs on this machine, else None."""
    try:
        return server_cpu(url)
    except BenchError:
        return None


#: How long a row waits for PostgreSQL's autovacuum before it is timed anyway.
SETTLE_LIMIT = 900.0


def settle(server: ServerCpu | None) -> bool:
    """Wait until the server's PostgreSQL has no autovacuum worker at work (the
    table is of the unloaded machine): False when it still had one after
    :data:`SETTLE_LIMIT` seconds, and the row is timed with it."""
    if server is None or not server.maintenance():
        return True
    started = time.monotonic()
    with console.status("") as status:
        while (busy := server.maintenance()) and time.monotonic() - started < SETTLE_LIMIT:
            status.update(f"waiting for PostgreSQL's {len(busy)} autovacuum worker(s) to "
                          f"finish before the next row ({time.monotonic() - started:.0f} s): "
                          + "; ".join(busy))
            time.sleep(1)
    waited = time.monotonic() - started
    console.print(f"waited {waited:.0f} s for PostgreSQL's autovacuum"
                  + ("" if not busy else ", and timed the row with it still at work"),
                  highlight=False)
    return not busy


def check_loaded(api: Api, ds: DataSet, operator: str, work: str) -> None:
    """The server holds this data set: the first heavy patient's record ends where the
    plan says, with the data set's tag (the same ids serve every scale)."""
    spec = ds.plan.patients[ds.plan.heavy[0]]
    last = data.make_id(ds.seed, "Observation", spec.index, spec.observations - 1)
    beyond = data.make_id(ds.seed, "Observation", spec.index, spec.observations)
    try:
        api.call("GET", f"Patient/{spec.id}", operator)
        _, found = api.call("GET", f"Observation/{last}", operator)
    except BenchError as exc:
        if "HTTP 401" in str(exc):
            raise BenchError("the server refuses the token: run with the server's settings "
                             "(FHIR_DATA_DIR or MONGODB_URI, FHIR_MASTER_KEY, FHIR_BASE_URL / "
                             f"FHIR_PORT)\n{exc}") from exc
        if "HTTP 404" in str(exc):
            raise BenchError(f"the data set of {work} is not in this server's database: run "
                             f"the build step with the server's settings\n{exc}") from exc
        raise
    other = BenchError(f"this server holds a data set built with other parameters than the "
                       f"one in {work} (--scale, --seed, --synthea)")
    if ds.plan.tag not in found.get("meta", {}).get("tag", []):
        raise other
    try:
        api.call("GET", f"Observation/{beyond}", operator, expect=404)
    except BenchError as exc:
        raise other from exc


def crowd(api: Api, operator: str, patient: str) -> None:
    """Give the "crowded" row's patient its crowded month, once (by PUT: the same ids
    every run), in transactions of 50."""
    stays = crowded_observations(patient)
    try:
        api.call("GET", f"Observation/{stays[-1]['id']}", operator)
        return
    except BenchError as exc:
        if "HTTP 404" not in str(exc):
            raise
    console.print(f"writing a crowded month of {len(stays)} Observations for Patient/{patient}")
    for i in range(0, len(stays), 50):
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": o, "request": {"method": "PUT", "url": f"Observation/{o['id']}"}}
            for o in stays[i:i + 50]]}
        api.call("POST", "", operator, body=bundle)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(args: argparse.Namespace, manifest: dict[str, Any], cli: str,
        imported: tuple[int, float, float] | None) -> None:
    ds = DataSet(manifest)
    api = Api(args.url, args.timeout)
    rng = random.Random(f"{ds.seed}:run")
    heavy = [ds.plan.patients[i] for i in ds.plan.heavy]
    eligible = [p for p in ds.plan.patients
                if p.observations >= 5 and p.index not in ds.plan.heavy]
    writers = rng.sample(eligible, WRITERS)
    eligible = [p for p in eligible if p not in writers]
    sample = rng.sample(eligible, min(SAMPLE, len(eligible)))
    named = rng.sample(ds.plan.patients, min(SAMPLE, len(ds.plan.patients)))
    records = [data.record(ds.plan, p) for p in heavy + sample]
    # Queried by the "crowded" row only, which first gives it a crowded month.
    crowded = data.record(ds.plan, next(p for p in reversed(eligible) if p not in sample))

    console.print("tokens: an operator's and a clinician's, from fhirserver token")
    operator = args.token or mint(cli, args.url, "--operator", "--scope", "system/*.cruds")
    clinician = mint(cli, args.url, "--practitioner", CLINICIAN, "--organization", ORGANIZATION,
                     "--scope", "user/*.cruds")
    check_loaded(api, ds, operator, str(args.work))
    care = {"resourceType": "Parameters",
            "parameter": [{"name": "member", "valueReference": {"reference": CLINICIAN}}]}
    for spec in heavy + sample + writers + [crowded.spec]:
        api.call("POST", f"Patient/{spec.id}/$care-team", operator, body=care)

    chosen = [k for k in args.rows.split(",") if k]
    table_rows = rows(ds, records, writers, named, clinician, operator, crowded)
    if not chosen or "crowded" in chosen:
        crowd(api, operator, crowded.spec.id)
    unknown = set(chosen) - {r.key for r in table_rows} - {"import"}
    if unknown:
        raise BenchError(f"unknown rows {sorted(unknown)}: choose among "
                         f"{[r.key for r in table_rows]}")
    synthea = manifest["synthea"]["kept"]
    title = (f"search bench at {args.url}: {manifest['patients'] + synthea.get('Patient', 0)} "
             f"Patients, {manifest['observations'] + synthea.get('Observation', 0)} Observations, "
             f"{manifest['reports'] + synthea.get('DiagnosticReport', 0)} DiagnosticReports "
             f"(scale {manifest['params']['scale']:g}); {args.threads} client threads")
    meter = server_cpu(args.url) if args.cpu else None
    local = meter or local_server(args.url)
    caption = CAPTION + (CPU_CAPTION if meter else "")
    table = Table(title=title, caption=caption, caption_justify="left")
    cpu_cols = [f"cpu {SHORT[kind]}" for kind in KINDS] if meter else []
    for col in ("key", "request", "n", "p50 ms", "p99 ms", "req/s", *cpu_cols, "pace ms",
                "target (ms)", "met"):
        table.add_column(col, justify="left" if col in ("key", "request", "target (ms)", "met")
                         else "right")
    try:
        for row in table_rows:
            if chosen and row.key not in chosen:
                continue
            quiet = settle(local)
            pace = machine_pace()
            lat, seconds, cpu = time_row(api, row, args.warmup, args.requests, args.threads,
                                         meter)
            p50, p99 = statistics.median(lat) * 1000, percentile(lat, 0.99) * 1000
            rate = len(lat) / seconds
            met = row.target.met(p50, p99, rate)
            per_request = [f"{cpu[kind] * 1000 / len(lat):.2f}" for kind in KINDS] if meter else []
            table.add_row(row.key, row.label, str(len(lat)), f"{p50:.1f}", f"{p99:.1f}",
                          f"{rate:.1f}", *per_request, f"{pace:.0f}", row.target.text(),
                          ("[green]yes" if met else "[red]no") + ("" if quiet else " (vacuum)"))
            console.print(f"{row.key}: {len(lat)} requests in {seconds:.1f} s", highlight=False)
        target = Target(rate=500)
        if imported and (not chosen or "import" in chosen):
            resources, seconds, _ = imported
            rate = resources / seconds
            table.add_row("import", "fhirserver import (resources/s, measured by build)",
                          str(resources), "", "", f"{rate:.0f}", *[""] * len(cpu_cols), "",
                          target.text(),
                          "[green]yes" if target.met(None, None, rate) else "[red]no")
    finally:
        if table.row_count:
            console.print(table)

SHORT = {"python": "py", "ferretdb": "fdb", "postgresql": "pg"}
CPU_CAPTION = (" cpu py / fdb / pg: CPU ms per timed request of the server's Python "
               "workers, FerretDB and PostgreSQL.")
CAPTION = (f"Callers: clinician {CLINICIAN} (care team of the patients queried) for reads, "
           "writes and patient-scoped searches; operator token for the identifier, name and "
           "population rows (only an operator reaches every patient: clinicians and backend "
           "clients see their own patients only). Authorization and audit as the server runs "
           "them. Every answer checked against the data set. pace ms: CPU ms of a fixed "
           f"pure-Python loop ({PACE_STEPS:,} multiply-adds, best of 3) in the bench client "
           "just before the row, the server idle: how fast the machine was then (bigger is "
           "slower). A row on a server of this machine starts once PostgreSQL's autovacuum "
           "workers are idle (met \"(vacuum)\": it waited 15 minutes and was timed with one "
           "at work).")
