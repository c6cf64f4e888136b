"""The dashboard's queries against a real Pinot: they run as written, a consumer's view holds
only that consumer's rows, a missing table is recognized as such (not as a failure), and the
pipeline-health queries return exactly what the dead-letter, reconciliation and enriched topics
hold.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest
from cluster_helpers import wait_until
from confluent_kafka import Producer

from dashboard import data, queries, tokens
from metering.kpi import Query
from schemas.events import DeadLetter, DeadLetterReason, Reconciliation

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


@contextmanager
def _created_tables(
    pinot: Any, kafka_bootstrap: str, topics: dict[str, str], names: Sequence[str]
) -> Iterator[None]:
    """The tables ``names`` on the test's topics, dropped afterwards."""
    from tools.pinot_tables import (
        PinotController,
        apply_definitions,
        load_definitions,
        placeholder_values,
    )

    definitions = load_definitions(
        placeholder_values(
            bootstrap_servers=kafka_bootstrap,
            enriched_topic=topics["enriched"],
            alerts_topic=topics["alerts"],
            dlq_topic=topics["dlq"],
            reconciliation_topic=topics["reconciliation"],
        ),
        names,
    )
    controller = PinotController(pinot.controller)
    controller.wait_healthy(60)
    apply_definitions(controller, definitions, recreate=True)
    yield
    for name in names:
        controller.delete_table(name, "REALTIME")


@pytest.fixture
def tables(pinot: Any, kafka_bootstrap: str, unique_topics: dict[str, str]) -> Iterator[str]:
    with _created_tables(pinot, kafka_bootstrap, unique_topics, ("api_events", "alerts")):
        yield unique_topics["enriched"]


@pytest.fixture
def health_tables(
    pinot: Any, kafka_bootstrap: str, unique_topics: dict[str, str]
) -> Iterator[dict[str, str]]:
    """api_events, dead_letters and reconciliation on the test's topics."""
    names = ("api_events", "dead_letters", "reconciliation")
    with _created_tables(pinot, kafka_bootstrap, unique_topics, names):
        yield unique_topics


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


MINUTE_MS = 60_000


def _dead_letter(reason: DeadLetterReason, at_ms: int, offset: int) -> DeadLetter:
    return DeadLetter(
        reason=reason,
        detail="$.status: int_parsing",
        source_topic="gateway.raw",
        source_partition=offset % 2,
        source_offset=offset,
        element_index=None if offset % 2 else 3,
        payload='{"status": "x", "apikey": "<scrubbed>"}',
        payload_bytes=40 + offset,
        payload_truncated=False,
        dead_lettered_at=at_ms,
    )


def _interval(
    raw_topic: str,
    partition: int,
    start: int,
    counts: tuple[int, int, int, int, int, int],
) -> Reconciliation:
    """``counts``: records_in, entries_in, enriched_out, dead_lettered, deduplicated, late."""
    records_in, entries_in, enriched_out, dead_lettered, deduplicated, late = counts
    return Reconciliation(
        source_topic=raw_topic,
        source_partition=partition,
        interval_start=start,
        interval_end=start + MINUTE_MS,
        offset_first=0,
        offset_last=records_in - 1,
        records_in=records_in,
        entries_in=entries_in,
        enriched=enriched_out + deduplicated,
        enriched_out=enriched_out,
        dead_lettered=dead_lettered,
        deduplicated=deduplicated,
        late=late,
    )


def test_pipeline_health_against_pinot(
    pinot: Any, health_tables: dict[str, str], kafka_bootstrap: str
) -> None:
    """Known dead letters, reconciliation records (one interval updated twice: the upsert keeps
    the latest; one interval unbalanced) and enriched events: each health query returns exactly
    what they hold in the window, nothing from outside it."""
    topics = health_tables
    now = int(time.time() * 1000)
    minute = now - now % MINUTE_MS - 10 * MINUTE_MS  # a whole UTC minute, well in the window
    outside = now - 2 * 3_600_000  # before the start of any 1-hour window ending after now

    dead_letters = [
        _dead_letter("not_json", outside, 0),  # out of the window
        _dead_letter("not_json", minute + 1_000, 1),
        _dead_letter("invalid_event", minute + 2_000, 2),
        _dead_letter("not_json", minute + 59_999, 3),
        _dead_letter("not_json", minute + MINUTE_MS, 4),
        _dead_letter("too_large", minute + MINUTE_MS + 5, 5),
    ]
    raw = topics["raw"]
    intervals = [
        # partition 0, one interval updated twice: only the last record counts.
        _interval(raw, 0, minute, (3, 10, 9, 1, 0, 0)),
        _interval(raw, 0, minute, (5, 15, 12, 2, 1, 0)),
        _interval(raw, 0, minute, (6, 20, 16, 3, 1, 2)),
        # partition 1: unbalanced (7 entries in, 5 + 1 + 0 accounted for).
        _interval(raw, 1, minute, (2, 7, 5, 1, 0, 0)),
        # partition 0, the next interval: balanced.
        _interval(raw, 0, minute + MINUTE_MS, (2, 4, 4, 0, 0, 1)),
        # partition 1, long before the window: not counted.
        _interval(raw, 1, outside - outside % MINUTE_MS, (9, 9, 0, 0, 0, 0)),
    ]
    events = [
        _event("acme", "orders", 200, now - 4_000, "DE"),
        _event("acme", "orders", 500, now - 3_000, "DE"),
        _event("globex", "users", 200, now - 2_000, "US"),
    ]
    produced_at = int(time.time() * 1000)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "acks": "all"})
    for dead in dead_letters:
        producer.produce(topics["dlq"], value=dead.model_dump_json())
    for report in intervals:
        # Keyed as the job keys it: one interval's records share a partition, in this order.
        key = f"{report.source_partition}@{report.interval_start}"
        producer.produce(topics["reconciliation"], key=key, value=report.model_dump_json())
    for event in events:
        producer.produce(topics["enriched"], key=event["rate_key"], value=json.dumps(event))
    assert producer.flush(30) == 0
    del producer

    url = pinot.broker
    latest = Query(
        "SELECT entries_in FROM reconciliation "
        "WHERE source_partition = 0 AND interval_start = %(start)s LIMIT 10",
        {"start": minute},
    )
    counts = {
        "api_events": (Query("SELECT COUNT(*) FROM api_events LIMIT 1"), len(events)),
        "dead_letters": (Query("SELECT COUNT(*) FROM dead_letters LIMIT 1"), len(dead_letters)),
        # One row per key (upsert): the updated interval once.
        "reconciliation": (Query("SELECT COUNT(*) FROM reconciliation LIMIT 1"), 4),
    }
    seen: dict[str, Any] = {}

    def ingested() -> bool:
        for table, (query, want) in counts.items():
            result = data.run_query(url, query, table, 10.0)
            seen[table] = result.rows or result.problem
            if not (result.ok and result.rows and int(result.rows[0][0]) == want):
                return False
        # The key's last record is in, so its partition's earlier records have been consumed.
        result = data.run_query(url, latest, "reconciliation", 10.0)
        seen["latest"] = result.rows or result.problem
        return result.ok and [int(r[0]) for r in result.rows] == [20]

    wait_until(
        "Pinot to ingest the health records",
        ingested,
        PINOT_TIMEOUT_S,
        interval_s=0.5,
        detail=lambda: f"seen {seen}",
    )
    queried_at = int(time.time() * 1000)
    window = queries.window_ending(queried_at, 3_600_000)
    assert queries.bucket_for(window) == "minute"
    assert window.start_ms <= minute and outside < window.start_ms

    panels = queries.health_view(window)
    results = {p.key: data.run_query(url, p.query, p.table, 10.0) for p in panels}
    assert list(results) == ["freshness", "dead_letters", "reconciliation"]
    for key, result in results.items():
        assert result.ok, (key, result)

    rates = [
        (r["reason"], int(r["bucket_start"]), int(r["dead_letters"]))
        for r in results["dead_letters"].records()
    ]
    assert rates == [
        ("invalid_event", minute, 1),
        ("not_json", minute, 2),
        ("not_json", minute + MINUTE_MS, 1),
        ("too_large", minute + MINUTE_MS, 1),
    ]
    assert results["dead_letters"].columns == ("reason", "bucket_start", "dead_letters")

    (status,) = results["reconciliation"].records()
    assert {k: int(v) for k, v in status.items()} == {
        "intervals": 3,
        "unbalanced": 1,
        "records_in": 6 + 2 + 2,
        "entries_in": 20 + 7 + 4,
        "enriched_out": 16 + 5 + 4,
        "dead_lettered": 3 + 1 + 0,
        "deduplicated": 1 + 0 + 0,
        "late": 2 + 0 + 1,
    }

    (fresh,) = results["freshness"].records()
    assert results["freshness"].columns == (
        "events",
        "p50_ms",
        "p95_ms",
        "p99_ms",
        "newest_ingested_at",
    )
    assert int(fresh["events"]) == len(events)
    for p in ("p50_ms", "p95_ms", "p99_ms"):
        assert 0 <= float(fresh[p]) < 120_000, (p, fresh)
    assert float(fresh["p50_ms"]) <= float(fresh["p95_ms"]) <= float(fresh["p99_ms"])
    # Stamped per event as a server consumed it (now() at ingestion, not at table creation).
    stamped = data.run_query(
        url,
        Query(
            "SELECT MIN(ingested_at), MAX(ingested_at) FROM api_events "
            "WHERE ingested_at >= %(start_ms)s LIMIT 1",
            {"start_ms": window.start_ms},
        ),
        "api_events",
        10.0,
    )
    assert stamped.ok, stamped
    first, last = (int(v) for v in stamped.rows[0])
    assert produced_at <= first <= last <= queried_at
    assert int(fresh["newest_ingested_at"]) == last

    # The payload stays in the topic: the table has no such column.
    columns = data.run_query(
        url, Query("SELECT * FROM dead_letters LIMIT 1"), "dead_letters", 10.0
    ).columns
    assert "payload" not in columns and "reason" in columns
