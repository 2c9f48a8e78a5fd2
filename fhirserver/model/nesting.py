"""How deeply JSON nests, measured without recursion.

Every walk over a resource here (validation, references, index extraction) recurses
once per level, so a body nested thousands of levels deep would exhaust Python's
stack. No FHIR resource needs more than a few dozen levels (a Bundle entry's
resource with nested extensions stays under twenty); bodies deeper than the
configured limit are refused before any of those walks run.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..errors import Invalid

__all__ = ["check_depth", "depth_exceeds", "nul_path"]


def depth_exceeds(value: object, limit: int) -> bool:
    """True when objects and arrays nest more than ``limit`` levels in ``value`` (a
    scalar is level 0, ``{}`` and ``[]`` level 1). Iterative, and stops at the first
    node past the limit."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children: Iterable[object]
        if isinstance(node, dict):
            children = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children
                     if isinstance(child, (dict, list)))
    return False


def check_depth(value: object, limit: int, what: str = "The request body") -> None:
    """400 when ``value`` nests objects and arrays more than ``limit`` levels deep."""
    if depth_exceeds(value, limit):
        raise Invalid(f"{what} nests JSON objects and arrays more than {limit} levels deep "
                      f"(FHIR_MAX_JSON_DEPTH)", details="too-deep")


def nul_path(value: object, root: str) -> str | None:
    """The path (``root.entry[0].request.url``) of the first string or key holding
    U+0000 in ``value``, or None. No FHIR string may hold it (json.html: no
    characters below U+0020 but tab, CR and LF), and the database cannot store it."""
    stack: list[tuple[object, str]] = [(value, root)]
    while stack:
        node, path = stack.pop()
        if isinstance(node, str):
            if "\x00" in node:
                return path
        elif isinstance(node, dict):
            for key, child in node.items():
                if "\x00" in key:
                    return path
                stack.append((child, f"{path}.{key}"))
        elif isinstance(node, list):
            stack.extend((child, f"{path}[{i}]") for i, child in enumerate(node))
    return None
