"""The detector evaluation's scorer (evaluation.score) on hand-made alert lists: perfect,
all missed, all false, and late."""

from __future__ import annotations

from typing import Any

import pytest

from evaluation.score import GRACE_WINDOWS, score
from evaluation.traffic import Attack

W = 10_000
T0 = 1_767_225_600_000
SCORED_FROM = T0 + 100 * W


def _attack(n: int, kind: str, start_w: int, windows: int, *keys: str) -> Attack:
    return Attack(
        f"{kind}-{n}",
        kind,
        frozenset(keys),
        T0 + start_w * W,
        T0 + (start_w + windows) * W,
        "steady",
    )


ATTACKS = [
    _attack(0, "spike_new_country", 200, 12, "c1"),
    _attack(1, "low_and_slow", 300, 60, "c2"),
    _attack(2, "guessing_distributed", 400, 30, "client:a", "client:b"),
]
POPULATIONS = {"c1": "steady", "c2": "diurnal", "c3": "nightly_batch", "client:a": "x"}


def _alert(key: str, window: int, event_ms: int | None = None) -> dict[str, Any]:
    ws = T0 + window * W
    alert: dict[str, Any] = {"rate_key": key, "window_start": ws, "window_end": ws + W}
    if event_ms is not None:
        alert["event_ms"] = event_ms
    return alert


def _score(alerts: list[dict[str, Any]], key_hours: float = 20_000.0) -> Any:
    return score(ATTACKS, alerts, POPULATIONS, key_hours, W, SCORED_FROM)


def test_one_alert_in_each_attack_s_first_window_is_perfect() -> None:
    report = _score(
        [
            _alert("c1", 200, T0 + 200 * W + 1_500),
            _alert("c2", 300),
            _alert("client:b", 400, T0 + 400 * W + 4_000),
        ]
    )
    for within in (1, 2, 6, 30):
        assert report.overall.recall(within) == 1.0
    assert report.kinds["spike_new_country"].detect_s == [1.5]
    # No event time given: the window's end.
    assert report.kinds["low_and_slow"].detect_s == [10.0]
    assert report.overall.median_detect_s() == 4.0
    assert report.overall.alerts_per_incident() == 1.0
    assert report.false_alerts == 0
    assert report.false_per_10k() == 0.0
    assert report.alert_records == 3


def test_no_alert_misses_everything() -> None:
    report = _score([])
    assert report.overall.attacks == 3
    assert report.overall.recall(30) == 0.0
    assert report.overall.median_detect_s() is None
    assert report.overall.alerts_per_incident() is None
    assert report.kinds["leaked_key"].recall(2) is None  # no such attack in the set
    assert report.false_alerts == 0


def test_alerts_on_keys_or_times_without_an_attack_are_false_by_population() -> None:
    report = _score(
        [
            _alert("c3", 250),  # never attacked
            _alert("c3", 251),
            _alert("c1", 150),  # attacked, but before the attack
            _alert("c1", 212 + GRACE_WINDOWS),  # one window past the grace
            _alert("client:zz", 500),  # a key the evaluation did not generate
            _alert("global", 150),  # a shared signal while no guessing went on
            _alert("c3", 99),  # while the detector was learning: not scored
        ],
        key_hours=2_000.0,
    )
    assert report.overall.recall(30) == 0.0
    assert report.false_alerts == 6
    assert report.false_by_population == {
        "nightly_batch": 2,
        "steady": 2,
        "unknown": 1,
        "shared signal": 1,
    }
    assert report.false_per_10k() == pytest.approx(30.0)
    assert report.learning_alerts == 1
    assert report.alert_records == 7


def test_late_alerts_count_only_within_their_window_budget() -> None:
    report = _score(
        [
            _alert("c1", 201),  # second window: within 2, not within 1
            _alert("c1", 205),  # later alerts of the same incident
            _alert("c1", 211 + GRACE_WINDOWS),  # last window of the grace: still the attack's
            _alert("c2", 305),  # sixth window
            _alert("global", 429),  # a shared signal in distributed guessing's last window
        ]
    )
    spike = report.kinds["spike_new_country"]
    assert (spike.recall(1), spike.recall(2)) == (0.0, 1.0)
    assert spike.alerts_per_incident() == 3.0
    slow = report.kinds["low_and_slow"]
    assert (slow.recall(2), slow.recall(6)) == (0.0, 1.0)
    guess = report.kinds["guessing_distributed"]
    assert (guess.recall(6), guess.recall(30)) == (0.0, 1.0)
    assert report.overall.recall(2) == pytest.approx(1 / 3)
    assert report.overall.recall(30) == 1.0
    assert report.false_alerts == 0


def test_a_shared_signal_alert_is_one_alert_for_the_attack_that_started_first() -> None:
    attacks = [
        _attack(0, "guessing_distributed", 400, 30, "client:a"),
        _attack(1, "guessing_distributed", 410, 30, "client:b"),
        _attack(2, "guessing_single", 405, 30, "client:g"),
    ]
    report = score(attacks, [_alert("global", 415)], POPULATIONS, 1_000.0, W, SCORED_FROM)
    assert report.alert_records == 1
    assert report.kinds["guessing_distributed"].alert_records == 1
    assert report.kinds["guessing_distributed"].delays == [15, None]
    # A single client's guessing is its own key's to detect, not a shared signal's.
    assert report.kinds["guessing_single"].delays == [None]
    assert report.false_alerts == 0


def test_time_to_detect_is_the_earliest_alert_not_the_earliest_window_s() -> None:
    # The first window's alert at its close (end + 5 s) comes after the second window's early
    # alert, raised 1 s into that window.
    report = _score(
        [
            _alert("c1", 200, T0 + 201 * W + 5_000),
            _alert("c1", 201, T0 + 201 * W + 1_000),
        ]
    )
    spike = report.kinds["spike_new_country"]
    assert spike.delays == [0]
    assert spike.detect_s == [11.0]


def test_alerts_while_the_detector_learns_are_neither_false_nor_detections() -> None:
    report = _score([_alert("c1", 50), _alert("c3", 99)])
    assert report.learning_alerts == 2
    assert report.false_alerts == 0
    assert report.overall.recall(30) == 0.0
