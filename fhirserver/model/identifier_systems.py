"""The registry of identifier systems the master patient index knows (data, not code).

Loaded from ``identifier_systems.json`` beside this module, or from the file named
by ``FHIR_IDENTIFIER_SYSTEMS``: deployments give their own system URIs (OIDs). A
system URI may be a template with one ``{country}`` or ``{organization}`` part
(passports per issuing country, record numbers per hospital); ``publish`` lists the
values whose NamingSystem is published.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, cast

import orjson

from .identity_numbers import GB11643, VALIDATORS, InvalidNumber, normalise

DEFAULT_FILE = Path(__file__).with_name("identifier_systems.json")
#: the registry key of the system health card numbers are issued in
HEALTH_CARD_KEY = "health-card"
_PART = re.compile(r"\{(country|organization)\}")
_PART_PATTERN = {"country": r"[A-Z]{3}", "organization": r"[A-Za-z0-9][A-Za-z0-9.\-]*"}


@dataclass(frozen=True)
class IdentifierSystem:
    key: str
    system: str  # URI, or a template with {country} / {organization}
    name: str
    document_type: str
    validator: str
    unique: bool
    publish: tuple[str, ...] = ()

    @property
    def template(self) -> bool:
        return _PART.search(self.system) is not None

    def pattern(self) -> re.Pattern[str]:
        parts = _PART.split(self.system)
        out = ""
        for i, piece in enumerate(parts):
            out += f"(?P<{piece}>{_PART_PATTERN[piece]})" if i % 2 else re.escape(piece)
        return re.compile(out)

    def concrete(self, value: str) -> str:
        return _PART.sub(value, self.system)

    @property
    def gb11643(self) -> bool:
        """Numbers of this system encode birth date and gender (GB 11643 form)."""
        return self.validator in GB11643

    def check(self, value: str, parameter: str | None = None) -> str:
        """The normalised value, or :class:`InvalidNumber`."""
        return VALIDATORS[self.validator](normalise(value), parameter)


@dataclass(frozen=True)
class Match:
    entry: IdentifierSystem
    parameter: str | None  # the country or organization of a template system


class Registry:
    def __init__(self, data: dict[str, Any]) -> None:
        self.document_type_system: str = data["documentTypeSystem"]
        self.document_types: dict[str, str] = dict(data["documentTypes"])
        self.entries: tuple[IdentifierSystem, ...] = tuple(
            IdentifierSystem(
                key=e["key"], system=e["system"], name=e["name"],
                document_type=e["documentType"], validator=e["validator"],
                unique=bool(e["unique"]), publish=tuple(e.get("publish", ())),
            )
            for e in data["systems"]
        )
        for e in self.entries:
            if e.validator not in VALIDATORS:
                raise ValueError(f"identifier system '{e.key}': unknown validator '{e.validator}'")
            if e.document_type not in self.document_types:
                raise ValueError(f"identifier system '{e.key}': unknown document type "
                                 f"'{e.document_type}'")
        self._exact = {e.system: e for e in self.entries if not e.template}
        self._templates = [(e, e.pattern()) for e in self.entries if e.template]
        # Each system as it appears in JSON text (a template: its text before the
        # first part), for :meth:`may_hold`. JSON escapes character by character,
        # so the text of a system that matches starts with one of these.
        self._in_json = tuple(_in_json(_PART.split(e.system)[0]) for e in self.entries)
        #: what all of them begin with (usually the authority's URI): one search
        #: tells most texts apart
        self._shared: bytes = cast(bytes, os.path.commonprefix(list(self._in_json))) \
            if self._in_json else b""

    def may_hold(self, value: Any) -> bool:
        """Whether ``value`` (a resource, or any JSON value) may hold an identifier of
        a registered system: False only when its JSON text names none of them, found
        by one pass of the C serializer and a search per system, where a walk of a
        search page's resources costs a walk of every element."""
        try:
            text = orjson.dumps(value)
        except TypeError:  # not JSON (a lone surrogate, a non-JSON value): look
            return True
        if self._shared not in text:
            return False
        return any(needle in text for needle in self._in_json)

    def by_key(self, key: str) -> IdentifierSystem:
        for e in self.entries:
            if e.key == key:
                return e
        raise KeyError(key)

    def match(self, system: str) -> Match | None:
        """The registered system ``system`` is, with its template parameter."""
        exact = self._exact.get(system)
        if exact is not None:
            return Match(exact, None)
        for entry, pattern in self._templates:
            m = pattern.fullmatch(system)
            if m:
                return Match(entry, next(iter(m.groupdict().values())))
        return None


def _in_json(text: str) -> bytes:
    """``text`` as JSON writes it inside a string; empty (found in every text: the
    walk decides) for a text JSON cannot write, such as a lone surrogate."""
    try:
        return orjson.dumps(text)[1:-1]
    except TypeError:
        return b""


@cache
def load_registry(path: str = "") -> Registry:
    """The registry in ``path`` (default: the shipped one), read once per process."""
    with open(path or DEFAULT_FILE, encoding="utf-8") as fh:
        return Registry(json.load(fh))


__all__ = ["IdentifierSystem", "InvalidNumber", "Match", "Registry", "load_registry"]
