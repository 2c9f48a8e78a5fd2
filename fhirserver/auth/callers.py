"""From verified token claims to the :class:`~.policy.Caller` the policy reasons about."""

from __future__ import annotations

from typing import Any

from .policy import KINDS, Caller
from .scopes import Scope, ScopeError, parse_scope


def caller_from_claims(claims: dict[str, Any]) -> Caller:
    scopes: list[Scope] = []
    named: set[str] = set()
    for item in str(claims.get("scope", "")).split():
        try:
            parsed = parse_scope(item)
        except ScopeError:
            continue
        if isinstance(parsed, Scope):
            scopes.append(parsed)
        else:
            named.add(parsed)
    kind = claims.get("kind") if claims.get("kind") in KINDS else "system"
    fhir_user = str(claims.get("fhirUser") or "")
    patient = claims.get("patient")
    if kind == "patient" and fhir_user.startswith("Patient/"):
        # Who a patient token *is* comes from fhirUser; its ``patient`` is only the
        # launch context (a family member the app opens on), never an identity.
        patient = fhir_user.removeprefix("Patient/")
    return Caller(
        kind=str(kind),
        scopes=tuple(scopes),
        subject=str(claims.get("sub", "")),
        client_id=str(claims.get("client_id", "")),
        patient=patient,
        practitioner=fhir_user if fhir_user.startswith("Practitioner/") else None,
        organization=claims.get("organization"),
        token_id=str(claims.get("jti", "")),
        named=frozenset(named),
    )
