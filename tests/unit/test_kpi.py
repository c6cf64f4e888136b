"""KPI query layer (metering/kpi.py): parameterized SQL, time handling, result shaping."""

from __future__ import annotations

import re

import pytest
from pinotdb.db import apply_parameters

from metering.kpi import (
    KPIS,
    KpiError,
    KpiRequest,
    check_request,
    format_table,
    month_start_ms,
    parse_time,
    shape_rows,
)

JAN_2026 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
HOSTILE = "acme' OR '1'='1' --"


def test_parse_time_takes_epoch_ms_and_iso_8601_with_naive_meaning_utc() -> None:
    assert parse_time("1767225600000") == JAN_2026
    assert parse_time("2026-01-01T00:00:00Z") == JAN_2026
    assert parse_time("2026-01-01T00:00:00") == JAN_2026
    assert parse_time("2026-01-01T01:00:00+01:00") == JAN_2026
    with pytest.raises(KpiError, match="not a time"):
        parse_time("yesterday")


def test_month_start_is_the_utc_month_holding_the_instant() -> None:
    assert month_start_ms(JAN_2026) == JAN_2026
    assert month_start_ms(parse_time("2026-01-31T23:59:59.999Z")) == JAN_2026
    assert month_start_ms(parse_time("2026-02-01T00:00:00Z")) == parse_time("2026-02-01")


@pytest.mark.parametrize(
    ("req", "message"),
    [
        (KpiRequest(10, 10), "empty time range"),
        (KpiRequest(10, 5), "empty time range"),
        (KpiRequest(0, 10, bucket="week"), "bucket"),
        (KpiRequest(0, 10, consumer=""), "not a consumer"),
        (KpiRequest(0, 10, consumer="*"), "not a consumer"),
        (KpiRequest(0, 10, consumer="a\nb"), "not a consumer"),
        (KpiRequest(0, 10, consumer="x" * 257), "not a consumer"),
    ],
)
def test_unanswerable_requests_are_refused(req: KpiRequest, message: str) -> None:
    with pytest.raises(KpiError, match=message):
        check_request(req)


@pytest.mark.parametrize("name", sorted(KPIS))
def test_values_never_enter_the_sql_text(name: str) -> None:
    req = KpiRequest(JAN_2026, JAN_2026 + 3_600_000, consumer=HOSTILE)
    query = KPIS[name].build(check_request(req))
    assert HOSTILE not in query.sql and str(JAN_2026 + 3_600_000) not in query.sql
    assert query.params["consumer"] == HOSTILE
    assert set(re.findall(r"%\((\w+)\)s", query.sql)) == set(query.params)
    # What the driver sends: the hostile name is one quoted literal, its quotes doubled.
    sent = apply_parameters(query.sql, query.params)
    column = "subject" if name == "billing-estimate" else "consumer"
    assert f"{column} = 'acme'' OR ''1''=''1'' --'" in sent
    assert sent.count(f"{column} = ") == 1


EVENT_KPIS = sorted(k for k in KPIS if k != "billing-estimate")


@pytest.mark.parametrize("name", EVENT_KPIS)
def test_every_query_is_bounded_in_time_and_rows(name: str) -> None:
    query = KPIS[name].build(KpiRequest(JAN_2026, JAN_2026 + 1000))
    assert "event_time >= %(start_ms)s AND event_time < %(end_ms)s" in query.sql
    assert query.sql.endswith("LIMIT 100000")
    assert "consumer = " not in query.sql


def test_month_to_date_starts_at_the_month_of_to_whatever_from_says() -> None:
    end = parse_time("2026-03-15T12:00:00Z")
    query = KPIS["mtd-usage"].build(KpiRequest(0, end))
    assert query.params == {"start_ms": parse_time("2026-03-01"), "end_ms": end}


def test_the_billing_estimate_reads_the_period_of_to_from_the_upsert_table() -> None:
    end = parse_time("2026-03-01T00:00:00Z")  # exclusive: the last instant is in February
    query = KPIS["billing-estimate"].build(KpiRequest(0, end))
    assert query.params == {"period": "2026-02"}
    assert "FROM period_usage WHERE period = %(period)s ORDER BY subject" in query.sql
    assert query.sql.endswith("LIMIT 100000") and "subject = " not in query.sql
    rows = shape_rows(
        "billing-estimate",
        ["subject", "calls", "units", "unpriced_calls", "amount"],
        [["acme", 3.0, 15.0, 0.0, "6.8460"]],
    )
    assert rows == [
        {"subject": "acme", "calls": 3, "units": 15, "unpriced_calls": 0, "amount": "6.8460"}
    ]


def test_calls_bucket_comes_from_the_fixed_table() -> None:
    sql = KPIS["calls"].build(KpiRequest(0, 1, bucket="day")).sql
    assert "DATETRUNC('DAY', event_time)" in sql


def test_shape_rows_derives_the_error_rate_and_makes_counts_integers() -> None:
    rows = shape_rows(
        "error-rate",
        ["route", "calls", "errors", "server_errors"],
        [["orders", 8.0, 2.0, 1.0], ["empty", 0, 0, 0]],
    )
    assert rows == [
        {"route": "orders", "calls": 8, "errors": 2, "server_errors": 1, "error_rate": 0.25},
        {"route": "empty", "calls": 0, "errors": 0, "server_errors": 0, "error_rate": 0.0},
    ]


def test_format_table_aligns_text_left_and_numbers_right() -> None:
    text = format_table(
        ("route", "calls", "p50_ms"),
        [
            {"route": "orders", "calls": 12, "p50_ms": 3.25},
            {"route": "a", "calls": 7, "p50_ms": 10.0},
        ],
    )
    assert text.splitlines() == [
        "route   calls  p50_ms",
        "------  -----  ------",
        "orders     12    3.25",
        "a           7      10",
    ]
