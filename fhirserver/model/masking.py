"""Masked identity numbers (pure): minimum disclosure in answers.

A caller whose access does not need a person's identity document numbers gets them
masked; the resource then carries the v3 ObservationValue ``MASKED`` security label
(R4 security-labels.html, "MASKED: the resource has been altered by masking some
of its content") so that a client knows the values are not whole.

Sensitive identifiers are the Identifier elements, anywhere in a resource (its
``identifier``, a Reference's ``identifier``, contained resources...), whose
``system`` is one of the registry's (:mod:`.identifier_systems`). A GB 11643-form
number (18 characters: resident ID, residence permits, the 2023 foreign permanent
resident card) keeps its first 6 and last 4 characters; any other value its last 4
when it has 8 or more, else nothing. A mask is as long as the value, ``*`` for
every hidden character.

A masked value sent back in a write (a client that read a masked resource, edited
it and PUT it back, http.html#update) stands for the stored value it masks; a
masked value that masks no stored value is refused by the caller of
:func:`restore`. The label is the server's: it is never stored.

A narrative (``text.div``) that shows a masked number, however spaced, is withheld
from the same answer (replaced by :data:`WITHHELD_DIV`); sent back in a write, the
stored narrative stands.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import orjson

from ..crypto.fields import narratives_showing
from .identifier_systems import IdentifierSystem, Registry
from .identity_numbers import GB11643

OBSERVATION_VALUE = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue"
MASKED = {"system": OBSERVATION_VALUE, "code": "MASKED", "display": "masked"}
MASK_CHAR = "*"
#: What a narrative that shows a masked number is replaced by (narrative.html: the
#: div must hold some text; a write that sends it back keeps the stored narrative).
WITHHELD_DIV = ('<div xmlns="http://www.w3.org/1999/xhtml"><p>Narrative withheld: it shows '
                'identity numbers this answer gives masked.</p></div>')
#: validators whose 18-character numbers have the GB 11643 layout (area, birth
#: date, sequence, check character)
GB11643_FORM = GB11643 | {"foreign-permanent-resident"}


def mask(value: str, entry: IdentifierSystem) -> str:
    """``value`` of ``entry``'s system as a caller without the need for it sees it."""
    if entry.validator in GB11643_FORM and len(value) == 18:
        return value[:6] + MASK_CHAR * 8 + value[-4:]
    if len(value) >= 8:
        return MASK_CHAR * (len(value) - 4) + value[-4:]
    return MASK_CHAR * len(value)


def _is_label(coding: Any) -> bool:
    return isinstance(coding, dict) and coding.get("system") == OBSERVATION_VALUE \
        and coding.get("code") == "MASKED"


def labelled(resource: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``resource`` with the MASKED label in ``meta.security`` (once)."""
    meta = dict(resource.get("meta") or {})
    security = [c for c in meta.get("security") or () if not _is_label(c)]
    meta["security"] = [*security, dict(MASKED)]
    return {**resource, "meta": meta}


def unlabelled(resource: dict[str, Any]) -> dict[str, Any]:
    """``resource`` without the MASKED label (a copy when it had one): the label is
    the server's to set, never stored from a client."""
    meta = resource.get("meta")
    if not isinstance(meta, dict) or not isinstance(meta.get("security"), list) \
            or not any(_is_label(c) for c in meta["security"]):
        return resource
    kept = [c for c in meta["security"] if not _is_label(c)]
    new_meta = {k: v for k, v in meta.items() if k != "security"}
    if kept:
        new_meta["security"] = kept
    out = {k: v for k, v in resource.items() if k != "meta"}
    if new_meta:
        out["meta"] = new_meta
    return out


def _entry(node: dict[str, Any], registry: Registry) -> IdentifierSystem | None:
    """The registered system of an Identifier-shaped element (string ``system`` and
    ``value``), or None. A ContactPoint's ``system`` (phone, email) and a Coding's
    or Quantity's are never registered identifier systems."""
    system, value = node.get("system"), node.get("value")
    if not isinstance(system, str) or not isinstance(value, str):
        return None
    found = registry.match(system)
    return found.entry if found is not None else None


def _rewrite(node: Any, change: Callable[[dict[str, Any], IdentifierSystem, str], str | None],
             registry: Registry, path: str) -> Any:
    """``node`` with ``change`` applied to each sensitive identifier's value (given
    its FHIRPath); parts nothing changed are shared, not copied."""
    if isinstance(node, list):
        out_list = [_rewrite(v, change, registry, f"{path}[{i}]") for i, v in enumerate(node)]
        return node if all(a is b for a, b in zip(out_list, node, strict=True)) else out_list
    if not isinstance(node, dict):
        return node
    out = node
    entry = _entry(node, registry)
    if entry is not None:
        new = change(node, entry, f"{path}.value")
        if new is not None and new != node["value"]:
            out = {**node, "value": new}
    for key, value in node.items():
        if isinstance(value, dict | list):
            new_value = _rewrite(value, change, registry, f"{path}.{key}")
            if new_value is not value:
                out = out if out is not node else dict(node)
                out[key] = new_value
    return out


def _identifiers(node: Any, registry: Registry) -> Iterator[tuple[str, str]]:
    """``(system, value)`` of every sensitive identifier in ``node``."""
    if isinstance(node, list):
        for v in node:
            yield from _identifiers(v, registry)
    elif isinstance(node, dict):
        if _entry(node, registry) is not None:
            yield node["system"], node["value"]
        for value in node.values():
            if isinstance(value, dict | list):
                yield from _identifiers(value, registry)


def masked(resource: dict[str, Any], registry: Registry,
           keep: frozenset[str] = frozenset()) -> tuple[dict[str, Any], bool]:
    """``resource`` with every sensitive identifier masked (those of the systems in
    ``keep`` excepted), labelled MASKED when anything was; and whether anything was.
    ``resource`` itself is never changed."""

    def change(node: dict[str, Any], entry: IdentifierSystem, _path: str) -> str | None:
        return None if node["system"] in keep else mask(node["value"], entry)

    if not registry.may_hold(resource):  # most records (an Observation) hold none
        return resource, False
    out = _rewrite(resource, change, registry, str(resource.get("resourceType", "")))
    if out is resource:
        return resource, False
    hidden = [value for _path, system, value in sensitive_values(resource, registry)
              if system not in keep]
    if narratives_showing(out, hidden):
        out = copy.deepcopy(out)
        for text in narratives_showing(out, hidden):
            text["div"] = WITHHELD_DIV
    return labelled(out), True


def _without_mask_char(resource: Any) -> bool:
    """True when no text of ``resource`` holds :data:`MASK_CHAR`, found in one pass
    of the C serializer, where the walks below cost a write more than its search
    values; False when that cannot tell (the walk then decides)."""
    try:
        return MASK_CHAR.encode() not in orjson.dumps(resource, default=str)
    except (orjson.JSONEncodeError, TypeError):
        return False


def carries_masks(resource: Any, registry: Registry) -> bool:
    """Does any sensitive identifier of ``resource`` hold a masked character?"""
    if _without_mask_char(resource):
        return False
    return any(MASK_CHAR in value for _system, value in _identifiers(resource, registry))


def sensitive_values(resource: Any, registry: Registry) -> list[tuple[str, str, str]]:
    """``(FHIRPath, system, value)`` of every sensitive identifier of ``resource``."""
    found: list[tuple[str, str, str]] = []

    def change(node: dict[str, Any], _entry: IdentifierSystem, path: str) -> str | None:
        found.append((path, node["system"], node["value"]))
        return None

    if isinstance(resource, dict):
        _rewrite(resource, change, registry, str(resource.get("resourceType", "")))
    return found


def masked_paths(resource: Any, registry: Registry) -> list[str]:
    """The FHIRPaths of the sensitive identifiers of ``resource`` that hold a masked
    character (those :func:`restore` puts back or refuses)."""
    if _without_mask_char(resource):
        return []
    return [path for path, _system, value in sensitive_values(resource, registry)
            if MASK_CHAR in value]


def restore(resource: dict[str, Any], stored: dict[str, Any] | None,
            registry: Registry) -> tuple[dict[str, Any], list[str]]:
    """``resource`` (a write) with each masked value that masks a value ``stored``
    holds for the same system put back to that stored value; and the FHIRPaths of
    masked values that mask none (the write must be refused: a masked value is
    never stored).

    Where two stored values of one system share a mask, they are given back in
    the order the stored resource holds them."""
    held: dict[str, list[str]] = {}
    for system, value in _identifiers(stored or {}, registry):
        held.setdefault(system, []).append(value)
    used: set[tuple[str, int]] = set()
    forged: list[str] = []

    def change(node: dict[str, Any], entry: IdentifierSystem, path: str) -> str | None:
        value = node["value"]
        if MASK_CHAR not in value:
            return None
        candidates = [(i, v) for i, v in enumerate(held.get(node["system"], ()))
                      if mask(v, entry) == value]
        fresh = [c for c in candidates if (node["system"], c[0]) not in used]
        if not candidates:
            forged.append(path)
            return None
        chosen = (fresh or candidates)[0]
        used.add((node["system"], chosen[0]))
        return chosen[1]

    out = _rewrite(resource, change, registry, str(resource.get("resourceType", "")))
    text, before = out.get("text"), (stored or {}).get("text")
    if isinstance(text, dict) and text.get("div") == WITHHELD_DIV:
        # The narrative an answer withheld, sent back: the stored one stands.
        out = {**out, "text": before} if isinstance(before, dict) else \
            {k: v for k, v in out.items() if k != "text"}
    return out, forged


__all__ = ["MASKED", "WITHHELD_DIV", "carries_masks", "labelled", "mask", "masked", "masked_paths", "restore",
           "sensitive_values", "unlabelled"]
