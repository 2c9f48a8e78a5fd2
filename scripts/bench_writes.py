"""CPU a clinician's create and update cost, with and without the workers' change signal.

    .venv/bin/python scripts/bench_writes.py [--blocks 8] [--per-block 100]

Runs in-process against the embedded database of FHIR_DATA_DIR (the running
server's, else started for the run; MONGODB_URI is refused: the signal is the
embedded database's), in a database of its own (``fhir_bench_writes``, dropped at
the end). A clinician treating one new patient creates and updates Observations.
The requests alternate in blocks between the two ways a write learns whether the
clinician is on emergency access for its audit record:

* signalled: the workers of the server tell each other of every changed care
  relationship (``storage/change_signal.py``), so what the process holds is exact
  and the write asks the database nothing more;
* unsignalled: as on a database that other servers write too, the write queries the
  clinician's emergency relationships.

Each block's figure is the CPU of this process plus that of FerretDB and PostgreSQL
(read from ``/proc``; a server running on the data directory should be idle meanwhile)
divided by its requests. This machine's speed changes from one minute to the next, and a figure of
one kind alone moves with it; blocks of the two kinds side by side, in alternating
order, see the same minutes, so their ratio holds where their values do not.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench_cpu import KINDS, ServerCpu
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from fhirserver import create_app
from fhirserver.auth.access import record_care
from fhirserver.auth.tokens import TokenService
from fhirserver.config import Settings
from fhirserver.crypto.master import load
from fhirserver.crypto.sealing import sealer
from fhirserver.storage import changes
from fhirserver.storage.embedded import STATE_FILE, database

console = Console()
DB = "fhir_bench_writes"
DOCTOR = "Practitioner/bench-writes-dr"
FHIR_JSON = "application/fhir+json"


def _observation(patient: str, value: float) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8310-5"}]},
            "subject": {"reference": f"Patient/{patient}"},
            "effectiveDateTime": datetime.now(UTC).isoformat(),
            "valueQuantity": {"value": value, "unit": "Cel", "system": "http://unitsofmeasure.org",
                              "code": "Cel"}}


class Writer:
    """The clinician's create and update, through the app's WSGI stack."""

    def __init__(self, app: Any, token: str, patient: str) -> None:
        self.client = app.test_client()
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": FHIR_JSON}
        self.patient = patient
        self.made: list[dict[str, Any]] = []
        self.n = 0

    def create(self) -> None:
        self.n += 1
        r = self.client.post("/Observation", json=_observation(self.patient, 36 + self.n % 20 / 10),
                             headers=self.headers)
        if r.status_code != 201:
            raise SystemExit(f"create answered {r.status_code}: {r.get_data()[:300]!r}")
        self.made.append(r.get_json())

    def update(self) -> None:
        self.n += 1
        body = dict(self.made[self.n % len(self.made)])
        body.pop("meta", None)
        body["valueQuantity"] = dict(body["valueQuantity"], value=37 + self.n % 10 / 10)
        r = self.client.put(f"/Observation/{body['id']}", json=body, headers=self.headers)
        if r.status_code != 200:
            raise SystemExit(f"update answered {r.status_code}: {r.get_data()[:300]!r}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--blocks", type=int, default=8, help="blocks of each kind, per interaction")
    ap.add_argument("--per-block", type=int, default=100, help="requests per block")
    args = ap.parse_args()
    if os.environ.get("MONGODB_URI"):
        raise SystemExit("the change signal is the embedded database's: unset MONGODB_URI")
    with database(Settings.from_env()) as live:
        settings = live.with_(mongodb_db=DB)
        app = create_app(settings)
        repo = app.extensions["fhirserver"].repo
        try:
            run(app, repo, settings, args, _database_cpu(Path(settings.data_dir)))
        finally:
            repo.client.drop_database(DB)
            repo.close()


def _database_cpu(data_dir: Path) -> ServerCpu:
    """FerretDB and PostgreSQL of ``data_dir``, started by the server that runs on it
    (its state file names it) or by this process."""
    state = data_dir / STATE_FILE
    owner = json.loads(state.read_text())["pid"] if state.exists() else os.getpid()
    return ServerCpu.of_database(data_dir, owner)


def run(app: Any, repo: Any, settings: Settings, args: argparse.Namespace,
        meter: ServerCpu) -> None:
    now = datetime.now(UTC)
    service = TokenService(repo.db, settings.issuer, sealer(load(settings)))
    operator, _ = service.mint(subject="bench-writes", scope="system/*.cruds", kind="operator",
                               lifetime=3600, now=now)
    r = app.test_client().post("/Patient", json={"resourceType": "Patient", "name": [{"family": "Bench"}]},
                               headers={"Authorization": f"Bearer {operator}",
                                        "Content-Type": FHIR_JSON})
    patient = r.get_json()["id"]
    record_care(repo.db, DOCTOR, patient, now + timedelta(hours=2), "card-scan")
    token, _ = service.mint(subject="bench-writes-dr", scope="user/*.cruds", kind="user",
                            lifetime=3600, now=now, fhirUser=DOCTOR,
                            organization="Organization/bench-writes")
    writer = Writer(app, token, patient)
    signals = Path(settings.data_dir)
    for _ in range(30):  # warm-up, and records to update
        writer.create()
    figures: dict[tuple[str, str], list[float]] = {}
    with Progress(console=console, transient=True) as bar:
        for name, call in (("create", writer.create), ("update", writer.update)):
            task = bar.add_task(name, total=2 * args.blocks * args.per_block)
            for block in range(args.blocks):
                for kind in (("signalled", "unsignalled") if block % 2 == 0
                             else ("unsignalled", "signalled")):
                    changes.signal_in(repo.db, signals if kind == "signalled" else None)
                    before, cpu = meter.sample(), time.process_time()
                    for _ in range(args.per_block):
                        call()
                        bar.advance(task)
                    after = meter.sample()
                    spent = time.process_time() - cpu + sum(after[k] - before[k] for k in KINDS
                                                            if k != "python")
                    figures.setdefault((name, kind), []).append(1000 * spent / args.per_block)
    changes.signal_in(repo.db, signals)
    table = Table(title=f"CPU ms per request ({args.blocks} blocks of {args.per_block} per kind)")
    for col in ("request", "signalled", "unsignalled", "signalled / unsignalled"):
        table.add_column(col, justify="left" if col == "request" else "right")
    for name in ("create", "update"):
        a = statistics.median(figures[(name, "signalled")])
        b = statistics.median(figures[(name, "unsignalled")])
        table.add_row(name, f"{a:.2f}", f"{b:.2f}", f"{a / b:.3f}")
    console.print(table)


if __name__ == "__main__":
    main()
