"""Ground truth: a month of per-window usage priced by the billing model equals totals computed
here independently, unit by unit with plain loops.

Four subjects: one upgrades mid-month (Bronze to Gold), one goes back and forth, one is on the
"first 50,000 free" plan, one (an API key without a consumer) on falling volume tiers and only
subscribed from the 3rd. Calls go to a weighted route (valuations, 5 units), other routes, or no
known path; a fifth of the windows are split into a window record and late corrections that
arrive later, in a shuffled stream.
"""

from __future__ import annotations

import random
from collections import defaultdict
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from metering.billing.invoice import close_period
from metering.billing.periods import bounds
from metering.billing.plans import parse_catalog
from metering.billing.pricing import PeriodUsage, fold, increment_from_usage, price_all
from metering.billing.quota import QuotaState, on_usage

PERIOD = "2026-12"
START, END = bounds(PERIOD)
DAY = 86_400_000
WINDOW_MS = 10_000
KEY = "key:" + "c" * 64

CATALOG_TOML = f"""
[[plans]]
id = "bronze"
name = "Bronze"
included_units = 10_000
overage = "0.002"
route_weights = {{ "/v1/valuations*" = 5, "/v1/valuations/bulk" = 20 }}
[[plans]]
id = "gold"
name = "Gold"
included_units = 100_000
overage = "0.001"
route_weights = {{ "/v1/valuations*" = 5 }}
[[plans]]
id = "payg"
name = "First 50,000 free"
tiers = [{{ up_to = 50_000, unit_price = "0" }}, {{ unit_price = "0.001" }}]
[[plans]]
id = "volume"
name = "Volume"
tiers = [{{ up_to = 2_000, unit_price = "0.0100" }}, {{ up_to = 20_000, unit_price = "0.0035" }},
         {{ unit_price = "0.00125" }}]
route_weights = {{ "/v1/valuations*" = 3 }}

[[subscriptions]]
subject = "acme"
plan_id = "bronze"
effective_from = {START - 40 * DAY}
[[subscriptions]]
subject = "acme"
plan_id = "gold"
effective_from = {START + 14 * DAY + 3_600_000}
[[subscriptions]]
subject = "hooli"
plan_id = "gold"
effective_from = {START}
[[subscriptions]]
subject = "hooli"
plan_id = "bronze"
effective_from = {START + 10 * DAY}
[[subscriptions]]
subject = "hooli"
plan_id = "gold"
effective_from = {START + 20 * DAY + 5_000}
[[subscriptions]]
subject = "globex"
plan_id = "payg"
effective_from = {START}
[[subscriptions]]
subject = "{KEY}"
plan_id = "volume"
effective_from = {START + 2 * DAY}
"""
CATALOG = parse_catalog(CATALOG_TOML)

# The same facts as CATALOG_TOML, written out again for the independent computation.
PLANS: dict[str, tuple[list[tuple[int | None, Decimal]], dict[str, int]]] = {
    "bronze": (
        [(10_000, Decimal(0)), (None, Decimal("0.002"))],
        {"/v1/valuations*": 5, "/v1/valuations/bulk": 20},
    ),
    "gold": ([(100_000, Decimal(0)), (None, Decimal("0.001"))], {"/v1/valuations*": 5}),
    "payg": ([(50_000, Decimal(0)), (None, Decimal("0.001"))], {}),
    "volume": (
        [(2_000, Decimal("0.0100")), (20_000, Decimal("0.0035")), (None, Decimal("0.00125"))],
        {"/v1/valuations*": 3},
    ),
}
HISTORY: dict[str, list[tuple[int, str]]] = {
    "acme": [(START - 40 * DAY, "bronze"), (START + 14 * DAY + 3_600_000, "gold")],
    "hooli": [(START, "gold"), (START + 10 * DAY, "bronze"), (START + 20 * DAY + 5_000, "gold")],
    "globex": [(START, "payg")],
    KEY: [(START + 2 * DAY, "volume")],
}
PATHS = ["/v1/valuations/17", "/v1/valuations/bulk", "/v1/orders", "/v1/search", None]


def generate(rng: random.Random) -> list[dict[str, Any]]:
    """Usage records of the month, windows and late corrections, in arrival order."""
    stream: list[tuple[int, dict[str, Any]]] = []  # (arrival, record)
    for subject in HISTORY:
        starts = sorted(rng.sample(range(START, END, WINDOW_MS), 700))
        for ws in starts:
            most = 200 if subject == "globex" else 90  # globex passes its 50,000 free calls
            calls = [rng.choice(PATHS) for _ in range(rng.randint(1, most))]
            parts = [calls]
            if rng.random() < 0.2:  # split off one or two late corrections
                cut = sorted(rng.sample(range(len(calls) + 1), 2))
                parts = [p for p in (calls[: cut[0]], calls[cut[0] : cut[1]], calls[cut[1] :]) if p]
            for i, part in enumerate(parts):
                paths: dict[str, int] = defaultdict(int)
                for p in part:
                    if p is not None:
                        paths[p] += 1
                record: dict[str, Any] = {
                    "kind": "window" if i == 0 else "late_correction",
                    "rate_key": subject,
                    "consumer": None if subject.startswith("key:") else subject,
                    "key_fingerprint": subject[4:] if subject.startswith("key:") else None,
                    "window_start": ws,
                    "window_end": ws + WINDOW_MS,
                    "count": len(part),
                    "units": float(len(part)),
                    "auth_failures": 0,
                    "countries": [],
                    "paths": dict(paths),
                }
                arrival = ws + WINDOW_MS + (rng.randint(1, 5 * DAY) if i else 0)
                stream.append((arrival, record))
    rng.shuffle(stream)  # ties broken at random
    return [r for _, r in sorted(stream, key=lambda ar: ar[0])]


def weight(patterns: dict[str, int], path: str | None) -> int:
    if path is None:
        return 1
    if path in patterns:
        return patterns[path]
    best, best_len = 1, -1
    for pattern, w in patterns.items():
        if pattern.endswith("*") and path.startswith(pattern[:-1]) and len(pattern) > best_len:
            best, best_len = w, len(pattern)
    return best


def plan_at(subject: str, at: int) -> str | None:
    plan = None
    for start, plan_id in HISTORY[subject]:
        if start <= at:
            plan = plan_id
    return plan


def unit_price(plan_id: str, position: int) -> Decimal:
    """The price of the period's ``position``-th unit (from 1) under ``plan_id``."""
    for up_to, price in PLANS[plan_id][0]:
        if up_to is None or position <= up_to:
            return price
    raise AssertionError("the last tier is open")


def ground_truth(records: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    windows: dict[str, dict[int, list[str | None]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        subject = r["consumer"] or "key:" + r["key_fingerprint"]
        routed = [p for p, n in r["paths"].items() for _ in range(n)]
        windows[subject][r["window_start"]] += routed + [None] * (r["count"] - len(routed))
    lines: dict[tuple[str, str], dict[str, Any]] = {}
    for subject, by_start in windows.items():
        position = 0
        for ws in sorted(by_start):
            plan_id = plan_at(subject, ws)
            if plan_id is None:
                continue
            line = lines.setdefault(
                (subject, plan_id),
                {"calls": 0, "units": 0, "amount": Decimal(0), "tiers": defaultdict(int)},
            )
            for path in by_start[ws]:
                line["calls"] += 1
                for _ in range(weight(PLANS[plan_id][1], path)):
                    position += 1
                    price = unit_price(plan_id, position)
                    line["units"] += 1
                    line["amount"] += price
                    line["tiers"][price] += 1
    return lines


def test_a_month_of_usage_prices_exactly_as_counted_by_hand() -> None:
    records = generate(random.Random(2026))
    incs = [i for i in map(increment_from_usage, records) if i is not None]
    lines = close_period(price_all(PERIOD, incs, CATALOG).values(), CATALOG)
    expected = ground_truth(records)
    got = {(ln.subject, ln.plan_id): ln for ln in lines}
    assert sorted(got) == sorted(expected)
    assert {k[1] for k in got if k[0] == "hooli"} == {"gold", "bronze"}
    for key, want in expected.items():
        line = got[key]
        assert (line.calls, line.quantity) == (want["calls"], want["units"]), key
        assert line.amount_exact == want["amount"], key
        cents = want["amount"].quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN)
        assert line.amount == cents, key
        # Each tier's units, by its price (a plan's tier prices are distinct here).
        assert {t.unit_price: t.quantity for t in line.tiers} == dict(want["tiers"]), key
    # The key was subscribed from the 3rd: its first two days are counted, not priced.
    key_usage = price_all(PERIOD, incs, CATALOG)[KEY]
    early = sum(
        r["count"] for r in records if r["key_fingerprint"] and r["window_start"] < START + 2 * DAY
    )
    assert early > 0 and key_usage.unpriced_calls == early
    # The stream crosses the quotas: each threshold once per subject and plan.
    for subject in HISTORY:
        usage, quota, ids = PeriodUsage(subject, PERIOD), QuotaState(subject, PERIOD), []
        for inc in (i for i in incs if i.subject == subject):
            usage = fold(usage, inc, CATALOG)
            quota, signals = on_usage(quota, usage, CATALOG)
            ids += [s.signal_id for s in signals]
        assert len(ids) == len(set(ids))
        if subject == "acme":
            assert ids  # Bronze's 10,000 units were passed
