"""Prepaid balances (metering/billing/balance.py): low, then exhausted, once per crossing;
a top-up re-arms them; ids stay deterministic."""

from __future__ import annotations

from decimal import Decimal

import pytest

from metering.billing.balance import (
    BalanceError,
    BalanceSignal,
    BalanceState,
    apply_grant,
    apply_usage,
)
from metering.billing.ids import record_id
from metering.billing.periods import bounds
from metering.billing.plans import Grant, parse_catalog
from metering.billing.pricing import PeriodUsage, WindowIncrement, fold

LOW = Decimal("20")
DEC = "2026-12"
START = bounds(DEC)[0]


def grant(gid: str, amount: str) -> Grant:
    return Grant(id=gid, subject="globex", amount=Decimal(amount), at=START)


def run(
    steps: list[tuple[str, str, str]],
) -> tuple[BalanceState, list[list[BalanceSignal]]]:
    state = BalanceState("globex", "USD")
    out = []
    for kind, key, amount in steps:
        if kind == "grant":
            state, signals = apply_grant(state, grant(key, amount), LOW)
        else:
            state, signals = apply_usage(state, key, Decimal(amount), LOW)
        out.append(signals)
    return state, out


def test_low_then_exhausted_then_a_top_up_re_arms_both() -> None:
    state, signals = run(
        [
            ("grant", "g1", "100"),  # 100
            ("usage", DEC, "50"),  # 50
            ("usage", DEC, "85"),  # 15: low
            ("usage", DEC, "90"),  # 10: still low, nothing
            ("usage", DEC, "100.001"),  # -0.001: exhausted
            ("usage", DEC, "120"),  # -20: nothing
            ("grant", "g2", "50"),  # 30: above both, re-armed
            ("usage", DEC, "140"),  # 10: low again
            ("usage", "2027-01", "15"),  # -5: exhausted again (balances span periods)
        ]
    )
    got = [[(s.kind, s.sequence, Decimal(s.balance)) for s in step] for step in signals]
    assert got == [
        [],
        [],
        [("low", 1, Decimal("15"))],
        [],
        [("exhausted", 1, Decimal("-0.001"))],
        [],
        [],
        [("low", 2, Decimal("10"))],
        [("exhausted", 2, Decimal("-5"))],
    ]
    assert state.balance == Decimal("-5")
    assert signals[2][0].signal_id == record_id("balance", "globex", "low", 1)
    assert signals[7][0].signal_id == record_id("balance", "globex", "low", 2)


def test_one_update_can_fire_both_low_first() -> None:
    _, signals = run([("grant", "g1", "100"), ("usage", DEC, "150")])
    assert [(s.kind, Decimal(s.threshold)) for s in signals[1]] == [("low", LOW), ("exhausted", 0)]


def test_a_first_grant_already_low_signals_low_at_once() -> None:
    _, signals = run([("grant", "g1", "5")])
    assert [s.kind for s in signals[0]] == ["low"]


def test_subjects_without_grants_are_not_prepaid() -> None:
    state, signals = run([("usage", DEC, "1000")])
    assert signals == [[]] and not state.prepaid


def test_a_grant_put_again_is_corrected_not_added() -> None:
    state, _ = run([("grant", "g1", "100"), ("grant", "g1", "60")])
    assert state.balance == Decimal("60")


def test_replay_gives_the_same_signals() -> None:
    steps = [("grant", "g1", "30"), ("usage", DEC, "15"), ("usage", DEC, "31")]
    assert run(steps)[1] == run(steps)[1]


def test_a_grant_of_another_subject_or_currency_is_refused() -> None:
    state = BalanceState("globex", "USD")
    with pytest.raises(BalanceError):
        apply_grant(state, Grant(id="x", subject="acme", amount=Decimal(1), at=0), LOW)
    with pytest.raises(BalanceError):
        apply_grant(
            state, Grant(id="x", subject="globex", amount=Decimal(1), currency="EUR", at=0), LOW
        )


def test_balance_follows_priced_usage_window_by_window() -> None:
    catalog = parse_catalog(
        f"""
        [[plans]]
        id = "payg"
        name = "First 50,000 free"
        tiers = [{{ up_to = 50_000, unit_price = "0" }}, {{ unit_price = "0.001" }}]
        [[subscriptions]]
        subject = "globex"
        plan_id = "payg"
        effective_from = {START}
        [[grants]]
        id = "g1"
        subject = "globex"
        amount = "25"
        at = {START}
        """
    )
    balance = BalanceState("globex", "USD")
    for g in catalog.grants_of("globex"):
        balance, _ = apply_grant(balance, g, LOW)
    usage = PeriodUsage("globex", DEC)
    kinds = []
    for i in range(80):  # 80 windows of 1,000 calls: 30,000 priced calls, $30
        usage = fold(usage, WindowIncrement("globex", START + i * 10_000, 1_000), catalog)
        balance, signals = apply_usage(balance, DEC, usage.amount, LOW)
        kinds += [(i, s.kind) for s in signals]
    # $5 spent (balance $20) after window 54; $25 spent after window 74.
    assert kinds == [(54, "low"), (74, "exhausted")]
    assert balance.balance == Decimal("-5.000")
