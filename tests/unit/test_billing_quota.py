"""Quota signals (metering/billing/quota.py): 50/80/100 % then every 100 %, once each; enforce."""

from __future__ import annotations

import itertools
from decimal import Decimal

from metering.billing.ids import record_id
from metering.billing.periods import bounds
from metering.billing.plans import Plan, parse_catalog
from metering.billing.pricing import PeriodUsage, WindowIncrement, fold
from metering.billing.quota import (
    QuotaSignal,
    QuotaState,
    advance,
    on_usage,
    thresholds_crossed,
    thresholds_reached,
)

PERIOD = "2026-12"
START, END = bounds(PERIOD)
DAY = 86_400_000
BRONZE = Plan(id="bronze", name="Bronze", included_units=10_000, overage=Decimal("0.002"))
TRIAL = Plan(id="trial", name="Trial", included_units=1_000, hard_limit=True)


def test_thresholds_are_exact_integer_comparisons() -> None:
    assert thresholds_reached(4_999, 10_000) == []
    assert thresholds_reached(5_000, 10_000) == [50]
    assert thresholds_reached(10_000, 10_000) == [50, 80, 100]
    assert thresholds_reached(19_999, 10_000) == [50, 80, 100]
    assert thresholds_reached(30_000, 10_000) == [50, 80, 100, 200, 300]
    # 50 % of 15 units is 7.5: reached at 8, not at 7.
    assert thresholds_reached(7, 15) == [] and thresholds_reached(8, 15) == [50]


def test_one_increment_crossing_several_thresholds_signals_each_once() -> None:
    assert thresholds_crossed(4_000, 25_000, 10_000) == [50, 80, 100, 200]
    state = QuotaState("acme", PERIOD)
    state, first = advance(state, BRONZE, 4_000, START)
    assert first == []
    state, signals = advance(state, BRONZE, 25_000, START + 10_000)
    assert [(s.kind, s.threshold_percent) for s in signals] == [
        ("threshold", 50),
        ("threshold", 80),
        ("threshold", 100),
        ("threshold", 200),
    ]
    assert signals[0].signal_id == record_id("quota", "acme", PERIOD, "bronze", 50)
    # Nothing again until 300 %.
    state, again = advance(state, BRONZE, 29_999, START + 20_000)
    assert again == []
    state, third = advance(state, BRONZE, 30_000, START + 30_000)
    assert [s.threshold_percent for s in third] == [300]


def test_signals_do_not_depend_on_arrival_order_within_one_plan() -> None:
    amounts = [3_000, 2_500, 4_000, 9_000, 1_500]
    seen: set[frozenset[str]] = set()
    for order in itertools.permutations(amounts):
        state, ids, units = QuotaState("acme", PERIOD), [], 0
        for n in order:
            units += n
            state, signals = advance(state, BRONZE, units, None)
            ids += [s.signal_id for s in signals]
        assert len(ids) == len(set(ids))  # each once
        seen.add(frozenset(ids))
    assert len(seen) == 1 and len(next(iter(seen))) == 4  # 50, 80, 100, 200


def test_a_hard_limit_plan_emits_enforce_at_100_percent() -> None:
    state, signals = advance(QuotaState("initech", PERIOD), TRIAL, 1_200, START)
    assert [(s.kind, s.threshold_percent) for s in signals] == [
        ("threshold", 50),
        ("threshold", 80),
        ("threshold", 100),
        ("enforce", 100),
    ]
    enforce = signals[-1]
    assert enforce.until_ms == END
    assert enforce.signal_id == record_id("quota", "initech", PERIOD, "trial", "enforce")
    _, later = advance(state, TRIAL, 2_500, START)
    assert [(s.kind, s.threshold_percent) for s in later] == [("threshold", 200)]
    # A soft plan never enforces.
    _, soft = advance(QuotaState("acme", PERIOD), BRONZE, 50_000, START)
    assert all(s.kind == "threshold" for s in soft)


def test_unlimited_plans_have_no_signals() -> None:
    _, signals = advance(QuotaState("u", PERIOD), Plan(id="p", name="P"), 10**9, START)
    assert signals == []


def test_the_plan_in_force_now_is_measured_and_a_downgrade_signals_what_it_already_exceeds() -> (
    None
):
    catalog = parse_catalog(
        f"""
        [[plans]]
        id = "gold"
        name = "Gold"
        included_units = 100_000
        [[plans]]
        id = "trial"
        name = "Trial"
        included_units = 1_000
        hard_limit = true
        [[subscriptions]]
        subject = "acme"
        plan_id = "gold"
        effective_from = {START}
        [[subscriptions]]
        subject = "acme"
        plan_id = "trial"
        effective_from = {START + 10 * DAY}
        """
    )
    usage, quota = PeriodUsage("acme", PERIOD), QuotaState("acme", PERIOD)
    emitted: list[QuotaSignal] = []
    for at, calls in [(START, 60_000), (START + 10 * DAY, 10), (START + DAY, 5)]:
        usage = fold(usage, WindowIncrement("acme", at, calls), catalog)
        quota, signals = on_usage(quota, usage, catalog)
        emitted += signals
    assert [(s.plan_id, s.kind, s.threshold_percent) for s in emitted[:1]] == [
        ("gold", "threshold", 50)
    ]
    # On the trial: 60,010 units is 6,001 %: every threshold up to 6,000 % at once, enforce.
    trial = [s for s in emitted if s.plan_id == "trial"]
    assert [s.threshold_percent for s in trial if s.kind == "threshold"] == [
        50,
        80,
        *range(100, 6_001, 100),
    ]
    assert [s.kind for s in trial].count("enforce") == 1
    # The late Gold-period window (START + DAY) is measured against the trial, now in force:
    # 60,015 units, no new threshold.
    assert emitted[-1].units == 60_010
