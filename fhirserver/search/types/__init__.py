"""One handler per search parameter type (search.html#ptypes), looked up by type name.

Each handler extracts stored values, parses search values into frozen value objects,
and compiles one value into a MongoDB condition; see :class:`.base.Handler`.
"""

from __future__ import annotations

from .base import Handler, ParseContext
from .composite import CompositeHandler
from .date import DateHandler
from .number import NumberHandler
from .quantity import QuantityHandler
from .reference import ReferenceHandler
from .string import StringHandler
from .token import TokenHandler
from .uri import UriHandler

HANDLERS: dict[str, Handler] = {
    "token": TokenHandler(),
    "string": StringHandler(),
    "date": DateHandler(),
    "number": NumberHandler(),
    "quantity": QuantityHandler(),
    "reference": ReferenceHandler(),
    "uri": UriHandler(),
}
HANDLERS["composite"] = CompositeHandler(HANDLERS)

__all__ = ["HANDLERS", "Handler", "ParseContext"]
