"""One rate key's open event-time windows, held as one value per key in the window operator.

One value per key, not a map state keyed by window start, because of how PyFlink's process mode
reaches state: a map lookup of an entry it has not cached (every new window) is a blocking round
trip to the JVM, about a millisecond each, while one small value per key is read once into the
worker's state cache and then served locally. A key rarely has more than two windows open.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from metering.detect import WindowAgg


@dataclass
class OpenWindows:
    """A key's windows that have events and have not been emitted yet, by window start."""

    windows: dict[int, WindowAgg] = field(default_factory=dict)

    def add(self, start: int, agg: WindowAgg) -> None:
        current = self.windows.get(start)
        self.windows[start] = agg if current is None else current.merge(agg)

    def pop_due(self, timestamp: int, window_ms: int) -> list[tuple[int, WindowAgg]]:
        """Windows whose last millisecond is at or before ``timestamp``, oldest first."""
        due = sorted(s for s in self.windows if s + window_ms - 1 <= timestamp)
        return [(s, self.windows.pop(s)) for s in due]

    def __bool__(self) -> bool:
        return bool(self.windows)
