"""Pricing (metering/billing/pricing.py): exact amounts for the documented examples, plan changes,
late corrections, and the properties: order independence, monotone amounts."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metering.billing.money import round_money
from metering.billing.periods import bounds
from metering.billing.plans import Catalog, Plan, Subscription, Tier, parse_catalog
from metering.billing.pricing import (
    IncrementKind,
    PeriodUsage,
    PricingError,
    WindowIncrement,
    amount_of,
    fold,
    graduated,
    increment_from_usage,
    price_all,
    price_period,
)

PERIOD = "2026-12"
START, END = bounds(PERIOD)
DAY = 86_400_000
MID = START + 14 * DAY  # 2026-12-15T00:00:00Z: the upgrade

CATALOG = parse_catalog(
    f"""
    [[plans]]
    id = "payg"
    name = "First 50,000 free"
    tiers = [{{ up_to = 50_000, unit_price = "0" }}, {{ unit_price = "0.001" }}]

    [[plans]]
    id = "bronze"
    name = "Bronze"
    included_units = 10_000
    overage = "0.002"
    route_weights = {{ "/v1/valuations*" = 5 }}

    [[plans]]
    id = "gold"
    name = "Gold"
    included_units = 100_000
    overage = "0.001"
    route_weights = {{ "/v1/valuations*" = 5 }}

    # Volume discount: falling prices.
    [[plans]]
    id = "volume"
    name = "Volume"
    tiers = [{{ up_to = 1_000, unit_price = "0.01" }}, {{ up_to = 5_000, unit_price = "0.005" }},
             {{ unit_price = "0.0025" }}]

    [[subscriptions]]
    subject = "globex"
    plan_id = "payg"
    effective_from = {START}

    [[subscriptions]]
    subject = "acme"
    plan_id = "bronze"
    effective_from = {START - 30 * DAY}

    [[subscriptions]]
    subject = "acme"
    plan_id = "gold"
    effective_from = {MID}
    """
)


def inc(
    subject: str, at: int, calls: int, paths: dict[str, int] | None = None, late: bool = False
) -> WindowIncrement:
    kind: IncrementKind = "late_correction" if late else "window"
    return WindowIncrement.of(subject, at - at % 10_000, calls, paths, kind)


def test_first_50000_free_then_a_tenth_of_a_cent_60000_calls_cost_ten_dollars() -> None:
    windows = [inc("globex", START + i * 10_000, 600) for i in range(100)]  # 60,000 calls
    usage = price_period("globex", PERIOD, windows, CATALOG)
    assert (usage.calls, usage.units) == (60_000, 60_000)
    assert usage.amount == Decimal("10.000")
    assert round_money(usage.amount, "USD") == Decimal("10.00")
    (segment,) = usage.segments
    assert [(t.index, t.units, t.amount) for t in segment.tiers] == [
        (0, 50_000, Decimal(0)),
        (1, 10_000, Decimal("10.000")),
    ]
    assert usage.tier_reached == ("payg", 1)


def test_bronze_over_quota_with_a_weighted_route() -> None:
    # 1,000 valuations (5 units each) + 7,000 other calls = 12,000 units: 2,000 over 10,000.
    windows = [
        inc("acme", START + DAY, 1_000, {"/v1/valuations/42": 1_000}),
        inc("acme", START + 2 * DAY, 7_000, {"/v1/orders": 6_000}),  # 1,000 without a path
    ]
    usage = price_period("acme", PERIOD, windows, CATALOG)
    assert (usage.calls, usage.units) == (8_000, 12_000)
    assert usage.amount == Decimal("4.000")  # 2,000 x $0.002


def test_a_mid_period_upgrade_continues_the_tiers_it_does_not_reset_them() -> None:
    # 15,000 units on Bronze (5,000 over: $10), then 100,000 on Gold from unit 15,001:
    # Gold's free tier ends at 100,000, so 85,000 free and 15,000 at $0.001 ($15).
    windows = [
        inc("acme", START + DAY, 15_000),
        inc("acme", MID, 40_000),
        inc("acme", MID + DAY, 60_000),
    ]
    usage = price_period("acme", PERIOD, windows, CATALOG)
    bronze, gold = usage.segments
    assert (bronze.plan_id, bronze.start_ms, bronze.units, bronze.position) == (
        "bronze",
        START,  # subscribed before the period: the segment starts with it
        15_000,
        0,
    )
    assert bronze.amount == Decimal("10.000")
    assert (gold.plan_id, gold.start_ms, gold.units, gold.position) == (
        "gold",
        MID,
        100_000,
        15_000,
    )
    assert [(t.index, t.units) for t in gold.tiers] == [(0, 85_000), (1, 15_000)]
    assert gold.amount == Decimal("15.000")
    assert usage.amount == Decimal("25.000")
    # The rejected alternative (Gold from unit 0) would have billed nothing on Gold.
    assert amount_of(CATALOG.plan("gold"), 100_000) == 0


def test_a_late_correction_is_priced_at_its_window_not_at_its_arrival() -> None:
    on_time = [
        inc("acme", START + DAY, 9_000),
        inc("acme", START + DAY, 3_000),  # the same window, all on time
        inc("acme", MID, 95_000),
    ]
    late = [
        inc("acme", START + DAY, 9_000),
        inc("acme", MID, 95_000),
        inc("acme", START + DAY, 3_000, late=True),  # arrives after the upgrade
    ]
    a = price_period("acme", PERIOD, on_time, CATALOG)
    b = price_period("acme", PERIOD, late, CATALOG)
    assert a == b
    # Bronze: 12,000 units, 2,000 over ($4); Gold: units 12,001..107,000, 7,000 over ($7).
    assert [(s.plan_id, s.units, s.amount) for s in b.segments] == [
        ("bronze", 12_000, Decimal("4.000")),
        ("gold", 95_000, Decimal("7.000")),
    ]
    # Before the correction arrived, Gold's 95,000 units started at 9,001: $4.
    before = price_period("acme", PERIOD, late[:2], CATALOG)
    assert before.segments[1].amount == Decimal("4.000")


def test_unsubscribed_windows_are_counted_not_priced() -> None:
    catalog = Catalog(
        plans=(Plan(id="p", name="P", tiers=(Tier(unit_price=Decimal(1)),)),),
        subscriptions=(Subscription(subject="late", plan_id="p", effective_from=MID),),
    )
    usage = price_period("late", PERIOD, [inc("late", START, 5), inc("late", MID, 7)], catalog)
    assert (usage.unpriced_calls, usage.calls, usage.units, usage.amount) == (5, 7, 7, Decimal(7))
    assert usage.segments[0].position == 0  # unpriced calls take no tier position


def test_fold_refuses_what_does_not_belong() -> None:
    state = PeriodUsage("acme", PERIOD)
    with pytest.raises(PricingError, match="folded into"):
        fold(state, inc("globex", START, 1), CATALOG)
    with pytest.raises(PricingError, match="not in period"):
        fold(state, inc("acme", END, 1), CATALOG)
    with pytest.raises(PricingError, match="at least one call"):
        WindowIncrement("acme", START, 0)
    with pytest.raises(PricingError, match="exceed"):
        WindowIncrement.of("acme", START, 2, {"/a": 3})
    # A subscription put retroactively moves a folded window to another plan: refused.
    folded = fold(state, inc("acme", MID + DAY, 1), CATALOG)
    moved = CATALOG.with_items(
        subscriptions=[Subscription(subject="acme", plan_id="bronze", effective_from=MID)]
    )
    with pytest.raises(PricingError, match="retroactively"):
        fold(folded, inc("acme", MID + 2 * DAY, 1), moved)


def test_usage_records_become_increments() -> None:
    record = {
        "kind": "late_correction",
        "rate_key": "acme",
        "consumer": "acme",
        "key_fingerprint": "f" * 64,
        "window_start": START,
        "window_end": START + 10_000,
        "count": 4,
        "units": 4.0,
        "auth_failures": 0,
        "countries": ["DE"],
        "paths": {"/v1/valuations/1": 3},
    }
    got = increment_from_usage(record)
    assert got == WindowIncrement("acme", START, 4, (("/v1/valuations/1", 3),), "late_correction")
    assert got is not None and got.unrouted_calls == 1
    keyed = increment_from_usage(record | {"consumer": None, "paths": None})
    assert keyed is not None and keyed.subject == "key:" + "f" * 64
    assert increment_from_usage(record | {"consumer": None, "key_fingerprint": None}) is None
    with pytest.raises(PricingError):
        increment_from_usage(record | {"count": 1.0})
    with pytest.raises(PricingError):
        increment_from_usage(record | {"kind": "other"})


def test_price_all_splits_subjects_and_skips_other_periods() -> None:
    states = price_all(
        PERIOD,
        [inc("acme", START, 1), inc("globex", START, 2), inc("acme", END, 100)],
        CATALOG,
    )
    assert {k: v.calls for k, v in states.items()} == {"acme": 1, "globex": 2}


def test_period_usage_record_is_json_ready() -> None:
    usage = price_period("acme", PERIOD, [inc("acme", START, 11_000)], CATALOG)
    record = usage.to_record()
    assert record["amount"] == "2.000" and record["units"] == 11_000
    assert record["segments"][0]["tiers"][1] == {
        "index": 1,
        "up_to": None,
        "unit_price": "0.002",
        "units": 1_000,
        "amount": "2.000",
    }


# --- properties ----------------------------------------------------------------------------------

PATHS = ("/v1/valuations/7", "/v1/orders", "/v1/valuations")


def _increment(
    quarter_day: int, calls: int, routed: tuple[int, ...], late: bool
) -> WindowIncrement:
    paths = {p: n for p, n in zip(PATHS, routed, strict=True) if n}
    return inc("acme", START + quarter_day * DAY // 4, calls + sum(routed), paths, late)


increments = st.lists(
    st.tuples(
        st.integers(0, 31 * 4 - 1),
        st.integers(0, 20_000),
        st.tuples(*(st.integers(0, 3_000) for _ in PATHS)),
        st.booleans(),
    )
    .filter(lambda t: t[1] + sum(t[2]) > 0)
    .map(lambda t: _increment(*t)),
    min_size=1,
    max_size=12,
)

# Plan changes back and forth, through a falling-price plan: the hardest case for order.
SWITCHING = CATALOG.with_items(
    subscriptions=[
        Subscription(subject="acme", plan_id="volume", effective_from=START + 5 * DAY),
        Subscription(subject="acme", plan_id="bronze", effective_from=START + 10 * DAY),
        Subscription(subject="acme", plan_id="payg", effective_from=START + 20 * DAY),
        Subscription(subject="acme", plan_id="gold", effective_from=START + 25 * DAY),
    ]
)


@settings(max_examples=150, deadline=None)
@given(increments, st.randoms(use_true_random=False))
def test_period_totals_do_not_depend_on_arrival_order(
    incs: list[WindowIncrement], rnd: random.Random
) -> None:
    shuffled = list(incs)
    rnd.shuffle(shuffled)
    for catalog in (CATALOG, SWITCHING):
        a = price_period("acme", PERIOD, incs, catalog)
        b = price_period("acme", PERIOD, shuffled, catalog)
        assert a == b
        assert a.amount == sum((s.amount for s in a.segments), Decimal(0))


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 300_000), st.integers(0, 300_000), st.integers(0, 200_000))
def test_amount_is_monotone_in_units_for_every_plan(units: int, more: int, position: int) -> None:
    for plan in CATALOG.plans:
        assert amount_of(plan, units, position) <= amount_of(plan, units + more, position)
        # And a graduated price is cumulative: splitting units anywhere changes nothing.
        whole = amount_of(plan, units + more, position)
        assert whole == amount_of(plan, units, position) + amount_of(plan, more, position + units)


@settings(max_examples=100, deadline=None)
@given(increments, increments)
def test_more_usage_never_costs_less_with_non_falling_tier_prices(
    incs: list[WindowIncrement], extra: list[WindowIncrement]
) -> None:
    # bronze -> gold -> payg: every plan's tier prices rise or stay.
    rising = CATALOG.with_items(
        subscriptions=[
            Subscription(subject="acme", plan_id="payg", effective_from=START + 25 * DAY)
        ]
    )
    base = price_period("acme", PERIOD, incs, rising)
    assert price_period("acme", PERIOD, incs + extra, rising).amount >= base.amount


def test_with_falling_tier_prices_a_correction_to_an_earlier_plan_can_lower_the_amount() -> None:
    """Documented: the one way the period amount can fall when usage grows. A free earlier
    segment pushes a volume-discount plan's units into its cheaper tiers."""
    catalog = parse_catalog(
        f"""
        [[plans]]
        id = "free"
        name = "Free"
        [[plans]]
        id = "volume"
        name = "Volume"
        tiers = [{{ up_to = 1_000, unit_price = "0.01" }}, {{ unit_price = "0.001" }}]
        [[subscriptions]]
        subject = "acme"
        plan_id = "free"
        effective_from = {START}
        [[subscriptions]]
        subject = "acme"
        plan_id = "volume"
        effective_from = {MID}
        """
    )
    later = [inc("acme", MID, 1_000)]
    before = price_period("acme", PERIOD, later, catalog)
    after = price_period("acme", PERIOD, [*later, inc("acme", START, 1_000, late=True)], catalog)
    assert (before.amount, after.amount) == (Decimal("10.00"), Decimal("1.000"))


def test_graduated_splits_units_across_tiers() -> None:
    volume = CATALOG.plan("volume")
    charges = graduated(volume, 900, 4_200)  # units 901..5,100
    assert [(c.index, c.units, c.amount) for c in charges] == [
        (0, 100, Decimal("1.00")),
        (1, 4_000, Decimal("20.000")),
        (2, 100, Decimal("0.2500")),
    ]
    assert graduated(volume, 10, 0) == ()
