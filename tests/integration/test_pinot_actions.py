"""Pinot's actions table ingests the responder's action records as the responder writes them:
a planned record and its terminal record for each action, keyed by action id, every row kept
(the history), queryable by outcome, action and incident."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from cluster_helpers import wait_until
from confluent_kafka import Producer

from metering.kpi import Query
from responder.actions import ActionRecord
from tools.topics import ensure_topics, named_pipeline_topics

pytestmark = pytest.mark.integration

PINOT_TIMEOUT_S = 180.0


@pytest.fixture
def actions_topic(pinot: Any, kafka_bootstrap: str, unique_topics: dict[str, str]) -> Iterator[str]:
    from tools.pinot_tables import (
        PinotController,
        apply_definitions,
        load_definitions,
        placeholder_values,
    )

    topic = unique_topics["alerts"].replace(".alerts.", ".actions.")
    ensure_topics(kafka_bootstrap, named_pipeline_topics({"actions": topic}, partitions=2))
    definitions = load_definitions(
        placeholder_values(
            bootstrap_servers=kafka_bootstrap,
            enriched_topic=unique_topics["enriched"],
            alerts_topic=unique_topics["alerts"],
            actions_topic=topic,
        ),
        ("actions",),
    )
    controller = PinotController(pinot.controller)
    controller.wait_healthy(60)
    apply_definitions(controller, definitions, recreate=True)
    yield topic
    controller.delete_table("actions", "REALTIME")


def _planned(action_id: str, action: str, target: str, now: int) -> ActionRecord:
    return ActionRecord.model_validate(
        {
            "action_id": action_id,
            "outcome": "planned",
            "action": action,
            "target": target,
            "incident_id": "inc-1",
            "alert_id": "alert-1",
            "alert_status": "open",
            "rule": "rate_spike",
            "severity": "critical",
            "rate_key": "acme",
            "consumer": "acme",
            "key_fingerprint": "f" * 32,
            "alert": {"alert_id": "alert-1", "summary": "2073 requests where 157 expected"},
            "recorded_at": now,
            "responder": "test",
        }
    )


def test_the_actions_table_keeps_every_record_of_every_action(
    pinot: Any, actions_topic: str, kafka_bootstrap: str
) -> None:
    from jobs.kpi import PinotKpis

    now = int(time.time() * 1000)
    page = _planned("a-page", "pagerduty", "pagerduty", now)
    block = _planned("a-block", "block", "apisix:key:" + "f" * 32, now)
    records = [
        page,
        block,
        page.finished("done", now + 120, attempts=1, latency_ms=118.5),
        block.finished("dry_run", now + 130, reason="dry run: recorded, not performed"),
    ]
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "acks": "all"})
    for r in records:
        producer.produce(actions_topic, key=r.action_id, value=r.to_json())
    assert producer.flush(30) == 0
    del producer

    kpis = PinotKpis(pinot.broker)
    try:
        rows: list[list[Any]] = []

        def all_ingested() -> bool:
            nonlocal rows
            try:
                _, rows = kpis.run(
                    Query(
                        "SELECT action_id, outcome, attempts, latency_ms, reason FROM actions "
                        "WHERE incident_id = 'inc-1' ORDER BY recorded_at, action_id LIMIT 10"
                    )
                )
            except Exception:  # the table is still being created: no route for it yet
                return False
            return len(rows) == len(records)

        wait_until(
            "Pinot to ingest the action records",
            all_ingested,
            PINOT_TIMEOUT_S,
            interval_s=0.5,
            detail=lambda: f"rows {rows}",
        )
        assert [(r[0], r[1], int(r[2])) for r in rows] == [
            ("a-block", "planned", 0),
            ("a-page", "planned", 0),
            ("a-page", "done", 1),
            ("a-block", "dry_run", 0),
        ]
        assert float(rows[2][3]) == 118.5
        assert rows[3][4] == "dry run: recorded, not performed"
        # The planned record's copy of the alert lands in a JSON column, queryable by path.
        _, summary = kpis.run(
            Query(
                "SELECT jsonExtractScalar(alert, '$.summary', 'STRING') FROM actions "
                "WHERE action_id = 'a-page' AND outcome = 'planned'"
            )
        )
        assert summary == [["2073 requests where 157 expected"]]
    finally:
        kpis.close()
