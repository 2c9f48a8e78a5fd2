"""Dates as instant ranges (search.html#date).

Every date, dateTime or instant stands for the range of instants its precision
covers: ``2013`` is all of 2013, ``2013-01-14T10:00`` the whole minute. Ranges are
half-open ``[lo, hi)``, naive UTC datetimes at millisecond precision (what BSON
stores). A value without a time zone (every ``date``, and ``dateTime`` without an
offset) is read in the server's zone ``tz`` (search.html#date: "the server's local
time zone").
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, tzinfo

#: Open ends of a Period (search.html#date: a missing start or end is unbounded).
LOWEST = datetime(1, 1, 1)
HIGHEST = datetime(9999, 12, 31, 23, 59, 59, 999000)

_DATE = re.compile(
    r"^(?P<y>[0-9]{4})(?:-(?P<m>[0-9]{2})(?:-(?P<d>[0-9]{2})"
    r"(?:T(?P<H>[0-9]{2}):(?P<M>[0-9]{2})(?::(?P<S>[0-9]{2})(?:\.(?P<f>[0-9]+))?)?"
    r"(?P<tz>Z|[+ -][0-9]{2}:[0-9]{2})?)?)?)?$"
)

Range = tuple[datetime, datetime]
_MS = timedelta(milliseconds=1)
_LEAP = re.compile(r"(T[0-9]{2}:[0-9]{2}):60(?=[.+Z-]|$)")


def leap_second_read(instant: str) -> str:
    """``instant`` with a leap second (``23:59:60``, which the instant pattern allows)
    read as the last second of its minute: Python's clock has no place for it."""
    return _LEAP.sub(r"\1:59", instant)


def utc(t: datetime) -> datetime:
    """Naive UTC, truncated to the millisecond; clamped to the edges of time.

    A time in year 1 east of UTC (``0001-01-01T00:00+08:00``) or in year 9999 west
    of it falls outside what datetime (and BSON's dates, as Python reads them) can
    hold once in UTC: it becomes the first or last representable instant, which
    orders the same against every storable date.
    """
    try:
        t = t.astimezone(UTC).replace(tzinfo=None)
    except OverflowError:
        return LOWEST if t.year == 1 else HIGHEST
    return t.replace(microsecond=t.microsecond // 1000 * 1000)


def _zone(offset: str | None, tz: tzinfo) -> tzinfo:
    if offset is None:
        return tz
    if offset == "Z":
        return UTC
    from datetime import timezone

    # A space is a "+" that reached us unencoded in a query string (date=...T07:44+08:00),
    # read as HAPI reads it.
    sign = -1 if offset[0] == "-" else 1
    hours, minutes = int(offset[1:3]), int(offset[4:6])
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


def _add_months(t: datetime, months: int) -> datetime:
    total = t.month - 1 + months
    return t.replace(year=t.year + total // 12, month=total % 12 + 1)


def _plus(t: datetime, step: timedelta) -> datetime | None:
    """``t + step``, or None (an open end) past the last representable instant."""
    try:
        return t + step
    except OverflowError:
        return None


def parse_range(value: str, tz: tzinfo) -> Range | None:
    """The ``[lo, hi)`` range of a FHIR date/dateTime/instant string, None if malformed."""
    m = _DATE.match(value.strip(" \t\r\n"))
    if m is None:
        return None
    try:
        zone = _zone(m["tz"], tz)
        year = int(m["y"])
        end: datetime | None
        if m["m"] is None:
            start = datetime(year, 1, 1, tzinfo=zone)
            end = start.replace(year=year + 1) if year < 9999 else None
        elif m["d"] is None:
            start = datetime(year, int(m["m"]), 1, tzinfo=zone)
            end = _add_months(start, 1) if (year, start.month) != (9999, 12) else None
        elif m["H"] is None:
            start = datetime(year, int(m["m"]), int(m["d"]), tzinfo=zone)
            end = _plus(start, timedelta(days=1))
        else:
            # A leap second (``23:59:60``, which the dateTime pattern allows) has no
            # place on the clock Python keeps: it is read as the last second of its
            # minute, so that it is found in its minute, day, month and year.
            second = int(m["S"] or 0)
            start = datetime(year, int(m["m"]), int(m["d"]), int(m["H"]), int(m["M"]),
                             59 if second == 60 else second, tzinfo=zone)
            if m["S"] is None:
                step = timedelta(minutes=1)
            elif m["f"] is None:
                step = timedelta(seconds=1)
            else:
                digits = m["f"][:3]
                start = start.replace(microsecond=int(digits.ljust(3, "0")) * 1000)
                step = timedelta(milliseconds=10 ** (3 - len(digits)))
            end = _plus(start, step)
    except ValueError:
        return None
    lo, hi = utc(start), utc(end) if end is not None else HIGHEST
    if hi <= lo:  # squeezed to nothing against an edge of time: keep one millisecond
        lo, hi = (lo, lo + _MS) if lo < HIGHEST else (HIGHEST - _MS, HIGHEST)
    return lo, hi


def period_range(period: dict[str, object], tz: tzinfo) -> Range | None:
    """A Period's range: from its start's low end to its end's high end, open if missing."""
    start, end = period.get("start"), period.get("end")
    lo_r = parse_range(start, tz) if isinstance(start, str) else None
    hi_r = parse_range(end, tz) if isinstance(end, str) else None
    if lo_r is None and hi_r is None:
        return None
    lo = lo_r[0] if lo_r else LOWEST
    hi = hi_r[1] if hi_r else HIGHEST
    return lo, max(hi, lo)


def approximate(rng: Range, now: datetime) -> Range:
    """Widen a search range for ``ap`` (search.html#prefix: "approximately the same").

    As HAPI does, the tolerance is 10% of the distance between the value and now,
    but at least one day, so ``ap`` on a recent date is not the same as ``eq``.
    """
    lo, hi = rng
    mid = lo + (hi - lo) / 2
    tolerance = max(abs(utc(now) - mid) / 10, timedelta(days=1))
    wide_lo = lo - tolerance if lo - LOWEST > tolerance else LOWEST
    wide_hi = hi + tolerance if HIGHEST - hi > tolerance else HIGHEST
    return wide_lo, wide_hi
