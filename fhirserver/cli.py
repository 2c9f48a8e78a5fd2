"""The `fhirserver` command: serve, import, token, keys, clients, users, audit."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .config import Settings
from .storage.embedded import database

DEMO_DIR = Path(__file__).parent / "demo"
console = Console(stderr=True)


@click.group()
@click.version_option(package_name="fhirserver")
def main() -> None:
    """FHIR R4 server for Patient, Observation and DiagnosticReport."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def _register_commands() -> None:
    from .auth.commands import audit, clients, keys, token, users_

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
    with database(settings) as live:
        if demo:
            run_import(live, sorted(DEMO_DIR.glob("*.json.gz")))
        if settings.mongodb_uri is None:
            console.print(f"database: embedded FerretDB, data in {live.data_dir}")
        console.print(f"FHIR base URL: http://{live.host}:{live.port}/  (docs at /docs)")
        _gunicorn(live)


def _gunicorn(settings: Settings) -> None:
    from gunicorn.app.base import BaseApplication

    class Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            self.cfg.set("bind", f"{settings.host}:{settings.port}")
            self.cfg.set("workers", settings.workers)
            self.cfg.set("threads", 4)
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("loglevel", settings.log_level)
            self.cfg.set("accesslog", "-")
            self.cfg.set("timeout", 120)
            self.cfg.set("control_socket_disable", True)

        def load(self) -> Any:
            from . import create_app

            return create_app(settings)

    Server().run()


# -- import ------------------------------------------------------------------------


@main.command("import")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
def import_(paths: tuple[Path, ...]) -> None:
    """Import Bundle (.json, .json.gz) and NDJSON files or folders of them."""
    from .importer.reader import expand

    settings = Settings.from_env()
    with database(settings) as live:
        stats = run_import(live, expand(list(paths)))
    if stats.problems:
        raise SystemExit(1)


def run_import(settings: Settings, files: list[Path]) -> Any:
    from .importer.loader import ImportStats, import_group
    from .importer.reader import ImportFileError, read_groups
    from .interactions.context import Context
    from .storage.repository import Repository

    repo = Repository.from_settings(settings)
    ctx = Context(repo, settings, settings.base_url.rstrip("/") or "")
    stats = ImportStats()
    started = time.perf_counter()
    columns = (TextColumn("[bold]import"), BarColumn(), MofNCompleteColumn(),
               TextColumn("files · {task.fields[rate]} resources/s"), TimeElapsedColumn())
    try:
        with Progress(*columns, console=console, transient=False) as progress:
            task = progress.add_task("import", total=len(files), rate="0")
            for path in files:
                try:
                    for group in read_groups(path):
                        import_group(ctx, group, stats, source=str(path))
                except ImportFileError as exc:
                    stats.problems.append(str(exc))
                elapsed = time.perf_counter() - started
                progress.update(task, advance=1, rate=f"{stats.kept / max(elapsed, 1e-9):.0f}")
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
