"""Invoice lines and the Stripe meter events export (metering/billing/invoice.py)."""

from __future__ import annotations

import io
import json
import random
from decimal import Decimal

from metering.billing.invoice import (
    STRIPE_CUSTOMER_KEY,
    STRIPE_VALUE_KEY,
    InvoiceLine,
    close_period,
    read_lines,
    stripe_events,
    stripe_identifier,
    write_lines,
)
from metering.billing.periods import bounds
from metering.billing.plans import parse_catalog
from metering.billing.pricing import WindowIncrement, price_all

PERIOD = "2026-12"
START, END = bounds(PERIOD)
DAY = 86_400_000
MID = START + 14 * DAY
CATALOG = parse_catalog(
    f"""
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
    [[subscriptions]]
    subject = "acme"
    plan_id = "bronze"
    effective_from = {START}
    stripe_customer_id = "cus_Acme"
    [[subscriptions]]
    subject = "acme"
    plan_id = "gold"
    effective_from = {MID}
    stripe_customer_id = "cus_Acme"
    [[subscriptions]]
    subject = "key:abc"
    plan_id = "bronze"
    effective_from = {START}
    """
)
INCREMENTS = [
    WindowIncrement.of("acme", START + DAY, 3_000, {"/v1/valuations/1": 3_000}),  # 15,000 units
    WindowIncrement.of("acme", MID, 40_000),
    WindowIncrement.of("acme", MID + DAY, 60_000, kind="late_correction"),
    WindowIncrement.of("key:abc", START, 7),
]


def lines_of(increments: list[WindowIncrement]) -> list[InvoiceLine]:
    return close_period(price_all(PERIOD, increments, CATALOG).values(), CATALOG)


def test_one_line_per_subject_and_plan_with_tiers_and_one_rounded_amount() -> None:
    acme_bronze, acme_gold, key = lines_of(INCREMENTS)
    assert (acme_bronze.subject, acme_bronze.plan_id, acme_bronze.calls) == (
        "acme",
        "bronze",
        3_000,
    )
    assert acme_bronze.quantity == 15_000
    assert [(t.tier, t.quantity, t.amount) for t in acme_bronze.tiers] == [
        (0, 10_000, Decimal(0)),
        (1, 5_000, Decimal("10.000")),
    ]
    assert (acme_bronze.amount_exact, acme_bronze.amount) == (Decimal("10.000"), Decimal("10.00"))
    assert (acme_gold.quantity, acme_gold.amount) == (100_000, Decimal("15.00"))
    assert [(t.tier, t.quantity) for t in acme_gold.tiers] == [(0, 85_000), (1, 15_000)]
    assert acme_gold.stripe_customer_id == "cus_Acme"
    assert (key.subject, key.amount, key.stripe_customer_id) == ("key:abc", Decimal("0.00"), None)
    assert len({ln.line_id for ln in (acme_bronze, acme_gold, key)}) == 3


def test_lines_round_trip_through_json_lines_with_money_as_text() -> None:
    lines = lines_of(INCREMENTS)
    out = io.StringIO()
    assert write_lines(lines, out) == 3
    first = json.loads(out.getvalue().splitlines()[0])
    assert first["amount"] == "10.00" and first["amount_exact"] == "10.000"
    assert read_lines(out.getvalue()) == lines


def test_stripe_meter_events_are_deterministic_across_re_exports() -> None:
    lines = lines_of(INCREMENTS)
    events, skipped = stripe_events(lines, "api_requests")
    assert [ln.subject for ln in skipped] == ["key:abc"]  # no Stripe customer
    bronze, gold = events
    assert bronze.event_name == "api_requests"
    assert bronze.payload == {STRIPE_CUSTOMER_KEY: "cus_Acme", STRIPE_VALUE_KEY: "15000"}
    assert gold.payload[STRIPE_VALUE_KEY] == "100000"
    assert bronze.timestamp == END // 1000 - 1  # 2026-12-31T23:59:59Z
    assert bronze.identifier == stripe_identifier("acme", PERIOD, "bronze", "api_requests")
    assert len(bronze.identifier) <= 100 and bronze.identifier != gold.identifier
    # Re-priced from the same usage arriving in another order, exported again: the same events.
    shuffled = list(INCREMENTS)
    random.Random(7).shuffle(shuffled)
    again, _ = stripe_events(lines_of(shuffled), "api_requests")
    assert again == events
    assert [e.model_dump_json() for e in again] == [e.model_dump_json() for e in events]
    # Another meter is another event.
    other, _ = stripe_events(lines, "api_units")
    assert other[0].identifier != bronze.identifier
