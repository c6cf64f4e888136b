"""Billing periods: calendar months in UTC, named ``YYYY-MM`` (``2026-12``).

A period is ``[start, end)`` in epoch ms: from the first millisecond of the month to the first of
the next. A usage window belongs to the period of its start (``window_start``); the job's windows
divide a day (10 s by default), so none spans two periods.

Integer arithmetic only: no float timestamps, so a boundary is never off by a millisecond.
"""

from __future__ import annotations

import calendar
import re
from datetime import UTC, datetime, timedelta
from typing import Literal

PeriodKind = Literal["calendar_month"]
PERIOD_KIND: PeriodKind = "calendar_month"
"""The one kind of billing period: a calendar month in UTC."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_PERIOD = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


class PeriodError(ValueError):
    """Not a period id."""


def _month_start_ms(year: int, month: int) -> int:
    return calendar.timegm((year, month, 1, 0, 0, 0, 0, 0, 0)) * 1000


def parse_period(text: str) -> tuple[int, int]:
    """(year, month) of a period id; PeriodError if it is not ``YYYY-MM``."""
    m = _PERIOD.match(text.strip())
    if m is None:
        raise PeriodError(f"not a period: {text!r} (expected YYYY-MM, e.g. 2026-12)")
    return int(m.group(1)), int(m.group(2))


def period_of(at_ms: int) -> str:
    """The id of the period that contains the instant ``at_ms`` (epoch ms)."""
    at = _EPOCH + timedelta(milliseconds=at_ms)
    return f"{at.year:04d}-{at.month:02d}"


def bounds(period: str) -> tuple[int, int]:
    """``[start, end)`` of the period in epoch ms."""
    year, month = parse_period(period)
    nxt = (year + 1, 1) if month == 12 else (year, month + 1)
    return _month_start_ms(year, month), _month_start_ms(*nxt)


def next_period(period: str) -> str:
    """The period after ``period``."""
    return period_of(bounds(period)[1])


def iso(at_ms: int) -> str:
    """``at_ms`` as ISO 8601 UTC with milliseconds, for messages and documents."""
    at = _EPOCH + timedelta(milliseconds=at_ms)
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_instant(value: object) -> int:
    """Epoch ms from epoch-ms digits or int, an ISO 8601 text or an aware datetime (TOML
    datetimes); naive texts and datetimes are UTC. ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError("not an instant: a bool")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return int(text)
        try:
            value = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"not an instant: {text!r} (use epoch ms or ISO 8601)") from None
    if isinstance(value, datetime):
        at = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return (at - _EPOCH) // timedelta(milliseconds=1)
    raise ValueError(f"not an instant: a {type(value).__name__}")
