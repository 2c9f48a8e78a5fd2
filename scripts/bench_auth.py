"""Authorization overhead per request: token check + access policy, per kind of caller.

    .venv/bin/python scripts/bench_auth.py [-n 2000] [--relationships 50] [--consents 20000]
                                           [--organisation 10000]

Runs in-process against the configured database (MONGODB_URI, else the embedded
FerretDB, started if needed) what every FHIR request pays before its own work:
verifying the Bearer token (RS256; a repeated token is remembered), building the
caller, and the policy's search filter for Observation, which for clinicians and
backend clients reads their care relationships and the patients' consent choices.
Prints p50/p99 in microseconds per caller kind. Then, with that many patients'
sharing choices stored, what a worker's look at them every ``consent.REFRESH``
seconds costs: when nothing changed (the change log's number alone), when another
process changed one (that one read), and when a process started (every choice read
again, as every look did before the change log). Then the same for a clinic
system's organisation with that many care relationships: the look at whom it
reaches every ``reach_cache.REFRESH`` seconds, which read all of them again before
their change log.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from fhirserver.auth import consent, reach_cache
from fhirserver.auth.access import Access, record_care
from fhirserver.auth.callers import caller_from_claims
from fhirserver.auth.tokens import TokenService
from fhirserver.config import Settings
from fhirserver.crypto.master import load
from fhirserver.crypto.sealing import sealer
from fhirserver.storage.embedded import database
from fhirserver.storage.repository import Repository

console = Console()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=2000, help="requests per caller kind")
    ap.add_argument("--relationships", type=int, default=50, help="care relationships of the clinician")
    ap.add_argument("--consents", type=int, default=20000, help="patients with a sharing choice")
    ap.add_argument("--organisation", type=int, default=10000,
                    help="care relationships of a clinic system's organisation")
    args = ap.parse_args()
    settings = Settings.from_env(mongodb_db="fhir_bench_auth")
    with database(settings) as live:
        repo = Repository.from_settings(live.with_(mongodb_db="fhir_bench_auth"))
        try:
            service = TokenService(repo.db, live.issuer, sealer(load(live)))
            now = datetime.now(UTC)
            for i in range(args.relationships):
                record_care(repo.db, "Practitioner/bench-dr", f"bench-p{i}", now + timedelta(hours=1),
                            "card-scan")
                record_care(repo.db, "Organization/bench-org", f"bench-p{i}", now + timedelta(hours=1),
                            "card-scan")
            kinds = {
                "operator": dict(kind="operator", scope="system/*.cruds"),
                "backend client": dict(kind="system", scope="system/*.rs", organization="Organization/bench-org"),
                "clinician": dict(kind="user", scope="user/*.cruds", fhirUser="Practitioner/bench-dr"),
                "patient": dict(kind="patient", scope="patient/*.rs", patient="bench-p1"),
            }
            table = Table(title=f"authorization overhead per request ({args.n} requests each)")
            for col in ("caller", "p50 µs", "p99 µs", "first request µs"):
                table.add_column(col, justify="left" if col == "caller" else "right")
            with Progress(console=console, transient=True) as progress:
                for name, claims in kinds.items():
                    kind = claims.pop("kind")
                    scope = claims.pop("scope")
                    token, _ = service.mint(subject=f"bench-{kind}", scope=scope, kind=kind,
                                            lifetime=3600, now=now, **claims)
                    task = progress.add_task(name, total=args.n)
                    times: list[float] = []
                    for _ in range(args.n):
                        t0 = time.perf_counter()
                        caller = caller_from_claims(service.verify(token, datetime.now(UTC)))
                        Access(caller, repo.db, datetime.now(UTC)).search_filter("Observation")
                        times.append((time.perf_counter() - t0) * 1e6)
                        progress.advance(task)
                    ordered = sorted(times)
                    table.add_row(name, f"{statistics.median(times):.0f}",
                                  f"{ordered[int(0.99 * len(ordered))]:.0f}", f"{times[0]:.0f}")
            console.print(table)
            console.print(_consent_looks(repo.db, args.consents, max(20, args.n // 20)))
            console.print(_reach_looks(repo.db, args.organisation, max(20, args.n // 20)))
        finally:
            repo.client.drop_database("fhir_bench_auth")
            repo.close()


def _consent_looks(db: object, stored: int, looks: int) -> Table:
    """Store ``stored`` choices (in batches, with progress), then time ``looks`` looks
    of each kind: unchanged, and after a change counted by another process."""
    _store(db[consent.CONSENTS], "storing sharing choices", stored,  # type: ignore[index]
           lambda i: {"_id": f"bench-c{i}", "restrict_sensitive": True})
    consent.save(db, "bench-c0", consent.Choice(opt_out=True))
    consent.REFRESH = 0.0
    consent.cached(db, [])  # this process's own change read, as every worker has it

    def changed_elsewhere(i: int) -> None:
        consent.save(db, "bench-c1", consent.Choice(opt_out=i % 2 == 0))
        held = consent._cache[consent._cache_key(db)]
        held.looked = 0.0  # as another process's change leaves this one's cache

    def look() -> None:
        assert consent.cached(db, ["bench-c0"]) == {"bench-c0": consent.Choice(opt_out=True)}

    return _timed_looks(
        f"a worker's look at {stored} sharing choices ({looks} looks each)", looks, look,
        (("nothing changed", None),
         ("another process changed one", changed_elsewhere),
         ("a process started: read whole", lambda i: consent.count_lost_change(db))))


def _reach_looks(db: object, stored: int, looks: int) -> Table:
    """Give an organisation ``stored`` care relationships (in batches, with progress),
    then time ``looks`` looks at whom its client reaches, of each kind."""
    org = "Organization/bench-big"
    until = datetime.now(UTC) + timedelta(hours=2)
    _store(db[reach_cache.CARE], "storing care relationships", stored,  # type: ignore[index]
           lambda i: {"_id": f"{org}|bench-r{i}", "who": org, "patient": f"bench-r{i}",
                      "until": until, "reason": "card-scan", "emergency": False, "at": until})
    reach_cache.count_lost_change(db)  # stored around the log: read whole at the next look
    reach_cache.REFRESH = 0.0
    caller = caller_from_claims({"sub": "bench-client", "kind": "system", "scope": "system/*.rs",
                                 "organization": org, "client_id": "bench"})

    def look() -> None:
        assert len(Access(caller, db, datetime.now(UTC)).reachable() or ()) >= stored

    look()

    def elsewhere(i: int) -> None:  # opened by another process: this one holds the old map
        held = reach_cache._held[reach_cache._db_key(db)]
        kept = dict(held.callers)
        record_care(db, org, f"bench-new{i}", until, "card-scan")
        held.callers = kept

    return _timed_looks(
        f"a worker's look at whom an organisation with {stored} care relationships reaches "
        f"({looks} looks each)", looks, look,
        (("nothing changed", None),
         ("another process opened one", elsewhere),
         ("a process started: read whole (every look before)",
          lambda i: reach_cache.count_lost_change(db))))


def _store(collection: Any, label: str, stored: int, doc: Callable[[int], dict[str, Any]]) -> None:
    """Insert ``stored`` documents ``doc(i)`` in batches of 1,000, with progress."""
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(label, total=stored)
        for start in range(0, stored, 1000):
            batch = range(start, min(stored, start + 1000))
            collection.insert_many([doc(i) for i in batch])
            progress.advance(task, len(batch))


def _timed_looks(title: str, looks: int, look: Callable[[], None],
                 kinds: tuple[tuple[str, Callable[[int], None] | None], ...]) -> Table:
    """p50/p99 of ``looks`` calls of ``look`` for each kind, each after its change."""
    table = Table(title=title)
    for col in ("look", "p50 µs", "p99 µs"):
        table.add_column(col, justify="left" if col == "look" else "right")
    with Progress(console=console, transient=True) as progress:
        for name, change in kinds:
            task = progress.add_task(name, total=looks)
            times: list[float] = []
            for i in range(looks):
                if change is not None:
                    change(i)
                t0 = time.perf_counter()
                look()
                times.append((time.perf_counter() - t0) * 1e6)
                progress.advance(task)
            ordered = sorted(times)
            table.add_row(name, f"{statistics.median(times):.0f}", f"{ordered[int(0.99 * len(ordered))]:.0f}")
    return table

if __name__ == "__main__":
    main()
