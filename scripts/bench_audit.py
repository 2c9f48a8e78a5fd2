"""Audit log appends: one serial append per request, group commit of records holding
their event as a document, and group commit as it is now (the event as JSON text).

    .venv/bin/python scripts/bench_audit.py [-n 400] [--threads 1,4] [--baseline REV]
        [--modes serial,document,group] [--rounds K]

Appends ``n`` AuditEvents (a clinician's read, as ``api/auditing.py`` records it)
from 1 and from 4 threads, each thread appending one after another as a request
thread does, to a fresh database on the configured server (MONGODB_URI, else the
embedded FerretDB of FHIR_DATA_DIR, started if needed), and prints appends per
second and the p50/p99 time of one append; every run's chain is verified after.

"serial" is the appender of revision ``--baseline`` (default: the newest commit
whose ``fhirserver/audit/chain.py`` still has the serial ``append``), loaded from
git with the checkpoint module of that revision; "group" is the current
:class:`fhirserver.audit.appender.Appender`; "document" is the current appender
writing the records of the newest revision that stored the event as a document
(format 2). On an embedded database this command starts (none other runs on the data
directory) the table also shows the CPU each append cost the database (FerretDB and
PostgreSQL); and always what it cost this process (building, MAC, driver).
"""

from __future__ import annotations

import argparse
import os
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

from bench_cpu import ServerCpu
from pymongo import MongoClient
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from fhirserver.audit import appender as appender_module
from fhirserver.audit.appender import Appender
from fhirserver.audit.chain import Keys, keyed_record, verify
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


def document_revision() -> str:
    """The newest commit whose chain.py stores the event as a document (format 2)."""
    for rev in _git("log", "--format=%H", "--", CHAIN).split():
        if "\nFORMAT = 2" in _git("show", f"{rev}:{CHAIN}"):
            return rev
    raise SystemExit("no revision storing the event as a document found")


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


def record_format(rev: str | None) -> Callable[..., dict[str, Any]]:
    """The record builder the appender uses: revision ``rev``'s, or the current one."""
    if rev is None:
        return keyed_record
    return _load(rev, CHAIN, "document_chain").keyed_record  # type: ignore[no-any-return]


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
    ap.add_argument("--modes", default="serial,group",
                    help="comma-separated: serial, document, group")
    args = ap.parse_args()
    counts = [int(t) for t in args.threads.split(",")]
    modes = [m for m in args.modes.split(",") if m]
    if set(modes) - {"serial", "document", "group"}:
        raise SystemExit(f"unknown mode in {args.modes}")
    rev = args.baseline or baseline_revision() if "serial" in modes else ""
    documents = document_revision() if "document" in modes else None
    console.print(", ".join(
        [*([f"serial append from {rev[:10]}"] if rev else []),
         *([f"records as documents from {documents[:10]}"] if documents else []),
         "group commit from the working tree"]))
    settings = Settings.from_env()
    results: dict[tuple[str, int], list[tuple[float, list[float], str, float, float]]] = {}
    with database(settings) as live, tempfile.TemporaryDirectory() as tmp:
        keys = Keys.derive(read_or_create(Path(tmp) / "master.key"))
        client: MongoClient[dict[str, Any]] = MongoClient(live.mongodb_uri)
        meter = None
        if not settings.mongodb_uri:
            try:
                meter = ServerCpu.of_database(Path(settings.data_dir), os.getpid())
            except LookupError:
                console.print("database CPU not measured: another process runs the embedded "
                              "database of this data directory (its load would count too)")
        plan = [(mode, threads) for _ in range(args.rounds) for threads in counts
                for mode in modes]
        try:
            with Progress(console=console, transient=True) as progress:
                task = progress.add_task("appending", total=len(plan) * args.n)
                for mode, threads in plan:
                    name = f"bench_audit_{uuid.uuid4().hex[:8]}"
                    db, checkpoint_file = client[name], Path(tmp) / f"{name}.log"
                    appender = None
                    # the appender builds its records with the name it imported
                    setattr(appender_module, "keyed_record",  # noqa: B010
                            record_format(documents if mode == "document" else None))
                    if mode == "serial":
                        append = serial_append(rev, db, keys, checkpoint_file)
                    else:
                        append, appender = group_append(db, keys, checkpoint_file)
                    for n in range(5):  # the collection and a connection exist before timing
                        append(*sample_event(n))
                    progress.update(task, description=f"{mode}, {threads} thread(s)")
                    try:
                        before = meter.sample() if meter else {}
                        cpu = time.process_time()
                        wall, times = run(append, args.n, threads, lambda: progress.advance(task))
                        cpu = (time.process_time() - cpu) * 1000 / args.n
                        after = meter.sample() if meter else {}
                        spent = sum(after[k] - before[k] for k in ("ferretdb", "postgresql")) \
                            * 1000 / args.n if meter else float("nan")
                        report = verify(db, keys, [checkpoint_file])
                        if report.broken is not None or report.checked != args.n + 5:
                            raise SystemExit(f"{mode}/{threads}: the chain does not verify: {report}")
                    finally:
                        client.drop_database(name)
                    groups = f"{(appender.records - 5) / max(appender.groups - 5, 1):.1f}" \
                        if appender is not None else "1.0"
                    results.setdefault((mode, threads), []).append((wall, times, groups, cpu, spent))
        finally:
            setattr(appender_module, "keyed_record", keyed_record)  # noqa: B010
            client.close()
    table = Table(title=f"audit appends ({args.n} per run, {args.rounds} run(s) each)")
    for col in ("appender", "threads", "appends/s", "p50 ms", "p99 ms", "records per write",
                "python CPU ms", "database CPU ms"):
        table.add_column(col, justify="left" if col == "appender" else "right")
    for (mode, threads), runs in sorted(results.items(),
                                        key=lambda kv: (kv[0][1], modes.index(kv[0][0]))):
        times = sorted(t for _, ts, *_ in runs for t in ts)
        rate = sum(args.n / r[0] for r in runs) / len(runs)
        table.add_row(mode, str(threads), f"{rate:.0f}", f"{statistics.median(times):.2f}",
                      f"{times[min(len(times) - 1, int(0.99 * len(times)))]:.2f}",
                      ", ".join(r[2] for r in runs), " / ".join(f"{r[3]:.2f}" for r in runs),
                      " / ".join(f"{r[4]:.2f}" for r in runs))
    console.print(table)


if __name__ == "__main__":
    sys.exit(main())
