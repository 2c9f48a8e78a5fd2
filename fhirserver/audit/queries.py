"""A search's query as the audit log keeps it: its shape, without the identities (pure).

AuditEvent.entity.query (R4 auditevent.html) records what was asked. The values of
identity parameters (``identifier``, ``telecom``, ``phone``, ``email``, ``name``,
``family``, ``given``, ``phonetic``, ``address*``, ``sourceIdentifier``, also at the
end of a chain such as ``subject:Patient.identifier`` or of a reverse chain such as
``_has:Observation:patient:identifier``) and the paging cursor (it carries sort
values, a name or a birth date) are replaced by a keyed hash, ``hmac-sha256:<hex>``,
under a key derived from the master key for this purpose alone. Before hashing a
value is normalised the way the patient registry normalises numbers (spaces out,
upper case: ``mpi/validators.normalise``), and in ``system|value`` the system stays
in clear: an operator holding the key can answer "was my ID number searched" by
hashing the number (``fhirserver audit pseudonym``), while the log read without it
names nobody.

:func:`describe` says the same in plain words for AuditEvent.entity.description,
the part a patient sees of someone's search (``GET AuditEvent``): "Search for Patient
by identifier (National resident identity card number (GB 11643))". Identifier
systems are named as the registry names them (what ``GET NamingSystem`` publishes).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from urllib.parse import quote, unquote_plus

from ..model.identifier_systems import Registry
from ..model.identity_numbers import normalise
from .redaction import RESULT_PARAMETERS

PURPOSE = "audit/query-pseudonym/v1"
PREFIX = "hmac-sha256:"
IDENTITY = frozenset({"identifier", "telecom", "phone", "email", "name", "family", "given",
                      "phonetic", "sourceIdentifier"})
OPAQUE = frozenset({"_cursor"})
_TOKENS = frozenset({"identifier", "telecom", "phone", "email", "sourceIdentifier"})
_WORDS = {"telecom": "phone or email", "phone": "phone number", "email": "email address",
          "family": "family name", "given": "given name", "phonetic": "name (sounds like)",
          "birthdate": "birth date", "_id": "id", "_lastUpdated": "last update"}
_SAFE = "|:/,.-_~"
_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z_\-.:]{0,99}")  # no digits: never a number


class Pseudonyms:
    """Keyed hashes of identity values."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def of(self, value: str) -> str:
        """``hmac-sha256:<hex>`` of the normalised ``value``."""
        return PREFIX + hmac.new(self._key, normalise(value).encode(), hashlib.sha256).hexdigest()


def target(name: str) -> str:
    """The parameter a (chained, reverse-chained) parameter name finally tests, without
    its modifier: ``subject:Patient.identifier`` and ``_has:Observation:patient:
    identifier`` both test ``identifier``."""
    while name.startswith("_has:"):
        parts = name.split(":", 3)
        if len(parts) < 4:
            return name
        name = parts[3]
    base, _, modifier = name.rsplit(".", 1)[-1].partition(":")
    # ``subject:identifier=S|V`` tests the referenced resource's identifier
    # (search.html#modifiers): its value is an identity value like ``identifier``'s
    return "identifier" if modifier == "identifier" else base


def is_identity(name: str) -> bool:
    last = target(name)
    return last in IDENTITY or last.startswith("address")


def split_values(value: str) -> list[str]:
    """Comma-separated alternatives; ``\\,`` is an escaped comma (search.html 3.1.1.4)."""
    items, current, escaped = [], "", False
    for ch in value:
        if ch == "," and not escaped:
            items.append(current)
            current = ""
        else:
            current += ch
        escaped = ch == "\\" and not escaped
    return [*items, current]


def _hide(name: str, value: str, pseudonyms: Pseudonyms) -> str:
    if name.endswith(":missing"):
        return value  # true / false: no identity in it
    out = []
    for item in split_values(value):
        if target(name) in _TOKENS and "|" in item:
            system, bar, code = item.rpartition("|")  # system|value, or system|type|value
            out.append(system + bar + (pseudonyms.of(code) if code else ""))
        else:
            out.append(pseudonyms.of(item) if item else item)
    return ",".join(out)


def pseudonymise(query: str, pseudonyms: Pseudonyms) -> str:
    """``query`` (as sent) with identity values hashed; every other part as it was."""
    if not query:
        return query
    out = []
    for part in query.split("&"):
        raw_name, eq, raw_value = part.partition("=")
        name = unquote_plus(raw_name)
        if eq and (is_identity(name) or name in OPAQUE):
            hidden = _hide(name, unquote_plus(raw_value), pseudonyms)
            out.append(f"{raw_name}={quote(hidden, safe=_SAFE)}")
        else:
            out.append(part)
    return "&".join(out)


def _label(name: str) -> str:
    if name.startswith("_has:"):
        parts = name.split(":", 3)
        if len(parts) == 4:
            return f"linked {parts[1]} {_label(parts[3])}"
    if "." in name:
        head, _, tail = name.rpartition(".")
        return f"{head.split(':', 1)[0]}'s {_label(tail)}"
    base = name.split(":", 1)[0]
    return _WORDS.get(base, base.replace("-", " "))


def _systems(value: str, registry: Registry) -> list[str]:
    names = []
    for item in split_values(value):
        system = item.rpartition("|")[0].split("|", 1)[0] if "|" in item else ""
        found = registry.match(system) if system else None
        if found is not None:
            names.append(found.entry.name + (f": {found.parameter}" if found.parameter else ""))
    return names


def describe(resource_type: str | None, query: str, registry: Registry) -> str:
    """A search in plain words, naming its parameters and identifier systems, no values."""
    words: list[str] = []
    for part in query.split("&") if query else ():
        raw_name, _, raw_value = part.partition("=")
        name = unquote_plus(raw_name)
        if not name or name.split(":", 1)[0] in RESULT_PARAMETERS or name in OPAQUE:
            continue
        label = _label(name) if _PLAIN_NAME.fullmatch(name) else "other criteria"
        if target(name) == "identifier" and not name.endswith(":missing"):
            systems = list(dict.fromkeys(_systems(unquote_plus(raw_value), registry)))
            if systems:
                label += f" ({', '.join(systems)})"
        if label not in words:
            words.append(label)
    what = f"Search for {resource_type}" if resource_type else "Search"
    return f"{what} by {', '.join(words)}" if words else what
