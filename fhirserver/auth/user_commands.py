"""``fhirserver users``: the life cycle of the accounts clinicians and patients sign
in with (add, roles, list, disable, enable, remove).

Like the other operator commands, these act on the database directly and are not
recorded in the audit log, which records requests to the API."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import click

from .command_output import revocation_note, table, when
from .commands import operator_session

if TYPE_CHECKING:
    from ..storage.repository import Repository

ROLES = ["emergency-access", "registration"]


@click.group("users")
def users_() -> None:
    """People who sign in: clinicians and patients."""


@users_.command("add")
@click.argument("username")
@click.option("--practitioner", help="A clinician: their Practitioner/<id>.")
@click.option("--organization", help="The clinician's Organization/<id>.")
@click.option("--patient", help="A patient: their Patient id.")
@click.option("--role", "roles", multiple=True, type=click.Choice(ROLES),
              help="A clinician's role: emergency-access (break-the-glass), registration "
                   "(identity documents; the registration scope). Repeat for several.")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def add_user(username: str, practitioner: str | None, organization: str | None,
             patient: str | None, roles: tuple[str, ...], password_stdin: bool) -> None:
    """Create (or replace) a user who signs in at the authorization server. A patient's
    Patient must exist, as must a clinician's Practitioner and Organization; a
    clinician is linked to their organisation by a PractitionerRole (found, or made).
    A password has at least 12 characters and does not contain the user name."""
    import sys

    from .users import User, add

    if bool(practitioner) == bool(patient):
        raise click.UsageError("give exactly one of --practitioner or --patient")
    if practitioner and not practitioner.startswith("Practitioner/"):
        raise click.BadParameter("use Practitioner/<id>", param_hint="--practitioner")
    user = User(username, "practitioner" if practitioner else "patient",
                practitioner or f"Patient/{patient}", organization, roles)
    role = None
    with operator_session("password") as (_, repo, _):
        if patient:
            _patient_exists(repo, patient)
        else:
            _directory_entries(repo, practitioner, organization)
        password = sys.stdin.readline().rstrip("\n") if password_stdin else click.prompt(
            "password", hide_input=True, confirmation_prompt=True)
        add(repo.db, user, password)
        if practitioner and organization:
            from .directory import role_for

            role = role_for(repo, practitioner, organization)
    linked = f", PractitionerRole/{role}" if role else ""
    click.echo(f"user {username} ({user.fhir_user}{linked}) saved")


@users_.command("roles")
@click.argument("username")
@click.option("--add", "add_", multiple=True, type=click.Choice(ROLES),
              help="Role to grant (repeatable).")
@click.option("--remove", multiple=True, type=click.Choice(ROLES),
              help="Role to take away (repeatable); takes effect at the user's next request.")
def user_roles(username: str, add_: tuple[str, ...], remove: tuple[str, ...]) -> None:
    """Show, grant or take away a clinician's roles."""
    from .users import set_roles

    with operator_session("USERNAME") as (_, repo, _):
        user = set_roles(repo.db, username, add_, remove)
    click.echo(f"user {username}: roles {', '.join(user.roles) or '(none)'}")


def _patient_exists(repo: Repository, patient: str) -> None:
    """A patient's account must point at a Patient this server holds (exit 1 if not):
    an account on a wrong id would sign in to nothing, or later to a stranger whose
    record is created with that id."""
    from ..model.types import is_valid_id

    stored = repo.get("Patient", patient) if is_valid_id(patient) else None
    if stored is None or stored.deleted:
        gone = " (it was deleted)" if stored is not None else ""
        raise click.ClickException(f"no Patient/{patient} on this server{gone}: create or "
                                   "import the patient first")


def _directory_entries(repo: Repository, practitioner: str | None,
                       organization: str | None) -> None:
    """A clinician's account names a Practitioner (and Organization) this server holds
    (exit 1 if not): their token's fhirUser must read as a resource."""
    from .directory import problem

    for ref, rtype in ((practitioner, "Practitioner"), (organization, "Organization")):
        found = problem(repo, ref, rtype) if ref else None
        if found:
            raise click.ClickException(found)


@users_.command("list")
def list_users() -> None:
    """Show every account: who it is, its roles, whether it is disabled."""
    from .users import every

    with operator_session() as (_, repo, _):
        accounts = every(repo.db)
    rows = [[u.username, "clinician" if u.kind == "practitioner" else "patient", u.fhir_user,
             u.organization or "-", ", ".join(u.roles) or "-", "disabled" if u.disabled else "-",
             when(u.created)] for u in accounts]
    table(f"{len(rows)} user{'' if len(rows) == 1 else 's'}",
          ["name", "kind", "Practitioner or Patient", "organization", "roles", "disabled", "created (UTC)"], rows)


@users_.command("disable")
@click.argument("username")
def disable_user(username: str) -> None:
    """Stop an account signing in and revoke every token it holds."""
    from .revocation import end_user
    from .users import set_disabled

    with operator_session("USERNAME") as (live, repo, service):
        set_disabled(repo.db, username, True)
        ended = end_user(repo.db, service, username, datetime.now(UTC), live.token_seconds)
    click.echo(revocation_note(ended.families, f"user {username} disabled"))


@users_.command("enable")
@click.argument("username")
def enable_user(username: str) -> None:
    """Let a disabled account sign in again (the tokens it held stay revoked)."""
    from .revocation import wait_past_cut_off
    from .tokens import user_holder
    from .users import set_disabled

    with operator_session("USERNAME") as (_, repo, _):
        wait_past_cut_off(repo.db, user_holder(username), datetime.now(UTC))
        set_disabled(repo.db, username, False)
    click.echo(f"user {username} enabled")


@users_.command("remove")
@click.argument("username")
def remove_user(username: str) -> None:
    """Delete an account after revoking every token it holds; the audit log keeps
    the record of what it did."""
    from .revocation import end_user
    from .users import remove, set_disabled

    with operator_session("USERNAME") as (live, repo, service):
        set_disabled(repo.db, username, True)  # no sign-in while its tokens are revoked
        ended = end_user(repo.db, service, username, datetime.now(UTC), live.token_seconds)
        remove(repo.db, username)
    click.echo(revocation_note(ended.families, f"user {username} removed"))
