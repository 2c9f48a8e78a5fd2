"""Does a refusal take as long as a miss? Reads of a hidden Patient and of an id that
does not exist, by a clinician who treats neither, timed side by side.

    .venv/bin/python scripts/bench_oracle.py [-n 300]

Runs the whole request in-process (token check, policy, database, audit record)
against the configured database (MONGODB_URI, else the embedded FerretDB, started if
needed), alternating the two kinds of read so that both see the same machine. A
difference in the medians is what a stranger could measure to learn which ids exist.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from datetime import UTC, datetime

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from fhirserver import create_app
from fhirserver.auth.tokens import TokenService
from fhirserver.config import Settings
from fhirserver.crypto.master import load
from fhirserver.crypto.sealing import sealer
from fhirserver.storage.embedded import database

console = Console()
DB = "fhir_bench_oracle"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=300, help="reads of each kind")
    args = ap.parse_args()
    settings = Settings.from_env(mongodb_db=DB)
    with database(settings) as live:
        app = create_app(live.with_(mongodb_db=DB))
        st = app.extensions["fhirserver"]
        try:
            service = TokenService(st.repo.db, live.issuer, sealer(load(live)))
            now = datetime.now(UTC)
            operator, _ = service.mint(subject="bench", scope="system/*.cruds", kind="operator",
                                       lifetime=3600, now=now)
            clinician, _ = service.mint(subject="bench-dr", scope="user/*.cruds", kind="user",
                                        lifetime=3600, now=now, fhirUser="Practitioner/bench-dr",
                                        organization="Organization/bench")
            client = app.test_client()
            body = {"resourceType": "Patient", "name": [{"family": "Hidden"}]}
            hidden = client.post("/Patient", json=body, content_type="application/fhir+json",
                                 headers={"Authorization": f"Bearer {operator}"}).get_json()["id"]
            auth = {"Authorization": f"Bearer {clinician}"}
            timings: dict[str, list[float]] = {"hidden": [], "missing": []}
            with Progress(console=console, transient=True) as progress:
                task = progress.add_task("reads", total=2 * args.n)
                for i in range(args.n):
                    order = (("hidden", hidden), ("missing", str(uuid.uuid4())))
                    for name, pid in order if i % 2 else reversed(order):
                        started = time.perf_counter()
                        status = client.get(f"/Patient/{pid}", headers=auth).status_code
                        timings[name].append((time.perf_counter() - started) * 1000)
                        assert status == 404, status
                        progress.advance(task)
        finally:
            st.repo.client.drop_database(DB)
            st.repo.close()
    table = Table(title=f"read of a Patient the clinician may not see ({args.n} each, ms)")
    for col in ("kind", "p50", "p90", "mean"):
        table.add_column(col, justify="left" if col == "kind" else "right")
    for name, values in timings.items():
        values.sort()
        table.add_row(name, f"{statistics.median(values):.2f}", f"{values[int(len(values) * 0.9)]:.2f}",
                      f"{statistics.fmean(values):.2f}")
    console.print(table)


if __name__ == "__main__":
    main()
