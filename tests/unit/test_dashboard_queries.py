"""The dashboard's queries: parameterized, bounded in time and rows, scoped where they must be."""

from __future__ import annotations

import re

import pytest

from dashboard import queries
from dashboard.queries import Window
from dashboard.tokens import PortalClaims
from metering import kpi
from metering.kpi import KpiError

DAY_MS = 86_400_000
NOW_MS = 1_780_000_000_000
WINDOW = Window(NOW_MS - DAY_MS, NOW_MS)
CLAIMS = PortalClaims("acme", NOW_MS // 1000 + 3600, NOW_MS // 1000, "t1")
TIME_COLUMNS = {
    "api_events": "event_time",
    "alerts": "detected_at",
    "actions": "recorded_at",
    "period_usage": "latest_window_start",
}


def _all_panels() -> list[queries.Panel]:
    return [
        *queries.consumer_view(CLAIMS, WINDOW),
        *queries.ops_view(WINDOW),
        *queries.product_view(WINDOW),
    ]


@pytest.mark.parametrize("panel", _all_panels(), ids=lambda p: f"{p.table}:{p.key}")
def test_every_query_is_bounded_and_parameterized(panel: queries.Panel) -> None:
    sql, params = panel.query.sql, panel.query.params
    column = TIME_COLUMNS[panel.table]
    assert f"FROM {panel.table} WHERE {column} >= %(start_ms)s AND {column} < %(end_ms)s" in sql
    # Billing reads the month that holds the window's end; every other panel the window.
    start = kpi.month_start_ms(WINDOW.end_ms - 1) if panel.key == "billing" else WINDOW.start_ms
    assert (params["start_ms"], params["end_ms"]) == (start, WINDOW.end_ms)
    limit = re.search(r"LIMIT (\d+)$", sql)
    assert limit is not None and 0 < int(limit.group(1)) <= 100_000
    # Every placeholder has a value and every value a placeholder; no value is in the text.
    assert set(re.findall(r"%\((\w+)\)s", sql)) == set(params)
    assert str(WINDOW.start_ms) not in sql
    assert "%" not in re.sub(r"%\(\w+\)s", "", sql)


def test_consumer_view_is_scoped_ops_and_product_are_not() -> None:
    for panel in queries.consumer_view(CLAIMS, WINDOW):
        assert panel.query.params["consumer"] == "acme"
    for panel in [*queries.ops_view(WINDOW), *queries.product_view(WINDOW)]:
        assert "consumer" not in panel.query.params
        assert "%(consumer)s" not in panel.query.sql


def test_only_the_actions_and_billing_panels_are_optional() -> None:
    for panel in _all_panels():
        assert panel.optional == (panel.table in ("actions", "period_usage"))


def test_the_billing_panel_reads_the_tokens_subject_in_its_month() -> None:
    (panel,) = [p for p in queries.consumer_view(CLAIMS, WINDOW) if p.key == "billing"]
    assert "AND subject = %(consumer)s" in panel.query.sql
    assert panel.query.params["consumer"] == "acme"
    assert panel.query.sql.endswith("ORDER BY latest_window_start DESC LIMIT 1")


def test_consumer_actions_leave_out_gateway_internals() -> None:
    ops = queries.actions_feed(WINDOW).sql
    mine = queries.actions_feed(WINDOW, "acme").sql
    assert "target" in ops and "reason" in ops
    assert "target" not in mine and "reason" not in mine


def test_feeds_are_newest_first() -> None:
    assert "ORDER BY detected_at DESC LIMIT 200" in queries.alerts_feed(WINDOW).sql
    assert "ORDER BY recorded_at DESC LIMIT 50" in queries.actions_feed(WINDOW, limit=50).sql
    alerts = queries.alerts_feed(WINDOW).sql
    for column in ("rule", "severity", "consumer", "key_fingerprint", "observed_count"):
        assert column in alerts
    assert "expected_count" in alerts


def test_window_ending_aligns_and_bounds() -> None:
    w = queries.window_ending(NOW_MS + 1, DAY_MS)
    assert w.end_ms % queries.ALIGN_MS == 0 and NOW_MS < w.end_ms <= NOW_MS + queries.ALIGN_MS
    assert w.end_ms - w.start_ms == DAY_MS
    assert queries.window_ending(NOW_MS, DAY_MS).end_ms == NOW_MS
    for span in queries.SPANS_MS.values():
        queries.window_ending(NOW_MS, span)
    with pytest.raises(KpiError):
        queries.window_ending(NOW_MS, 40 * DAY_MS)
    with pytest.raises(KpiError):
        queries.check_window(Window(NOW_MS, NOW_MS))
    with pytest.raises(KpiError):
        queries.ops_view(Window(NOW_MS - 60 * DAY_MS, NOW_MS))


def test_bucket_follows_the_span() -> None:
    assert queries.bucket_for(Window(0, 3_600_000)) == "minute"
    assert queries.bucket_for(Window(0, DAY_MS)) == "hour"
    assert queries.bucket_for(Window(0, 30 * DAY_MS)) == "day"
    calls = next(p for p in queries.ops_view(Window(0, 30 * DAY_MS)) if p.key == "calls")
    assert "DATETRUNC('DAY', event_time)" in calls.query.sql


def test_a_consumer_name_the_driver_would_not_quote_is_refused() -> None:
    """pinotdb passes a bare "*" through unquoted; the builders refuse it before SQL exists."""
    for bad in ("*", "", "a\nb"):
        with pytest.raises(KpiError):
            queries.consumer_view(PortalClaims(bad, 0, 0, "t"), WINDOW)
        with pytest.raises(KpiError):
            queries.alerts_feed(WINDOW, bad)


def test_the_ops_view_reuses_the_kpi_queries() -> None:
    from metering import kpi

    req = kpi.KpiRequest(WINDOW.start_ms, WINDOW.end_ms, None, "hour")
    ops = {p.key: p.query for p in queries.ops_view(WINDOW)}
    assert ops["calls"] == kpi.calls_over_time(req)
    assert ops["latency"] == kpi.latency_by_route(req)
    assert ops["unique_callers"] == kpi.unique_callers_by_route(req)
    assert ops["countries"] == kpi.calls_by_country(req)
    assert ops["error_rate"] == kpi.error_rate_by_route(req)
