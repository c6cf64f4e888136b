"""The dashboard's queries: parameterized, bounded in time and rows, scoped where they must be."""

from __future__ import annotations

import re
from datetime import date

import pytest

from dashboard import queries
from dashboard.queries import Window
from dashboard.tokens import PortalClaims
from metering import kpi
from metering.billing.periods import bounds
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
    "dead_letters": "dead_lettered_at",
    "reconciliation": "interval_start",
}
# Freshness is over the events ingested in the window, not those that happened in it.
PANEL_TIME_COLUMNS = {"freshness": "ingested_at"}


def _all_panels() -> list[queries.Panel]:
    return [
        *queries.consumer_view(CLAIMS, WINDOW),
        *queries.ops_view(WINDOW),
        *queries.product_view(WINDOW),
        *queries.health_view(WINDOW),
    ]


@pytest.mark.parametrize("panel", _all_panels(), ids=lambda p: f"{p.table}:{p.key}")
def test_every_query_is_bounded_and_parameterized(panel: queries.Panel) -> None:
    sql, params = panel.query.sql, panel.query.params
    column = PANEL_TIME_COLUMNS.get(panel.key, TIME_COLUMNS[panel.table])
    assert f"FROM {panel.table} WHERE {column} >= %(start_ms)s AND {column} < %(end_ms)s" in sql
    # Billing reads the whole month that holds the window's end; every other panel the window.
    if panel.key == "billing":
        assert (params["start_ms"], params["end_ms"]) == bounds(params["period"])
        assert params["start_ms"] == kpi.month_start_ms(WINDOW.end_ms - 1)
    elif panel.key == "freshness":  # the range's last five minutes
        assert (params["start_ms"], params["end_ms"]) == (WINDOW.end_ms - 300_000, WINDOW.end_ms)
    else:
        assert (params["start_ms"], params["end_ms"]) == (WINDOW.start_ms, WINDOW.end_ms)
    limit = re.search(r"LIMIT (\d+)$", sql)
    assert limit is not None and 0 < int(limit.group(1)) <= 100_000
    # Every placeholder has a value and every value a placeholder; no value is in the text.
    assert set(re.findall(r"%\((\w+)\)s", sql)) == set(params)
    assert str(WINDOW.start_ms) not in sql
    assert "%" not in re.sub(r"%\(\w+\)s", "", sql)


def test_consumer_view_is_scoped_ops_and_product_are_not() -> None:
    for panel in queries.consumer_view(CLAIMS, WINDOW):
        assert panel.query.params["consumer"] == "acme"
    for panel in [
        *queries.ops_view(WINDOW),
        *queries.product_view(WINDOW),
        *queries.health_view(WINDOW),
    ]:
        assert "consumer" not in panel.query.params
        assert "%(consumer)s" not in panel.query.sql


def test_only_the_panels_of_tables_a_deployment_may_lack_are_optional() -> None:
    optional = ("actions", "period_usage", "dead_letters", "reconciliation")
    for panel in _all_panels():
        assert panel.optional == (panel.table in optional)


def test_the_billing_panel_reads_the_tokens_subject_in_its_month() -> None:
    (panel,) = [p for p in queries.consumer_view(CLAIMS, WINDOW) if p.key == "billing"]
    assert "AND subject = %(consumer)s" in panel.query.sql
    assert panel.query.params["consumer"] == "acme"
    assert panel.query.sql.endswith("subject = %(consumer)s AND period = %(period)s LIMIT 1")
    # The whole month of the window's end: the row carries the latest window of the period.
    assert panel.query.params["period"] == "2026-05"
    assert (panel.query.params["start_ms"], panel.query.params["end_ms"]) == (
        1_777_593_600_000,
        1_780_272_000_000,
    )


def test_a_past_range_in_the_month_still_finds_the_months_row() -> None:
    early = queries.window_of_days(date(2026, 5, 1), date(2026, 5, 3))
    (panel,) = [p for p in queries.consumer_view(CLAIMS, early) if p.key == "billing"]
    assert panel.query.params["period"] == "2026-05"
    assert panel.query.params["end_ms"] == 1_780_272_000_000  # June 1st, not May 4th


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


# --- pipeline health ----------------------------------------------------------------------------


def test_the_health_view_has_its_three_panels() -> None:
    panels = {p.key: p for p in queries.health_view(WINDOW)}
    assert list(panels) == ["freshness", "dead_letters", "reconciliation"]
    assert panels["freshness"].table == queries.EVENTS == "api_events"
    assert panels["dead_letters"].table == queries.DEAD_LETTERS == "dead_letters"
    assert panels["reconciliation"].table == queries.RECONCILIATION == "reconciliation"
    # Over the range's last five minutes: a re-ingest of old events an hour ago is not freshness.
    assert panels["freshness"].query == queries.freshness(
        Window(WINDOW.end_ms - 300_000, WINDOW.end_ms)
    )
    assert panels["dead_letters"].query == queries.dead_letter_rates(WINDOW)
    assert panels["reconciliation"].query == queries.reconciliation_status(WINDOW)


def test_freshness_is_ingest_minus_event_time_over_events_ingested_in_the_window() -> None:
    query = queries.freshness(WINDOW)
    assert query.sql.startswith("SELECT COUNT(*) AS events, ")
    for p in (50, 95, 99):
        assert f"PERCENTILETDIGEST(ingested_at - event_time, {p}) AS p{p}_ms" in query.sql
    assert "MAX(ingested_at) AS newest_ingested_at" in query.sql
    assert "WHERE ingested_at >= %(start_ms)s AND ingested_at < %(end_ms)s" in query.sql
    assert "GROUP BY" not in query.sql and query.sql.endswith(" LIMIT 1")
    assert query.params == {"start_ms": WINDOW.start_ms, "end_ms": WINDOW.end_ms}


@pytest.mark.parametrize(
    ("span_ms", "unit"),
    [(3_600_000, "MINUTE"), (DAY_MS, "HOUR"), (7 * DAY_MS, "HOUR"), (30 * DAY_MS, "DAY")],
)
def test_dead_letters_per_reason_per_bucket_of_the_window(span_ms: int, unit: str) -> None:
    window = Window(NOW_MS - span_ms, NOW_MS)
    query = queries.dead_letter_rates(window)
    assert query.sql.startswith(
        f"SELECT reason, DATETRUNC('{unit}', dead_lettered_at) AS bucket_start, "
        "COUNT(*) AS dead_letters FROM dead_letters WHERE "
    )
    assert f"GROUP BY reason, DATETRUNC('{unit}', dead_lettered_at)" in query.sql
    assert query.sql.endswith(f"ORDER BY bucket_start, reason LIMIT {kpi.ROW_LIMIT}")
    assert query.params == {"start_ms": window.start_ms, "end_ms": window.end_ms}
    # No payload: ops need counts and coordinates, and the table does not hold it.
    assert "payload" not in query.sql


def test_reconciliation_sums_the_latest_intervals_and_counts_the_unbalanced() -> None:
    query = queries.reconciliation_status(WINDOW)
    assert query.sql.startswith("SELECT COUNT(*) AS intervals, ")
    assert (
        "SUM(CASE WHEN entries_in <> enriched_out + dead_lettered + deduplicated "
        "THEN 1 ELSE 0 END) AS unbalanced" in query.sql
    )
    for column in (
        "records_in",
        "entries_in",
        "enriched_out",
        "dead_lettered",
        "deduplicated",
        "late",
    ):
        assert f"SUM({column}) AS {column}" in query.sql
    assert "WHERE interval_start >= %(start_ms)s AND interval_start < %(end_ms)s" in query.sql
    assert "GROUP BY" not in query.sql and query.sql.endswith(" LIMIT 1")


def test_health_queries_refuse_bad_windows() -> None:
    for bad in (Window(NOW_MS, NOW_MS), Window(NOW_MS - 40 * DAY_MS, NOW_MS)):
        for build in (
            queries.freshness,
            queries.dead_letter_rates,
            queries.reconciliation_status,
            queries.health_view,
        ):
            with pytest.raises(KpiError):
                build(bad)


def test_whole_utc_days_from_a_link() -> None:
    from datetime import date

    days = queries.days_from_params({"from": "2026-01-01", "to": "2026-01-31"})
    assert days == (date(2026, 1, 1), date(2026, 1, 31))
    assert queries.window_of_days(*days) == queries.Window(1_767_225_600_000, 1_769_904_000_000)
    # `to` defaults to `from`: one day.
    (first, last) = queries.days_from_params({"from": "2026-01-01"}) or ()
    assert queries.window_of_days(first, last).end_ms - 1_767_225_600_000 == DAY_MS
    assert queries.days_from_params({}) is None
    for bad in ({"from": "yesterday"}, {"from": "2026-01-01", "to": "2026-03-01"}):
        with pytest.raises(KpiError):
            queries.days_from_params(bad)
    with pytest.raises(KpiError):  # backwards
        queries.days_from_params({"from": "2026-01-02", "to": "2026-01-01"})
