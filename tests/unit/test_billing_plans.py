"""Plans, subscriptions, grants, the TOML catalog, periods and the billing topics."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import ValidationError

from metering.billing.periods import (
    PeriodError,
    bounds,
    iso,
    next_period,
    parse_instant,
    period_of,
)
from metering.billing.plans import (
    DEFAULT_WEIGHT,
    Catalog,
    CatalogError,
    Plan,
    Subscription,
    load_catalog,
    parse_catalog,
    subject_of,
)
from metering.billing.topics import BILLING_TOPICS, INPUT_TOPICS, OUTPUT_TOPICS
from metering.topics import BY_ROLE, FOREVER, TOPICS

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "metering/billing/catalog.example.toml"
DEC_2026 = 1_796_083_200_000  # 2026-12-01T00:00:00Z
JAN_2027 = 1_798_761_600_000


def test_periods_are_utc_calendar_months() -> None:
    assert bounds("2026-12") == (DEC_2026, JAN_2027)
    assert period_of(DEC_2026) == "2026-12"
    assert period_of(DEC_2026 - 1) == "2026-11"
    assert period_of(JAN_2027 - 1) == "2026-12"
    assert next_period("2026-12") == "2027-01"
    assert bounds("2028-02")[1] - bounds("2028-02")[0] == 29 * 86_400_000  # leap year
    assert iso(DEC_2026) == "2026-12-01T00:00:00.000Z"
    for bad in ("2026-13", "2026-1", "26-12", "2026-12-01", ""):
        with pytest.raises(PeriodError):
            bounds(bad)


def test_instants_from_ms_iso_and_datetimes() -> None:
    assert parse_instant(DEC_2026) == DEC_2026
    assert parse_instant(str(DEC_2026)) == DEC_2026
    assert parse_instant("2026-12-01T00:00:00Z") == DEC_2026
    assert parse_instant("2026-12-01T01:00:00+01:00") == DEC_2026
    assert parse_instant("2026-12-01T00:00:00") == DEC_2026  # naive: UTC
    with pytest.raises(ValueError, match="not an instant"):
        parse_instant("yesterday")


def test_the_example_catalog_seeds_bronze_gold_platinum_and_the_free_tier_plan() -> None:
    catalog = load_catalog(EXAMPLE)
    by_id = {p.id: p for p in catalog.plans}
    assert by_id["bronze"].included_units == 10_000
    assert by_id["gold"].included_units == 100_000
    assert by_id["platinum"].included_units is None
    assert by_id["trial"].hard_limit
    payg = by_id["payg"]
    assert [(t.up_to, t.unit_price) for t in payg.price_tiers] == [
        (50_000, Decimal(0)),
        (None, Decimal("0.001")),
    ]
    assert [(t.up_to, t.unit_price) for t in by_id["bronze"].price_tiers] == [
        (10_000, Decimal(0)),
        (None, Decimal("0.002")),
    ]
    assert by_id["platinum"].price_tiers[0].unit_price == 0
    acme = catalog.history("acme-analytics")
    assert [s.plan_id for s in acme] == ["bronze", "gold"]
    dec_15 = DEC_2026 + 14 * 86_400_000
    assert acme[1].effective_from == dec_15

    def plan_at(at_ms: int) -> str | None:
        sub = catalog.in_force("acme-analytics", at_ms)
        return sub.plan_id if sub else None

    assert (plan_at(DEC_2026 - 1), plan_at(DEC_2026), plan_at(dec_15 - 1)) == (
        None,
        "bronze",
        "bronze",
    )
    assert plan_at(dec_15) == plan_at(JAN_2027) == "gold"
    # The demo's prepaid consumer: $0.002 a unit from a $10 grant.
    assert catalog.grants_of("globex-mobile")[0].amount == Decimal("10.00")
    assert catalog.in_force("globex-mobile", DEC_2026).plan_id == "metered"  # type: ignore[union-attr]
    assert [(t.up_to, t.unit_price) for t in by_id["metered"].price_tiers] == [
        (None, Decimal("0.002"))
    ]


def test_toml_numbers_are_read_as_exact_decimals() -> None:
    catalog = parse_catalog(
        """
        [[plans]]
        id = "p"
        name = "P"
        tiers = [{ up_to = 3, unit_price = 0 }, { unit_price = 0.1 }]
        """
    )
    assert catalog.plans[0].tiers[1].unit_price == Decimal("0.1")


def test_route_weights_exact_then_longest_prefix_then_default() -> None:
    plan = Plan(
        id="p",
        name="P",
        route_weights={
            "/v1/valuations*": 5,
            "/v1/valuations/bulk*": 20,
            "/v1/valuations/cheap": 2,
            "/v1/ping": 1,
        },
    )
    assert plan.weight_of("/v1/valuations") == 5
    assert plan.weight_of("/v1/valuations/42") == 5
    assert plan.weight_of("/v1/valuations-beta") == 5  # a plain text prefix
    assert plan.weight_of("/v1/valuations/bulk/7") == 20  # the longer prefix wins
    assert plan.weight_of("/v1/valuations/cheap") == 2  # exact beats any prefix
    assert plan.weight_of("/v1/valuations/cheap/x") == 5  # not exact: the prefix
    assert plan.weight_of("/V1/VALUATIONS") == DEFAULT_WEIGHT  # case-sensitive
    assert plan.weight_of("/v1/orders") == DEFAULT_WEIGHT
    assert plan.weight_of(None) == DEFAULT_WEIGHT


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"route_weights": {"v1/x": 2}}, "must start with /"),
        ({"route_weights": {"/v1/*/x": 2}}, "only at the end"),
        ({"route_weights": {"/v1/x": 0}}, "greater than or equal to 1"),
        ({"route_weights": {"/v1/x": 1.5}}, "valid integer"),
        ({"overage": "0.1"}, "overage needs included_units"),
        ({"hard_limit": True}, "hard limit needs included_units"),
        ({"tiers": [{"up_to": 10, "unit_price": "0"}]}, "last tier has no up_to"),
        (
            {
                "tiers": [
                    {"up_to": 10, "unit_price": "0"},
                    {"up_to": 5, "unit_price": "1"},
                    {"unit_price": "2"},
                ]
            },
            "increasing",
        ),
        ({"tiers": [{"unit_price": "-1"}]}, "not negative"),
        ({"tiers": [{"unit_price": "0.0000000000001"}]}, "at most 12 decimal places"),
        ({"tiers": [{"unit_price": 0.001}]}, "not an exact decimal"),
        ({"currency": "XYZ"}, "unsupported currency"),
        ({"colour": "gold"}, "Extra inputs"),
    ],
)
def test_invalid_plans_are_refused(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Plan.model_validate({"id": "p", "name": "P"} | fields)


def test_plans_survive_a_json_round_trip() -> None:
    for plan in load_catalog(EXAMPLE).plans:
        again = Plan.model_validate_json(plan.model_dump_json())
        assert again == plan
        assert again.price_tiers == plan.price_tiers


def test_subjects_are_consumers_or_keys_never_anonymous_clients() -> None:
    assert subject_of("acme", "abc") == "acme"
    assert subject_of(None, "abc") == "key:abc"
    assert subject_of("", None) is None
    Subscription(subject="key:abc", plan_id="p", effective_from=0)
    for bad in ("client:1.2.3.0", "key:", "", "a\nb", "x" * 257):
        with pytest.raises(ValidationError):
            Subscription(subject=bad, plan_id="p", effective_from=0)


def test_catalog_consistency() -> None:
    plan_usd = Plan(id="usd", name="U")
    plan_eur = Plan(id="eur", name="E", currency="EUR")
    sub = Subscription(subject="acme", plan_id="usd", effective_from=0)
    with pytest.raises(ValidationError, match="no plan"):
        Catalog(subscriptions=(sub,))
    with pytest.raises(ValidationError, match="one subscription per effective_from"):
        Catalog(plans=(plan_usd,), subscriptions=(sub, sub))
    with pytest.raises(ValidationError, match="several currencies"):
        Catalog(
            plans=(plan_usd, plan_eur),
            subscriptions=(sub, Subscription(subject="acme", plan_id="eur", effective_from=5)),
        )
    with pytest.raises(ValidationError, match="plan ids must be distinct"):
        Catalog(plans=(plan_usd, plan_usd))
    catalog = Catalog(plans=(plan_usd,), subscriptions=(sub,))
    moved = catalog.with_items(
        subscriptions=[Subscription(subject="acme", plan_id="usd", effective_from=0, contact="x")]
    )
    assert len(moved.subscriptions) == 1 and moved.subscriptions[0].contact == "x"


def test_catalog_errors_name_the_field_not_the_value() -> None:
    with pytest.raises(CatalogError, match=r"plans\.0\.tiers\.0\.unit_price") as e:
        parse_catalog('[[plans]]\nid = "p"\nname = "P"\ntiers = [{ unit_price = "s3cr3t" }]\n')
    assert "s3cr3t" not in str(e.value)
    with pytest.raises(CatalogError, match="not TOML"):
        parse_catalog("[[plans]")


def test_billing_topics_for_the_catalog() -> None:
    roles = [t.role for t in BILLING_TOPICS]
    names = [t.name for t in BILLING_TOPICS]
    # All in the catalog (metering.topics): the inputs beside the job's, the outputs its own.
    assert set(roles) <= set(BY_ROLE)
    assert {t.role for t in OUTPUT_TOPICS} <= {t.role for t in TOPICS}
    assert len(set(roles)) == len(roles)
    assert len(set(names)) == len(names)
    for t in INPUT_TOPICS:
        # Never expire: compaction alone.
        assert t.retention_ms == t.local_retention_ms == FOREVER
        assert t.config() == {"cleanup.policy": "compact,delete", "retention.ms": "-1"}
        assert t.upsert and t.sink is None
    period_usage, quota_signals, balance_signals = OUTPUT_TOPICS
    assert period_usage.upsert and period_usage.retention_ms == BY_ROLE["usage"].retention_ms
    assert not quota_signals.upsert and not balance_signals.upsert
    assert [t.flag for t in BILLING_TOPICS] == [
        "--plans-topic",
        "--subscriptions-topic",
        "--grants-topic",
        "--period-usage-topic",
        "--quota-signals-topic",
        "--balance-signals-topic",
    ]
