"""The job's billing stage per subject (metering.billing.stream), without a JVM."""

from __future__ import annotations

import json
import pickle
from decimal import Decimal
from typing import Any

from metering.billing.periods import bounds
from metering.billing.plans import parse_catalog
from metering.billing.stream import OPEN_PERIODS, SubjectBilling, on_usage
from schemas.events import BalanceSignal, PeriodUsage, QuotaSignal

DEC, _ = bounds("2026-12")
JAN, _ = bounds("2027-01")
LOW = Decimal("1")
CATALOG = parse_catalog(
    f"""
[[plans]]
id = "small"
name = "Small"
included_units = 100
overage = "0.01"
hard_limit = true
route_weights = {{ "/v1/heavy*" = 10 }}
[[subscriptions]]
subject = "acme"
plan_id = "small"
effective_from = {DEC}
[[grants]]
id = "g1"
subject = "acme"
amount = "2.00"
at = {DEC}
"""
)


def window(subject: str | None, start: int, calls: int, **paths: int) -> dict[str, Any]:
    return {
        "kind": "window",
        "rate_key": subject or "client:x",
        "consumer": subject,
        "key_fingerprint": None,
        "window_start": start,
        "window_end": start + 10_000,
        "count": calls,
        "units": float(calls),
        "auth_failures": 0,
        "countries": [],
        "paths": {f"/v1/{p}": n for p, n in paths.items()} or None,
    }


def run(
    records: list[dict[str, Any]], state: SubjectBilling | None = None
) -> tuple[SubjectBilling | None, dict[str, list[dict[str, Any]]]]:
    out: dict[str, list[dict[str, Any]]] = {
        "period_usage": [],
        "quota_signals": [],
        "balance_signals": [],
    }
    for r in records:
        state, outputs = on_usage(state, r, CATALOG, LOW)
        for role, _, value in outputs:
            out[role].append(json.loads(value))
    return state, out


def test_each_record_updates_the_period_and_signals_each_crossing_once() -> None:
    # 40 plain calls, then 6 heavy ones (60 units): 100 units, the quota, exactly.
    state, out = run([window("acme", DEC, 40), window("acme", DEC + 10_000, 6, heavy=6)])
    assert state is not None
    last = out["period_usage"][-1]
    PeriodUsage.model_validate(last)
    assert (last["calls"], last["units"], last["amount"]) == (46, 100, "0")
    assert (last["included_units"], last["hard_limit"], last["balance"]) == (100, True, "2.00")
    signals = [QuotaSignal.model_validate(q) for q in out["quota_signals"]]
    assert [(s.kind, s.threshold_percent) for s in signals] == [
        ("threshold", 50),
        ("threshold", 80),
        ("threshold", 100),
        ("enforce", 100),
    ]
    # 150 units over the quota at 0.01: 1.50 spent of 2.00, the balance 0.50 crosses LOW.
    state, more = run([window("acme", DEC + 20_000, 150)], state)
    assert [q["threshold_percent"] for q in more["quota_signals"]] == [200]  # 250 units
    assert [b["kind"] for b in more["balance_signals"]] == ["low"]
    BalanceSignal.model_validate(more["balance_signals"][0])
    assert more["period_usage"][-1]["balance"] == "0.50"


def test_the_period_record_comes_before_the_signals_it_caused() -> None:
    state, outputs = on_usage(None, window("acme", DEC, 100), CATALOG, LOW)
    roles = [role for role, _, _ in outputs]
    assert roles == ["period_usage"] + ["quota_signals"] * 4
    assert state is not None and json.loads(outputs[0][2])["units"] == 100


def test_anonymous_clients_are_never_billed() -> None:
    state, out = run([window(None, DEC, 10)])
    assert state is None and out == {"period_usage": [], "quota_signals": [], "balance_signals": []}


def test_a_retroactive_subscription_stops_the_stream_pricing_that_period() -> None:
    state, _ = run([window("acme", DEC + 86_400_000, 10)])
    moved = CATALOG.with_items(
        subscriptions=[CATALOG.subscriptions[0].model_copy(update={"effective_from": DEC + 1_000})]
    )
    state2, outputs = on_usage(state, window("acme", DEC + 2 * 86_400_000, 5), moved, LOW)
    assert state2 is not None and "2026-12" in state2.repricing
    ((role, key, value),) = outputs
    assert (role, key, json.loads(value)["repricing_needed"]) == (
        "period_usage",
        "acme@2026-12",
        True,
    )
    # Said once: later records of that period change nothing.
    assert on_usage(state2, window("acme", DEC + 3 * 86_400_000, 5), moved, LOW)[1] == []
    # A subscription starting after the windows priced so far is not retroactive.
    later = CATALOG.with_items(
        plans=[CATALOG.plan("small").model_copy(update={"id": "other"})],
        subscriptions=[
            CATALOG.subscriptions[0].model_copy(
                update={"effective_from": DEC + 2 * 86_400_000, "plan_id": "other"}
            )
        ],
    )
    state3, outputs = on_usage(state, window("acme", DEC + 3 * 86_400_000, 5), later, LOW)
    assert state3 is not None and state3.repricing == frozenset()
    plans = [seg["plan_id"] for seg in json.loads(outputs[0][2])["segments"]]
    assert plans == ["small", "other"]


def test_old_periods_are_let_go_and_never_restarted_from_zero() -> None:
    state, _ = run([window("acme", DEC, 10), window("acme", JAN, 10)])
    assert state is not None and sorted(state.periods) == ["2026-12", "2027-01"]
    state, _ = run([window("acme", bounds("2027-02")[0], 10)], state)
    assert state is not None and len(state.periods) == OPEN_PERIODS
    assert "2026-12" not in state.periods
    state, outputs = on_usage(state, window("acme", DEC + 10_000, 3), CATALOG, LOW)
    assert outputs == [] and state is not None and "2026-12" in state.repricing


def test_state_written_before_a_field_was_added_still_restores() -> None:
    """A job upgraded from a savepoint reads state pickled by the version before: a field
    added since (with its default) is filled in, not an AttributeError in a restart loop."""
    state, _ = run([window("acme", DEC, 40)])
    assert state is not None
    old = pickle.loads(pickle.dumps(state))
    del old.__dict__["priced_by"]  # as the version before this field pickled it
    del old.periods["2026-12"].__dict__["unpriced_calls"]
    restored = pickle.loads(pickle.dumps(old))
    assert restored.priced_by == {} and restored.periods["2026-12"].unpriced_calls == 0
    # And it keeps working: the period goes on from the restored counts.
    state2, outputs = on_usage(restored, window("acme", DEC + 10_000, 2), CATALOG, LOW)
    assert state2 is not None and json.loads(outputs[0][2])["calls"] == 42


def test_the_balance_signal_is_the_topics_record() -> None:
    """The logic emits the topic's declared record (amounts as exact text), declared once."""
    from metering.billing import balance

    assert balance.BalanceSignal is BalanceSignal
    _, out = run([window("acme", DEC, 100), window("acme", DEC + 10_000, 150)])
    assert [s["kind"] for s in out["balance_signals"]] == ["low"]
    for signal in out["balance_signals"]:
        BalanceSignal.model_validate(signal)
