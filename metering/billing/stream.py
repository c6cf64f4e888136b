"""The job's billing stage, per subject: usage records in; period usage, quota signals and
balance signals out. Pure: the keyed Python operator (udfs.functions.PriceUsage) keeps a
``SubjectBilling`` per subject in Flink state and calls ``on_usage`` for each of its usage
records (closed windows and late corrections, exactly once each: the usage topic's records).

What each output means is stated where it is computed: pricing (``metering.billing.pricing``),
quota thresholds (``metering.billing.quota``), balances (``metering.billing.balance``). This
module only sequences them and keeps the state they need:

* a period's usage is kept while late corrections may still reach it: the latest
  ``OPEN_PERIODS`` periods the subject used (a correction older than the job's maximum event
  age is dead-lettered by the parse, and that age is far below a month);
* a prepaid balance holds every period's amount, one Decimal per month.

Grants are read from the catalog at each update: a top-up re-arms the signals it lifts the
balance above, and a grant's effect shows at the subject's next usage record, seconds later
while it calls.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any, Literal

from metering.billing.balance import BalanceState, apply_grant, apply_usage
from metering.billing.periods import period_of
from metering.billing.plans import Catalog
from metering.billing.pricing import PeriodUsage, PricingError, fold, increment_from_usage
from metering.billing.quota import QuotaState
from metering.billing.quota import on_usage as quota_on_usage
from metering.evolve import Evolvable

OPEN_PERIODS = 2
"""Periods kept per subject: the current one and the one before, which late corrections of
its last days still reach in the first days of the next."""

OutputRole = Literal["period_usage", "quota_signals", "balance_signals"]
Output = tuple[OutputRole, str, str]
"""(output topic role, record key, JSON value)."""


@dataclass(frozen=True)
class SubjectBilling(Evolvable):
    """One subject's billing state."""

    subject: str
    periods: Mapping[str, PeriodUsage] = field(default_factory=dict)
    quotas: Mapping[str, QuotaState] = field(default_factory=dict)
    repricing: frozenset[str] = frozenset()
    """Periods whose subscriptions changed retroactively: no longer priced here."""
    priced_by: Mapping[str, tuple[tuple[int, str], ...]] = field(default_factory=dict)
    """Period -> the subscriptions (start, plan) its windows so far were priced by."""
    balance: BalanceState | None = None


def period_key(subject: str, period: str) -> str:
    return f"{subject}@{period}"


def period_record(
    usage: PeriodUsage,
    repricing_needed: bool,
    catalog: Catalog,
    balance: BalanceState | None = None,
) -> str:
    """The period-usage topic's value (``schemas.events.PeriodUsage``): the priced period, the
    quota of the plan in force at its latest window (what a consumer's dashboard measures it
    against) and, for a prepaid subject, the balance after it."""
    sub = (
        None
        if usage.latest_window_start is None
        else catalog.in_force(usage.subject, usage.latest_window_start)
    )
    plan = None if sub is None else catalog.plan(sub.plan_id)
    extra = {
        "repricing_needed": repricing_needed,
        "included_units": None if plan is None else plan.included_units,
        "hard_limit": plan is not None and plan.hard_limit,
        "balance": None if balance is None else str(balance.balance),
    }
    return json.dumps(usage.to_record() | extra, separators=(",", ":"))


def _history_until(catalog: Catalog, subject: str, until_ms: int) -> tuple[tuple[int, str], ...]:
    """The subject's subscriptions that started at or before ``until_ms``: (start, plan)."""
    return tuple(
        (s.effective_from, s.plan_id)
        for s in catalog.history(subject)
        if s.effective_from <= until_ms
    )


def _sync_grants(
    balance: BalanceState | None, subject: str, catalog: Catalog, low: Decimal
) -> tuple[BalanceState | None, list[Output]]:
    grants = catalog.grants_of(subject)
    if not grants:
        return balance, []
    if balance is None:
        balance = BalanceState(subject, grants[0].currency)
    out: list[Output] = []
    for g in grants:
        if balance.grants.get(g.id) != g.amount:
            balance, signals = apply_grant(balance, g, low)
            out.extend(("balance_signals", subject, s.model_dump_json()) for s in signals)
    return balance, out


def on_usage(
    state: SubjectBilling | None,
    record: Mapping[str, Any],
    catalog: Catalog,
    low_balance: Decimal,
) -> tuple[SubjectBilling | None, list[Output]]:
    """The state and outputs after one usage record (a dict of ``schemas.events.WindowCount``).
    An anonymous client's record, or one without calls, changes nothing. PricingError
    (ValueError) for a malformed record."""
    inc = increment_from_usage(record)
    if inc is None:
        return state, []
    if state is None:
        state = SubjectBilling(inc.subject)
    period = period_of(inc.window_start)
    out: list[Output] = []
    key = period_key(inc.subject, period)
    usage = state.periods.get(period)
    if usage is None and len(state.periods) >= OPEN_PERIODS and period < min(state.periods):
        # A period already let go: starting it again from zero would overwrite its record.
        state = replace(state, repricing=state.repricing | {period})
    if period in state.repricing:
        return state, out
    usage = usage or PeriodUsage(inc.subject, period)
    seen = usage.latest_window_start
    # A subscription put, moved or deleted at or before the windows already priced changes
    # which plan priced them: the segments here no longer match the history.
    recorded = state.priced_by.get(period)  # None: state from before it was recorded
    retroactive = (
        seen is not None
        and recorded is not None
        and recorded != _history_until(catalog, inc.subject, seen)
    )
    if not retroactive:
        try:
            usage = fold(usage, inc, catalog)
        except PricingError:  # fold's own check: a segment's plan changed
            retroactive = True
    if retroactive:
        # Said once on the topic; the invoice re-prices the period from the usage topic.
        state = replace(state, repricing=state.repricing | {period})
        return state, [("period_usage", key, period_record(usage, True, catalog, state.balance))]
    periods = dict(state.periods) | {period: usage}
    for old in sorted(periods)[:-OPEN_PERIODS]:
        del periods[old]

    quota = state.quotas.get(period) or QuotaState(inc.subject, period)
    quota, signals = quota_on_usage(quota, usage, catalog)
    out.extend(("quota_signals", key, s.model_dump_json()) for s in signals)
    quotas = {p: q for p, q in (dict(state.quotas) | {period: quota}).items() if p in periods}

    balance, granted = _sync_grants(state.balance, inc.subject, catalog, low_balance)
    out.extend(granted)
    if balance is not None and usage.currency in (None, balance.currency):
        balance, crossed = apply_usage(balance, period, usage.amount, low_balance)
        out.extend(("balance_signals", inc.subject, s.model_dump_json()) for s in crossed)
    # First: a reader of the period (the dashboard) sees the signals' cause with them.
    out.insert(0, ("period_usage", key, period_record(usage, False, catalog, balance)))
    assert usage.latest_window_start is not None  # fold sets it
    priced_by = {p: h for p, h in state.priced_by.items() if p in periods} | {
        period: _history_until(catalog, inc.subject, usage.latest_window_start)
    }
    return replace(state, periods=periods, quotas=quotas, balance=balance, priced_by=priced_by), out
