"""SMART scopes (SMART App Launch 2.x, scopes-and-launch-context.html), pure.

Clinical scopes are ``<context>/<resource>.<permissions>[?<query>]``:

* context: ``patient`` (one patient's compartment), ``user`` (what the user may
  see), ``system`` (a backend client, no user);
* resource: a type or ``*``;
* permissions: SMART v2 letters ``c r u d s`` in that order, any non-empty subset
  (``.rs``, ``.cruds``), or v1 ``read`` (= ``rs``), ``write`` (= ``cud``) and ``*``
  (all);
* a v2 scope may carry a granular constraint, search parameters the resource must
  also match (``patient/Observation.rs?category=http://...|laboratory``).

Other scopes (``openid``, ``fhirUser``, ``launch``, ``launch/patient``,
``offline_access``, ``online_access``, and this server's ``registration``,
``card-number`` and ``identity``) are kept by name. An interaction needs its
letter: read/vread ``r``, search ``s``, create ``c``, update/patch ``u``, delete ``d``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import parse_qsl

CONTEXTS = ("patient", "user", "system")
V2_ORDER = "cruds"
V1 = {"read": "rs", "write": "cud", "*": "cruds"}
#: This server's own scopes: ``registration`` (a registration desk or registrar:
#: writes identity documents of Patients and learns when a number is taken) and
#: ``card-number`` (``$ihe-pix`` answers health card numbers); ``identity`` (a
#: backend client receives identity document numbers whole, not masked: disclosure.py).
REGISTRATION = "registration"
CARD_NUMBER = "card-number"
IDENTITY = "identity"
NON_CLINICAL = frozenset({"openid", "fhirUser", "profile", "launch", "launch/patient",
                          "launch/encounter", "offline_access", "online_access",
                          REGISTRATION, CARD_NUMBER, IDENTITY})
INTERACTION_LETTER = {"read": "r", "vread": "r", "search": "s", "create": "c",
                      "update": "u", "patch": "u", "delete": "d", "history": "r"}
_CLINICAL = re.compile(r"^(patient|user|system)/([A-Za-z]+|\*)\.([a-z*]+)(?:\?(.*))?$")


class ScopeError(ValueError):
    """A scope string that is not a valid SMART scope."""


@dataclass(frozen=True)
class Scope:
    context: str
    resource: str  # a type or "*"
    permissions: frozenset[str]
    query: tuple[tuple[str, str], ...] = ()  # granular constraint (v2)
    text: str = ""

    def covers(self, rtype: str, letter: str) -> bool:
        return self.resource in ("*", rtype) and letter in self.permissions


def parse_scope(text: str) -> Scope | str:
    """A clinical :class:`Scope`, or the name of a non-clinical scope."""
    if text in NON_CLINICAL:
        return text
    m = _CLINICAL.match(text)
    if not m:
        raise ScopeError(f"'{text}' is not a SMART scope")
    context, resource, perms, query = m.groups()
    if perms in V1:
        letters = V1[perms]
        if query:
            raise ScopeError(f"'{text}': SMART v1 scopes take no query")
    else:
        if perms != "".join(c for c in V2_ORDER if c in perms) or len(set(perms)) != len(perms):
            raise ScopeError(f"'{text}': permissions must be letters of 'cruds' in that order")
        letters = perms
    pairs = tuple(parse_qsl(query, keep_blank_values=False, strict_parsing=True)) if query else ()
    return Scope(context, resource, frozenset(letters), pairs, text)


def parse_scopes(text: str) -> tuple[list[Scope], list[str]]:
    """A space-separated scope string: (clinical scopes, other scope names)."""
    clinical: list[Scope] = []
    other: list[str] = []
    for item in text.split():
        parsed = parse_scope(item)
        (clinical if isinstance(parsed, Scope) else other).append(parsed)  # type: ignore[arg-type]
    return clinical, other


def grant(requested: str, allowed: str, approved: Iterable[str] | None = None) -> str:
    """The scopes a token gets: those requested that the client's allowed scopes cover
    (a requested scope is granted when an allowed one includes it: same context,
    same or wildcard type, a superset of letters and no narrowing query) and, when
    the user approved a list, that list too. Invalid requested scopes are dropped."""
    allowed_clinical, allowed_other = parse_scopes(allowed)
    approved_set = set(approved) if approved is not None else None
    out: list[str] = []
    for item in requested.split():
        try:
            parsed = parse_scope(item)
        except ScopeError:
            continue
        if approved_set is not None and item not in approved_set:
            continue
        if isinstance(parsed, str):
            ok = parsed in allowed_other
        else:
            ok = any(_includes(a, parsed) for a in allowed_clinical)
        if ok and item not in out:
            out.append(item)
    return " ".join(out)


def _includes(outer: Scope, inner: Scope) -> bool:
    return (
        outer.context == inner.context
        and outer.resource in ("*", inner.resource)
        and inner.permissions <= outer.permissions
        and set(outer.query) <= set(inner.query)
    )


def matching(scopes: Iterable[Scope], rtype: str, interaction: str,
             contexts: Iterable[str] = CONTEXTS) -> list[Scope]:
    """The scopes that let a caller do ``interaction`` on ``rtype``."""
    letter = INTERACTION_LETTER[interaction]
    wanted = set(contexts)
    return [s for s in scopes if s.context in wanted and s.covers(rtype, letter)]


_VERBS = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}
_WHOSE = {"patient": "your", "user": "your patients'", "system": "all permitted"}
_OTHER_WORDS = {
    "openid": "Know who you are",
    "fhirUser": "Know who you are in this record system",
    "profile": "Know who you are",
    "launch": "Open in the context of the record you are working in",
    "launch/patient": "Choose which patient it works with",
    "launch/encounter": "Know which visit it works with",
    "offline_access": "Keep access while you are not using it",
    "online_access": "Keep access while you are using it",
    REGISTRATION: "Register patients and change their identity documents",
    CARD_NUMBER: "Look up health card numbers from identity document numbers",
    IDENTITY: "Receive identity document numbers whole (not masked)",
}


def describe(text: str) -> str:
    """A scope in plain words, for the approval page."""
    try:
        parsed = parse_scope(text)
    except ScopeError:
        return text
    if isinstance(parsed, str):
        return _OTHER_WORDS.get(parsed, parsed)
    verbs = [_VERBS[c] for c in V2_ORDER if c in parsed.permissions]
    what = "records of every kind" if parsed.resource == "*" else f"{parsed.resource} records"
    sentence = f"{', '.join(verbs[:-1]) + ' and ' if len(verbs) > 1 else ''}{verbs[-1]} " \
               f"{_WHOSE[parsed.context]} {what}"
    if parsed.query:
        sentence += " where " + ", ".join(f"{k} is {v}" for k, v in parsed.query)
    return sentence[0].upper() + sentence[1:]
