"""The dashboard's Pinot queries: SQL templates and their bound parameters, per view.

The KPIs reuse ``metering.kpi``'s builders (the same SQL as ``python -m jobs.kpi``); the feeds,
top lists and growth series follow its rules: constant SQL text with ``%(name)s`` placeholders,
values passed separately for the driver to quote, every query bounded by a time range on the
table's time column and by a LIMIT.

The consumer view's builders take ``PortalClaims`` (made only by ``tokens.verify_token``), not
a consumer name: its consumer filter can only come from a verified token.

Pure: no Pinot connection, no clock (the window is a parameter), so it is unit-tested alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from dashboard.tokens import PortalClaims
from metering import kpi
from metering.billing.periods import bounds, period_of
from metering.kpi import KpiError, KpiRequest, Query, check_request

EVENTS = kpi.TABLE
ALERTS = "alerts"
ACTIONS = "actions"
PERIOD_USAGE = kpi.PERIOD_USAGE_TABLE
DEAD_LETTERS = "dead_letters"
RECONCILIATION = "reconciliation"
# Pinot answers a null as its column's default (0, "null") unless the query asks otherwise.
NULL_HANDLING = "enableNullHandling=true"
# Feeds and top lists are read by people: a few hundred rows at most.
FEED_LIMIT = 200
TOP_LIMIT = 20
# Countries (ISO codes) plus the unknown bucket: a few hundred at most.
COUNTRY_LIMIT = 300
# The longest window any view queries: a month and a day (month-to-date across a long month).
MAX_SPAN_MS = 31 * 86_400_000
# Freshness is read over the events ingested in the last few minutes of the range.
FRESHNESS_SPAN_MS = 5 * 60_000
# Windows end on this grid so that viewers refreshing at the same time share cached results.
ALIGN_MS = 5_000
SPANS_MS = {
    "last hour": 3_600_000,
    "last 24 hours": 86_400_000,
    "last 7 days": 7 * 86_400_000,
    "last 30 days": 30 * 86_400_000,
}
DEFAULT_SPAN = "last 24 hours"
# The choice beside the spans: whole UTC days, picked or given by ``?from=&to=`` in the link.
DAYS = "days (UTC)"


@dataclass(frozen=True)
class Window:
    """A query time range on the table's time column: ``[start_ms, end_ms)``, epoch ms."""

    start_ms: int
    end_ms: int


@dataclass(frozen=True)
class Panel:
    """One query of a view: what it shows, on which table, and whether that table is optional
    (``actions`` exists only once the responder's table is created)."""

    key: str
    title: str
    table: str
    query: Query
    optional: bool = False


def window_ending(now_ms: int, span_ms: int, align_ms: int = ALIGN_MS) -> Window:
    """The window of ``span_ms`` ending at ``now_ms`` rounded up to the ``align_ms`` grid."""
    end = -(-now_ms // align_ms) * align_ms
    return check_window(Window(end - span_ms, end))


def window_of_days(first: date, last: date) -> Window:
    """The UTC days ``first`` to ``last``, both whole: a past month's range stays comparable
    with an invoice, whatever the time of day."""
    start = datetime.combine(first, time(), UTC)
    end = datetime.combine(last + timedelta(days=1), time(), UTC)
    return check_window(Window(int(start.timestamp() * 1000), int(end.timestamp() * 1000)))


def days_from_params(params: Mapping[str, str]) -> tuple[date, date] | None:
    """The days of a link's ``from`` and ``to`` parameters (``YYYY-MM-DD``; ``to`` defaults to
    ``from``), or None when the link has no ``from``; ``KpiError`` if they are not dates."""
    first = params.get("from")
    if not first:
        return None
    try:
        days = (date.fromisoformat(first), date.fromisoformat(params.get("to") or first))
    except ValueError:
        raise KpiError("from and to must be dates, YYYY-MM-DD") from None
    window_of_days(*days)
    return days


def check_window(window: Window) -> Window:
    """The window if it is non-empty and no longer than ``MAX_SPAN_MS``."""
    if window.end_ms <= window.start_ms:
        raise KpiError(f"empty window: {window.start_ms} is not before {window.end_ms}")
    if window.end_ms - window.start_ms > MAX_SPAN_MS:
        raise KpiError(f"window longer than {MAX_SPAN_MS // 86_400_000} days")
    return window


def bucket_for(window: Window) -> str:
    """The time bucket that gives a readable series: minutes up to 3 hours, hours up to 7
    days, days beyond."""
    span = window.end_ms - window.start_ms
    if span <= 3 * 3_600_000:
        return "minute"
    if span <= 7 * 86_400_000:
        return "hour"
    return "day"


def _request(window: Window, consumer: str | None = None, bucket: str = "hour") -> KpiRequest:
    check_window(window)
    return check_request(KpiRequest(window.start_ms, window.end_ms, consumer, bucket))


def _time_where(column: str, window: Window, consumer: str | None) -> tuple[str, dict[str, object]]:
    """``column`` in the window, and the consumer filter if one is given (always a parameter)."""
    req = _request(window, consumer)
    clauses = [f"{column} >= %(start_ms)s", f"{column} < %(end_ms)s"]
    params: dict[str, object] = {"start_ms": req.start_ms, "end_ms": req.end_ms}
    if req.consumer is not None:
        clauses.append("consumer = %(consumer)s")
        params["consumer"] = req.consumer
    return " AND ".join(clauses), params


def alerts_feed(window: Window, consumer: str | None = None, limit: int = FEED_LIMIT) -> Query:
    """The newest alerts detected in the window (the table keeps each alert's latest state)."""
    where, params = _time_where("detected_at", window, consumer)
    return Query(
        "SELECT CAST(detected_at AS LONG) AS detected_at, rule, severity, status, consumer, "
        "key_fingerprint, observed_count, expected_count, score, summary, alert_id "
        f"FROM {ALERTS} WHERE {where} ORDER BY detected_at DESC LIMIT {int(limit)}",
        params,
    )


def actions_feed(window: Window, consumer: str | None = None, limit: int = FEED_LIMIT) -> Query:
    """The newest responder actions recorded in the window. A consumer's feed leaves out the
    target and reason, which name gateway internals rather than the consumer's own keys."""
    where, params = _time_where("recorded_at", window, consumer)
    columns = (
        "action, outcome, rule, severity, key_fingerprint, dry_run"
        if consumer is not None
        else "action, outcome, target, rule, severity, consumer, key_fingerprint, alert_id, "
        "dry_run, reason"
    )
    return Query(
        f"SELECT CAST(recorded_at AS LONG) AS recorded_at, {columns} "
        f"FROM {ACTIONS} WHERE {where} ORDER BY recorded_at DESC LIMIT {int(limit)}",
        params,
    )


def alert_count(window: Window, consumer: str | None = None) -> Query:
    """How many alert records were detected in the window (one row)."""
    where, params = _time_where("detected_at", window, consumer)
    return Query(f"SELECT COUNT(*) AS alerts FROM {ALERTS} WHERE {where} LIMIT 1", params)


def usage_summary(window: Window, consumer: str | None = None) -> Query:
    """Calls, billable units and errors over the whole window (one row)."""
    where, params = _time_where("event_time", window, consumer)
    return Query(
        "SELECT COUNT(*) AS calls, SUM(units) AS units, "
        "SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END) AS errors "
        f"FROM {EVENTS} WHERE {where} LIMIT 1",
        params,
    )


def daily_growth(window: Window) -> Query:
    """Calls, active consumers and distinct callers per UTC day."""
    where, params = _time_where("event_time", window, None)
    return Query(
        "SELECT DATETRUNC('DAY', event_time) AS day, COUNT(*) AS calls, "
        "DISTINCTCOUNT(consumer) AS consumers, DISTINCTCOUNT(client_hash) AS callers "
        f"FROM {EVENTS} WHERE {where} "
        f"GROUP BY DATETRUNC('DAY', event_time) ORDER BY day LIMIT {kpi.ROW_LIMIT}",
        params,
    )


def top_routes(window: Window, limit: int = TOP_LIMIT) -> Query:
    """The busiest routes: calls, distinct consumers and distinct callers."""
    where, params = _time_where("event_time", window, None)
    return Query(
        "SELECT route, COUNT(*) AS calls, DISTINCTCOUNT(consumer) AS consumers, "
        "DISTINCTCOUNT(client_hash) AS callers "
        f"FROM {EVENTS} WHERE {where} "
        f"GROUP BY route ORDER BY calls DESC, route LIMIT {int(limit)}",
        params,
    )


def top_consumers(window: Window, limit: int = TOP_LIMIT) -> Query:
    """The busiest consumers: calls, billable units and distinct routes."""
    where, params = _time_where("event_time", window, None)
    return Query(
        "SELECT consumer, COUNT(*) AS calls, SUM(units) AS units, "
        "DISTINCTCOUNT(route) AS routes "
        f"FROM {EVENTS} WHERE {where} "
        f"GROUP BY consumer ORDER BY calls DESC, consumer LIMIT {int(limit)}",
        params,
    )


def country_points(window: Window, limit: int = COUNTRY_LIMIT) -> Query:
    """Per country, its calls and the mean position of its geolocated callers: the map's
    points, with no country-centroid table to ship."""
    where, params = _time_where("event_time", window, None)
    return Query(
        "SELECT country, COUNT(*) AS calls, AVG(latitude) AS lat, AVG(longitude) AS lon "
        f"FROM {EVENTS} WHERE {where} AND latitude IS NOT NULL AND longitude IS NOT NULL "
        f"GROUP BY country ORDER BY calls DESC, country LIMIT {int(limit)}",
        params,
    )


def period_usage(window: Window, consumer: str) -> Query:
    """The consumer's priced usage in the billing period (UTC month) that holds the window's
    end, as the job's billing stage last wrote it. An upsert table keeps one row per subject and
    period, stamped with its latest window: so the row is found by its period, bounded by that
    whole month on the table's time column (a past range in the current month still shows the
    month so far)."""
    start_ms, end_ms = bounds(period_of(window.end_ms - 1))
    where, params = _time_where("latest_window_start", Window(start_ms, end_ms), None)
    params["consumer"] = _request(window, consumer).consumer
    params["period"] = period_of(window.end_ms - 1)
    return Query(
        "SELECT period, currency, calls, units, unpriced_calls, amount, included_units, "
        "hard_limit, balance, segments, repricing_needed "
        f"FROM {PERIOD_USAGE} WHERE {where} AND subject = %(consumer)s "
        # No ORDER BY: Pinot 0.11 reads nulls as defaults in ordered selections.
        "AND period = %(period)s LIMIT 1",
        params,
        # No quota and no balance are nulls, not zeros.
        NULL_HANDLING,
    )


def consumer_view(claims: PortalClaims, window: Window) -> list[Panel]:
    """A consumer's panels, every one filtered to ``claims.consumer`` as a bound parameter."""
    consumer = claims.consumer
    over_time = _request(window, consumer, bucket_for(window))
    req = _request(window, consumer)
    return [
        Panel("summary", "Usage", EVENTS, usage_summary(window, consumer)),
        Panel("alert_count", "Alerts", ALERTS, alert_count(window, consumer)),
        Panel("calls_over_time", "Calls over time", EVENTS, kpi.calls_over_time(over_time)),
        Panel("routes", "Calls and errors per route", EVENTS, kpi.error_rate_by_route(req)),
        Panel("latency", "Latency per route (ms)", EVENTS, kpi.latency_by_route(req)),
        Panel("errors", "Errors per route and status", EVENTS, kpi.errors_by_route_status(req)),
        Panel("alerts", "Alerts on your keys", ALERTS, alerts_feed(window, consumer)),
        Panel(
            "actions",
            "Responder actions on your keys",
            ACTIONS,
            actions_feed(window, consumer),
            optional=True,
        ),
        # Optional: a deployment without billing has no such table.
        Panel(
            "billing",
            "Quota, bill and balance",
            PERIOD_USAGE,
            period_usage(window, consumer),
            optional=True,
        ),
    ]


def ops_view(window: Window) -> list[Panel]:
    """The five KPIs across all consumers, the live alerts feed and the responder's actions."""
    req = _request(window, None, bucket_for(window))
    return [
        Panel("summary", "Traffic", EVENTS, usage_summary(window)),
        Panel("alert_count", "Alerts", ALERTS, alert_count(window)),
        Panel("calls", "Calls per consumer over time", EVENTS, kpi.calls_over_time(req)),
        Panel("latency", "Latency p50/p95/p99 per route (ms)", EVENTS, kpi.latency_by_route(req)),
        Panel(
            "unique_callers",
            "Unique callers per route",
            EVENTS,
            kpi.unique_callers_by_route(req),
        ),
        Panel("countries", "Calls by country", EVENTS, kpi.calls_by_country(req)),
        Panel("country_points", "Where calls come from", EVENTS, country_points(window)),
        Panel(
            "error_rate", "Errors and error rate per route", EVENTS, kpi.error_rate_by_route(req)
        ),
        Panel("errors", "Errors per route and status", EVENTS, kpi.errors_by_route_status(req)),
        Panel("alerts", "Live alerts", ALERTS, alerts_feed(window)),
        Panel("actions", "Actions taken", ACTIONS, actions_feed(window), optional=True),
    ]


def product_view(window: Window) -> list[Panel]:
    """Top routes and consumers, growth per day, and the country distribution."""
    req = _request(window)
    return [
        Panel("growth", "Growth: calls per day", EVENTS, daily_growth(window)),
        Panel("top_routes", "Top routes", EVENTS, top_routes(window)),
        Panel("top_consumers", "Top consumers", EVENTS, top_consumers(window)),
        Panel("countries", "Country distribution", EVENTS, kpi.calls_by_country(req)),
    ]


# --- pipeline health (the ops view) ---------------------------------------------------------------


def freshness(window: Window) -> Query:
    """Events ingested in the window (one row): how many, the p50/p95/p99 of event to queryable
    (``ingested_at - event_time``, ms; ``ingested_at`` is stamped by Pinot's ingestion transform
    ``now()`` when a server consumes the event) and the newest ingest (epoch ms). The window is on
    ``ingested_at``: rows ingested before that column existed hold its default (Long.MIN_VALUE)
    and fall outside every window. With no event in the window Pinot 0.11 answers one row of
    ``events`` 0, percentiles ``'NaN'`` and newest ``'-Infinity'`` (text, through pinotdb), or no
    row and no columns while the table has no segment yet."""
    where, params = _time_where("ingested_at", window, None)
    percentiles = ", ".join(
        f"PERCENTILETDIGEST(ingested_at - event_time, {p}) AS p{p}_ms" for p in kpi.PERCENTILES
    )
    return Query(
        f"SELECT COUNT(*) AS events, {percentiles}, MAX(ingested_at) AS newest_ingested_at "
        f"FROM {EVENTS} WHERE {where} LIMIT 1",
        params,
    )


def dead_letter_rates(window: Window) -> Query:
    """Dead letters per reason and time bucket (``bucket_for(window)``), by when they were
    dead-lettered; a reason's total is the sum over its buckets."""
    where, params = _time_where("dead_lettered_at", window, None)
    unit = kpi.BUCKETS[bucket_for(window)]
    return Query(
        f"SELECT reason, DATETRUNC('{unit}', dead_lettered_at) AS bucket_start, "
        "COUNT(*) AS dead_letters "
        f"FROM {DEAD_LETTERS} WHERE {where} "
        f"GROUP BY reason, DATETRUNC('{unit}', dead_lettered_at) "
        f"ORDER BY bucket_start, reason LIMIT {kpi.ROW_LIMIT}",
        params,
    )


def reconciliation_status(window: Window) -> Query:
    """The reconciliation intervals that start in the window (one row): their counts summed,
    how many there are, and how many do not balance (entries in != enriched out +
    dead-lettered + deduplicated). The table is an upsert: each interval's latest record. No
    interval in the window: ``intervals`` 0 and every sum 0.0."""
    where, params = _time_where("interval_start", window, None)
    return Query(
        "SELECT COUNT(*) AS intervals, "
        "SUM(CASE WHEN entries_in <> enriched_out + dead_lettered + deduplicated "
        "THEN 1 ELSE 0 END) AS unbalanced, "
        "SUM(records_in) AS records_in, SUM(entries_in) AS entries_in, "
        "SUM(enriched_out) AS enriched_out, SUM(dead_lettered) AS dead_lettered, "
        "SUM(deduplicated) AS deduplicated, SUM(late) AS late "
        f"FROM {RECONCILIATION} WHERE {where} LIMIT 1",
        params,
    )


def recent(window: Window, span_ms: int = FRESHNESS_SPAN_MS) -> Window:
    """The last ``span_ms`` of the window: freshness is about now, and over a day it would
    also count events ingested again after a table was re-created, at their re-ingest lag."""
    return Window(max(window.start_ms, window.end_ms - span_ms), window.end_ms)


def health_view(window: Window) -> list[Panel]:
    """Pipeline health: freshness of ``api_events``, dead letters per reason, reconciliation.
    The dead-letter and reconciliation tables are optional (a deployment may not create them)."""
    return [
        Panel("freshness", "Freshness", EVENTS, freshness(recent(window))),
        Panel(
            "dead_letters",
            "Dead letters per reason",
            DEAD_LETTERS,
            dead_letter_rates(window),
            optional=True,
        ),
        Panel(
            "reconciliation",
            "Reconciliation: entries in = enriched out + dead-lettered + deduplicated",
            RECONCILIATION,
            reconciliation_status(window),
            optional=True,
        ),
    ]
