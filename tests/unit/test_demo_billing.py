"""The demo's billing lines and its overdraw measurement (testkit/demo.py), without a broker."""

from __future__ import annotations

from metering.billing.plans import parse_catalog
from testkit.demo import format_balance, format_quota, overdraw

CATALOG = parse_catalog(
    """
[[plans]]
id = "metered"
name = "Metered"
tiers = [{ unit_price = "0.002" }]
[[subscriptions]]
subject = "globex"
plan_id = "metered"
effective_from = 0
[[grants]]
id = "g1"
subject = "globex"
amount = "10.00"
at = 0
"""
)


def test_overdraw_counts_the_calls_and_seconds_after_the_crossing_call() -> None:
    # $10 at $0.002 a call: the 2,500th call leaves $5 (the low threshold), the 5,000th $0.
    times = [1_000 + i * 10 for i in range(6_000)]  # a call every 10 ms
    low = {"subject": "globex", "kind": "low", "threshold": "5"}
    crossed = times[2_499]
    seen = crossed + 12_000
    assert overdraw(low, seen, times, CATALOG) == (1_200, 12.0)
    exhausted = {"subject": "globex", "kind": "exhausted", "threshold": "0"}
    assert overdraw(exhausted, times[4_999] + 500, times, CATALOG) == (50, 0.5)
    # The crossing call is not among those seen: nothing to measure.
    assert overdraw(exhausted, 10**9, times[:4_000], CATALOG) is None


def test_billing_lines_say_who_crossed_what() -> None:
    q = {
        "kind": "threshold",
        "subject": "initech",
        "plan_id": "trial",
        "threshold_percent": 80,
        "included_units": 1000,
        "units": 812,
        "period": "2026-12",
    }
    assert format_quota(q) == (
        "billing: initech reached 80 % of plan trial's 1,000 units (812 units in 2026-12)"
    )
    assert "ENFORCE initech" in format_quota(q | {"kind": "enforce"})
    b = {
        "subject": "globex",
        "kind": "low",
        "balance": "4.998",
        "currency": "USD",
        "threshold": "5",
    }
    assert format_balance(b) == (
        "billing: globex's prepaid balance is LOW: 4.998 USD left (threshold 5)"
    )
