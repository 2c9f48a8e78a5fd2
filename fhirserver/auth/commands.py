"""Operator commands: ``fhirserver token`` (an access token for scripts) and
``fhirserver keys`` (signing key rotation)."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from ..config import Settings
from ..storage.embedded import database
from .scopes import ScopeError, parse_scopes
from .tokens import TokenService


def _service(settings: Settings):  # type: ignore[no-untyped-def]
    from ..storage.repository import Repository

    repo = Repository.from_settings(settings)
    return repo, TokenService(repo.db, settings.issuer)


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
    """Token signing keys."""


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
def verify_audit() -> None:
    """Check the audit log's hash chain; exit 1 at the first broken or missing link."""
    from ..audit.chain import verify

    settings = Settings.from_env()
    with database(settings) as live:
        repo, _ = _service(live)
        try:
            checked, broken = verify(repo.db)
        finally:
            repo.close()
    if broken is None:
        click.echo(f"audit log intact: {checked} records")
        return
    click.echo(f"audit log broken at record {broken.seq}: {broken.problem} "
               f"({checked} records before it are intact)")
    raise SystemExit(1)


@click.group("users")
def users_() -> None:
    """People who sign in: clinicians and patients."""


@users_.command("add")
@click.argument("username")
@click.option("--practitioner", help="A clinician: their Practitioner/<id>.")
@click.option("--organization", help="The clinician's Organization/<id>.")
@click.option("--patient", help="A patient: their Patient id.")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def add_user(username: str, practitioner: str | None, organization: str | None,
             patient: str | None, password_stdin: bool) -> None:
    """Create (or replace) a user who signs in at the authorization server."""
    import sys

    from .users import User, add

    if bool(practitioner) == bool(patient):
        raise click.UsageError("give exactly one of --practitioner or --patient")
    if practitioner and not practitioner.startswith("Practitioner/"):
        raise click.BadParameter("use Practitioner/<id>", param_hint="--practitioner")
    password = sys.stdin.readline().rstrip("\n") if password_stdin else click.prompt(
        "password", hide_input=True, confirmation_prompt=True)
    user = User(username, "practitioner" if practitioner else "patient",
                practitioner or f"Patient/{patient}", organization)
    settings = Settings.from_env()
    with database(settings) as live:
        repo, _ = _service(live)
        try:
            add(repo.db, user, password)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="password") from exc
        finally:
            repo.close()
    click.echo(f"user {username} ({user.fhir_user}) saved")
