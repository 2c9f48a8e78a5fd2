"""Reading element values out of FHIR JSON with the paths of :mod:`.definitions`.

A path is ``segment(.segment)*:Datatype``; a segment may carry one filter,
``[field=value]`` (FHIRPath ``where(field='value')``) or ``[is=Type]`` (FHIRPath
``where(resolve() is Type)`` on a Reference, decided from the literal reference).
Arrays are flattened at every step, as FHIRPath does.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

_SEGMENT = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:\[(?P<key>\w+)=(?P<value>[^\]]*)\])?$")


def split_path(path: str) -> tuple[str, str]:
    """``"name.given:string"`` -> ``("name.given", "string")``."""
    element, _, datatype = path.partition(":")
    return element, datatype


def reference_type(reference: str) -> str | None:
    """The resource type a literal reference names (``Patient/1``, ``http://x/Patient/1``)."""
    parts = reference.split("/_history/")[0].rstrip("/").split("/")
    if len(parts) >= 2 and re.fullmatch(r"[A-Z][A-Za-z]+", parts[-2]):
        return parts[-2]
    return None


def _keep(node: Any, key: str | None, value: str | None) -> bool:
    if key is None:
        return True
    if not isinstance(node, dict):
        return False
    if key == "is":
        ref = node.get("reference")
        return isinstance(ref, str) and reference_type(ref) == value
    return node.get(key) == value


def _children(node: Any, name: str) -> Iterator[Any]:
    if not isinstance(node, dict):
        return
    child = node.get(name)
    if isinstance(child, list):
        yield from (c for c in child if c is not None)
    elif child is not None:
        yield child


def select(node: Any, element: str) -> list[Any]:
    """All values at ``element`` below ``node``; ``""`` selects ``node`` itself."""
    nodes = [node]
    if not element:
        return nodes
    for segment in element.split("."):
        m = _SEGMENT.match(segment)
        if m is None:
            raise ValueError(f"bad path segment {segment!r}")
        nxt: list[Any] = []
        for n in nodes:
            nxt.extend(c for c in _children(n, m["name"]) if _keep(c, m["key"], m["value"]))
        nodes = nxt
    return nodes


def values(node: Any, paths: tuple[str, ...]) -> list[tuple[Any, str]]:
    """``(value, datatype)`` for every value at any of ``paths``."""
    out: list[tuple[Any, str]] = []
    for path in paths:
        element, datatype = split_path(path)
        out.extend((v, datatype) for v in select(node, element))
    return out
