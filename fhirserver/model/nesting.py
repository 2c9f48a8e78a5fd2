"""How deeply JSON nests, measured without recursion.

Every walk over a resource here (validation, references, index extraction) recurses
once per level, so a body nested thousands of levels deep would exhaust Python's
stack. No FHIR resource needs more than a few dozen levels (a Bundle entry's
resource with nested extensions stays under twenty); bodies deeper than the
configured limit are refused before any of those walks run.
"""

from __future__ import annotations

from ..errors import Invalid

__all__ = ["check_depth", "depth_exceeds"]


def depth_exceeds(value: object, limit: int) -> bool:
    """True when objects and arrays nest more than ``limit`` levels in ``value`` (a
    scalar is level 0, ``{}`` and ``[]`` level 1). Iterative, and stops at the first
    node past the limit."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
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
