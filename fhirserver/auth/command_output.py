"""What the operator commands print about accounts and clients: tables, dates and
the note on the tokens a disable or remove revoked. Shared by user_commands.py and
client_commands.py."""

from __future__ import annotations

from datetime import datetime


def when(value: datetime | None) -> str:
    """A stored time to the minute, or "-" when there is none."""
    return value.strftime("%Y-%m-%d %H:%M") if value else "-"


def table(title: str, headers: list[str], rows: list[list[str]]) -> None:
    """Print ``rows`` under ``headers``; the first column never wraps (it is the name
    an operator types next)."""
    from rich.console import Console
    from rich.table import Table

    shown = Table(title=title)
    for i, header in enumerate(headers):
        shown.add_column(header, no_wrap=i == 0, overflow="fold")
    for row in rows:
        shown.add_row(*row)
    Console(highlight=False).print(shown)


def revocation_note(families: int, what: str) -> str:
    """What a disable or remove revoked, and how soon running servers notice."""
    from .tokens import REVOCATION_REFRESH

    return (f"{what}: {families} refresh token famil{'y' if families == 1 else 'ies'} revoked, "
            f"and every access token issued until now (running servers refuse them within "
            f"{REVOCATION_REFRESH:.0f} s)")
