"""A month of gateway calls through the job on the MiniCluster: period usage, quota signals and
balance signals equal ground truth counted here by hand, call by call.

The month (November 2026) has three consumers:

* ``acme`` on Bronze (2,000 units included, then 0.002), upgraded to Gold (5,000 units
  included, hard limit) on the 15th; a valuation is 5 units on both;
* ``globex`` on "first 3,000 free, then 0.001" with late calls and gateway retries;
* ``initech``, prepaid (a 12.00 grant), on 0.006 a unit from the first: it runs dry.

Retries repeat an entry's bytes (the job counts them once); late calls arrive after the
windows they belong to have closed (the job counts them as late corrections).
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pyflink.common import Row
from pyflink.common.typeinfo import Types

from jobs.gateway_pipeline import build_pipeline, create_environment
from metering.settings import PipelineSettings
from testkit.traffic import max_event_age_covering
from udfs.functions import RAW_TYPE

pytestmark = pytest.mark.pipeline

START = 1_793_491_200_000  # 2026-11-01T00:00:00Z
DAY = 86_400_000
END = START + 30 * DAY
UPGRADE = START + 14 * DAY + 3_600_000
PERIOD = "2026-11"
LOW = Decimal("3")
TAGGED = Types.ROW_NAMED(["role", "k", "v"], [Types.STRING()] * 3)

CATALOG = f"""
[[plans]]
id = "bronze"
name = "Bronze"
included_units = 2_000
overage = "0.002"
route_weights = {{ "/v1/valuations*" = 5 }}
[[plans]]
id = "gold"
name = "Gold"
included_units = 5_000
overage = "0.001"
hard_limit = true
route_weights = {{ "/v1/valuations*" = 5 }}
[[plans]]
id = "free3k"
name = "First 3,000 free"
tiers = [{{ up_to = 3_000, unit_price = "0" }}, {{ unit_price = "0.001" }}]
[[plans]]
id = "metered"
name = "Metered"
tiers = [{{ unit_price = "0.006" }}]

[[subscriptions]]
subject = "acme"
plan_id = "bronze"
effective_from = {START - 40 * DAY}
[[subscriptions]]
subject = "acme"
plan_id = "gold"
effective_from = {UPGRADE}
[[subscriptions]]
subject = "globex"
plan_id = "free3k"
effective_from = {START}
[[subscriptions]]
subject = "initech"
plan_id = "metered"
effective_from = {START}

[[grants]]
id = "initech-topup-1"
subject = "initech"
amount = "12.00"
at = {START}
"""

# The same facts, written out again for the count by hand.
PRICES = {  # plan -> [(last unit of the tier or None, unit price)], route weights
    "bronze": ([(2_000, Decimal(0)), (None, Decimal("0.002"))], {"/v1/valuations": 5}),
    "gold": ([(5_000, Decimal(0)), (None, Decimal("0.001"))], {"/v1/valuations": 5}),
    "free3k": ([(3_000, Decimal(0)), (None, Decimal("0.001"))], {}),
    "metered": ([(None, Decimal("0.006"))], {}),
}
INCLUDED = {"bronze": 2_000, "gold": 5_000}
PATHS = ["/v1/valuations/7", "/v1/orders", "/v1/search"]


def plan_of(consumer: str, at: int) -> str:
    if consumer == "acme":
        return "gold" if at >= UPGRADE else "bronze"
    return {"globex": "free3k", "initech": "metered"}[consumer]


def weight(plan: str, path: str) -> int:
    return next((w for p, w in PRICES[plan][1].items() if path.startswith(p)), 1)


def price_of_unit(plan: str, position: int) -> Decimal:
    return next(p for up_to, p in PRICES[plan][0] if up_to is None or position <= up_to)


def entry(consumer: str, path: str, at: int, n: int) -> bytes:
    return json.dumps(
        {
            "request": {"uri": f"{path}?n={n}", "method": "GET", "headers": {}},
            "response": {"status": 200},
            "consumer": {"username": consumer},
            "client_ip": "81.2.69.142",
            "start_time": at,
        }
    ).encode()


def month(rng: random.Random) -> tuple[list[bytes], list[tuple[str, str, int]]]:
    """(records in arrival order, the distinct calls as (consumer, path, event time))."""
    calls: list[tuple[str, str, int]] = []
    bursts = {"acme": 160, "globex": 140, "initech": 120}
    for consumer, n in bursts.items():
        for at in sorted(rng.sample(range(START, END - DAY, 60_000), n)):
            for i in range(rng.randint(1, 40)):
                calls.append((consumer, rng.choice(PATHS), at + i * 150))
    calls.sort(key=lambda c: c[2])
    records = [entry(c, p, t, i) for i, (c, p, t) in enumerate(calls)]
    # Gateway retries: the same bytes again, right after.
    ordered: list[bytes] = []
    for r in records:
        ordered.append(r)
        if rng.random() < 0.02:
            ordered.append(r)
    # Late calls: globex's calls of two old windows, sent at the end.
    late = [i for i, (c, _, t) in enumerate(calls) if c == "globex" and t < START + 3 * DAY][:25]
    late_set = {records[i] for i in late}
    ordered = [r for r in ordered if r not in late_set] + [records[i] for i in late]
    return ordered, calls


def by_hand(calls: list[tuple[str, str, int]]) -> dict[str, dict[str, Any]]:
    """Per consumer: calls, units and amount of the period; the thresholds its units crossed
    (plan, percent); its balance signals."""
    out: dict[str, dict[str, Any]] = {}
    for consumer in ("acme", "globex", "initech"):
        position = 0
        amount = Decimal(0)
        reached: set[tuple[str, int]] = set()
        n = 0
        windows: dict[int, list[str]] = defaultdict(list)
        for c, path, at in calls:
            if c == consumer:
                windows[at - at % 10_000].append(path)
        for ws in sorted(windows):
            plan = plan_of(consumer, ws)
            for path in windows[ws]:
                n += 1
                for _ in range(weight(plan, path)):
                    position += 1
                    amount += price_of_unit(plan, position)
            if plan in INCLUDED:
                for pct in (50, 80, 100, *range(200, 10_000, 100)):
                    if position * 100 >= INCLUDED[plan] * pct:
                        reached.add((plan, pct))
        out[consumer] = {"calls": n, "units": position, "amount": amount, "reached": reached}
    return out


@pytest.mark.usefixtures("pipeline_hash_key")
def test_a_month_prices_exactly_and_signals_each_crossing_once(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(CATALOG)
    records, calls = month(random.Random(11))
    cfg = PipelineSettings(
        parallelism=2,
        bounded=True,
        max_event_age_seconds=max_event_age_covering(START),
        billing_catalog=str(catalog),
        billing_low_balance=LOW,
    )
    env, t_env = create_environment(cfg, {"python.operator-chaining.enabled": "false"})
    rows = [Row(v, i % 2, i // 2, START // 1000 + i // 100) for i, v in enumerate(records)]
    raw = t_env.from_data_stream(env.from_collection(rows, type_info=RAW_TYPE))
    out = build_pipeline(t_env, raw, cfg)

    def tag(role: str, table: Any) -> Any:
        return t_env.to_data_stream(table).map(lambda r: Row(role, r[0], r[1]), output_type=TAGGED)

    stream = tag("period_usage", out.period_usage).union(
        tag("quota", out.quota_signals),
        tag("balance", out.balance_signals),
        tag("usage", out.usage),
    )
    latest: dict[str, dict[str, Any]] = {}
    quota: list[dict[str, Any]] = []
    balance: list[dict[str, Any]] = []
    late = 0
    with stream.execute_and_collect("billing-month") as results:
        for role, k, v in results:
            record = json.loads(v)
            if role == "period_usage":
                latest[k] = record
            elif role == "quota":
                quota.append(record)
            elif role == "balance":
                balance.append(record)
            elif record["kind"] == "late_correction":
                late += record["count"]

    truth = by_hand(calls)
    # The run had what the test means to exercise.
    assert late > 0
    assert len(records) > len(calls)  # retries
    assert sorted(latest) == [f"{c}@{PERIOD}" for c in ("acme", "globex", "initech")]
    for consumer, want in truth.items():
        got = latest[f"{consumer}@{PERIOD}"]
        assert (got["calls"], got["units"]) == (want["calls"], want["units"]), consumer
        assert Decimal(got["amount"]) == want["amount"], consumer
        assert got["unpriced_calls"] == 0 and got["repricing_needed"] is False
    acme = latest[f"acme@{PERIOD}"]
    assert [s["plan_id"] for s in acme["segments"]] == ["bronze", "gold"]
    # Measured against the plan in force now: Gold's quota, a hard limit.
    assert (acme["included_units"], acme["hard_limit"], acme["balance"]) == (5_000, True, None)
    initech = latest[f"initech@{PERIOD}"]
    assert initech["included_units"] is None
    assert Decimal(initech["balance"]) == Decimal("12.00") - truth["initech"]["amount"]

    # Every threshold crossed, once; acme's Gold hard limit enforced once.
    thresholds = [
        (s["subject"], s["plan_id"], s["threshold_percent"])
        for s in quota
        if s["kind"] == "threshold"
    ]
    assert len(thresholds) == len(set(thresholds))
    assert len(quota) == len({s["signal_id"] for s in quota})
    want_thresholds = {(c, p, pct) for c, w in truth.items() for p, pct in w["reached"]}
    assert set(thresholds) == want_thresholds
    assert ("acme", "bronze", 100) in want_thresholds and ("acme", "gold", 100) in want_thresholds
    assert [(s["subject"], s["plan_id"]) for s in quota if s["kind"] == "enforce"] == [
        ("acme", "gold")
    ]

    # initech ran dry: low once, then exhausted once.
    spent = truth["initech"]["amount"]
    assert spent > Decimal("12.00")
    assert [(s["subject"], s["kind"], s["sequence"]) for s in balance] == [
        ("initech", "low", 1),
        ("initech", "exhausted", 1),
    ]
    low, exhausted = balance
    assert Decimal(low["balance"]) <= LOW < Decimal(low["balance"]) + Decimal("0.25")
    assert Decimal(exhausted["balance"]) <= 0
    # No secret or client address in what billing writes.
    text = json.dumps([latest, quota, balance])
    assert "81.2.69.142" not in text
