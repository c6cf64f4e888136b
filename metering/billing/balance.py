"""Prepaid balances: grants (top-ups, credits) minus priced usage, and their two signals.

``balance = Σ grants - Σ period amounts``, exact (the period amounts are pricing's unrounded
ones: a balance moves with every window, and rounding each move would drift). Only subjects with
at least one grant are prepaid; the others have no balance and no signals.

Signals, each exactly once per crossing:

* ``low``: the balance falls to or below the low threshold (a setting of the caller, in the
  subject's currency);
* ``exhausted``: the balance falls to or below zero.

A signal fires on the update that crosses, and is re-armed only once the balance is back above
its level (a top-up, a corrected grant, or usage re-priced lower): a balance hovering below the
threshold does not repeat it, and a top-up followed by a new fall signals again. The first grant
arms both; one already at or below the low threshold signals ``low`` at once. One update may
fire both (``low`` first).

Ids are ``record_id("balance", subject, kind, sequence)``, where the sequence counts that
signal's crossings for the subject (1, 2, ...): deterministic on replay, distinct per crossing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal

from metering.billing.ids import record_id
from metering.billing.money import ZERO, minus, total
from metering.billing.plans import Grant
from metering.evolve import Evolvable
from schemas.events import BalanceKind, BalanceSignal


class BalanceError(ValueError):
    """A grant or usage that does not belong to this balance."""


@dataclass(frozen=True)
class BalanceState(Evolvable):
    """A subject's prepaid account: what was granted, what each period's usage cost, and
    which signals are armed."""

    subject: str
    currency: str
    grants: Mapping[str, Decimal] = field(default_factory=dict)
    """Grant id -> amount: a grant put again replaces its amount."""
    usage: Mapping[str, Decimal] = field(default_factory=dict)
    """Period -> that period's exact amount so far."""
    low_armed: bool = True
    exhausted_armed: bool = True
    low_count: int = 0
    exhausted_count: int = 0

    @property
    def balance(self) -> Decimal:
        return minus(total(self.grants.values()), total(self.usage.values()))

    @property
    def prepaid(self) -> bool:
        return bool(self.grants)


def _settle(
    state: BalanceState, low_threshold: Decimal
) -> tuple[BalanceState, list[BalanceSignal]]:
    """Fire what the new balance crossed, re-arm what it is back above."""
    if not state.prepaid:
        return state, []
    b = state.balance
    signals: list[BalanceSignal] = []
    low_armed, exhausted_armed = state.low_armed, state.exhausted_armed
    low_count, exhausted_count = state.low_count, state.exhausted_count
    if low_armed and b <= low_threshold:
        low_count += 1
        low_armed = False
        signals.append(_signal(state, "low", low_count, b, low_threshold))
    if exhausted_armed and b <= ZERO:
        exhausted_count += 1
        exhausted_armed = False
        signals.append(_signal(state, "exhausted", exhausted_count, b, ZERO))
    low_armed = low_armed or b > low_threshold
    exhausted_armed = exhausted_armed or b > ZERO
    return replace(
        state,
        low_armed=low_armed,
        exhausted_armed=exhausted_armed,
        low_count=low_count,
        exhausted_count=exhausted_count,
    ), signals


def _signal(
    state: BalanceState, kind: BalanceKind, sequence: int, balance: Decimal, threshold: Decimal
) -> BalanceSignal:
    return BalanceSignal(
        signal_id=record_id("balance", state.subject, kind, sequence),
        kind=kind,
        subject=state.subject,
        sequence=sequence,
        # Exact, as text: a JSON reader never sees a float.
        balance=format(balance, "f"),
        threshold=format(threshold, "f"),
        currency=state.currency,
    )


def apply_grant(
    state: BalanceState, grant: Grant, low_threshold: Decimal
) -> tuple[BalanceState, list[BalanceSignal]]:
    """``state`` with ``grant`` put (replacing a grant of the same id), and its signals."""
    if grant.subject != state.subject or grant.currency != state.currency:
        raise BalanceError(f"grant {grant.id} is not {state.subject}'s in {state.currency}")
    return _settle(replace(state, grants={**state.grants, grant.id: grant.amount}), low_threshold)


def apply_usage(
    state: BalanceState, period: str, amount: Decimal, low_threshold: Decimal
) -> tuple[BalanceState, list[BalanceSignal]]:
    """``state`` with ``period``'s exact amount so far set to ``amount`` (pricing's
    ``PeriodUsage.amount``), and its signals."""
    return _settle(replace(state, usage={**state.usage, period: amount}), low_threshold)
