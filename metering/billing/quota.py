"""Quota signals: a subject's period units crossing 50, 80, 100 % of its plan's included units,
then every further 100 % (200, 300, ...); on a hard-limit plan, an ``enforce`` record at 100 %.

A threshold is reached when ``units * 100 ≥ included * percent`` (integers: no rounding). Each
signal has a deterministic id, ``record_id("quota", subject, period, plan, percent)`` (enforce:
``"enforce"`` for the percent), so a replay emits the same ids and a reader drops the repeats.

The plan measured against is the one in force at the latest window seen (the plan the subject is
on *now*, when a late correction for an older window arrives). Per plan the state remembers the
highest percent signalled, and an update signals every threshold of that plan reached and not yet
signalled, so:

* one increment that crosses several thresholds signals each of them, in increasing order;
* a threshold is signalled once per (subject, period, plan), whatever the order the increments
  arrive in; with one plan in the period, the set of signals does not depend on that order;
* after a downgrade to a smaller quota already exceeded, the first update under the new plan
  signals all of its thresholds already reached (and enforces, on a hard limit).

Calls made after a hard limit is reached, before the gateway acts on the enforce record, are
still counted and priced by the plan's tiers.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from metering.billing.ids import record_id
from metering.billing.periods import bounds
from metering.billing.plans import Catalog, Plan
from metering.billing.pricing import PeriodUsage
from metering.evolve import Evolvable
from schemas.events import QuotaSignal

FIRST_THRESHOLDS: tuple[int, ...] = (50, 80, 100)
"""Percents of the included units signalled first."""
REPEAT_EVERY = 100
"""Beyond the last of FIRST_THRESHOLDS, every further this many percent is signalled."""
ENFORCE_AT = 100
"""The percent at which a hard-limit plan emits its enforce record."""


def thresholds_reached(units: int, included: int) -> list[int]:
    """Every threshold percent reached at ``units`` of ``included``, increasing."""
    reached = [p for p in FIRST_THRESHOLDS if units * 100 >= included * p]
    top = FIRST_THRESHOLDS[-1]
    # Repeats: top + k * REPEAT_EVERY for k ≥ 1 while reached.
    k_max = (units * 100 - included * top) // (included * REPEAT_EVERY)
    reached.extend(top + k * REPEAT_EVERY for k in range(1, k_max + 1))
    return reached


def thresholds_crossed(before: int, after: int, included: int) -> list[int]:
    """The threshold percents crossed going from ``before`` to ``after`` units (increasing)."""
    already = set(thresholds_reached(before, included))
    return [p for p in thresholds_reached(after, included) if p not in already]


@dataclass(frozen=True)
class QuotaState(Evolvable):
    """Per plan, the highest threshold percent already signalled in the subject's period."""

    subject: str
    period: str
    signalled: tuple[tuple[str, int], ...] = ()


def advance(
    state: QuotaState, plan: Plan, units: int, window_start: int | None
) -> tuple[QuotaState, list[QuotaSignal]]:
    """The thresholds of ``plan`` reached at ``units`` and not yet signalled, as signals (each
    threshold, then, at ENFORCE_AT on a hard-limit plan, the enforce record); the new state."""
    if plan.included_units is None:
        return state, []
    included = plan.included_units
    done = dict(state.signalled).get(plan.id, 0)
    new = [p for p in thresholds_reached(units, included) if p > done]
    if not new:
        return state, []
    signals: list[QuotaSignal] = []
    for percent in new:
        signals.append(
            QuotaSignal(
                signal_id=record_id("quota", state.subject, state.period, plan.id, percent),
                kind="threshold",
                subject=state.subject,
                period=state.period,
                plan_id=plan.id,
                threshold_percent=percent,
                included_units=included,
                units=units,
                window_start=window_start,
            )
        )
        if percent == ENFORCE_AT and plan.hard_limit:
            signals.append(
                QuotaSignal(
                    signal_id=record_id("quota", state.subject, state.period, plan.id, "enforce"),
                    kind="enforce",
                    subject=state.subject,
                    period=state.period,
                    plan_id=plan.id,
                    threshold_percent=percent,
                    included_units=included,
                    units=units,
                    window_start=window_start,
                    until_ms=bounds(state.period)[1],
                )
            )
    signalled = dict(state.signalled) | {plan.id: new[-1]}
    return replace(state, signalled=tuple(sorted(signalled.items()))), signals


def on_usage(
    state: QuotaState, usage: PeriodUsage, catalog: Catalog
) -> tuple[QuotaState, list[QuotaSignal]]:
    """The signals after ``usage`` (the period's state after an increment), against the plan in
    force at its latest window."""
    if usage.latest_window_start is None:
        return state, []
    sub = catalog.in_force(usage.subject, usage.latest_window_start)
    if sub is None:
        return state, []
    return advance(state, catalog.plan(sub.plan_id), usage.units, usage.latest_window_start)
