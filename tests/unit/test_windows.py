"""A key's open windows (metering/windows.py), as the window operator keeps them."""

from __future__ import annotations

import pickle

from metering.detect import WindowAgg
from metering.windows import OpenWindows

W = 10_000


def agg(n: int, country: str = "DE") -> WindowAgg:
    out = WindowAgg()
    for _ in range(n):
        out.add("acme", "fp", country, False, 1.0)
    return out


def test_events_of_one_window_merge_and_due_windows_pop_oldest_first() -> None:
    open_ = OpenWindows()
    assert not open_
    open_.add(20_000, agg(2, "US"))
    open_.add(0, agg(1))
    open_.add(0, agg(3, "JP"))
    open_.add(10_000, agg(1))
    assert open_
    # A timer at 19_999 (the end - 1 of the window starting at 10_000) is due for both earlier
    # windows: the one whose own timer was lost is emitted too.
    due = open_.pop_due(19_999, W)
    assert [(s, a.count, sorted(a.countries)) for s, a in due] == [
        (0, 4, ["DE", "JP"]),
        (10_000, 1, ["DE"]),
    ]
    assert list(open_.windows) == [20_000]
    assert open_.pop_due(29_998, W) == []
    assert [s for s, _ in open_.pop_due(29_999, W)] == [20_000]
    assert not open_


def test_survives_the_pickled_state_round_trip() -> None:
    open_ = OpenWindows()
    open_.add(0, agg(5))
    restored: OpenWindows = pickle.loads(pickle.dumps(open_))
    assert restored.windows[0].count == 5 and restored.windows[0].countries == {"DE"}
