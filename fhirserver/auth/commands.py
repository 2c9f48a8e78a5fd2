"""Operator commands: ``fhirserver token`` (an access token for scripts),
``fhirserver keys`` (signing and data key rotation), ``fhirserver clients`` and
``fhirserver users`` (the life cycle of OAuth clients and sign-in accounts) and
``fhirserver audit``.

Like the other operator commands, these act on the database directly and are not
recorded in the audit log, which records requests to the API."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import click

from ..config import Settings
from ..storage.embedded import database
from .scopes import ScopeError, parse_scopes
from .tokens import TokenService


def _service(settings: Settings):  # type: ignore[no-untyped-def]
    """The database and token service of the server these settings describe: the same
    settings name the same master key (FHIR_MASTER_KEY, else the key file)."""
    from ..crypto import MasterKeyError
    from ..crypto.binding import bind
    from ..crypto.master import load
    from ..crypto.sealing import sealer
    from ..storage.repository import Repository

    try:
        repo = Repository.from_settings(settings)
    except MasterKeyError as exc:  # another key than the database is bound to
        raise click.ClickException(str(exc)) from exc
    try:
        master = load(settings)
        bind(repo.db, master)
    except MasterKeyError as exc:
        repo.close()
        raise click.ClickException(str(exc)) from exc
    return repo, TokenService(repo.db, settings.issuer, sealer(master))


@click.command("token")
@click.option("--scope", required=True, help='Space-separated SMART scopes, e.g. "system/*.rs".')
@click.option("--operator", "kind", flag_value="operator", help="Full access (operators' scripts).")
@click.option("--practitioner", help="A clinician's token: Practitioner/<id>.")
@click.option("--patient", help="A patient's token: the Patient id.")
@click.option("--client", help="A backend client's token: its client id.")
@click.option("--organization", help="Organization/<id> the clinician or client acts for.")
@click.option("--lifetime", type=int, default=None, help="Seconds [FHIR_TOKEN_SECONDS, 3600].")
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
    settings = Settings.from_env()
    with database(settings) as live:
        repo, service = _service(live)
        try:
            value, _ = service.mint(
                subject=practitioner or patient or client or "operator", scope=scope,
                kind=chosen[0], lifetime=lifetime or live.token_seconds, now=datetime.now(UTC),
                client_id=client or "fhirserver-cli", patient=patient, fhirUser=practitioner
                or (f"Patient/{patient}" if patient else None), organization=organization)
        finally:
            repo.close()
    click.echo(value)


@click.group("keys")
def keys() -> None:
    """Token signing keys, and the data keys that encrypt identity numbers."""


@keys.command("rotate")
def rotate() -> None:
    """Start signing with a new key; older keys keep verifying until retired."""
    settings = Settings.from_env()
    with database(settings) as live:
        repo, service = _service(live)
        try:
            click.echo(f"new signing key {service.rotate()}")
        finally:
            repo.close()


@keys.command("retire")
@click.argument("kid")
def retire(kid: str) -> None:
    """Stop accepting tokens signed with key KID."""
    settings = Settings.from_env()
    with database(settings) as live:
        repo, service = _service(live)
        try:
            service.retire(kid)
            click.echo(f"retired {kid}")
        finally:
            repo.close()


@keys.command("rotate-data")
def rotate_data() -> None:
    """Encrypt identity numbers and telecom under a new data key, re-encrypting what
    older data keys encrypted while the server keeps serving. Older data keys are
    kept (backups taken before still open with the master key)."""
    import time

    from ..crypto.data_keys import REFRESH_SECONDS

    settings = Settings.from_env()
    with database(settings) as live:
        repo, _ = _service(live)
        try:
            kid = repo.protection.cipher.ring.rotate()
            click.echo(f"new data key {kid}; waiting {REFRESH_SECONDS + 1:.0f} s for running "
                       "servers to take it up")
            time.sleep(REFRESH_SECONDS + 1)
            _reencrypt(repo)
        finally:
            repo.close()


@keys.command("reencrypt")
def reencrypt() -> None:
    """Bring every stored value under the active data key (resumes an interrupted
    rotate-data; safe to run at any time)."""
    settings = Settings.from_env()
    with database(settings) as live:
        repo, _ = _service(live)
        try:
            _reencrypt(repo)
        finally:
            repo.close()


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


def _reencrypt(repo) -> None:  # type: ignore[no-untyped-def]
    changed = with_progress(repo.reencryption().run)
    kid, _ = repo.protection.cipher.ring.active()
    click.echo(f"{changed.total} documents re-encrypted under data key {kid}"
               + "".join(f"\n  {name}: {n}" for name, n in sorted(changed.changed.items())))


@click.group("clients")
def clients() -> None:
    """OAuth clients: EHRs, apps and backend services."""


@clients.command("add")
@click.argument("client_id")
@click.option("--kind", type=click.Choice(["public", "confidential", "backend"]), required=True)
@click.option("--scopes", required=True, help="The scopes this client may be granted.")
@click.option("--jwks", "jwks_file", type=click.Path(exists=True, dir_okay=False),
              help="Backend clients: the JSON Web Key Set of their public keys.")
@click.option("--organization", help="Organization/<id> the client acts for.")
@click.option("--redirect-uri", "redirect_uris", multiple=True, help="Allowed redirect URI.")
@click.option("--name", default="", help="Shown to users on the approval page.")
def add_client(client_id: str, kind: str, scopes: str, jwks_file: str | None,
               organization: str | None, redirect_uris: tuple[str, ...], name: str) -> None:
    """Register (or replace) a client; a confidential client's secret is printed once."""
    import json
    import secrets as secrets_

    from .clients import Client, register

    try:
        parse_scopes(scopes)
    except ScopeError as exc:
        raise click.BadParameter(str(exc), param_hint="--scopes") from exc
    jwks: dict[str, object] = {}
    if kind == "backend":
        if not jwks_file:
            raise click.UsageError("a backend client needs --jwks")
        with open(jwks_file, encoding="utf-8") as fh:
            jwks = json.load(fh)
    secret = secrets_.token_urlsafe(32) if kind == "confidential" else None
    settings = Settings.from_env()
    with database(settings) as live:
        repo, _ = _service(live)
        try:
            register(repo.db, Client(client_id, kind, scopes, redirect_uris, organization, jwks,
                                     name=name), secret)
        finally:
            repo.close()
    click.echo(f"registered {kind} client {client_id}")
    if secret:
        click.echo(f"client secret (shown once): {secret}")


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

    settings = Settings.from_env()
    with database(settings) as live:
        repo, _ = _service(live)
        try:
            paths = [Path(f) for f in files] or [checkpoints.path_of(live)]
            report = verify(repo.db, Keys.derive(load(live)), paths)
        finally:
            repo.close()
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


@click.group("users")
def users_() -> None:
    """People who sign in: clinicians and patients."""


@users_.command("add")
@click.argument("username")
@click.option("--practitioner", help="A clinician: their Practitioner/<id>.")
@click.option("--organization", help="The clinician's Organization/<id>.")
@click.option("--patient", help="A patient: their Patient id.")
@click.option("--role", "roles", multiple=True, type=click.Choice(["emergency-access", "registration"]),
              help="A clinician's role: emergency-access (break-the-glass), registration "
                   "(identity documents; the registration scope). Repeat for several.")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def add_user(username: str, practitioner: str | None, organization: str | None,
             patient: str | None, roles: tuple[str, ...], password_stdin: bool) -> None:
    """Create (or replace) a user who signs in at the authorization server. A patient's
    Patient must exist; a password has at least 12 characters and does not contain
    the user name."""
    import sys

    from .users import User, add

    if bool(practitioner) == bool(patient):
        raise click.UsageError("give exactly one of --practitioner or --patient")
    if practitioner and not practitioner.startswith("Practitioner/"):
        raise click.BadParameter("use Practitioner/<id>", param_hint="--practitioner")
    user = User(username, "practitioner" if practitioner else "patient",
                practitioner or f"Patient/{patient}", organization, roles)
    settings = Settings.from_env()
    with database(settings) as live:
        repo, _ = _service(live)
        try:
            if patient:
                _patient_exists(repo, patient)
            password = sys.stdin.readline().rstrip("\n") if password_stdin else click.prompt(
                "password", hide_input=True, confirmation_prompt=True)
            add(repo.db, user, password)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="password") from exc
        finally:
            repo.close()
    click.echo(f"user {username} ({user.fhir_user}) saved")


@users_.command("roles")
@click.argument("username")
@click.option("--add", "add_", multiple=True, type=click.Choice(["emergency-access", "registration"]),
              help="Role to grant (repeatable).")
@click.option("--remove", multiple=True, type=click.Choice(["emergency-access", "registration"]),
              help="Role to take away (repeatable); takes effect at the user's next request.")
def user_roles(username: str, add_: tuple[str, ...], remove: tuple[str, ...]) -> None:
    """Show, grant or take away a clinician's roles."""
    from .users import set_roles

    settings = Settings.from_env()
    with database(settings) as live:
        repo, _ = _service(live)
        try:
            user = set_roles(repo.db, username, add_, remove)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="USERNAME") from exc
        finally:
            repo.close()
    click.echo(f"user {username}: roles {', '.join(user.roles) or '(none)'}")


def _patient_exists(repo, patient: str) -> None:  # type: ignore[no-untyped-def]
    """A patient's account must point at a Patient this server holds (exit 1 if not):
    an account on a wrong id would sign in to nothing, or later to a stranger whose
    record is created with that id."""
    from ..model.types import is_valid_id

    stored = repo.get("Patient", patient) if is_valid_id(patient) else None
    if stored is None or stored.deleted:
        gone = " (it was deleted)" if stored is not None else ""
        raise click.ClickException(f"no Patient/{patient} on this server{gone}: create or "
                                   "import the patient first")


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else "-"


def _table(title: str, headers: list[str], rows: list[list[str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for i, header in enumerate(headers):
        table.add_column(header, no_wrap=i == 0, overflow="fold")
    for row in rows:
        table.add_row(*row)
    Console(highlight=False).print(table)


def _revocation_note(families: int, what: str) -> str:
    from .tokens import REVOCATION_REFRESH

    return (f"{what}: {families} refresh token famil{'y' if families == 1 else 'ies'} revoked, "
            f"and every access token issued until now (running servers refuse them within "
            f"{REVOCATION_REFRESH:.0f} s)")


@users_.command("list")
def list_users() -> None:
    """Show every account: who it is, its roles, whether it is disabled."""
    from .users import every

    settings = Settings.from_env()
    with database(settings) as live:
        repo, _ = _service(live)
        try:
            accounts = every(repo.db)
        finally:
            repo.close()
    rows = [[u.username, "clinician" if u.kind == "practitioner" else "patient", u.fhir_user,
             u.organization or "-", ", ".join(u.roles) or "-", "disabled" if u.disabled else "-",
             _when(u.created)] for u in accounts]
    _table(f"{len(rows)} user{'' if len(rows) == 1 else 's'}",
           ["name", "kind", "Practitioner or Patient", "organization", "roles", "disabled", "created (UTC)"], rows)


@users_.command("disable")
@click.argument("username")
def disable_user(username: str) -> None:
    """Stop an account signing in and revoke every token it holds."""
    from .revocation import end_user
    from .users import set_disabled

    settings = Settings.from_env()
    with database(settings) as live:
        repo, service = _service(live)
        try:
            set_disabled(repo.db, username, True)
            ended = end_user(repo.db, service, username, datetime.now(UTC), live.token_seconds)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="USERNAME") from exc
        finally:
            repo.close()
    click.echo(_revocation_note(ended.families, f"user {username} disabled"))


@users_.command("enable")
@click.argument("username")
def enable_user(username: str) -> None:
    """Let a disabled account sign in again (the tokens it held stay revoked)."""
    from .revocation import wait_past_cut_off
    from .tokens import user_holder
    from .users import set_disabled

    settings = Settings.from_env()
    with database(settings) as live:
        repo, _ = _service(live)
        try:
            wait_past_cut_off(repo.db, user_holder(username), datetime.now(UTC))
            set_disabled(repo.db, username, False)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="USERNAME") from exc
        finally:
            repo.close()
    click.echo(f"user {username} enabled")


@users_.command("remove")
@click.argument("username")
def remove_user(username: str) -> None:
    """Delete an account after revoking every token it holds; the audit log keeps
    the record of what it did."""
    from .revocation import end_user
    from .users import remove, set_disabled

    settings = Settings.from_env()
    with database(settings) as live:
        repo, service = _service(live)
        try:
            set_disabled(repo.db, username, True)  # no sign-in while its tokens are revoked
            ended = end_user(repo.db, service, username, datetime.now(UTC), live.token_seconds)
            remove(repo.db, username)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="USERNAME") from exc
        finally:
            repo.close()
    click.echo(_revocation_note(ended.families, f"user {username} removed"))


@clients.command("list")
def list_clients() -> None:
    """Show every registered client (never secrets or keys)."""
    from .clients import every

    settings = Settings.from_env()
    with database(settings) as live:
        repo, _ = _service(live)
        try:
            registered = every(repo.db)
        finally:
            repo.close()
    rows = [[c.client_id, c.kind, c.scopes, c.organization or "-",
             "\n".join(c.redirect_uris) or "-", "disabled" if c.disabled else "-"]
            for c in registered]
    _table(f"{len(rows)} client{'' if len(rows) == 1 else 's'}",
           ["id", "kind", "scopes", "organization", "redirect URIs", "disabled"], rows)


@clients.command("disable")
@click.argument("client_id")
def disable_client(client_id: str) -> None:
    """Refuse a client at the token endpoint (invalid_client) and revoke every token
    issued to it."""
    from .clients import set_disabled
    from .revocation import end_client

    settings = Settings.from_env()
    with database(settings) as live:
        repo, service = _service(live)
        try:
            set_disabled(repo.db, client_id, True)
            ended = end_client(repo.db, service, client_id, datetime.now(UTC), live.token_seconds)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="CLIENT_ID") from exc
        finally:
            repo.close()
    click.echo(_revocation_note(ended.families, f"client {client_id} disabled"))


@clients.command("enable")
@click.argument("client_id")
def enable_client(client_id: str) -> None:
    """Accept a disabled client again (the tokens it held stay revoked)."""
    from .clients import set_disabled
    from .revocation import wait_past_cut_off
    from .tokens import client_holder

    settings = Settings.from_env()
    with database(settings) as live:
        repo, _ = _service(live)
        try:
            wait_past_cut_off(repo.db, client_holder(client_id), datetime.now(UTC))
            set_disabled(repo.db, client_id, False)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="CLIENT_ID") from exc
        finally:
            repo.close()
    click.echo(f"client {client_id} enabled")


@clients.command("remove")
@click.argument("client_id")
def remove_client(client_id: str) -> None:
    """Delete a client after revoking every token issued to it."""
    from .clients import remove, set_disabled
    from .revocation import end_client

    settings = Settings.from_env()
    with database(settings) as live:
        repo, service = _service(live)
        try:
            set_disabled(repo.db, client_id, True)
            ended = end_client(repo.db, service, client_id, datetime.now(UTC), live.token_seconds)
            remove(repo.db, client_id)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="CLIENT_ID") from exc
        finally:
            repo.close()
    click.echo(_revocation_note(ended.families, f"client {client_id} removed"))
