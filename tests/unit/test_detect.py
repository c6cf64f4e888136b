"""Per-key window aggregation and the compromised-key rules (metering/detect.py)."""

from __future__ import annotations

import pickle
import random
from typing import Any

import pytest

from metering.detect import (
    DetectorConfig,
    KeyState,
    WindowAgg,
    alert_id,
    early_check,
    evaluate,
    window_record,
)
from metering.windows import as_agg, count_event

CFG = DetectorConfig()  # 10 s windows, 12-window baseline, 3 windows of learning, 5x spikes
T0 = 1_718_291_190_000
W = CFG.window_ms
KEY = "acme-analytics"
NOW = 1_718_300_000_000


def record(
    index: int,
    count: int,
    countries: list[str] | None = None,
    auth_failures: int = 0,
    rate_key: str = KEY,
) -> dict[str, Any]:
    agg = WindowAgg(
        count=count,
        units=float(count),
        auth_failures=auth_failures,
        countries=set(countries if countries is not None else ["GB"]),
        consumer=rate_key,
        key_fingerprint="f" * 32,
    )
    return window_record(rate_key, T0 + index * W, T0 + (index + 1) * W, agg)


def feed(
    windows: list[tuple[int, int, list[str]]],
    state: KeyState | None = None,
    cfg: DetectorConfig = CFG,
) -> tuple[KeyState, list[list[dict[str, Any]]]]:
    """Evaluate (index, count, countries) windows in order; alerts per window."""
    out = []
    for index, count, countries in windows:
        state, alerts = evaluate(state, record(index, count, countries), cfg, NOW)
        out.append(alerts)
    assert state is not None
    return state, out


def steady(
    n: int, count: int = 10, countries: list[str] | None = None, start: int = 0
) -> list[tuple[int, int, list[str]]]:
    return [(start + i, count, ["GB"] if countries is None else countries) for i in range(n)]


# -- WindowAgg and window_record ---------------------------------------------------------------


def test_counting_rules() -> None:
    w = None
    for event in [
        (None, "fp1", "GB", False, 1.0),
        ("acme", "fp2", None, True, 2.5),
        ("other", None, "US", True, 1.0),
        (None, None, "GB", False, 0.5),
    ]:
        w = count_event(w, *event)
    assert w is not None
    assert as_agg(w) == WindowAgg(
        count=4,
        units=5.0,
        auth_failures=2,
        countries={"GB", "US"},
        consumer="acme",  # the first identity seen sticks
        key_fingerprint="fp1",
    )


def test_window_record() -> None:
    w = count_event(count_event(None, "acme", "fp", "US", False, 2.0), None, None, "AU", True, 1.0)
    assert window_record("acme", T0, T0 + W, as_agg(w)) == {
        "kind": "window",
        "rate_key": "acme",
        "consumer": "acme",
        "key_fingerprint": "fp",
        "window_start": T0,
        "window_end": T0 + W,
        "count": 2,
        "units": 3.0,
        "auth_failures": 1,
        "countries": ["AU", "US"],
    }


def test_alert_id_is_deterministic() -> None:
    a = alert_id("rate_spike", KEY, T0)
    assert a == alert_id("rate_spike", KEY, T0)
    assert len(a) == 32
    assert int(a, 16) >= 0
    assert a != alert_id("new_country", KEY, T0)
    assert a != alert_id("rate_spike", "other", T0)
    assert a != alert_id("rate_spike", KEY, T0 + W)


# -- rate_spike --------------------------------------------------------------------------------


def test_steady_key_varying_twenty_percent_never_alerts() -> None:
    rng = random.Random(20240613)
    for mean in (10, 24, 100, 1000):
        counts = [rng.randint(int(mean * 0.8), int(mean * 1.2)) for _ in range(30)]
        state, alerts = feed([(i, c, ["GB", "US"]) for i, c in enumerate(counts)])
        assert alerts == [[]] * 30, mean
        assert state.open_incidents == {}
        assert state.known_countries == ["GB", "US"]


def test_spike_after_learning_raises_rate_spike() -> None:
    state, alerts = feed(steady(12))
    assert alerts == [[]] * 12
    state, [alerts12] = feed([(12, 60, ["GB"])], state)
    start = T0 + 12 * W
    assert alerts12 == [
        {
            "alert_id": alert_id("rate_spike", KEY, start),
            "rule": "rate_spike",
            "severity": "high",
            "rate_key": KEY,
            "consumer": KEY,
            "key_fingerprint": "f" * 32,
            "window_start": start,
            "window_end": start + W,
            "window_closed": True,
            "incident_start": start,
            "observed_count": 60,
            "baseline": 10.0,
            "ratio": 6.0,
            "countries_seen": ["GB"],
            "new_countries": [],
            "known_countries": ["GB"],
            "auth_failures": 0,
            "summary": "60 requests vs baseline 10.0",
            "detected_at": NOW,
        }
    ]


def test_spike_needs_both_the_factor_and_the_minimum_count() -> None:
    state, _ = feed(steady(12, count=2))
    _, [below_minimum] = feed([(12, 19, ["GB"])], state)  # 9.5x, but fewer than 20 requests
    assert below_minimum == []
    state, _ = feed(steady(12, count=10))
    _, [below_factor] = feed([(12, 49, ["GB"])], state)  # 4.9x
    assert below_factor == []
    state, _ = feed(steady(12, count=10))
    _, [at_factor] = feed([(12, 50, ["GB"])], state)
    assert [(a["rule"], a["ratio"]) for a in at_factor] == [("rate_spike", 5.0)]


def test_a_twenty_fold_spike_is_critical() -> None:
    state, _ = feed(steady(12))
    _, [alerts] = feed([(12, 200, ["GB"])], state)
    assert [(a["rule"], a["severity"], a["ratio"]) for a in alerts] == [
        ("rate_spike", "critical", 20.0)
    ]


def test_no_alert_while_learning_even_with_a_jump() -> None:
    cfg = CFG
    assert cfg.min_history_windows == 3
    _, alerts = feed([(0, 10, ["GB"]), (1, 10, ["GB"]), (2, 5000, ["GB", "AU", "BR"])])
    assert alerts == [[], [], []]
    # The first judged window is the one with min_history_windows windows before it.
    _, alerts = feed([(0, 10, ["GB"]), (1, 10, ["GB"]), (2, 10, ["GB"]), (3, 500, ["GB"])])
    assert [[a["rule"] for a in w] for w in alerts] == [[], [], [], ["rate_spike"]]


def test_sustained_attack_keeps_alerting_and_never_becomes_the_baseline() -> None:
    state, _ = feed(steady(12))
    state, alerts = feed(
        [(12, 150, ["GB"]), (13, 150, ["GB"]), (14, 250, ["GB"]), (15, 150, ["GB"])], state
    )
    first = T0 + 12 * W
    got = [
        (a["rule"], a["window_start"], a["incident_start"], a["baseline"], a["severity"])
        for w in alerts
        for a in w
    ]
    assert got == [
        ("rate_spike", first, first, 10.0, "high"),
        ("rate_spike", first + W, first, 10.0, "high"),
        ("rate_spike", first + 2 * W, first, 10.0, "critical"),
        ("rate_spike", first + 3 * W, first, 10.0, "high"),
    ]
    assert [a["alert_id"] for w in alerts for a in w] == [
        alert_id("rate_spike", KEY, first + i * W) for i in range(4)
    ]
    # Attack windows entered the history at the baseline level.
    assert state.history[-4:] == [(first + i * W, 10) for i in range(4)]
    assert state.open_incidents == {"rate_spike": first}
    # Back to normal: no alert, incident closed; a new attack opens a new incident.
    state, [calm] = feed([(16, 11, ["GB"])], state)
    assert calm == []
    assert state.open_incidents == {}
    state, [again] = feed([(17, 150, ["GB"])], state)
    # Baseline: windows 5..16, eleven at 10 and one at 11.
    assert [(a["incident_start"], a["baseline"]) for a in again] == [(T0 + 17 * W, 10.083)]


def test_missing_windows_count_as_zero_in_the_baseline() -> None:
    # Windows 4..7 had no traffic at all (nothing is emitted for them).
    state, _ = feed(steady(4))
    state, [alerts] = feed([(8, 25, ["GB"])], state)
    # Baseline over 8 windows: 40 requests / 8 = 5.0, so 25 is a 5x spike...
    assert [(a["rule"], a["baseline"], a["observed_count"]) for a in alerts] == [
        ("rate_spike", 5.0, 25)
    ]
    # ...which it would not be against the 4 windows that had traffic.
    state, _ = feed(steady(8))
    _, [alerts] = feed([(8, 25, ["GB"])], state)
    assert alerts == []


def test_baseline_only_looks_back_baseline_windows() -> None:
    # A busy past older than 12 windows is forgotten.
    state, _ = feed(steady(5, count=100) + steady(12, count=10, start=5))
    _, [alerts] = feed([(17, 60, ["GB"])], state)
    assert [(a["rule"], a["baseline"]) for a in alerts] == [("rate_spike", 10.0)]
    assert all(s >= T0 + 5 * W for s, _ in state.history)


def test_late_or_duplicate_windows_are_ignored() -> None:
    state, _ = feed(steady(6))
    history = list(state.history)
    for index in (5, 2):  # the last judged window again, and an older one
        state, alerts = evaluate(state, record(index, 5000, ["AU"], 4000), CFG, NOW)
        assert alerts == []
    assert state.history == history
    assert state.known_countries == ["GB"]
    assert state.last_window_start == T0 + 5 * W


# -- new_country -------------------------------------------------------------------------------


def test_new_country_while_the_rate_rises() -> None:
    state, _ = feed(steady(6, countries=["DE"]))
    state, [alerts] = feed([(6, 16, ["AU", "DE"])], state)  # 1.6x, not a spike
    start = T0 + 6 * W
    assert [
        (a["rule"], a["severity"], a["new_countries"], a["known_countries"], a["countries_seen"])
        for a in alerts
    ] == [("new_country", "high", ["AU"], ["DE"], ["AU", "DE"])]
    assert alerts[0]["alert_id"] == alert_id("new_country", KEY, start)
    assert alerts[0]["summary"] == "first use from AU while rate rose to 1.6x"
    # An anomalous window teaches nothing: AU is still not a known country.
    assert state.known_countries == ["DE"]


def test_new_country_with_a_spike_is_critical_and_both_rules_fire() -> None:
    state, _ = feed(steady(12, countries=["DE"]))
    _, [alerts] = feed([(12, 150, ["AU", "DE"])], state)
    assert [(a["rule"], a["severity"]) for a in alerts] == [
        ("rate_spike", "high"),
        ("new_country", "critical"),
    ]
    assert len({a["alert_id"] for a in alerts}) == 2


def test_new_country_without_a_rate_rise_is_learned() -> None:
    state, _ = feed(steady(6, countries=["DE"]))
    state, [alerts] = feed([(6, 10, ["AU", "DE"])], state)
    assert alerts == []
    assert state.known_countries == ["AU", "DE"]
    # Once known, a later rise with it is no new-country alert.
    _, [alerts] = feed([(7, 16, ["AU", "DE"])], state)
    assert alerts == []


def test_new_country_needs_a_minimum_count() -> None:
    state, _ = feed(steady(6, count=2, countries=["DE"]))
    _, [alerts] = feed([(6, 4, ["AU"])], state)  # 2x, but only 4 requests
    assert alerts == []


def test_first_countries_of_a_key_are_not_new() -> None:
    # No known countries yet (a key whose first windows had no geo): nothing to compare with.
    state, _ = feed(steady(6, countries=[]))
    assert state.known_countries == []
    state, [alerts] = feed([(6, 16, ["AU"])], state)
    assert alerts == []


def test_known_countries_are_bounded() -> None:
    cfg = DetectorConfig(max_known_countries=3)
    state, _ = feed([(i, 10, [c]) for i, c in enumerate(["AU", "BR", "CA", "DE", "ES"])], cfg=cfg)
    assert state.known_countries == ["CA", "DE", "ES"]


# -- auth_failures -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "failures", "expected"),
    [
        (40, 30, [("auth_failures", "warning", "30 of 40 requests rejected")]),
        (100, 100, [("auth_failures", "high", "100 of 100 requests rejected")]),
        (20, 20, [("auth_failures", "warning", "20 of 20 requests rejected")]),
        (40, 19, []),  # fewer than auth_failure_min
        (60, 25, []),  # less than half of the requests
    ],
)
def test_auth_failure_burst(count: int, failures: int, expected: list[tuple[str, ...]]) -> None:
    # Not gated by learning: a credential-stuffing client is often brand new.
    _, alerts = evaluate(None, record(0, count, ["GB"], failures), CFG, NOW)
    assert [(a["rule"], a["severity"], a["summary"]) for a in alerts] == expected
    for a in alerts:
        assert a["ratio"] is None
        assert a["auth_failures"] == failures
        assert a["alert_id"] == alert_id("auth_failures", KEY, T0)


def test_auth_failure_windows_stay_in_the_baseline() -> None:
    # auth_failures is not a traffic anomaly: the window's real count is remembered.
    state, [alerts] = feed([(0, 10, ["GB"])])
    state, alerts = evaluate(state, record(1, 40, ["GB"], 30), CFG, NOW)
    assert [a["rule"] for a in alerts] == ["auth_failures"]
    assert state.history == [(T0, 10), (T0 + W, 40)]
    assert state.open_incidents == {"auth_failures": T0 + W}


def test_window_bounds_are_epoch_aligned_tumbling_windows() -> None:
    from metering.detect import window_bounds

    assert window_bounds(1_767_225_600_000, 10_000) == (1_767_225_600_000, 1_767_225_610_000)
    assert window_bounds(1_767_225_609_999, 10_000) == (1_767_225_600_000, 1_767_225_610_000)
    assert window_bounds(1_767_225_610_000, 10_000) == (1_767_225_610_000, 1_767_225_620_000)


def test_a_window_is_closed_once_the_watermark_reaches_its_last_millisecond() -> None:
    from metering.detect import window_closed

    end = 1_767_225_610_000
    assert not window_closed(end, end - 2)
    assert window_closed(end, end - 1)
    assert window_closed(end, end + 5_000)


def test_late_corrections_are_ignored_by_the_detector() -> None:
    state = None
    for i in range(6):
        state, alerts = evaluate(state, record(i, 20), CFG, NOW)
        assert alerts == []
    # 250x the baseline, but a correction to a window already judged: never an alert.
    correction = {**record(6, 5000), "kind": "late_correction"}
    state, alerts = evaluate(state, correction, CFG, NOW)
    assert alerts == []
    assert state.last_window_start == T0 + 5 * W


def early(
    index: int, count: int, auth_failures: int, rate_key: str = "client:c1"
) -> dict[str, Any]:
    return {**record(index, count, [], auth_failures, rate_key), "kind": "early"}


@pytest.mark.parametrize(
    ("failures", "sent"),
    [
        (0, False),
        (19, False),
        (20, True),
        (21, False),
        (39, False),
        (40, True),
        (60, False),
        (80, True),
        (100, True),
        (120, False),
        (200, False),
        (320, True),
        (160, True),
        (240, False),
    ],
)
def test_early_records_at_the_threshold_its_doublings_and_where_severity_rises(
    failures: int, sent: bool
) -> None:
    assert early_check(failures, 20) is sent


def test_auth_failure_burst_alerts_before_its_window_closes_and_not_again_at_the_close() -> None:
    key = "client:c1"
    state, alerts = evaluate(None, early(5, 22, 20, key), CFG, NOW)
    start = T0 + 5 * W
    assert [
        (a["rule"], a["window_start"], a["window_closed"], a["observed_count"], a["summary"])
        for a in alerts
    ] == [("auth_failures", start, False, 22, "20 of 22 requests rejected")]
    assert alerts[0]["alert_id"] == alert_id("auth_failures", key, start)
    assert alerts[0]["incident_start"] == start
    # The doubling of the same window, and then the window's close: no second alert.
    state, again = evaluate(state, early(5, 42, 40, key), CFG, NOW)
    assert again == []
    state, at_close = evaluate(state, record(5, 50, [], 45, key), CFG, NOW)
    assert at_close == []
    assert state.open_incidents == {"auth_failures": start}
    assert state.early_alerts == {}
    assert state.last_window_start == start
    # The next window's burst continues the incident; once the window is judged, early records
    # of it change nothing.
    state, next_early = evaluate(state, early(6, 20, 20, key), CFG, NOW)
    assert [(a["window_start"], a["incident_start"]) for a in next_early] == [(start + W, start)]
    state, _ = evaluate(state, record(6, 20, [], 20, key), CFG, NOW)
    assert evaluate(state, early(6, 40, 40, key), CFG, NOW)[1] == []


def test_an_early_record_below_the_share_of_failures_waits_for_the_close() -> None:
    key = "client:c2"
    # 20 of 50 rejected is under the 0.5 share: no alert yet ...
    state, alerts = evaluate(None, early(3, 50, 20, key), CFG, NOW)
    assert alerts == []
    # ... and at the close 45 of 60 are: the window alerts then, once.
    state, at_close = evaluate(state, record(3, 60, [], 45, key), CFG, NOW)
    assert [(a["rule"], a["window_closed"], a["observed_count"]) for a in at_close] == [
        ("auth_failures", True, 60)
    ]


def test_an_early_alert_stands_when_the_window_closes_below_the_share() -> None:
    key = "client:c3"
    state, alerts = evaluate(None, early(3, 25, 20, key), CFG, NOW)
    assert len(alerts) == 1
    state, at_close = evaluate(state, record(3, 100, [], 20, key), CFG, NOW)
    assert at_close == []
    assert state.open_incidents == {}


def test_an_early_record_before_the_key_has_closed_windows_keeps_its_history_right() -> None:
    # The key's first early record is of window 4; window 3 closes after it.
    state, _ = evaluate(None, early(4, 20, 20), CFG, NOW)
    assert state.first_window_start == T0 + 4 * W
    state, _ = evaluate(state, record(3, 10, ["GB"], 0, "client:c1"), CFG, NOW)
    assert state.first_window_start == T0 + 3 * W
    assert state.history == [(T0 + 3 * W, 10)]


def test_early_records_are_judged_only_for_auth_failures() -> None:
    state, _ = feed(steady(12))
    # A spike and a new country so far, but the history rules wait for the close.
    _, alerts = evaluate(state, {**record(12, 500, ["KP"]), "kind": "early"}, CFG, NOW)
    assert alerts == []


# KeyState pickled by the detector before early alerts (commit df3256d): no early_alerts.
OLD_KEY_STATE = (
    b"\x80\x04\x95\xc3\x00\x00\x00\x00\x00\x00\x00\x8c\x0fmetering.detect\x94\x8c\x08KeyState"
    b'\x94\x93\x94)\x81\x94N}\x94(\x8c\x12first_window_start\x94\x8a\x06\xf0\xd0"\x12\x90\x01'
    b'\x8c\x07history\x94]\x94\x8a\x06\xf0\xd0"\x12\x90\x01K\x03\x86\x94a\x8c\x0fknown_countries'
    b"\x94]\x94\x8c\x02GB\x94a\x8c\x0eopen_incidents\x94}\x94\x8c\rauth_failures\x94\x8a\x06\xf0"
    b'\xd0"\x12\x90\x01s\x8c\x11last_window_start\x94\x8a\x06\xf0\xd0"\x12\x90\x01u\x86\x94b.'
)


def test_detector_state_pickled_before_early_alerts_restores() -> None:
    old = pickle.loads(OLD_KEY_STATE)
    assert old == KeyState(
        first_window_start=T0,
        history=[(T0, 3)],
        known_countries=["GB"],
        open_incidents={"auth_failures": T0},
        last_window_start=T0,
        early_alerts={},
    )
    assert pickle.loads(pickle.dumps(old)) == old
    state, alerts = evaluate(old, early(1, 20, 20), CFG, NOW)
    # The window right after an alerting one continues its incident.
    assert [(a["rule"], a["incident_start"]) for a in alerts] == [("auth_failures", T0)]
    assert state.early_alerts == {"auth_failures": {T0 + W: "warning"}}


def test_a_later_windows_early_alert_does_not_make_an_earlier_window_alert_twice() -> None:
    # A sustained burst: window 6's early record comes before window 5 closes.
    key = "client:c4"
    state, first = evaluate(None, early(5, 20, 20, key), CFG, NOW)
    state, second = evaluate(state, early(6, 20, 20, key), CFG, NOW)
    assert [a["window_start"] for a in first + second] == [T0 + 5 * W, T0 + 6 * W]
    # Window 6 did not know yet that window 5 alerted: it starts its own incident.
    assert second[0]["incident_start"] == T0 + 6 * W
    state, close5 = evaluate(state, record(5, 40, [], 40, key), CFG, NOW)
    assert close5 == []
    assert state.early_alerts == {"auth_failures": {T0 + 6 * W: "warning"}}
    state, close6 = evaluate(state, record(6, 40, [], 40, key), CFG, NOW)
    assert close6 == []
    assert state.early_alerts == {}


def test_an_early_alert_escalates_once_with_an_id_of_its_own() -> None:
    key = "client:c5"
    start = T0 + 2 * W
    state, warning = evaluate(None, early(2, 20, 20, key), CFG, NOW)
    state, high = evaluate(state, early(2, 100, 100, key), CFG, NOW)
    assert [(a["severity"], a["alert_id"]) for a in warning + high] == [
        ("warning", alert_id("auth_failures", key, start)),
        ("high", alert_id("auth_failures", key, start, "high")),
    ]
    state, again = evaluate(state, early(2, 160, 160, key), CFG, NOW)
    state, at_close = evaluate(state, record(2, 170, [], 170, key), CFG, NOW)
    assert again == at_close == []


def test_the_close_escalates_an_early_warning() -> None:
    key = "client:c6"
    start = T0 + 2 * W
    state, _ = evaluate(None, early(2, 20, 20, key), CFG, NOW)
    # No early record at 100 reached the detector before the close (they may arrive later).
    state, at_close = evaluate(state, record(2, 130, [], 120, key), CFG, NOW)
    assert [(a["severity"], a["window_closed"], a["alert_id"]) for a in at_close] == [
        ("high", True, alert_id("auth_failures", key, start, "high"))
    ]
    assert evaluate(state, early(2, 100, 100, key), CFG, NOW)[1] == []


def test_an_early_alert_after_a_quiet_window_starts_a_new_incident() -> None:
    key = "client:c7"
    state, _ = evaluate(None, record(1, 20, [], 20, key), CFG, NOW)  # alerts: incident at 1
    assert state.open_incidents == {"auth_failures": T0 + W}
    # Window 2 (quiet) has not closed when window 3's burst comes.
    state, alerts = evaluate(state, early(3, 20, 20, key), CFG, NOW)
    assert [a["incident_start"] for a in alerts] == [T0 + 3 * W]
