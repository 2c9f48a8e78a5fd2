"""``fhirserver clients``: the life cycle of OAuth clients, the EHRs, apps and
backend services that ask for tokens (add, list, disable, enable, remove).

Like the other operator commands, these act on the database directly and are not
recorded in the audit log, which records requests to the API."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from .command_output import revocation_note, table
from .commands import operator_session
from .scopes import ScopeError, parse_scopes


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
    with operator_session() as (_, repo, _):
        register(repo.db, Client(client_id, kind, scopes, redirect_uris, organization, jwks,
                                 name=name), secret)
    click.echo(f"registered {kind} client {client_id}")
    if secret:
        click.echo(f"client secret (shown once): {secret}")


@clients.command("list")
def list_clients() -> None:
    """Show every registered client (never secrets or keys)."""
    from .clients import every

    with operator_session() as (_, repo, _):
        registered = every(repo.db)
    rows = [[c.client_id, c.kind, c.scopes, c.organization or "-",
             "\n".join(c.redirect_uris) or "-", "disabled" if c.disabled else "-"]
            for c in registered]
    table(f"{len(rows)} client{'' if len(rows) == 1 else 's'}",
          ["id", "kind", "scopes", "organization", "redirect URIs", "disabled"], rows)


@clients.command("disable")
@click.argument("client_id")
def disable_client(client_id: str) -> None:
    """Refuse a client at the token endpoint (invalid_client) and revoke every token
    issued to it."""
    from .clients import set_disabled
    from .revocation import end_client

    with operator_session("CLIENT_ID") as (live, repo, service):
        set_disabled(repo.db, client_id, True)
        ended = end_client(repo.db, service, client_id, datetime.now(UTC), live.token_seconds)
    click.echo(revocation_note(ended.families, f"client {client_id} disabled"))


@clients.command("enable")
@click.argument("client_id")
def enable_client(client_id: str) -> None:
    """Accept a disabled client again (the tokens it held stay revoked)."""
    from .clients import set_disabled
    from .revocation import wait_past_cut_off
    from .tokens import client_holder

    with operator_session("CLIENT_ID") as (_, repo, _):
        wait_past_cut_off(repo.db, client_holder(client_id), datetime.now(UTC))
        set_disabled(repo.db, client_id, False)
    click.echo(f"client {client_id} enabled")


@clients.command("remove")
@click.argument("client_id")
def remove_client(client_id: str) -> None:
    """Delete a client after revoking every token issued to it."""
    from .clients import BUILT_IN_APP as CLIENT_ID
    from .clients import remove, set_disabled
    from .revocation import end_client

    if client_id == CLIENT_ID:
        # Registered again, enabled, at the next start: removing would not keep it off.
        raise click.UsageError(f"{CLIENT_ID} is the server's own web app, registered at every "
                               f"start: 'fhirserver clients disable {CLIENT_ID}' keeps it off")

    with operator_session("CLIENT_ID") as (live, repo, service):
        set_disabled(repo.db, client_id, True)
        ended = end_client(repo.db, service, client_id, datetime.now(UTC), live.token_seconds)
        remove(repo.db, client_id)
    click.echo(revocation_note(ended.families, f"client {client_id} removed"))
