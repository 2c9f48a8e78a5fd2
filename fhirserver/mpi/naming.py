"""The identifier registry published as FHIR NamingSystem resources (R4
namingsystem.html), so clients discover which system URI names which document.

One NamingSystem per system URI: a template system (passport per country, record
number per hospital) is published once for each value its ``publish`` list names.
Pure: the registry in, resources out.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..model.identifier_systems import Registry

UNIQUE = "Identifies one person: no two active Patients share a value"
NOT_UNIQUE = "Does not identify a person uniquely"


def _name(key: str) -> str:
    """A computer-friendly name (NamingSystem.name, inv nsd-0 style): ResidentId."""
    return "".join(part[:1].upper() + part[1:] for part in key.replace(".", "-").split("-"))


def naming_systems(registry: Registry, date: str) -> Iterator[dict[str, Any]]:
    for entry in registry.entries:
        for value in (entry.publish if entry.template else (None,)):
            rid = entry.key if value is None else f"{entry.key}-{value.lower()}"
            uri = entry.system if value is None else entry.concrete(value)
            yield {
                "resourceType": "NamingSystem",
                "id": rid,
                "name": _name(rid),
                "status": "active",
                "kind": "identifier",
                "date": date,
                "publisher": "fhirserver",
                "description": entry.name + (f": {value}" if value else ""),
                "usage": UNIQUE if entry.unique else NOT_UNIQUE,
                "type": {"coding": [{
                    "system": registry.document_type_system,
                    "code": entry.document_type,
                    "display": registry.document_types[entry.document_type],
                }]},
                "uniqueId": [{"type": "uri", "value": uri, "preferred": True}],
            }
