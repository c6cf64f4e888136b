"""A key's open windows (metering/windows.py), as the window operator keeps them."""

from __future__ import annotations

import pickle
from dataclasses import asdict
from typing import Any

from metering.detect import WindowAgg
from metering.windows import (
    OpenWindows,
    Windows,
    add_event,
    as_agg,
    count_event,
    from_state,
    pop_due,
)

W = 10_000


def add(windows: Windows, start: int, n: int, country: str | None = "DE") -> None:
    for _ in range(n):
        add_event(windows, start, "acme", "fp", country, False, 1.0)


def test_events_of_one_window_merge_and_due_windows_pop_oldest_first() -> None:
    windows: Windows = {}
    add(windows, 20_000, 2, "US")
    add(windows, 0, 1)
    add(windows, 0, 3, "JP")
    add(windows, 10_000, 1)
    # A timer at 19_999 (the end - 1 of the window starting at 10_000) is due for both earlier
    # windows: the one whose own timer was lost is emitted too.
    due = pop_due(windows, 19_999, W)
    assert [(s, a.count, sorted(a.countries)) for s, a in due] == [
        (0, 4, ["DE", "JP"]),
        (10_000, 1, ["DE"]),
    ]
    assert list(windows) == [20_000]
    assert pop_due(windows, 29_998, W) == []
    assert [s for s, _ in pop_due(windows, 29_999, W)] == [20_000]
    assert not windows


def test_counting_rules_for_windows_and_late_corrections() -> None:
    # The job's open windows (add_event) and a late correction (count_event from nothing) count
    # the same events the same way.
    events = [
        (None, None, None, True, 2.0),
        ("acme", "fp-1", "DE", False, 1.0),
        ("other", "fp-2", "DE", True, 0.5),
        ("acme", "fp-1", "FR", False, 1.0),
    ]
    windows: Windows = {}
    correction: list[Any] | None = None
    for e in events:
        add_event(windows, 0, *e)
        correction = count_event(correction, *e)
    [(start, got)] = pop_due(windows, W - 1, W)
    assert start == 0
    assert correction is not None
    assert (
        asdict(got)
        == asdict(as_agg(correction))
        == {
            "count": 4,
            "units": 4.5,
            "auth_failures": 2,
            "countries": {"DE", "FR"},
            "consumer": "acme",
            "key_fingerprint": "fp-1",
        }
    )


def test_survives_the_pickled_state_round_trip_as_plain_values() -> None:
    windows: Windows = {}
    add(windows, 0, 5)
    data = pickle.dumps(windows)
    # Plain values only: no class of this project is needed to read the state back.
    assert b"metering" not in data
    restored: Windows = pickle.loads(data)
    [(_, agg)] = pop_due(restored, W - 1, W)
    assert agg.count == 5 and agg.countries == {"DE"}


def test_state_in_the_earlier_format_still_restores() -> None:
    # A savepoint taken before the state became plain values holds pickled OpenWindows objects.
    earlier = OpenWindows(
        {
            0: WindowAgg(3, 3.0, 1, {"FR", "DE"}, "acme", "fp"),
            W: WindowAgg(1, 0.5, 0, set(), None, None),
        }
    )
    windows = from_state(pickle.loads(pickle.dumps(earlier)))
    assert windows == {0: [3, 3.0, 1, ["DE", "FR"], "acme", "fp"], W: [1, 0.5, 0, [], None, None]}
    add_event(windows, 0, None, None, "JP", True, 1.0)
    [(_, agg), (_, later)] = pop_due(windows, 2 * W - 1, W)
    assert (agg.count, agg.auth_failures, agg.countries) == (4, 2, {"DE", "FR", "JP"})
    assert later.count == 1
    assert from_state(None) == {}
