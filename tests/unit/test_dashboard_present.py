"""The dashboard's numbers as a reader sees them (dashboard/present.py): no Streamlit, no Pinot."""

from __future__ import annotations

import json

import pytest

from dashboard import data, present


@pytest.mark.parametrize(
    ("ms", "shown"),
    [
        (None, "n/a"),
        (0.0, "0.0 s"),
        (3_449.0, "3.4 s"),
        (59_949.0, "59.9 s"),
        (60_000.0, "1 min"),
        (5_400_000.0, "2 h"),
        (29_433_601_100.0, "341 d"),
    ],
)
def test_a_duration_reads_in_its_unit(ms: float | None, shown: str) -> None:
    assert present.seconds(ms) == shown


def test_pinots_empty_aggregates_are_no_number() -> None:
    # Pinot 0.11 answers an aggregate over no row with these, through pinotdb.
    assert [present.number(v) for v in ("NaN", "-Infinity", None, "x")] == [None] * 4
    assert present.number("12.5") == 12.5 and present.number(3) == 3.0


def test_counts_read_as_whole_numbers_and_times_as_utc() -> None:
    result = data.Result(
        ("bucket_start", "calls", "dead_letters", "p50_ms"),
        ((1_767_225_600_000, 31.0, 2.0, 12.75),),
    )
    df = present.frame(result)
    row = df.iloc[0]
    assert (int(row["calls"]), int(row["dead_letters"]), row["p50_ms"]) == (31, 2, 12.75)
    assert str(df["calls"].dtype) == "Int64"
    assert row["bucket_start"].isoformat() == "2026-01-01T00:00:00+00:00"
    # A count Pinot could not compute stays as it came, never a crash.
    odd = present.frame(data.Result(("calls",), (("-Infinity",),)))
    assert odd.iloc[0]["calls"] == "-Infinity"


def test_money_rounds_as_the_invoice_does() -> None:
    assert present.money("1.2345", "USD") == "1.23 USD"
    assert present.money("8.678", "USD") == "8.68 USD"


def test_tier_rows_take_pinots_json_with_nulls_left_out() -> None:
    segments = [
        {
            "plan_id": "it",
            "tiers": [
                {"index": 0, "up_to": 100, "units": 100, "unit_price": "0", "amount": "0"},
                # Pinot's JSON column drops null fields: the last tier has no `up_to`.
                {"index": 1, "units": 1275, "unit_price": "0.0015", "amount": "1.9125"},
            ],
        }
    ]
    rows = present.tier_rows(json.dumps(segments))
    assert [(r["tier"], r["up to"], r["units"], r["amount"]) for r in rows] == [
        (1, 100, 100, "0"),
        (2, None, 1275, "1.9125"),
    ]


def test_the_quota_line_names_the_thresholds_reached() -> None:
    assert present.quota_text(0.85, [50, 80], False) == (
        "85% of the quota used; thresholds reached: 50 %, 80 %"
    )
    assert present.quota_text(0.1, [], True).endswith(
        "none yet (a hard limit: calls are refused beyond it)"
    )


def test_quota_marks_reached_are_exact_at_the_boundary() -> None:
    assert present.quota_reached(499, 1000) == []
    assert present.quota_reached(500, 1000) == [50]
    assert present.quota_reached(800, 1000) == [50, 80]
    assert present.quota_reached(1000, 1000) == [50, 80, 100]
    assert present.quota_reached(2500, 1000) == [50, 80, 100]


def test_the_ledger_line_states_the_equation() -> None:
    row = {"entries_in": 45280.0, "enriched_out": 45273.0, "dead_lettered": 7.0, "deduplicated": 0}
    assert present.ledger_line(row) == (
        "entries in 45,280 = enriched 45,273 + dead-lettered 7 + deduplicated 0"
    )
