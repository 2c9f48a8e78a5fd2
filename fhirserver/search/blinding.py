"""Search values of identity numbers and telecom, turned into their blind indexes.

What the database holds of an identity number or a telecom value is its blind index
(``crypto/fields.py``), so a search for one has to ask for the blind index too:
``identifier=S|V`` becomes ``identifier=S|<blind(V)>`` when ``S`` is a registered
identity system, ``phone=V`` becomes ``phone=<blind(V)>``. Everything else about the
search (modifiers, combining, the lifted index key) is unchanged: an equality on a
blind index is an equality like any other.

A value without a system (``identifier=V``) may be an identity number or an
identifier of another kind, stored in clear: it becomes the two alternatives
``V,<blind(V)>`` (search.html#combining). Pure: the blinder is passed in.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Protocol

from ..crypto.fields import BLIND_PREFIX
from .parameters import SearchParameter
from .query import Chain, Clause, Has
from .types.reference import ReferenceValue
from .types.token import TokenValue

IDENTIFIER = "identifier"
TELECOM = "telecom"


class BlindIndex(Protocol):
    def value(self, kind: str, value: str) -> str: ...

    def is_identity(self, system: str) -> bool: ...


def kind_of(param: SearchParameter) -> str | None:
    """What a token parameter searches: identity numbers, telecom, or neither."""
    if param.type != "token":
        return None
    if any(p.endswith(":ContactPoint") for p in param.paths):
        return TELECOM
    if any(p.endswith(":Identifier") for p in param.paths):
        return IDENTIFIER
    return None


def _token(blinder: BlindIndex, kind: str, value: TokenValue) -> list[TokenValue]:
    if value.code is None or value.text is not None:
        return [value]  # ``system|`` (any value of a system) and ``:text`` compare no value
    if kind == TELECOM:
        return [replace(value, code=blinder.value(TELECOM, value.code))]
    blinded = replace(value, code=blinder.value(IDENTIFIER, value.code))
    if value.of_type is None and value.system:
        return [blinded] if blinder.is_identity(value.system) else [value]
    if value.of_type is None and value.system == "":
        return [value]  # ``|V``: an identifier without a system, never an identity number
    return [value, blinded]  # the system is not known: either form may be stored


def blinded_values(param: SearchParameter, modifier: str | None, values: tuple[Any, ...],
                   blinder: BlindIndex) -> tuple[Any, ...]:
    """``values`` of one clause with identity numbers and telecom values blinded."""
    if param.type == "reference" and modifier == "identifier":
        out: list[Any] = []
        for value in values:
            if isinstance(value, ReferenceValue) and value.identifier is not None:
                out += [replace(value, identifier=t)
                        for t in _token(blinder, IDENTIFIER, value.identifier)]
            else:
                out.append(value)
        return tuple(out)
    kind = kind_of(param)
    if kind is None:
        return values
    return tuple(t for v in values
                 for t in (_token(blinder, kind, v) if isinstance(v, TokenValue) else [v]))


def identity_probes(conditions: Any) -> int:
    """How many identity numbers a parsed query asks about (blinded values of
    identifier searches, through chains and ``_has``): each confirms or refutes a
    number, so a caller who sees numbers masked spends one identity look-up on each."""
    count = 0
    for cond in conditions:
        if isinstance(cond, Chain):
            count += identity_probes(c for _t, c in cond.inner)
        elif isinstance(cond, Has):
            count += identity_probes([cond.inner])
        elif isinstance(cond, Clause):
            for value in cond.values:
                token = value.identifier if isinstance(value, ReferenceValue) else value
                code = getattr(token, "code", None)
                if isinstance(code, str) and code.startswith(BLIND_PREFIX) and (
                        kind_of(cond.param) == IDENTIFIER or cond.modifier == "identifier"):
                    count += 1
    return count
