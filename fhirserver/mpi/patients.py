"""What the master patient index asks of every Patient write (pure).

Identifiers of registered systems are normalised (spaces out, upper-case) and
checked by their system's validator; a GB 11643 number (resident ID, residence
permit) must agree with the Patient's ``birthDate`` and ``gender``. Every problem
is reported at once, each at its FHIRPath.

A uniquely-identifying identifier of an active Patient is a *claim*: the key
``system|value`` may be held by one active Patient only (storage enforces it with
a unique key).
"""

from __future__ import annotations

import copy
from typing import Any

from .. import errors
from ..model.identifier_systems import Registry
from ..model.identity_numbers import InvalidNumber, gb11643_facts


def check_patient(resource: dict[str, Any], registry: Registry) -> dict[str, Any]:
    """``resource`` with its registered identifiers normalised; 422 when one is invalid
    or disagrees with the Patient's birth date or gender."""
    identifiers = resource.get("identifier")
    if not isinstance(identifiers, list):
        return resource
    out = copy.deepcopy(resource)
    issues: list[errors.Issue] = []
    for i, ident in enumerate(out["identifier"]):
        system, value = ident.get("system"), ident.get("value")
        if not isinstance(system, str) or not isinstance(value, str):
            continue
        found = registry.match(system)
        if found is None:
            continue
        where = f"Patient.identifier[{i}].value"
        try:
            ident["value"] = found.entry.check(value, found.parameter)
        except InvalidNumber as exc:
            issues.append(errors.Issue(f"{exc}: '{value}'", code="value", expression=(where,)))
            continue
        if found.entry.gb11643:
            issues += _agrees(out, ident["value"], found.entry.name, i)
    if issues:
        raise errors.Unprocessable(issues=issues)
    return out


def _agrees(patient: dict[str, Any], number: str, label: str, index: int) -> list[errors.Issue]:
    born, gender = gb11643_facts(number)
    where = (f"Patient.identifier[{index}].value",)
    issues: list[errors.Issue] = []
    birth_date = patient.get("birthDate")
    if isinstance(birth_date, str) and birth_date:
        stated = born.isoformat()[: len(birth_date)]  # compare at the stated precision
        if stated != birth_date:
            issues.append(errors.Issue(
                f"The {label} gives birth date {born.isoformat()}, but birthDate is {birth_date}",
                code="business-rule", expression=("Patient.birthDate", *where)))
    stated_gender = patient.get("gender")
    if stated_gender in ("male", "female") and stated_gender != gender:
        issues.append(errors.Issue(
            f"The {label} gives gender {gender}, but gender is {stated_gender}",
            code="business-rule", expression=("Patient.gender", *where)))
    return issues


def claims(resource: dict[str, Any] | None, registry: Registry) -> list[str]:
    """The ``system|value`` keys an active Patient holds exclusively (after
    :func:`check_patient`); none for an inactive or deleted one."""
    if not resource or resource.get("resourceType") != "Patient" or resource.get("active") is False:
        return []
    out: list[str] = []
    for ident in resource.get("identifier") or ():
        system, value = ident.get("system"), ident.get("value")
        if isinstance(system, str) and isinstance(value, str):
            found = registry.match(system)
            if found is not None and found.entry.unique:
                key = f"{system}|{value}"
                if key not in out:
                    out.append(key)
    return out


def identity_documents(resource: dict[str, Any] | None, registry: Registry) -> set[str]:
    """``system|value`` of the uniquely-identifying documents a Patient version
    carries, active or not (what only registration may change)."""
    out: set[str] = set()
    for ident in (resource or {}).get("identifier") or ():
        system, value = ident.get("system"), ident.get("value")
        if isinstance(system, str) and isinstance(value, str):
            found = registry.match(system)
            if found is not None and found.entry.unique:
                out.add(f"{system}|{value}")
    return out


def keep_server_owned(new: dict[str, Any], old: dict[str, Any] | None,
                      systems: set[str]) -> dict[str, Any]:
    """``new`` with the identifiers of server-owned ``systems`` (the health card
    number) exactly as ``old`` holds them: a client can neither drop nor set them."""
    kept = [i for i in (old or {}).get("identifier") or () if i.get("system") in systems]
    given = [i for i in new.get("identifier") or () if i.get("system") not in systems]
    if kept == [i for i in new.get("identifier") or () if i.get("system") in systems]:
        return new
    out = dict(new)
    if given or kept:
        out["identifier"] = [*given, *kept]
    else:
        out.pop("identifier", None)
    return out
