"""Population shards: a page of ``Observation?code=Y`` without reading every match.

A search without a patient (the population view: "every glucose result") selects,
through its index key, thousands of records, and FerretDB 1.x decodes every one it
selects before it sorts and limits (DESIGN.md section 5): 1.3 s for 2,500 matches, 13 s
at full size. Only an equality narrows what the engine reads, so every record also
carries a hash of its id, ``sh`` (eight hex digits, spread evenly whatever the ids
look like), and that hash's first one and two digits, ``ps`` (``["3", "3f"]``).
Unsorted population pages are ordered by ``(sh, _id)``, a total order in which each
shard is a contiguous run, and read shard by shard (:func:`plan`): first 1/256 of the
matches at a time, then, where those held few, 1/16, then the rest in one query. A
page then costs what it shows for a common code and a few queries for a rare one.

Only parameters that select many records of one kind at once are walked
(:data:`WALKED`): an identifier or a reference finds a handful, which one query
reads at once.

Pure: ids in, fields and query plans out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

ORDER_FIELD = "sh"
SHARD_FIELD = "ps"
DIGITS = 8
#: The sort of an unsorted population page.
POPULATION_SORT = [(ORDER_FIELD, 1), ("_id", 1)]
#: The shard levels a page reads, in turn (2: 1/256 of the matches, 1: 1/16, 0: all
#: that is left), and how many queries each may take before the next, coarser one.
LEVELS = ((2, 2), (1, 2), (0, 1))
#: Parameters whose keys select a large share of a type: these pages are walked.
WALKED = frozenset({"code", "combo-code", "value-concept", "combo-value-concept"})
_LOW, _HIGH = "0" * DIGITS, "f" * DIGITS


def order_of(rid: str) -> str:
    """The hash of an id that orders unsorted population pages."""
    return hashlib.blake2b(rid.encode(), digest_size=DIGITS // 2).hexdigest()


def shard_fields(rid: str) -> dict[str, Any]:
    """The ``sh`` and ``ps`` fields stored with a current record."""
    h = order_of(rid)
    return {ORDER_FIELD: h, SHARD_FIELD: [h[:1], h[:2]]}


def walked(key: Any) -> bool:
    """Does a lifted ``k`` key select a population share worth walking?"""
    return isinstance(key, str) and key.partition("=")[0] in WALKED and "=" in key


@dataclass(frozen=True)
class Step:
    """One query of a walk: the records of ``shard`` (all, when empty) from ``start``
    on (ascending) or down to it (descending)."""

    shard: str
    start: str
    level: int

    def condition(self, ascending: bool) -> dict[str, Any]:
        out: dict[str, Any] = {SHARD_FIELD: self.shard} if self.shard else {}
        edge = self.shard.ljust(DIGITS, "0" if ascending else "f")
        if self.start != edge:
            out[ORDER_FIELD] = {"$gte" if ascending else "$lte": self.start}
        return out


def _next(prefix: str, ascending: bool) -> str | None:
    """The first position past the shard ``prefix`` in walking order, None at the end."""
    value = int(prefix, 16) + (1 if ascending else -1)
    if value < 0 or value >= 16 ** len(prefix):
        return None
    return f"{value:0{len(prefix)}x}".ljust(DIGITS, "0" if ascending else "f")


def plan(start: str | None, ascending: bool) -> Iterator[Step]:
    """The queries of a walk from position ``start`` (a cursor's ``sh``; the first or
    last position when None), finest shards first, coarser while pages stay short:
    the caller stops when its page is full. Every position from ``start`` on is read
    exactly once."""
    pos: str | None = start if start is not None else (_LOW if ascending else _HIGH)
    for level, queries in LEVELS:
        for _ in range(queries):
            if pos is None:
                return
            shard = pos[:level]
            yield Step(shard, pos, level)
            pos = _next(shard, ascending) if shard else None


def resume_position(key: Sequence[Any] | None) -> str | None:
    """The walk position of a cursor's sort key ``(sh, _id)``: its ``sh``, or the start
    when the key has none."""
    return _position(key[0]) if key else None


#: How many walk positions there are (every value of ``sh``).
SPACE: int = 16 ** DIGITS
#: The largest ``Bundle.total``: an unsignedInt (R4 datatypes.html#unsignedInt).
MAX_TOTAL: int = 2**31 - 1


def estimate(start: str | None, ascending: bool, positions: Sequence[str], reached_end: bool,
             ) -> int | None:
    """``Bundle.total`` for ``_total=estimate`` (search.html#total), from what one page
    read: ``positions`` are the ``sh`` of the matches found walking from ``start``.

    Ids hash evenly over the walk, so the matches of a stretch of it are a sample of
    every match in proportion to the stretch's length. When the page filled before the
    end, the last match read marks how far the walk had to go to find the others:
    ``k`` matches up to position ``p`` estimate ``(k - 1) / p`` of the whole (the
    order-statistic estimate, unbiased for uniform positions). When the walk reached
    the end, its stretch held exactly the matches read. None when nothing was read
    past the start, a position is not a hash (a record stored before shards) or one
    lies behind the start (a forged cursor). Ids chosen to hash close together could
    still make the stretch tiny: the estimate stops at what ``Bundle.total`` holds."""
    origin = (_LOW if ascending else _HIGH) if start is None else start
    if not positions or any(_position(p) is None for p in (origin, *positions)):
        return None
    if any((p < origin) if ascending else (p > origin) for p in positions):
        return None
    first = int(origin, 16)
    if reached_end:
        span = (SPACE - first) if ascending else first + 1
        found = len(positions)
    else:
        last = int(positions[-1], 16)
        span = (last - first + 1) if ascending else (first - last + 1)
        found = len(positions) - 1
    if span <= 0:
        return None
    return min(MAX_TOTAL, max(len(positions), round(found * SPACE / span)))


def _position(value: Any) -> str | None:
    ok = isinstance(value, str) and len(value) == DIGITS and not value.strip("0123456789abcdef")
    return value if ok else None
