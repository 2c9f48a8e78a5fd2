"""Operator commands: ``fhirserver token`` (an access token for scripts),
``fhirserver keys`` (signing and data key rotation) and ``fhirserver audit``, and
the session every operator command opens on the database (user_commands.py and
client_commands.py hold ``fhirserver users`` and ``fhirserver clients``).

Like the other operator commands, these act on the database directly and are not
recorded in the audit log, which records requests to the API."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

from ..config import Settings
from ..storage.embedded import database
from .scopes import ScopeError, parse_scopes
from .tokens import MAX_LIFETIME, TokenService

if TYPE_CHECKING:
    from ..storage.repository import Repository


def _service(settings: Settings) -> tuple[Repository, TokenService]:
    """The database and token service of the server these settings describe: the same
    settings name the same master key (FHIR_MASTER_KEY, else the key file)."""
    from ..crypto import MasterKeyError
    from ..crypto.binding import bind
    from ..crypto.master import load
    from ..crypto.sealing import sealer
    from ..storage.repository import Repository

    try:
        repo = Repository.from_settings(settings, encrypt=False)
    except MasterKeyError as exc:  # another key than the database is bound to
        raise click.ClickException(str(exc)) from exc
    try:
        master = load(settings)
        bind(repo.db, master)
    except MasterKeyError as exc:
        repo.close()
        raise click.ClickException(str(exc)) from exc
    return repo, TokenService(repo.db, settings.issuer, sealer(master))


@contextmanager
def operator_session(param_hint: str | None = None
                     ) -> Iterator[tuple[Settings, Repository, TokenService]]:
    """The settings of the running database (the embedded one started for the
    command if need be), its repository and token service; the repository is closed
    on the way out. With ``param_hint``, a ValueError from the body (an unknown
    user, a weak password) becomes a usage error naming that parameter (exit 2)."""
    with database(Settings.from_env()) as live:
        repo, service = _service(live)
        try:
            yield live, repo, service
        except ValueError as exc:
            if param_hint is None:
                raise
            raise click.BadParameter(str(exc), param_hint=param_hint) from exc
        finally:
            repo.close()


@click.command("token")
@click.option("--scope", required=True, help='Space-separated SMART scopes, e.g. "system/*.rs".')
@click.option("--operator", "kind", flag_value="operator", help="Full access (operators' scripts).")
@click.option("--practitioner", help="A clinician's token: Practitioner/<id>.")
@click.option("--patient", help="A patient's token: the Patient id.")
@click.option("--client", help="A backend client's token: its client id.")
@click.option("--organization", help="Organization/<id> the clinician or client acts for.")
@click.option("--lifetime", type=click.IntRange(1, MAX_LIFETIME), default=None,
              help="Seconds [FHIR_TOKEN_SECONDS, 3600]; at most 30 days.")
def token(scope: str, kind: str | None, practitioner: str | None, patient: str | None,
          client: str | None, organization: str | None, lifetime: int | None) -> None:
    """Print an access token for this server (keep it secret)."""
    chosen = [k for k, v in (("operator", kind), ("user", practitioner), ("patient", patient),
                             ("system", client)) if v]
    if len(chosen) != 1:
        raise click.UsageError("give exactly one of --operator, --practitioner, --patient, --client")
    try:
        parse_scopes(scope)
    except ScopeError as exc:
        raise click.BadParameter(str(exc), param_hint="--scope") from exc
    if practitioner and not practitioner.startswith("Practitioner/"):
        raise click.BadParameter("use Practitioner/<id>", param_hint="--practitioner")
    with operator_session() as (live, _, service):
        value, _ = service.mint(
            subject=practitioner or patient or client or "operator", scope=scope,
            kind=chosen[0], lifetime=lifetime or live.token_seconds, now=datetime.now(UTC),
            client_id=client or "fhirserver-cli", patient=patient, fhirUser=practitioner
            or (f"Patient/{patient}" if patient else None), organization=organization)
    click.echo(value)


@click.group("keys")
def keys() -> None:
    """Token signing keys, and the data keys that encrypt identity numbers."""


@keys.command("rotate")
def rotate() -> None:
    """Start signing with a new key; older keys keep verifying until retired."""
    with operator_session() as (_, _, service):
        click.echo(f"new signing key {service.rotate()}")


@keys.command("retire")
@click.argument("kid")
def retire(kid: str) -> None:
    """Stop accepting tokens signed with key KID."""
    with operator_session() as (_, _, service):
        service.retire(kid)
        click.echo(f"retired {kid}")


@keys.command("rotate-data")
def rotate_data() -> None:
    """Encrypt identity numbers and telecom under a new data key, re-encrypting what
    older data keys encrypted while the server keeps serving. Older data keys are
    kept (backups taken before still open with the master key)."""
    import time

    from ..crypto.data_keys import REFRESH_SECONDS

    with operator_session() as (_, repo, _):
        kid = repo.protection.cipher.ring.rotate()
        click.echo(f"new data key {kid}; waiting {REFRESH_SECONDS + 1:.0f} s for running "
                   "servers to take it up")
        time.sleep(REFRESH_SECONDS + 1)
        _reencrypt(repo)


@keys.command("reencrypt")
def reencrypt() -> None:
    """Bring every stored value under the active data key (resumes an interrupted
    rotate-data; safe to run at any time)."""
    with operator_session() as (_, repo, _):
        _reencrypt(repo)


def with_progress(run: Callable[[Callable[[str, int, int], None]], Any]) -> Any:
    """``run(report)`` with a progress bar per collection that ``report(collection,
    done, total)`` names (storage/reencryption.py)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns) as progress:
        tasks: dict[str, Any] = {}

        def report(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = progress.add_task(name, total=max(total, 1))
            progress.update(tasks[name], completed=done, total=max(total, done, 1))

        return run(report)


def _reencrypt(repo: Repository) -> None:
    changed = with_progress(repo.reencryption().run)
    kid, _ = repo.protection.cipher.ring.active()
    click.echo(f"{changed.total} documents re-encrypted under data key {kid}"
               + "".join(f"\n  {name}: {n}" for name, n in sorted(changed.changed.items())))


@click.group("audit")
def audit() -> None:
    """The audit log."""


@audit.command("verify")
@click.option("--checkpoints", "files", multiple=True, type=click.Path(dir_okay=False),
              help="A checkpoint file to check against (repeat for several servers' files) "
                   "[FHIR_AUDIT_CHECKPOINTS].")
def verify_audit(files: tuple[str, ...]) -> None:
    """Check the audit log's keyed chain and checkpoints; exit 1 naming the first
    altered, missing or unlinked record, or a checkpoint that fails."""
    from pathlib import Path

    from ..audit import checkpoints
    from ..audit.chain import Keys, verify
    from ..crypto.master import load

    with operator_session() as (live, repo, _):
        paths = [Path(f) for f in files] or [checkpoints.path_of(live)]
        report = verify(repo.db, Keys.derive(load(live)), paths)
    legacy = (f"; {report.legacy} of them from before keyed records (plain SHA-256, their "
              "patients not covered)") if report.legacy else ""
    if report.broken is None:
        click.echo(f"audit log intact: {report.checked} records{legacy}; newest checkpoint: "
                   f"record {report.checkpoint}")
        return
    click.echo(f"audit log broken at record {report.broken.seq}: {report.broken.problem} "
               f"({report.checked} records before it are intact{legacy})")
    raise SystemExit(1)


@audit.command("pseudonym")
@click.argument("value")
def pseudonym(value: str) -> None:
    """Print the keyed hash under which the audit log records VALUE (an ID number, a
    phone number, a name) in searches' queries: look for it to learn who searched it."""
    from ..audit.queries import PURPOSE, Pseudonyms
    from ..crypto import MasterKeyError
    from ..crypto.master import key_path, load

    settings = Settings.from_env()
    if not settings.master_key and not key_path(settings).exists():
        raise click.ClickException(f"no master key: FHIR_MASTER_KEY is unset and "
                                   f"{key_path(settings)} does not exist")
    try:
        master = load(settings)
    except MasterKeyError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(Pseudonyms(master.derive(PURPOSE)).of(value))
