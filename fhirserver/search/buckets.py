"""Month buckets: a patient's records in date order without reading the whole record.

"The latest results of this patient" is the clinician's main question, and it is a
sort: ``Observation?patient=X&_sort=-date``. No engine we serve sorts from an index
after a filter it cannot push down (FerretDB 1.x sorts in Go whatever it selected),
so a patient with thousands of results would cost thousands of documents a page.
Instead every record in a patient compartment carries ``b``, the months (UTC) of
its sort values (``date<2024-05``: the month of its earliest date, which orders it
ascending; ``date>2024-06``: of its latest, descending; ``-`` when it has none), and
the registry collection ``_months`` lists which buckets each patient has. A sorted
page then reads the registry (a few small documents), and the months in sort order,
until the page is full: its cost follows the page, not the record.

A month can hold hundreds of one patient's records (an intensive-care stay), and a
month read whole would cost them all. So a record also carries the days of those
dates (``date>2024-06-15``), the registry lists each patient's days under the month
(group ``...|date>2024-06``), and a month document counts the records created into
it (``n``). A walk reads a month that counts more than :data:`DENSE` day by day.
The count only chooses between two correct ways to read a month, so it is kept
cheaply: it grows on creates, never shrinks, each process adds its creates to it
:data:`COUNT_STEP` at a time (so it may lag by a few per process) and stops adding to
a month once its own additions reach :data:`DENSE`. Months registered before records
carried days (no ``v``) are read whole.

Pure: values in, keys and documents out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

BUCKET_FIELD = "b"
REGISTRY = "_months"
#: One reply for all of a patient's months (decades of records): the driver's first
#: batch is 101 documents, and a patient with 111 months of results paid a second
#: round trip (``getMore``) on every sorted page. A month's document is small (ids
#: are at most 64 characters), so 5,000 make well under a megabyte. (A reply ends at
#: 16 MiB whatever the batch size: MongoDB does so, and the embedded FerretDB is
#: patched to, scripts/ferretdb/patches/reply-size-limit.patch.)
REGISTRY_BATCH = 5000
NONE = "-"
#: Records created into one month of one patient above which the month is read by day.
DENSE = 48
#: A process adds the creates it counts into a month to the registry this many at a
#: time, and at once when its own additions pass DENSE.
COUNT_STEP = 8
#: The registry version of months whose every record carries its day buckets.
DAYS = 2
MONTH, DAY = 7, 10  # lengths of "2024-06" and "2024-06-15"
#: The date parameter of each compartment type whose sorts are bucketed (the
#: record's clinical date, as $everything's start/end use it).
BUCKETED = {"Observation": "date", "DiagnosticReport": "date"}


def _period(value: Any, width: int = MONTH) -> str:
    # Not strftime: it writes year 999 as "999", which would sort after "2024" and
    # make a day ("999-03-10") as long as a month.
    if not isinstance(value, datetime):
        return NONE
    return f"{value.year:04d}-{value.month:02d}-{value.day:02d}"[:width]


def _ordered(period: str) -> str:
    """``period`` as it sorts among others: a year below 1000 that an earlier version
    wrote unpadded (``999-03``) sorts before ``1000``."""
    year, _, rest = period.partition("-")
    return f"{year.zfill(4)}-{rest}" if rest else period


def buckets_of(rtype: str, so: Mapping[str, Any]) -> list[str]:
    """The ``b`` list of a record whose sort values are ``so``: its months, then the
    days of the dates it has."""
    name = BUCKETED.get(rtype)
    if name is None:
        return []
    low, high = so.get(name), so.get("-" + name)
    out = [f"{name}<{_period(low)}", f"{name}>{_period(high)}"]
    out += [f"{name}{plan}{_period(v, DAY)}" for plan, v in (("<", low), (">", high))
            if isinstance(v, datetime)]
    return out


def newest_first(rtype: str) -> list[tuple[str, int]] | None:
    """The order of a search of one patient's records of ``rtype`` that gives none
    (search.html#sort leaves it to the server): newest first by the bucketed date,
    as ``_sort=-date``. Read month by month, a first page costs what it holds; any
    other order would read every match of the patient to sort them. None for a type
    whose records are not bucketed."""
    name = BUCKETED.get(rtype)
    return [(f"so.-{name}", -1), ("_id", 1)] if name is not None else None


def group(rtype: str, patient: str, plan: str) -> str:
    """The registry group of one patient's buckets of one kind (``plan``: ``date<``)."""
    return f"{rtype}|{patient}|{plan}"


def registry_docs(rtype: str, patient: str | None,
                  buckets: Sequence[str]) -> list[dict[str, str]]:
    """The ``_months`` documents that say ``patient`` has records in ``buckets``: a
    month in the patient's group, a day in its month's group."""
    name = BUCKETED.get(rtype)
    if not patient or name is None:
        return []
    out = []
    for bucket in buckets:
        plan, period = bucket[:len(name) + 1], bucket[len(name) + 1:]
        g = group(rtype, patient, plan)
        owner = g + period[:MONTH] if len(period) == DAY else g
        out.append({"_id": f"{g}{period}", "g": owner, "m": period})
    return out


def is_month(doc: Mapping[str, Any]) -> bool:
    """Is this registry document a month (or the undated bucket), not a day?"""
    return len(doc["m"]) != DAY


def by_day(doc: Mapping[str, Any]) -> bool:
    """Is a month (its registry document) read day by day? Only when its records all
    carry days and it has held more than :data:`DENSE` of them."""
    return doc.get("v") == DAYS and doc["m"] != NONE and int(doc.get("n") or 0) > DENSE


def walk_plan(rtype: str, sort: Sequence[tuple[str, int]]) -> str | None:
    """The registry group suffix (``date<`` or ``date>``) when ``sort`` can be walked
    by month: it starts with the bucketed date, by its earliest value (``date<``) or
    its latest (``date>``). Either way round: each record is in one month of the
    value the sort leads with, so the months read backwards (a previous page) hold
    the same records in the reverse order."""
    name = BUCKETED.get(rtype)
    if name is None or not sort:
        return None
    field = sort[0][0]
    if field == f"so.{name}":
        return f"{name}<"
    if field == f"so.-{name}":
        return f"{name}>"
    return None


def month_order(months: Sequence[str], ascending: bool, start: Any = None,
                has_start: bool = False) -> list[str]:
    """The months (or the days of one month) to read, in sort order (records without
    a date first ascending, last descending, as missing values sort lowest), from the
    cursor's month (day) on."""
    dated = sorted((m for m in months if m != NONE), key=_ordered, reverse=not ascending)
    order = ([NONE] if NONE in months else []) + dated if ascending \
        else dated + ([NONE] if NONE in months else [])
    if not has_start:
        return order
    first = _period(start, max((len(_ordered(m)) for m in dated), default=MONTH))
    if first == NONE:
        # The cursor is on a record without a date: those sort first ascending, so
        # every dated month (or day) is still ahead; descending, only they are.
        return order if ascending else [m for m in order if m == NONE]
    if ascending:
        return [m for m in order if m != NONE and _ordered(m) >= first]
    return [m for m in order if m == NONE or _ordered(m) <= first]
