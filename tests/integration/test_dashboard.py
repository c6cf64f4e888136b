"""The dashboard's queries against a real Pinot: they run as written, a consumer's view holds
only that consumer's rows, and a missing table is recognized as such (not as a failure).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from cluster_helpers import wait_until
from confluent_kafka import Producer

from dashboard import data, queries, tokens
from metering.kpi import Query

pytestmark = pytest.mark.integration

PINOT_TIMEOUT_S = 180.0
SECRET = b"q8Rz2LmX0vT5bN7cY3wK9pD4fH6jS1aG"


def _event(consumer: str, route: str, status: int, at_ms: int, country: str) -> dict[str, Any]:
    return {
        "event_id": uuid.uuid4().hex,
        "request_id": uuid.uuid4().hex,
        "gateway": "kong",
        "rate_key": f"key:fp-{consumer}",
        "consumer": consumer,
        "key_fingerprint": f"fp-{consumer}",
        "route": route,
        "method": "GET",
        "path": f"/{route}",
        "status": status,
        "auth_failed": False,
        "client_hash": f"c-{consumer}",
        "country": country,
        "latitude": 52.5,
        "longitude": 13.4,
        "latency_ms": 12.0,
        "units": 1.0,
        "event_time": at_ms,
        "processing_time": at_ms,
    }


@pytest.fixture
def tables(pinot: Any, kafka_bootstrap: str, unique_topics: dict[str, str]) -> Iterator[str]:
    from tools.pinot_tables import (
        PinotController,
        apply_definitions,
        load_definitions,
        placeholder_values,
    )

    definitions = load_definitions(
        placeholder_values(
            bootstrap_servers=kafka_bootstrap,
            enriched_topic=unique_topics["enriched"],
            alerts_topic=unique_topics["alerts"],
        ),
        ("api_events", "alerts"),
    )
    controller = PinotController(pinot.controller)
    controller.wait_healthy(60)
    apply_definitions(controller, definitions, recreate=True)
    yield unique_topics["enriched"]
    for name in ("api_events", "alerts"):
        controller.delete_table(name, "REALTIME")


def test_views_against_pinot(pinot: Any, tables: str, kafka_bootstrap: str) -> None:
    now = int(time.time() * 1000)
    events = [
        _event("acme", "orders", 200, now - 60_000, "DE"),
        _event("acme", "orders", 500, now - 50_000, "DE"),
        _event("acme", "users", 200, now - 40_000, "FR"),
        _event("globex", "orders", 200, now - 30_000, "US"),
        _event("globex", "admin", 403, now - 20_000, "US"),
    ]
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "acks": "all"})
    for event in events:
        producer.produce(tables, key=event["rate_key"], value=json.dumps(event))
    assert producer.flush(30) == 0
    del producer

    url = pinot.broker
    window = queries.window_ending(now + 5_000, 3_600_000)
    count = Query(
        "SELECT COUNT(*) FROM api_events WHERE event_time >= %(start_ms)s LIMIT 1",
        {"start_ms": window.start_ms},
    )
    seen: list[Any] = []

    def ingested() -> bool:
        nonlocal seen
        result = data.run_query(url, count, "api_events", 10.0)
        seen = list(result.rows)
        return result.ok and bool(result.rows) and int(result.rows[0][0]) == len(events)

    wait_until(
        "Pinot to ingest the events",
        ingested,
        PINOT_TIMEOUT_S,
        interval_s=0.5,
        detail=lambda: f"rows {seen}",
    )

    claims = tokens.verify_token(
        tokens.create_token("acme", SECRET, now // 1000), SECRET, now // 1000
    )
    results = {
        p.key: (p, data.run_query(url, p.query, p.table, 10.0))
        for p in queries.consumer_view(claims, window)
    }
    for key, (panel, result) in results.items():
        if panel.optional:
            # No actions or period-usage table in this test (another test's may exist).
            assert result.ok or result.problem == "missing_table", result
            continue
        assert result.ok, (key, result)
        if "consumer" in result.columns:
            assert {r["consumer"] for r in result.records()} <= {"acme"}, key
    summary = results["summary"][1].records()[0]
    assert int(summary["calls"]) == 3 and int(summary["errors"]) == 1
    routes = {r["route"]: int(r["calls"]) for r in results["routes"][1].records()}
    assert routes == {"orders": 2, "users": 1}

    for panel in [*queries.ops_view(window), *queries.product_view(window)]:
        result = data.run_query(url, panel.query, panel.table, 10.0)
        assert result.ok or (panel.optional and result.problem == "missing_table"), (
            panel.key,
            result,
        )
    top = {
        r["consumer"]: int(r["calls"])
        for r in data.run_query(url, queries.top_consumers(window), "api_events").records()
    }
    assert top == {"acme": 3, "globex": 2}

    missing = data.run_query(
        url,
        Query("SELECT COUNT(*) FROM no_such_table_dashboard LIMIT 1"),
        "no_such_table_dashboard",
    )
    assert missing.problem == "missing_table", missing
