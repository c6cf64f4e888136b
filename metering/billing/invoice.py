"""Invoice lines at period close, as JSON lines and as Stripe meter events (a file export).

One line per (subject, period, plan): a subject that changed plan mid-period has a line per plan,
each with its calls, its quantity (units), the tiers its units fell in (quantity and exact amount
each) and its amount. The line's ``amount`` is the one rounded amount (``money.round_money`` of
``amount_exact``); the tiers' amounts are exact, so they add up to ``amount_exact``.

Stripe meter events: one per line with a Stripe customer, ``payload.value`` the line's quantity
(an integer, as text), ``timestamp`` the last second of the period, and a deterministic
``identifier`` (``stripe_identifier``), so a re-export carries the same identifiers. Stripe
enforces identifier uniqueness over a rolling window of at least 24 hours: a re-export within
it is de-duplicated by Stripe; beyond it, whoever sends the file must not send it twice. Stripe
accepts timestamps up to 35 days old, so a period's events are sent within 35 days of its close.
Nothing here calls Stripe.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import IO

from pydantic import BaseModel, ConfigDict, Field

from metering.billing.ids import record_id
from metering.billing.money import Amount, round_money, total
from metering.billing.periods import bounds
from metering.billing.plans import Catalog
from metering.billing.pricing import PeriodUsage, SegmentUsage

DEFAULT_STRIPE_EVENT_NAME = "api_requests"
STRIPE_CUSTOMER_KEY = "stripe_customer_id"
"""The meter's ``customer_mapping.event_payload_key`` (Stripe's default)."""
STRIPE_VALUE_KEY = "value"
"""The meter's ``value_settings.event_payload_key`` (Stripe's default)."""


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TierLine(_Out):
    """The units of a line in one tier of its plan."""

    tier: int = Field(description="the tier's place in the plan's tiers, from 0")
    up_to: int | None
    unit_price: Amount
    quantity: int
    amount: Amount = Field(description="exact: quantity * unit_price")


class InvoiceLine(_Out):
    """A subject's usage of one plan in a closed period."""

    line_id: str = Field(description="record_id of subject, period and plan")
    subject: str
    period: str
    plan_id: str
    plan_name: str
    currency: str
    calls: int
    quantity: int = Field(description="units (calls weighted by route)")
    tiers: list[TierLine]
    amount_exact: Amount
    amount: Amount = Field(description="amount_exact rounded to the currency's minor unit")
    stripe_customer_id: str | None


class StripeMeterEvent(_Out):
    """A Stripe billing meter event (POST /v1/billing/meter_events parameters)."""

    event_name: str = Field(min_length=1, max_length=100)
    payload: dict[str, str]
    timestamp: int = Field(description="epoch seconds")
    identifier: str = Field(min_length=1, max_length=100)


def close_period(usages: Iterable[PeriodUsage], catalog: Catalog) -> list[InvoiceLine]:
    """The invoice lines of closed periods' usage, sorted by subject, period and plan."""
    lines: list[InvoiceLine] = []
    for usage in usages:
        by_plan: dict[str, list[SegmentUsage]] = {}
        for seg in usage.segments:
            by_plan.setdefault(seg.plan_id, []).append(seg)
        for plan_id, segs in by_plan.items():
            lines.append(_line(usage, plan_id, segs, catalog))
    return sorted(lines, key=lambda ln: (ln.subject, ln.period, ln.plan_id))


def _line(
    usage: PeriodUsage, plan_id: str, segs: Sequence[SegmentUsage], catalog: Catalog
) -> InvoiceLine:
    plan = catalog.plan(plan_id)
    tiers: dict[int, tuple[int | None, Decimal, int, list[Decimal]]] = {}
    for seg in segs:
        for t in seg.tiers:
            _, _, qty, amounts = tiers.get(t.index, (t.up_to, t.unit_price, 0, []))
            tiers[t.index] = (t.up_to, t.unit_price, qty + t.units, [*amounts, t.amount])
    exact = total(s.amount for s in segs)
    # The Stripe customer of the subscription that started the plan's last segment.
    sub = catalog.in_force(usage.subject, segs[-1].start_ms)
    return InvoiceLine(
        line_id=record_id("invoice-line", usage.subject, usage.period, plan_id),
        subject=usage.subject,
        period=usage.period,
        plan_id=plan_id,
        plan_name=plan.name,
        currency=plan.currency,
        calls=sum(s.calls for s in segs),
        quantity=sum(s.units for s in segs),
        tiers=[
            TierLine(tier=i, up_to=up_to, unit_price=price, quantity=qty, amount=total(amounts))
            for i, (up_to, price, qty, amounts) in sorted(tiers.items())
        ],
        amount_exact=exact,
        amount=round_money(exact, plan.currency),
        stripe_customer_id=sub.stripe_customer_id if sub else None,
    )


def write_lines(lines: Iterable[BaseModel], out: IO[str]) -> int:
    """Write records as JSON lines (amounts as text); the number written."""
    n = 0
    for line in lines:
        out.write(line.model_dump_json() + "\n")
        n += 1
    return n


def read_lines(text: str) -> list[InvoiceLine]:
    """Invoice lines from JSON-lines text (blank lines skipped); ValidationError names the
    field of the first bad line."""
    return [InvoiceLine.model_validate_json(ln) for ln in text.splitlines() if ln.strip()]


def stripe_identifier(subject: str, period: str, plan_id: str, event_name: str) -> str:
    """The meter event's identifier: the same line and event name always give the same one (64
    hex characters, within Stripe's 100)."""
    return record_id("stripe-meter-event", subject, period, plan_id, event_name)


def stripe_events(
    lines: Iterable[InvoiceLine], event_name: str = DEFAULT_STRIPE_EVENT_NAME
) -> tuple[list[StripeMeterEvent], list[InvoiceLine]]:
    """The meter events of ``lines`` and the lines left out because their subject has no
    Stripe customer."""
    events: list[StripeMeterEvent] = []
    skipped: list[InvoiceLine] = []
    for line in lines:
        if line.stripe_customer_id is None:
            skipped.append(line)
            continue
        events.append(
            StripeMeterEvent(
                event_name=event_name,
                payload={
                    STRIPE_CUSTOMER_KEY: line.stripe_customer_id,
                    STRIPE_VALUE_KEY: str(line.quantity),
                },
                timestamp=bounds(line.period)[1] // 1000 - 1,
                identifier=stripe_identifier(line.subject, line.period, line.plan_id, event_name),
            )
        )
    return events, skipped
