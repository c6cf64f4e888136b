"""Reconciliation (metering/billing/reconcile.py): invoice lines against the enriched events."""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Any

from metering.billing.invoice import InvoiceLine, close_period
from metering.billing.periods import bounds
from metering.billing.plans import Catalog, parse_catalog
from metering.billing.pricing import increment_from_usage, price_all
from metering.billing.reconcile import reconcile
from schemas.events import EnrichedEvent

PERIOD = "2026-12"
START, END = bounds(PERIOD)
DAY = 86_400_000
WINDOW_MS = 10_000


def catalog(valuation_weight: int) -> Catalog:
    return parse_catalog(
        f"""
        [[plans]]
        id = "bronze"
        name = "Bronze"
        included_units = 100
        overage = "0.002"
        route_weights = {{ "/v1/valuations*" = {valuation_weight} }}
        [[subscriptions]]
        subject = "acme"
        plan_id = "bronze"
        effective_from = {START}
        [[subscriptions]]
        subject = "key:{"a" * 64}"
        plan_id = "bronze"
        effective_from = {START}
        """
    )


RIGHT = catalog(5)


def event(n: int, at: int, consumer: str | None, path: str, fingerprint: str | None = None) -> Any:
    return EnrichedEvent(
        event_id=f"gateway.raw-0-{n}-0",
        gateway="apisix",
        rate_key=consumer or (f"key:{fingerprint}" if fingerprint else "client:x"),
        consumer=consumer,
        key_fingerprint=fingerprint,
        path=path,
        auth_failed=False,
        event_time=at,
        processing_time=at + 5,
        source_partition=0,
        source_offset=n,
    ).model_dump()


def enriched_events() -> list[dict[str, Any]]:
    rng = random.Random(11)
    out = []
    for n in range(600):
        at = START + rng.randrange(0, 31 * DAY)
        who = rng.choice(["acme", "acme", None, "anon"])
        path = rng.choice(["/v1/valuations/9", "/v1/orders", "/v1/products/3"])
        if who == "anon":
            out.append(event(n, at, None, path))  # an anonymous client: not billable
        else:
            out.append(event(n, at, who, path, fingerprint="a" * 64))
    out.append(event(999, END + 5, "acme", "/v1/orders"))  # next period
    return out


def usage_records(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the job's windows count (with paths), as usage records."""
    windows: dict[tuple[str, int], dict[str, Any]] = {}
    paths: dict[tuple[str, int], dict[str, int]] = defaultdict(dict)
    for ev in events:
        key = (ev["rate_key"], ev["event_time"] - ev["event_time"] % WINDOW_MS)
        w = windows.setdefault(
            key,
            {
                "kind": "window",
                "rate_key": ev["rate_key"],
                "consumer": ev["consumer"],
                "key_fingerprint": ev["key_fingerprint"],
                "window_start": key[1],
                "window_end": key[1] + WINDOW_MS,
                "count": 0,
                "units": 0.0,
                "auth_failures": 0,
                "countries": [],
            },
        )
        w["count"] += 1
        paths[key][ev["path"]] = paths[key].get(ev["path"], 0) + 1
    return [w | {"paths": paths[k]} for k, w in windows.items()]


def invoice(records: list[dict[str, Any]], cat: Catalog) -> list[InvoiceLine]:
    incs = [i for i in map(increment_from_usage, records) if i is not None]
    return close_period(price_all(PERIOD, incs, cat).values(), cat)


def test_lines_from_the_usage_topic_agree_with_the_enriched_events() -> None:
    events = enriched_events()
    lines = invoice(usage_records(events), RIGHT)
    differences, recount = reconcile(lines, events, PERIOD, RIGHT, WINDOW_MS)
    assert differences == []
    assert recount.other_periods == 1 and recount.anonymous > 0
    assert {ln.subject for ln in lines} == {"acme", "key:" + "a" * 64}


def test_a_missing_call_is_found() -> None:
    events = enriched_events()
    dropped = next(e for e in events if e["consumer"] == "acme" and START <= e["event_time"] < END)
    lines = invoice(usage_records([e for e in events if e is not dropped]), RIGHT)
    differences, _ = reconcile(lines, events, PERIOD, RIGHT, WINDOW_MS)
    by_kind = {d.kind: d for d in differences}
    assert set(by_kind) >= {"calls", "quantity"}
    assert all(d.subject == "acme" for d in differences)
    calls = by_kind["calls"]
    assert int(calls.recomputed or 0) - int(calls.invoiced or 0) == 1
    assert "invoiced" in str(calls) and "enriched events" in str(calls)


def test_a_wrong_route_weight_is_found() -> None:
    events = enriched_events()
    lines = invoice(usage_records(events), catalog(valuation_weight=1))
    differences, _ = reconcile(lines, events, PERIOD, RIGHT, WINDOW_MS)
    kinds = {(d.subject, d.kind) for d in differences}
    assert ("acme", "quantity") in kinds and ("acme", "amount") in kinds
    assert ("acme", "calls") not in kinds  # the calls were all there


def test_missing_and_extra_lines_are_found() -> None:
    events = enriched_events()
    lines = invoice(usage_records(events), RIGHT)
    acme = [ln for ln in lines if ln.subject == "acme"]
    extra = acme[0].model_copy(update={"subject": "ghost"})
    differences, _ = reconcile([*lines[1:], extra], events, PERIOD, RIGHT, WINDOW_MS)
    assert sorted((d.kind, d.subject) for d in differences) == [
        ("extra_line", "ghost"),
        ("missing_line", lines[0].subject),
    ]
