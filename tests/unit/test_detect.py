"""Window records, and the detector's incidents over them (metering/detect.py); the rules
themselves are tests/unit/test_rules.py."""

from __future__ import annotations

import pickle
from dataclasses import replace
from typing import Any

import pytest

from metering.baseline import expected
from metering.detect import (
    RECENT_WINDOWS,
    DetectorConfig,
    KeyState,
    WindowAgg,
    alert_id,
    close_due,
    early_check,
    evaluate,
    next_close,
    window_record,
)
from metering.windows import as_agg, count_event

CFG = DetectorConfig()  # 10 s windows, 30 minutes of learning, incidents close after 10 quiet
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
    w = count_event(
        count_event(None, "acme", "fp", "US", False, 2.0, "/v1/z", "198.51.100.0/24"),
        None,
        None,
        "AU",
        True,
        1.0,
    )
    w = count_event(w, "acme", "fp", "US", False, 1.0, "/v1/a", "198.51.100.0/24")
    w = count_event(w, "acme", "fp", "US", False, 1.0, "/v1/a", "2001:db8::/48")
    assert window_record("acme", T0, T0 + W, as_agg(w)) == {
        "kind": "window",
        "rate_key": "acme",
        "consumer": "acme",
        "key_fingerprint": "fp",
        "window_start": T0,
        "window_end": T0 + W,
        "count": 4,
        "units": 5.0,
        "auth_failures": 1,
        "countries": ["AU", "US"],
        "networks": 2,  # distinct: two calls from 198.51.100.0/24, and none from the third
        "paths": {"/v1/a": 2, "/v1/z": 1},
    }


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


# -- incidents ---------------------------------------------------------------------------------


def test_alert_id_is_deterministic() -> None:
    a = alert_id(KEY, T0)
    assert a == alert_id(KEY, T0)
    assert len(a) == 32 and int(a, 16) >= 0
    assert a != alert_id("other", T0)
    assert a != alert_id(KEY, T0 + W)
    assert a != alert_id(KEY, T0, "closed")


def learned_steady(minutes: int = 40, count: int = 10) -> KeyState:
    state, alerts = feed(steady(minutes * 6, count))
    assert all(a == [] for a in alerts)
    return state


def test_a_spike_is_one_incident_opened_then_closed_after_the_quiet_period() -> None:
    state = learned_steady()
    n = 40 * 6
    windows = [(n + i, 400, ["GB"]) for i in range(5)] + steady(100, start=n + 5)
    state, out = feed(windows, state)
    records = [a for alerts in out for a in alerts]
    assert [(a["status"], a["rule"]) for a in records] == [
        ("open", "rate_spike"),
        ("closed", "rate_spike"),
    ]
    opened, closed = records
    assert opened["window_start"] == opened["incident_start"] == T0 + n * W
    assert opened["alert_id"] == alert_id(KEY, T0 + n * W)
    assert closed["alert_id"] == alert_id(KEY, T0 + n * W, "closed")
    assert opened["severity"] == "critical"
    assert opened["expected_count"] == pytest.approx(10, rel=0.05)
    assert opened["probability"] < 1e-9
    assert "400 requests in the window" in opened["summary"]
    # Closed by the first window after 10 quiet minutes, reporting the incident's extent.
    assert closed["incident_windows"] == 5
    assert closed["window_start"] == T0 + (n + 4) * W
    assert out.index([closed]) == 5 + CFG.quiet_windows
    assert state.incident is None


def test_an_incident_escalates_once_then_the_close_carries_the_peak() -> None:
    state = learned_steady()
    n = 40 * 6
    # Rising, to critical, then a new country on top: the incident's update was spent.
    windows = [(n, 60, ["GB"]), (n + 1, 300, ["GB"]), (n + 2, 2000, ["GB", "BR"])]
    state, out = feed(windows, state)
    records = [a for alerts in out for a in alerts]
    assert [a["status"] for a in records] == ["open", "update"]
    assert records[1]["severity"] == "critical" != records[0]["severity"]
    assert records[1]["alert_id"] == alert_id(KEY, T0 + n * W, "update:critical")
    assert len({a["alert_id"] for a in records}) == 2


def test_the_end_of_an_incident_is_found_without_another_record() -> None:
    state = learned_steady()
    n = 40 * 6
    state, _ = feed([(n, 400, ["GB"])], state)
    assert next_close(state, CFG) == T0 + (n + CFG.quiet_windows + 1) * W
    closed = close_due(state, T0 + (n + CFG.quiet_windows + 1) * W, CFG, NOW)
    assert [a["status"] for a in closed] == ["closed"]
    assert state.incident is None and next_close(state, CFG) is None


def test_late_corrections_and_windows_already_judged_are_ignored() -> None:
    state = learned_steady()
    last = state.last_window_start
    for kind in ("late_correction", "window", "early"):
        got = {**record(10, 5000), "kind": kind}
        state, alerts = evaluate(state, got, CFG, NOW)
        assert alerts == []
    assert state.last_window_start == last


def test_an_attack_never_becomes_the_baseline() -> None:
    state = learned_steady()
    n = 40 * 6
    state, out = feed([(n + i, 200, ["GB"]) for i in range(60)], state)
    assert out[0][0]["status"] == "open"
    assert all(a == [] for a in out[1:])  # one incident, still open
    exp = expected(state.baseline, n + 60, W, CFG.baseline)
    assert exp.mean == pytest.approx(10, rel=0.1)


def test_a_key_that_began_mid_window_is_judged_against_its_full_windows() -> None:
    # The key's first window holds 2 of its usual 24 calls. Learning ends only once the
    # baseline holds a minute of windows, not while that partial window is all it has.
    cfg = DetectorConfig(baseline=replace(CFG.baseline, learn_minutes=1.0))
    state, out = feed([(0, 2, ["GB"]), *steady(30, count=24, start=1)], cfg=cfg)
    assert out == [[]] * 31
    exp = expected(state.baseline, T0 // W + 31, W, cfg.baseline, pending=RECENT_WINDOWS - 1)
    assert exp.mean == pytest.approx(24, rel=0.2)  # the full windows' rate, not the first's
    # Once learned, the key's rate is judged: 15 times its usual from the same country.
    state, out = feed([(31, 360, ["GB"])], state, cfg)
    assert [(a["rule"], a["status"]) for a in out[0]] == [("rate_spike", "open")]


def test_detector_state_is_bounded_and_pickles() -> None:
    state = learned_steady(60 * 30)  # 30 hours
    n = 60 * 30 * 6
    for i, country in enumerate(f"C{i:02d}" for i in range(100)):
        state, _ = evaluate(state, record(n + i, 10, ["GB", country]), CFG, NOW)
    geo = state.rules["new_country"]
    assert len(geo.familiar) <= CFG.rules["new_country"].max_countries
    assert len(geo.pending) <= CFG.rules["new_country"].max_pending
    assert len(state.recent) <= RECENT_WINDOWS
    size = len(pickle.dumps(state))
    assert size < 8_000, size
    assert pickle.loads(pickle.dumps(state)) == state


# -- early records -----------------------------------------------------------------------------


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


def test_a_burst_alerts_before_its_window_closes_and_not_again_at_the_close() -> None:
    key = "client:c1"
    state, alerts = evaluate(None, early(5, 22, 20, key), CFG, NOW)
    start = T0 + 5 * W
    assert [
        (a["status"], a["rule"], a["window_start"], a["window_closed"], a["summary"])
        for a in alerts
    ] == [("open", "auth_failures", start, False, "20 of 22 requests rejected")]
    assert alerts[0]["alert_id"] == alert_id(key, start)
    state, again = evaluate(state, early(5, 42, 40, key), CFG, NOW)
    assert again == []
    state, at_close = evaluate(state, record(5, 50, [], 45, key), CFG, NOW)
    assert at_close == []
    assert state.incident is not None and state.incident.start == start
    assert state.last_window_start == start


def test_an_early_burst_escalates_once_with_an_id_of_its_own() -> None:
    key = "client:c1"
    state, first = evaluate(None, early(5, 20, 20, key), CFG, NOW)
    state, second = evaluate(state, early(5, 100, 100, key), CFG, NOW)
    assert [(a["status"], a["severity"]) for a in first + second] == [
        ("open", "warning"),
        ("update", "high"),
    ]
    state, third = evaluate(state, early(5, 160, 160, key), CFG, NOW)
    assert third == []


def test_an_early_record_never_closes_an_incident_the_windows_before_it_may_extend() -> None:
    # A replay where the client's partition runs ahead: an early record of a window past the
    # quiet period arrives before the closed windows that continue the incident.
    key = "client:c1"
    q = CFG.quiet_windows
    state, opened = evaluate(None, record(5, 30, [], 30, key), CFG, NOW)
    assert [a["status"] for a in opened] == ["open"]
    state, ahead = evaluate(state, early(5 + q + 2, 20, 20, key), CFG, NOW)
    assert ahead == [] and state.incident is not None
    for i in range(6, 5 + q + 3):
        state, alerts = evaluate(state, record(i, 30, [], 30, key), CFG, NOW)
        assert alerts == []
    assert state.incident is not None
    assert state.incident.start == T0 + 5 * W
    assert state.incident.windows == q + 3


def test_an_early_record_after_the_close_opens_the_next_incident() -> None:
    key = "client:c1"
    state, _ = evaluate(None, record(5, 30, [], 30, key), CFG, NOW)
    due = next_close(state, CFG)
    assert due is not None
    assert [a["status"] for a in close_due(state, due, CFG, NOW)] == ["closed"]
    later = 5 + CFG.quiet_windows + 2
    state, alerts = evaluate(state, early(later, 20, 20, key), CFG, NOW)
    assert [(a["status"], a["incident_start"]) for a in alerts] == [("open", T0 + later * W)]


def test_an_early_record_before_any_closed_window_keeps_the_history_right() -> None:
    key = "client:c1"
    state, _ = evaluate(None, early(6, 20, 20, key), CFG, NOW)
    state, _ = evaluate(state, record(5, 3, [], 0, key), CFG, NOW)
    assert state.baseline.first_index == (T0 + 5 * W) // W
    assert state.last_window_start == T0 + 5 * W


def test_only_the_guessing_rule_judges_early_records() -> None:
    state = learned_steady()
    n = 40 * 6
    state, alerts = evaluate(state, {**record(n, 5000, ["BR"]), "kind": "early"}, CFG, NOW)
    assert alerts == []


def test_the_state_of_an_older_detector_restores_and_is_learned_afresh() -> None:
    old = KeyState.__new__(KeyState)
    # What the first detector pickled: its own fields only.
    old.__setstate__((None, {"first_window_start": T0, "history": [(T0, 10)]}))
    assert old.baseline is None and old.incident is None
    state, alerts = evaluate(old, record(0, 10), CFG, NOW)
    assert alerts == [] and state.baseline is not None
    assert state.last_window_start == T0


def test_the_demo_prints_an_incident_as_it_opens_and_closes() -> None:
    from testkit.demo import format_alert

    state = learned_steady()
    n = 40 * 6
    state, out = feed([(n, 400, ["GB"])], state)
    closed = close_due(state, T0 + 10**9, CFG, NOW)
    opened_line, closed_line = format_alert(out[0][0]), format_alert(closed[0])
    assert opened_line.startswith("ALERT OPEN   CRITICAL rate_spike")
    assert "400 requests in the window" in opened_line and KEY in opened_line
    assert "after 1 windows with findings (rate_spike)" in closed_line
