"""Per-app state and the per-request interaction context."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from flask import current_app, g, request

from ..auth.access import Access
from ..auth.tokens import TokenService
from ..config import Settings
from ..interactions.context import Context
from ..storage.repository import Repository


@dataclass
class AppState:
    settings: Settings
    repo: Repository
    # The time source for card codes and care relationships; tests replace it.
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    tokens: TokenService | None = None


def state() -> AppState:
    return current_app.extensions["fhirserver"]  # type: ignore[no-any-return]


def base_url() -> str:
    configured = state().settings.base_url
    if configured:
        return configured.rstrip("/")
    return request.host_url.rstrip("/") + request.script_root


def public_base_url() -> str:
    """The server's stable address: FHIR_BASE_URL, else the token issuer (whose default
    is http://HOST:PORT). What the CapabilityStatement names as implementation.url and
    what canonical URLs of the server's own definitions start with; unlike
    :func:`base_url`, not the Host a request happened to use."""
    settings = state().settings
    return settings.base_url.rstrip("/") or settings.issuer


def context() -> Context:
    st = state()
    caller = g.get("caller")
    access = g.get("access")
    if access is None and caller is not None:
        # One view per request: its caches, and the patients it touched for the audit.
        access = g.access = Access(caller, st.repo.db, st.clock(), tz=st.repo.tz)
    return Context(st.repo, st.settings, base_url(), st.clock, access)


def prefer(name: str) -> str | None:
    """One token of the Prefer header (RFC 7240), e.g. prefer("return")."""
    for part in request.headers.get("Prefer", "").split(";"):
        for item in part.split(","):
            key, _, value = item.strip().partition("=")
            if key.strip().lower() == name:
                return value.strip().strip('"') or None
    return None
