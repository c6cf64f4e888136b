"""Period-to-date usage, priced incrementally from the usage topic's window increments.

The pricing rule. A subject's units in a period are laid end to end in event-time order, and
each unit is priced by the tiers of the plan in force at its window's start, at its position in
that line: the units of a window sit after every unit of the subject's earlier windows in the
period. So:

* a mid-period plan change does not reset the tiers: after an upgrade on the 15th, the new
  plan's tiers continue from the units already used (its free units are not granted again, and
  the part before the 15th is still priced by the old plan);
* the alternative, each plan pricing its part of the month from unit 0, was rejected: every plan
  change (even back and forth) would grant the free tier again.

Incrementally. Within one subscription, pricing window by window at its position adds up to
pricing the subscription's units as one block (a graduated price is a cumulative function, and
the differences telescope), so the state keeps, per *segment* (the part of the period one
subscription was in force), its calls and units, and prices the segments in order: segment k
starts at the units of segments 0..k-1. Its amount is recomputed from those counts on every
increment, which costs a few multiplications per segment.

Late corrections. A ``late_correction`` adds calls to an old window: they are priced exactly as
if they had been in its ``window`` record, by the plan in force at the window's start, at the
window's place in event-time order. The final state of a period (calls, units, amounts, tiers)
therefore depends only on the set of increments, never on the order in which they arrive
(property-tested). What may move: a correction to an earlier segment shifts the positions of the
later segments' units, so their amounts are re-priced; when a later plan has *falling* tier
prices (volume discounts) that can lower the period-to-date amount, so the amount is monotone in
units within one plan, and across a plan change only when the later plans' tier prices do not
fall. Accepted: it is the price the rule gives for the final usage, and the invoice is made at
period close from the final state.

Units are integers (a call is its route's integer weight, ``metering.billing.plans``); amounts are
exact Decimals (``metering.billing.money``), rounded only on the invoice line.

Calls in a window with no subscription in force (before the subject's first subscription) are
counted as ``unpriced`` and take no tier position: they are reported, not billed.

Subscription history is read at each increment: a subscription put retroactively (starting
before windows already folded) changes which plan those windows belong to, so the period must be
re-priced from its usage (``tools/billing.py invoice`` does; ``fold`` refuses a window whose
segment's plan has changed).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any, Literal

from metering.billing.money import ZERO, times, total
from metering.billing.periods import bounds
from metering.billing.plans import DEFAULT_WEIGHT, Catalog, Plan, subject_of
from metering.evolve import Evolvable

IncrementKind = Literal["window", "late_correction"]


class PricingError(ValueError):
    """An increment that cannot be folded into this state."""


@dataclass(frozen=True)
class WindowIncrement:
    """Calls of one subject in one event-time window: a usage record (``window`` or
    ``late_correction``), with the calls per request path where the record has them.

    Calls not attributed to a path (``calls`` minus the paths' sum) weigh ``DEFAULT_WEIGHT``:
    today's usage records carry no paths (docs/billing.md, what is not streamed yet)."""

    subject: str
    window_start: int
    calls: int
    paths: tuple[tuple[str, int], ...] = ()
    """(path, calls), sorted by path, each path once."""
    kind: IncrementKind = "window"

    def __post_init__(self) -> None:
        if self.calls < 1:
            raise PricingError("an increment has at least one call")
        names = [p for p, _ in self.paths]
        if names != sorted(set(names)):
            raise PricingError("paths are sorted and distinct")
        if any(n < 1 for _, n in self.paths):
            raise PricingError("a path has at least one call")
        if sum(n for _, n in self.paths) > self.calls:
            raise PricingError("the paths' calls exceed the increment's calls")

    @staticmethod
    def of(
        subject: str,
        window_start: int,
        calls: int,
        paths: Mapping[str, int] | None = None,
        kind: IncrementKind = "window",
    ) -> WindowIncrement:
        """An increment from a path -> calls mapping (in any order)."""
        by_path = tuple(sorted((paths or {}).items()))
        return WindowIncrement(subject, window_start, calls, by_path, kind)

    @property
    def unrouted_calls(self) -> int:
        """Calls whose path the increment does not give."""
        return self.calls - sum(n for _, n in self.paths)


def units_of(plan: Plan | None, inc: WindowIncrement) -> int:
    """The increment's units under ``plan`` (None: no plan, every call ``DEFAULT_WEIGHT``)."""
    if plan is None:
        return inc.calls * DEFAULT_WEIGHT
    routed = sum(n * plan.weight_of(path) for path, n in inc.paths)
    return routed + inc.unrouted_calls * DEFAULT_WEIGHT


@dataclass(frozen=True)
class TierCharge(Evolvable):
    """Units of one tier of a plan, and their exact amount."""

    index: int
    """The tier's place in the plan's ``price_tiers``, from 0."""
    up_to: int | None
    unit_price: Decimal
    units: int
    amount: Decimal


def graduated(plan: Plan, position: int, units: int) -> tuple[TierCharge, ...]:
    """The tiers of ``plan`` that units ``position + 1`` to ``position + units`` fall in, with
    the units in each and their exact amount."""
    out: list[TierCharge] = []
    lo, first, last = 0, position, position + units
    for i, tier in enumerate(plan.price_tiers):
        hi = tier.up_to
        a, b = max(first, lo), last if hi is None else min(last, hi)
        if b > a:
            out.append(TierCharge(i, hi, tier.unit_price, b - a, times(b - a, tier.unit_price)))
        if hi is None or hi >= last:
            break
        lo = hi
    return tuple(out)


def amount_of(plan: Plan, units: int, position: int = 0) -> Decimal:
    """The exact amount of ``units`` units at ``position`` under ``plan``."""
    return total(c.amount for c in graduated(plan, position, units))


@dataclass(frozen=True)
class SegmentUsage(Evolvable):
    """The part of a period one subscription was in force, and what was used in it."""

    start_ms: int
    """When the segment starts: its subscription's effective_from, or the period's start."""
    plan_id: str
    calls: int
    units: int
    position: int
    """The period's units before this segment's (those of the earlier segments)."""
    tiers: tuple[TierCharge, ...]
    amount: Decimal


@dataclass(frozen=True)
class PeriodUsage(Evolvable):
    """A subject's usage in a period so far: the state ``fold`` updates."""

    subject: str
    period: str
    currency: str | None = None
    """The currency of its plans (one per subject, plans.Catalog checks); None until priced."""
    segments: tuple[SegmentUsage, ...] = ()
    """In event-time order."""
    unpriced_calls: int = 0
    """Calls in windows no subscription covered: counted, not billed."""
    latest_window_start: int | None = None
    amount: Decimal = field(default=ZERO)
    """Exact amount of every segment."""

    @property
    def calls(self) -> int:
        """Priced calls."""
        return sum(s.calls for s in self.segments)

    @property
    def units(self) -> int:
        """Priced units: the quota's measure."""
        return sum(s.units for s in self.segments)

    @property
    def tier_reached(self) -> tuple[str, int] | None:
        """(plan, tier index) of the period's last priced unit; None before any."""
        if not self.segments or not self.segments[-1].tiers:
            return None
        last = self.segments[-1]
        return last.plan_id, last.tiers[-1].index

    def to_record(self) -> dict[str, Any]:
        """A JSON-ready record (amounts as text): the period-usage topic's value."""
        return {
            "subject": self.subject,
            "period": self.period,
            "currency": self.currency,
            "calls": self.calls,
            "units": self.units,
            "unpriced_calls": self.unpriced_calls,
            "amount": str(self.amount),
            "latest_window_start": self.latest_window_start,
            "segments": [
                {
                    "start_ms": s.start_ms,
                    "plan_id": s.plan_id,
                    "calls": s.calls,
                    "units": s.units,
                    "position": s.position,
                    "amount": str(s.amount),
                    "tiers": [
                        {
                            "index": t.index,
                            "up_to": t.up_to,
                            "unit_price": str(t.unit_price),
                            "units": t.units,
                            "amount": str(t.amount),
                        }
                        for t in s.tiers
                    ],
                }
                for s in self.segments
            ],
        }


def price_segments(
    counts: Iterable[tuple[int, str, int, int]], catalog: Catalog
) -> tuple[SegmentUsage, ...]:
    """Segments priced in order from (start_ms, plan_id, calls, units): each at the units of
    the segments before it."""
    out: list[SegmentUsage] = []
    position = 0
    for start_ms, plan_id, calls, units in sorted(counts):
        tiers = graduated(catalog.plan(plan_id), position, units)
        amount = total(t.amount for t in tiers)
        out.append(SegmentUsage(start_ms, plan_id, calls, units, position, tiers, amount))
        position += units
    return tuple(out)


def fold(state: PeriodUsage, inc: WindowIncrement, catalog: Catalog) -> PeriodUsage:
    """``state`` with ``inc`` added, re-priced (the rule: module docstring). Pure."""
    if inc.subject != state.subject:
        raise PricingError(f"increment of {inc.subject!r} folded into {state.subject!r}")
    start, end = bounds(state.period)
    if not start <= inc.window_start < end:
        raise PricingError(f"window {inc.window_start} is not in period {state.period}")
    seen = state.latest_window_start
    latest = inc.window_start if seen is None else max(seen, inc.window_start)
    sub = catalog.in_force(inc.subject, inc.window_start)
    if sub is None:
        return replace(
            state, unpriced_calls=state.unpriced_calls + inc.calls, latest_window_start=latest
        )
    plan = catalog.plan(sub.plan_id)
    if state.currency is not None and plan.currency != state.currency:
        raise PricingError(f"{inc.subject}: plans in {state.currency} and {plan.currency}")
    seg_start = max(sub.effective_from, start)
    counts = {s.start_ms: (s.plan_id, s.calls, s.units) for s in state.segments}
    plan_id, calls, units = counts.get(seg_start, (plan.id, 0, 0))
    if plan_id != plan.id:
        raise PricingError(
            f"{inc.subject}: the segment from {seg_start} was {plan_id}, is now {plan.id} "
            "(a subscription changed retroactively); re-price the period from its usage"
        )
    counts[seg_start] = (plan_id, calls + inc.calls, units + units_of(plan, inc))
    segments = price_segments(((k, *v) for k, v in counts.items()), catalog)
    return PeriodUsage(
        subject=state.subject,
        period=state.period,
        currency=plan.currency,
        segments=segments,
        unpriced_calls=state.unpriced_calls,
        latest_window_start=latest,
        amount=total(s.amount for s in segments),
    )


def price_period(
    subject: str, period: str, increments: Iterable[WindowIncrement], catalog: Catalog
) -> PeriodUsage:
    """The subject's period folded from ``increments`` (any order: the result is the same)."""
    state = PeriodUsage(subject, period)
    for inc in increments:
        state = fold(state, inc, catalog)
    return state


def price_all(
    period: str, increments: Iterable[WindowIncrement], catalog: Catalog
) -> dict[str, PeriodUsage]:
    """Every subject's period from a mixed stream of increments (those of other periods are
    skipped): subject -> its usage."""
    start, end = bounds(period)
    states: dict[str, PeriodUsage] = {}
    for inc in increments:
        if start <= inc.window_start < end:
            state = states.get(inc.subject) or PeriodUsage(inc.subject, period)
            states[inc.subject] = fold(state, inc, catalog)
    return states


def increment_from_usage(record: Mapping[str, Any]) -> WindowIncrement | None:
    """The increment of one usage-topic record (``schemas.events.WindowCount`` as a dict, with
    an optional ``paths``: path -> calls); None for an anonymous client's record or an empty
    one. ValueError (PricingError) for a malformed record."""
    subject = subject_of(record.get("consumer"), record.get("key_fingerprint"))
    count = record.get("count")
    if not isinstance(count, int) or isinstance(count, bool):
        raise PricingError("a usage record's count is an integer")
    if subject is None or count == 0:
        return None
    window_start = record.get("window_start")
    if not isinstance(window_start, int) or isinstance(window_start, bool):
        raise PricingError("a usage record's window_start is an integer (epoch ms)")
    kind = record.get("kind", "window")
    if kind not in ("window", "late_correction"):
        raise PricingError(f"unknown usage record kind {kind!r}")
    raw_paths = record.get("paths") or {}
    if not isinstance(raw_paths, Mapping) or not all(
        isinstance(p, str) and isinstance(n, int) and not isinstance(n, bool)
        for p, n in raw_paths.items()
    ):
        raise PricingError("a usage record's paths map paths to integer calls")
    return WindowIncrement.of(subject, window_start, count, raw_paths, kind)
