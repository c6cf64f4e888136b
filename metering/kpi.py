"""The KPI queries over the Pinot ``api_events`` table: what an API business asks of its traffic.

Every query is a constant SQL template with ``%(name)s`` placeholders; values travel separately
and the driver (pinotdb, DB-API ``pyformat``) quotes them. The only variable parts of the SQL
text are chosen from fixed tables here (the time bucket, whether a consumer filter applies),
never taken from user input.

Pure: no Pinot connection here (``jobs/kpi.py`` runs the queries), so it is unit-tested
without a JVM.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

TABLE = "api_events"
# Enough rows for any of these group-bys over a month of one tenant's routes; Pinot's default
# LIMIT is 10, which would silently truncate a group-by.
ROW_LIMIT = 100_000
PERCENTILES = (50, 95, 99)
# Pinot's DATETRUNC units, by the CLI's bucket names.
BUCKETS = {"minute": "MINUTE", "hour": "HOUR", "day": "DAY"}
MAX_CONSUMER_CHARS = 256


class KpiError(ValueError):
    """A KPI request that cannot be answered as asked (bad time range, bad consumer, ...)."""


@dataclass(frozen=True)
class KpiRequest:
    start_ms: int
    """Inclusive lower bound on event_time, epoch ms."""
    end_ms: int
    """Exclusive upper bound on event_time, epoch ms."""
    consumer: str | None = None
    bucket: str = "hour"


@dataclass(frozen=True)
class Query:
    sql: str
    params: dict[str, Any] = field(default_factory=dict)
    options: str | None = None
    """Pinot query options (``name=value;…``), e.g. null handling for a table with nulls."""


@dataclass(frozen=True)
class Kpi:
    name: str
    description: str
    build: Callable[[KpiRequest], Query]
    columns: tuple[str, ...]


def parse_time(value: str) -> int:
    """Epoch ms from epoch ms digits or an ISO 8601 timestamp (naive means UTC)."""
    text = value.strip()
    if text.isdigit():
        return int(text)
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise KpiError(f"not a time: {value!r} (use epoch ms or ISO 8601)") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


def month_start_ms(at_ms: int) -> int:
    """Start of the UTC calendar month that contains ``at_ms``."""
    at = datetime.fromtimestamp(at_ms / 1000, tz=UTC)
    return int(at.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp() * 1000)


def check_request(req: KpiRequest) -> KpiRequest:
    if req.end_ms <= req.start_ms:
        raise KpiError(f"empty time range: from {req.start_ms} is not before to {req.end_ms}")
    if req.bucket not in BUCKETS:
        raise KpiError(f"bucket must be one of {sorted(BUCKETS)}, not {req.bucket!r}")
    if req.consumer is not None:
        # pinotdb passes a bare "*" through unquoted; nothing else needs refusing, since it
        # quotes every other string, but a consumer name is never empty, huge or multi-line.
        bad = (
            not req.consumer
            or req.consumer == "*"
            or len(req.consumer) > MAX_CONSUMER_CHARS
            or any(ord(c) < 32 for c in req.consumer)
        )
        if bad:
            raise KpiError(f"not a consumer name: {req.consumer!r}")
    return req


def _where(req: KpiRequest, *extra: str) -> tuple[str, dict[str, Any]]:
    clauses = ["event_time >= %(start_ms)s", "event_time < %(end_ms)s", *extra]
    params: dict[str, Any] = {"start_ms": req.start_ms, "end_ms": req.end_ms}
    if req.consumer is not None:
        clauses.append("consumer = %(consumer)s")
        params["consumer"] = req.consumer
    return " AND ".join(clauses), params


def calls_over_time(req: KpiRequest) -> Query:
    where, params = _where(req)
    unit = BUCKETS[req.bucket]
    return Query(
        f"SELECT consumer, DATETRUNC('{unit}', event_time) AS bucket_start, "
        "COUNT(*) AS calls, SUM(units) AS units "
        f"FROM {TABLE} WHERE {where} "
        f"GROUP BY consumer, DATETRUNC('{unit}', event_time) "
        f"ORDER BY bucket_start, consumer LIMIT {ROW_LIMIT}",
        params,
    )


def latency_by_route(req: KpiRequest) -> Query:
    where, params = _where(req, "latency_ms IS NOT NULL")
    percentiles = ", ".join(f"PERCENTILETDIGEST(latency_ms, {p}) AS p{p}_ms" for p in PERCENTILES)
    return Query(
        f"SELECT route, COUNT(*) AS calls, {percentiles} "
        f"FROM {TABLE} WHERE {where} "
        f"GROUP BY route ORDER BY route LIMIT {ROW_LIMIT}",
        params,
    )


def unique_callers_by_route(req: KpiRequest) -> Query:
    where, params = _where(req)
    return Query(
        "SELECT route, DISTINCTCOUNT(client_hash) AS unique_callers, COUNT(*) AS calls "
        f"FROM {TABLE} WHERE {where} "
        f"GROUP BY route ORDER BY route LIMIT {ROW_LIMIT}",
        params,
    )


def calls_by_country(req: KpiRequest) -> Query:
    where, params = _where(req)
    return Query(
        "SELECT country, COUNT(*) AS calls, DISTINCTCOUNT(client_hash) AS unique_callers "
        f"FROM {TABLE} WHERE {where} "
        f"GROUP BY country ORDER BY calls DESC, country LIMIT {ROW_LIMIT}",
        params,
    )


def errors_by_route_status(req: KpiRequest) -> Query:
    where, params = _where(req, "status >= 400")
    return Query(
        "SELECT route, status, COUNT(*) AS errors "
        f"FROM {TABLE} WHERE {where} "
        f"GROUP BY route, status ORDER BY route, status LIMIT {ROW_LIMIT}",
        params,
    )


def error_rate_by_route(req: KpiRequest) -> Query:
    where, params = _where(req)
    return Query(
        "SELECT route, COUNT(*) AS calls, "
        "SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END) AS errors, "
        "SUM(CASE WHEN status >= 500 THEN 1 ELSE 0 END) AS server_errors "
        f"FROM {TABLE} WHERE {where} "
        f"GROUP BY route ORDER BY route LIMIT {ROW_LIMIT}",
        params,
    )


def month_to_date_usage(req: KpiRequest) -> Query:
    """From the start of the UTC month that holds ``end_ms`` up to ``end_ms``; ignores start."""
    mtd = KpiRequest(month_start_ms(req.end_ms - 1), req.end_ms, req.consumer, req.bucket)
    where, params = _where(mtd)
    return Query(
        "SELECT consumer, COUNT(*) AS calls, SUM(units) AS units, "
        "SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END) AS errors "
        f"FROM {TABLE} WHERE {where} "
        f"GROUP BY consumer ORDER BY consumer LIMIT {ROW_LIMIT}",
        params,
    )


PERIOD_USAGE_TABLE = "period_usage"


def billing_estimate(req: KpiRequest) -> Query:
    """Each subject's priced usage in the UTC month that holds ``end_ms`` so far, as the job's
    billing stage last wrote it (the upsert table keeps one row per subject and period);
    ``--consumer`` names one subject. The amount is exact (rounded only on the invoice)."""
    period = datetime.fromtimestamp((req.end_ms - 1) / 1000, tz=UTC).strftime("%Y-%m")
    clauses = ["period = %(period)s"]
    params: dict[str, Any] = {"period": period}
    if req.consumer is not None:
        clauses.append("subject = %(consumer)s")
        params["consumer"] = req.consumer
    return Query(
        "SELECT subject, period, currency, calls, units, unpriced_calls, amount, "
        "latest_window_start "
        f"FROM {PERIOD_USAGE_TABLE} WHERE {' AND '.join(clauses)} "
        f"ORDER BY subject LIMIT {ROW_LIMIT}",
        params,
    )


KPIS: dict[str, Kpi] = {
    k.name: k
    for k in (
        Kpi(
            "calls",
            "calls and billable units per consumer per time bucket",
            calls_over_time,
            ("consumer", "bucket_start", "calls", "units"),
        ),
        Kpi(
            "latency",
            "latency p50/p95/p99 (ms, t-digest) per route",
            latency_by_route,
            ("route", "calls", *(f"p{p}_ms" for p in PERCENTILES)),
        ),
        Kpi(
            "unique-callers",
            "distinct callers (hashed client IP) per route",
            unique_callers_by_route,
            ("route", "unique_callers", "calls"),
        ),
        Kpi(
            "geo",
            "calls and distinct callers per country",
            calls_by_country,
            ("country", "calls", "unique_callers"),
        ),
        Kpi(
            "errors",
            "error responses (status >= 400) per route and status",
            errors_by_route_status,
            ("route", "status", "errors"),
        ),
        Kpi(
            "error-rate",
            "calls, errors (>= 400) and server errors (>= 500) per route; rates derived",
            error_rate_by_route,
            ("route", "calls", "errors", "server_errors", "error_rate"),
        ),
        Kpi(
            "mtd-usage",
            "month-to-date calls, billable units and errors per consumer (UTC month of --to)",
            month_to_date_usage,
            ("consumer", "calls", "units", "errors"),
        ),
        Kpi(
            "billing-estimate",
            "period-to-date calls, units and exact amount per subject (UTC month of --to), "
            "from the billing stage's period usage",
            billing_estimate,
            ("subject", "period", "currency", "calls", "units", "unpriced_calls", "amount"),
        ),
    )
}


INTEGRAL = ("calls", "errors", "server_errors", "unique_callers", "status")
"""Columns that are counts, which Pinot may return as floats."""
BILLED_COUNTS = ("units", "unpriced_calls")
"""The billing estimate's other counts (the enriched events' units are gateway-reported
numbers, not counts)."""


def shape_rows(
    kpi: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> list[dict[str, Any]]:
    """Result rows as dicts, with derived columns (the error rate) and integral counts as int."""
    out: list[dict[str, Any]] = []
    for row in rows:
        item = dict(zip(columns, row, strict=True))
        counts = INTEGRAL + (BILLED_COUNTS if kpi == "billing-estimate" else ())
        for name in counts:
            if isinstance(item.get(name), float) and float(item[name]).is_integer():
                item[name] = int(item[name])
        if kpi == "calls" and item.get("bucket_start") is not None:
            item["bucket_start"] = int(item["bucket_start"])
        if kpi == "billing-estimate" and item.get("amount") is not None:
            # Money as exact text: never through a binary float.
            item["amount"] = str(Decimal(str(item["amount"])))
        if kpi == "error-rate":
            calls = item.get("calls") or 0
            item["error_rate"] = round(item["errors"] / calls, 6) if calls else 0.0
        out.append(item)
    return out


def format_table(columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> str:
    """A plain aligned text table (numbers right-aligned)."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3f}".rstrip("0").rstrip(".") if not v.is_integer() else str(int(v))
        return "" if v is None else str(v)

    cells = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    numeric = [
        all(isinstance(r.get(c), int | float) for r in rows if r.get(c) is not None) and rows
        for c in columns
    ]
    lines = [
        "  ".join(
            c.rjust(w) if n else c.ljust(w)
            for c, w, n in zip(columns, widths, numeric, strict=True)
        )
    ]
    lines.append("  ".join("-" * w for w in widths))
    for row in cells:
        lines.append(
            "  ".join(
                v.rjust(w) if n else v.ljust(w)
                for v, w, n in zip(row, widths, numeric, strict=True)
            ).rstrip()
        )
    return "\n".join(lines)
