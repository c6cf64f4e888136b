"""One rate key's open event-time windows, held as one value per key in the window operator.

One value per key, not a map state keyed by window start, because of how PyFlink's process mode
reaches state: a map lookup of an entry it has not cached (every new window) is a blocking round
trip to the JVM, about a millisecond each, while one small value per key is read once into the
worker's state cache and then served locally. A key rarely has more than two windows open.

The value is plain dicts, lists and scalars, not dataclasses: the operator pickles it on every
event, and pickle handles those in C. Pickling a dataclass instead goes through Python-level
reduce and setattr calls: 13.6 µs against 1.2 µs per read and write of one window (measured
with timeit), which was 14 % of the job's Python time in thread mode (py-spy, see
docs/performance-log.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from metering.detect import WindowAgg

# Positions in one window's list.
_COUNT, _UNITS, _AUTH_FAILURES, _COUNTRIES, _CONSUMER, _FINGERPRINT = range(6)

Windows = dict[int, list[Any]]
"""Window start -> [count, units, auth failures, countries (list), consumer, key fingerprint]."""


@dataclass
class OpenWindows:
    """The state's earlier format, kept so that a savepoint taken with it still restores:
    pickle finds the class by this name. Read and converted by ``from_state``, never written."""

    windows: dict[int, WindowAgg] = field(default_factory=dict)


def from_state(value: Windows | OpenWindows | None) -> Windows:
    """A key's windows as read from state: the current format as is, the earlier one converted."""
    if value is None:
        return {}
    if isinstance(value, OpenWindows):
        return {
            start: [
                a.count,
                a.units,
                a.auth_failures,
                sorted(a.countries),
                a.consumer,
                a.key_fingerprint,
            ]
            for start, a in value.windows.items()
        }
    return value


def count_event(
    w: list[Any] | None,
    consumer: str | None,
    fingerprint: str | None,
    country: str | None,
    auth_failed: bool,
    units: float,
) -> list[Any]:
    """One window's accumulator (a list in the layout above) with one more event counted; a new
    one if ``w`` is None. The one place the counting rules live: the job's windows, its late
    corrections and the bench's python_loop all count with it."""
    if w is None:
        return [
            1,
            units,
            1 if auth_failed else 0,
            [country] if country else [],
            consumer,
            fingerprint,
        ]
    w[_COUNT] += 1
    w[_UNITS] += units
    if auth_failed:
        w[_AUTH_FAILURES] += 1
    if country and country not in w[_COUNTRIES]:
        w[_COUNTRIES].append(country)
    # Keep the identity the gateway gave; a fingerprint stays useful when a name is known.
    w[_CONSUMER] = w[_CONSUMER] or consumer
    w[_FINGERPRINT] = w[_FINGERPRINT] or fingerprint
    return w


def add_event(
    windows: Windows,
    start: int,
    consumer: str | None,
    fingerprint: str | None,
    country: str | None,
    auth_failed: bool,
    units: float,
) -> None:
    """Count one event into the window starting at ``start``."""
    windows[start] = count_event(
        windows.get(start), consumer, fingerprint, country, auth_failed, units
    )


def admits(windows: Windows, start: int, max_open: int) -> bool:
    """Whether an event for the window starting at ``start`` may count into ``windows``: its
    window is open already, or the key holds fewer than ``max_open``. The operator rewrites a
    key's whole value on every event, so its cost grows with the windows it holds (events
    spread over 20,000 future windows cost 10.5 ms each); an event refused here goes to the
    late-correction path, which counts it without state."""
    return start in windows or len(windows) < max_open


def auth_failures(w: list[Any]) -> int:
    """One window's auth failures so far."""
    return int(w[_AUTH_FAILURES])


def pop_due(windows: Windows, timestamp: int, window_ms: int) -> list[tuple[int, WindowAgg]]:
    """Remove and return the windows whose last millisecond is at or before ``timestamp``,
    oldest first."""
    due = sorted(s for s in windows if s + window_ms - 1 <= timestamp)
    return [(s, as_agg(windows.pop(s))) for s in due]


def as_agg(w: list[Any]) -> WindowAgg:
    """One window's accumulator as the usage record's fields."""
    return WindowAgg(
        count=w[_COUNT],
        units=w[_UNITS],
        auth_failures=w[_AUTH_FAILURES],
        countries=set(w[_COUNTRIES]),
        consumer=w[_CONSUMER],
        key_fingerprint=w[_FINGERPRINT],
    )
