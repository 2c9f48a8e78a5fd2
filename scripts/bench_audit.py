"""Audit log appends: one serial append per request (before) against group commit (now).

    .venv/bin/python scripts/bench_audit.py [-n 400] [--threads 1,4] [--baseline REV]

Appends ``n`` AuditEvents (a clinician's read, as ``api/auditing.py`` records it)
from 1 and from 4 threads, each thread appending one after another as a request
thread does, to a fresh database on the configured server (MONGODB_URI, else the
embedded FerretDB of FHIR_DATA_DIR, started if needed), and prints appends per
second and the p50/p99 time of one append; every run's chain is verified after.

"serial" is the appender of revision ``--baseline`` (default: the newest commit
whose ``fhirserver/audit/chain.py`` still has the serial ``append``), loaded from
git with the checkpoint module of that revision; "group" is the current
:class:`fhirserver.audit.appender.Appender`.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import types
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pymongo import MongoClient
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from fhirserver.audit.appender import Appender
from fhirserver.audit.chain import Keys, verify
from fhirserver.audit.events import Facts, audit_event
from fhirserver.config import Settings
from fhirserver.crypto.master import read_or_create
from fhirserver.storage.embedded import database

ROOT = Path(__file__).resolve().parent.parent
CHAIN = "fhirserver/audit/chain.py"
console = Console()

Append = Callable[[dict[str, Any], list[str]], int]


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True,
                          text=True).stdout


def baseline_revision() -> str:
    """The newest commit whose chain.py appends one record per call."""
    for rev in _git("log", "--format=%H", "--", CHAIN).split():
        if "\ndef append(db" in _git("show", f"{rev}:{CHAIN}"):
            return rev
    raise SystemExit("no revision with the serial append found")


def _load(rev: str, path: str, name: str) -> types.ModuleType:
    module = types.ModuleType(f"fhirserver.audit.{name}")
    module.__package__ = "fhirserver.audit"
    sys.modules[module.__name__] = module  # dataclasses look their module up there
    source = compile(_git("show", f"{rev}:{path}"), f"{rev[:10]}:{path}", "exec")
    exec(source, module.__dict__)  # noqa: S102 - our own code, from our own history
    return module


def serial_append(rev: str, db: Any, keys: Keys, checkpoint_file: Path) -> Append:
    """The append of revision ``rev``, with that revision's checkpoint writer."""
    chain = _load(rev, CHAIN, "baseline_chain")
    chain.checkpoints = _load(rev, "fhirserver/audit/checkpoints.py", "baseline_checkpoints")
    return lambda event, patients: int(chain.append(db, event, patients, keys, checkpoint_file))


def group_append(db: Any, keys: Keys, checkpoint_file: Path) -> tuple[Append, Appender]:
    appender = Appender(db)
    return (lambda event, patients: appender.append(event, patients, keys, checkpoint_file)), appender


def sample_event(n: int) -> tuple[dict[str, Any], list[str]]:
    patient = f"bench-patient-{n % 50}"
    facts = Facts(interaction="read", at=datetime.now(UTC), status=200, method="GET",
                  path=f"/Patient/{patient}", who="Practitioner/bench-dr", client_id="bench-ehr",
                  organization="Organization/bench-hospital", kind="user", patients=(patient,),
                  resource=f"Patient/{patient}")
    return audit_event(facts), [patient]


def run(append: Append, appends: int, threads: int, advance: Callable[[], None]) -> tuple[float, list[float]]:
    """Wall seconds and per-append milliseconds of ``appends`` split over ``threads``."""
    times: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(threads + 1)
    failures: list[BaseException] = []

    def worker(first: int) -> None:
        mine: list[float] = []
        start.wait()
        try:
            for n in range(first, appends, threads):
                event, patients = sample_event(n)
                t0 = time.perf_counter()
                append(event, patients)
                mine.append((time.perf_counter() - t0) * 1000)
                advance()
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            failures.append(exc)
        with lock:
            times.extend(mine)

    pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for t in pool:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in pool:
        t.join()
    wall = time.perf_counter() - t0
    if failures:
        raise failures[0]
    return wall, times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=400, help="appends per run")
    ap.add_argument("--threads", default="1,4", help="comma-separated thread counts")
    ap.add_argument("--baseline", default="", help="git revision of the serial append")
    ap.add_argument("--rounds", type=int, default=1, help="runs of each mode and thread count")
    args = ap.parse_args()
    counts = [int(t) for t in args.threads.split(",")]
    rev = args.baseline or baseline_revision()
    console.print(f"serial append from {rev[:10]}; group commit from the working tree")
    settings = Settings.from_env()
    results: dict[tuple[str, int], list[tuple[float, list[float], str]]] = {}
    with database(settings) as live, tempfile.TemporaryDirectory() as tmp:
        keys = Keys.derive(read_or_create(Path(tmp) / "master.key"))
        client: MongoClient[dict[str, Any]] = MongoClient(live.mongodb_uri)
        plan = [(mode, threads) for _ in range(args.rounds) for threads in counts
                for mode in ("serial", "group")]
        try:
            with Progress(console=console, transient=True) as progress:
                task = progress.add_task("appending", total=len(plan) * args.n)
                for mode, threads in plan:
                    name = f"bench_audit_{uuid.uuid4().hex[:8]}"
                    db, checkpoint_file = client[name], Path(tmp) / f"{name}.log"
                    appender = None
                    if mode == "serial":
                        append = serial_append(rev, db, keys, checkpoint_file)
                    else:
                        append, appender = group_append(db, keys, checkpoint_file)
                    for n in range(5):  # the collection and a connection exist before timing
                        append(*sample_event(n))
                    progress.update(task, description=f"{mode}, {threads} thread(s)")
                    try:
                        wall, times = run(append, args.n, threads, lambda: progress.advance(task))
                        report = verify(db, keys, [checkpoint_file])
                        if report.broken is not None or report.checked != args.n + 5:
                            raise SystemExit(f"{mode}/{threads}: the chain does not verify: {report}")
                    finally:
                        client.drop_database(name)
                    groups = f"{(appender.records - 5) / max(appender.groups - 5, 1):.1f}" \
                        if appender is not None else "1.0"
                    results.setdefault((mode, threads), []).append((wall, times, groups))
        finally:
            client.close()
    table = Table(title=f"audit appends ({args.n} per run, {args.rounds} run(s) each)")
    for col in ("appender", "threads", "appends/s", "p50 ms", "p99 ms", "records per write"):
        table.add_column(col, justify="left" if col == "appender" else "right")
    for (mode, threads), runs in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0] != "serial")):
        times = sorted(t for _, ts, _ in runs for t in ts)
        rate = sum(args.n / wall for wall, _, _ in runs) / len(runs)
        table.add_row(mode, str(threads), f"{rate:.0f}", f"{statistics.median(times):.2f}",
                      f"{times[min(len(times) - 1, int(0.99 * len(times)))]:.2f}",
                      ", ".join(g for _, _, g in runs))
    console.print(table)


if __name__ == "__main__":
    sys.exit(main())
