"""The `fhirserver` command: serve, import, token, keys, clients, users, audit."""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .config import Settings
from .storage.embedded import database

DEMO_DIR = Path(__file__).parent / "demo"
#: Import processes at most: each holds its own connections to the database.
MAX_IMPORT_JOBS = 8
console = Console(stderr=True)


@click.group()
@click.version_option(package_name="fhirserver")
def main() -> None:
    """FHIR R4 server for Patient, Observation and DiagnosticReport, with the care team
    and the clinician directory (Practitioner, Organization, PractitionerRole)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def _register_commands() -> None:
    from .auth.client_commands import clients
    from .auth.commands import audit, keys, token
    from .auth.user_commands import users_

    main.add_command(token)
    main.add_command(keys)
    main.add_command(clients)
    main.add_command(audit)
    main.add_command(users_)


_register_commands()


# -- serve -------------------------------------------------------------------------


@main.command()
@click.option("--host", default=None, help="Address to listen on [FHIR_HOST, 127.0.0.1].")
@click.option("--port", type=int, default=None, help="Port [FHIR_PORT, 8080].")
@click.option("--workers", type=int, default=None, help="Worker processes [FHIR_WORKERS, 2].")
@click.option("--demo", is_flag=True, help="Load the bundled sample patients first.")
def serve(host: str | None, port: int | None, workers: int | None, demo: bool) -> None:
    """Run the server under gunicorn (embedded FerretDB when MONGODB_URI is unset)."""
    settings = Settings.from_env(host=host, port=port, workers=workers)
    with database(settings, own=True) as live:
        if demo:
            run_import(live, demo_files())
        if settings.mongodb_uri is None:
            console.print(f"database: embedded FerretDB, data in {live.data_dir}")
        for line in banner(live):
            console.print(line, highlight=False)
        if demo:
            demo_accounts(live)
        _gunicorn(live)


def demo_files() -> list[Path]:
    """The demo's directory (Practitioner/dr-smith of Organization/demo-hospital, the
    fhirUser of README's example tokens) and its sample patients."""
    return [DEMO_DIR / "directory.json", *sorted(DEMO_DIR.glob("*.json.gz"))]


def banner(settings: Settings) -> list[str]:
    """Where apps reach the server and what they must call it. Tokens carry the issuer
    as ``iss`` and ``aud``, and an app's authorization request must name it as ``aud``
    (SMART App Launch 2.x, app-launch.html#obtain-authorization-code); without
    FHIR_BASE_URL a loopback server also accepts its other loopback names there
    (``Settings.audiences``), which an app set up for ``localhost`` needs to know."""
    base = (settings.base_url or f"http://{settings.host}:{settings.port}").rstrip("/")
    lines = [f"FHIR base URL: {base}/  (docs at /docs, web app at /app/)",
             f"token issuer (iss; the aud apps send): {settings.issuer}"]
    others = [aud for aud in settings.audiences if aud != settings.issuer]
    if others:
        lines.append(f"also accepted as aud on this machine: {', '.join(others)}")
    elif not (settings.base_url or settings.auth_issuer) and settings.host in ("0.0.0.0", "::"):
        lines.append("set FHIR_BASE_URL to the address apps use: no app can reach the issuer above")
    return lines


def demo_accounts(settings: Settings) -> None:
    """The demo's sign-in accounts for the web app, with this start's passwords."""
    from .demo.accounts import create

    table = Table(title="demo accounts (new passwords at every start)")
    for column in ("user", "password", "who"):
        table.add_column(column)
    for account in create(settings):
        table.add_row(account.username, account.password, account.note)
    console.print(table)


def _gunicorn(settings: Settings) -> None:
    """Run the app under gunicorn. The master key is loaded (the key file created) and
    checked against the database here, before the workers start: a wrong key stops
    ``serve`` with a message instead of failing every request. The access log shows
    requests without their identifying query values (``audit/access_log.py``)."""
    from gunicorn.app.base import BaseApplication
    from pymongo import MongoClient

    from .audit.access_log import RedactingLogger
    from .crypto import MasterKeyError
    from .crypto.binding import bind
    from .crypto.master import load

    try:
        master = load(settings)
        client: MongoClient[dict[str, Any]] = MongoClient(settings.mongodb_uri)
        try:
            bind(client[settings.mongodb_db], master)
        finally:
            client.close()
    except MasterKeyError as exc:
        raise click.ClickException(str(exc)) from exc
    _recover(settings)

    class Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            self.cfg.set("bind", f"{settings.host}:{settings.port}")
            self.cfg.set("workers", settings.workers)
            self.cfg.set("threads", 4)
            # gthread, answering the requests gunicorn itself refuses as OperationOutcomes
            self.cfg.set("worker_class", "fhirserver.api.gunicorn_worker.FhirThreadWorker")
            # gunicorn's ceiling: long search URLs (many codes or ids) fit
            self.cfg.set("limit_request_line", 8190)
            self.cfg.set("loglevel", settings.log_level)
            self.cfg.set("accesslog", "-")
            self.cfg.set("logger_class", RedactingLogger)
            self.cfg.set("timeout", 120)
            self.cfg.set("control_socket_disable", True)

        def load(self) -> Any:
            from . import create_app

            return create_app(settings)

    Server().run()


def _one_time_passes(repo: Any) -> None:
    """Reshape what an older version stored, once each (storage/repository.py)."""
    from .auth.commands import with_progress

    passes = (
        (repo.key_copies_pending, repo.drop_key_copies,
         "dropping the copies of search values an older version stored twice",
         "record(s) made smaller"),
        (repo.day_buckets_pending, repo.add_day_buckets,
         "giving the records of crowded months their days", "record(s) given their days"),
        (repo.resource_text_pending, repo.store_resources_as_text,
         "storing as JSON text the resources an older version kept as documents",
         "resource(s) stored as text"),
        (repo.date_keys_pending, repo.add_date_keys,
         "giving the birth dates an older version stored their day keys",
         "record(s) given their day keys"),
        (repo.union_values_pending, repo.drop_union_values,
         "dropping the values of union parameters an older version stored",
         "record(s) made smaller"),
        (repo.population_shards_pending, repo.add_population_shards,
         "giving the records an older version stored their population shards",
         "record(s) given their shards"),
    )
    for pending, run, doing, done in passes:
        if pending():
            started = time.perf_counter()
            console.print(f"{doing} (once)")
            changed = with_progress(run)
            console.print(f"{changed} {done} in {time.perf_counter() - started:.1f} s")


def _recover(settings: Settings) -> None:
    """Roll back the transactions a killed server left half done (FHIR R4
    http.html#transaction), once, here in the master before gunicorn forks: the
    workers then start on whole transactions and find nothing to do, instead of
    both rolling back at once (``storage/recovery.py``). Values an older version
    stored in clear are encrypted here too, once, for the same reason, and what it
    stored in an older shape is reshaped."""
    from .storage.repository import Repository

    started = time.perf_counter()
    repo = Repository.from_settings(settings, initialise=False)
    try:
        rolled = repo.recover()
        if rolled:
            console.print(f"rolled back {rolled} interrupted transaction(s) in "
                          f"{time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        encrypted = 0
        repo.mark_new_database()
        if repo.encryption_pending():
            from .auth.commands import with_progress

            console.print("encrypting the identity numbers and telecom an older version "
                          "stored in clear (once)")
            encrypted = with_progress(repo.encrypt_clear_values)
        if encrypted:
            console.print(f"encrypted the identity numbers and telecom of {encrypted} "
                          f"document(s) stored in clear, in {time.perf_counter() - started:.1f} s")
        _one_time_passes(repo)
    finally:
        repo.close()


# -- import ------------------------------------------------------------------------


@main.command("import")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--jobs", type=click.IntRange(min=1), default=None,
              help="Processes writing groups side by side [FHIR_IMPORT_JOBS, CPUs].")
def import_(paths: tuple[Path, ...], jobs: int | None) -> None:
    """Import Bundle (.json, .json.gz) and NDJSON files or folders of them."""
    from .importer.reader import expand

    settings = Settings.from_env()
    with database(settings) as live:
        stats = run_import(live, expand(list(paths)), jobs=import_jobs(jobs, settings))
    if stats.problems:
        raise SystemExit(1)


def import_jobs(jobs: int | None, settings: Settings) -> int:
    """``--jobs``, else FHIR_IMPORT_JOBS, else one per CPU this process may use."""
    return max(1, min(MAX_IMPORT_JOBS, jobs or settings.import_jobs
                      or len(os.sched_getaffinity(0))))


def run_import(settings: Settings, files: list[Path], jobs: int = 1) -> Any:
    """Import ``files``; with ``jobs`` > 1 and more than one group, that many worker
    processes write the groups side by side (importer/parallel.py)."""
    from concurrent.futures.process import BrokenProcessPool

    from .crypto import MasterKeyError
    from .importer.loader import ImportStats
    from .importer.parallel import Group, write_group, write_groups
    from .importer.reader import ImportFileError, read_groups
    from .interactions.context import Context
    from .storage.repository import Repository

    try:
        repo = Repository.from_settings(settings, encrypt=False)
    except MasterKeyError as exc:  # another key than the database is bound to
        raise click.ClickException(str(exc)) from exc
    ctx = Context(repo, settings, settings.base_url.rstrip("/") or "")
    stats = ImportStats()
    started = time.perf_counter()
    open_groups: Counter[Path] = Counter()  # groups of a file read and not yet written
    unread = set(files)
    columns = (TextColumn("[bold]import"), BarColumn(), MofNCompleteColumn(),
               TextColumn("files · {task.fields[rate]} resources/s"), TimeElapsedColumn())
    try:
        with Progress(*columns, console=console, transient=False) as progress:
            task = progress.add_task("import", total=len(files), rate="0")

            def advance(path: Path) -> None:
                if path not in unread and not open_groups[path]:
                    elapsed = time.perf_counter() - started
                    progress.update(task, advance=1,
                                    rate=f"{stats.kept / max(elapsed, 1e-9):.0f}")

            def groups() -> Iterator[Group]:
                number = 0
                for path in files:
                    try:
                        for entries in read_groups(path):
                            open_groups[path] += 1
                            yield Group(number, path, entries)
                            number += 1
                    except ImportFileError as exc:
                        stats.problems.append(str(exc))
                    unread.discard(path)
                    advance(path)

            def done(group: Group, written: Any) -> None:
                stats.add(written)
                open_groups[group.source] -= 1
                advance(group.source)

            ahead = groups()
            first = list(itertools.islice(ahead, 2))
            if jobs > 1 and len(first) > 1:
                try:
                    write_groups(settings, itertools.chain(first, ahead), jobs,
                                 repo.protection, done)
                except BrokenProcessPool as exc:
                    raise click.ClickException(
                        "an import process ended before its group was written; the groups "
                        "written are kept whole, and importing the files again completes "
                        "the import") from exc
            else:
                for group in itertools.chain(first, ahead):
                    done(group, write_group(ctx, group.entries, str(group.source)))
    finally:
        repo.close()
    _summary(stats, time.perf_counter() - started)
    return stats


def _summary(stats: Any, seconds: float) -> None:
    table = Table(title="import summary")
    for col in ("type", "created", "updated", "unchanged", "rejected"):
        table.add_column(col, justify="right" if col != "type" else "left")
    kinds = sorted(set(stats.created) | set(stats.updated) | set(stats.unchanged) | set(stats.rejected))
    for k in kinds:
        table.add_row(k, str(stats.created[k]), str(stats.updated[k]), str(stats.unchanged[k]),
                      str(stats.rejected[k]))
    console.print(table)
    if stats.dropped:
        dropped = ", ".join(f"{k} {v}" for k, v in sorted(stats.dropped.items()))
        console.print(f"dropped (types not stored here): {dropped}")
    console.print(
        f"{stats.kept} resources in {seconds:.1f} s: {stats.kept / max(seconds, 1e-9):.0f} resources/s"
    )
    for problem in stats.problems[:20]:
        console.print(f"[red]problem:[/red] {problem}")
    if len(stats.problems) > 20:
        console.print(f"... and {len(stats.problems) - 20} more problems")
