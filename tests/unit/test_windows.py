"""One window's counts and the counting rules (metering/windows.py)."""

from __future__ import annotations

import pickle
from dataclasses import asdict
from typing import Any

from metering.windows import Windows, add_event, as_agg, count_event
from schemas.events import MAX_NETWORKS


def add(windows: Windows, start: int, n: int, country: str | None = "DE") -> None:
    for _ in range(n):
        add_event(windows, start, "acme", "fp", country, False, 1.0)


def test_events_of_one_window_merge() -> None:
    windows: Windows = {}
    add(windows, 20_000, 2, "US")
    add(windows, 0, 1)
    add(windows, 0, 3, "JP")
    aggs = {start: as_agg(w) for start, w in windows.items()}
    got = {start: (a.count, sorted(a.countries)) for start, a in aggs.items()}
    assert got == {0: (4, ["DE", "JP"]), 20_000: (2, ["US"])}


def test_counting_rules_for_windows_and_late_corrections() -> None:
    # A window built by add_event and one counted from nothing count the same events alike.
    events = [
        (None, None, None, True, 2.0, "/login", None),
        ("acme", "fp-1", "DE", False, 1.0, "/v1/a", "192.0.2.0/24"),
        ("other", "fp-2", "DE", True, 0.5, "/v1/b", "198.51.100.0/24"),
        ("acme", "fp-1", "FR", False, 1.0, "/v1/a", "192.0.2.0/24"),
        ("acme", "fp-1", "FR", False, 1.0, None, "203.0.113.0/24"),
    ]
    windows: Windows = {}
    correction: list[Any] | None = None
    for e in events:
        add_event(windows, 0, *e)
        correction = count_event(correction, *e)
    got = as_agg(windows[0])
    assert correction is not None
    assert (
        asdict(got)
        == asdict(as_agg(correction))
        == {
            "count": 5,
            "units": 5.5,
            "auth_failures": 2,
            "countries": {"DE", "FR"},
            "networks": {"192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"},
            "consumer": "acme",
            "key_fingerprint": "fp-1",
            # Not the anonymous call's path, nor the call without one.
            "paths": {"/v1/a": 2, "/v1/b": 1},
        }
    )


def test_distinct_networks_are_counted_up_to_the_cap() -> None:
    windows: Windows = {}
    for i in range(MAX_NETWORKS + 10):
        for _ in range(2):  # the same network twice counts once
            add_event(windows, 0, "acme", "fp", "DE", False, 1.0, None, f"10.0.{i}.0/24")
    agg = as_agg(windows[0])
    assert agg.count == 2 * (MAX_NETWORKS + 10)
    assert len(agg.networks) == MAX_NETWORKS


def test_survives_the_pickled_state_round_trip_as_plain_values() -> None:
    windows: Windows = {}
    add(windows, 0, 5)
    data = pickle.dumps(windows)
    # Plain values only: no class of this project is needed to read the state back.
    assert b"metering" not in data
    restored: Windows = pickle.loads(data)
    agg = as_agg(restored[0])
    assert agg.count == 5 and agg.countries == {"DE"}
