"""Pinot's alerts table stores an alert once, however often the alerts topic carries it.

Alerts are at-least-once by default: after a restart the job may write an alert again, with the
same deterministic alert_id and a later detected_at. The table deduplicates on alert_id.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from cluster_helpers import wait_until
from confluent_kafka import Producer

from metering.detect import alert_id
from metering.kpi import Query
from schemas.events import Alert

pytestmark = pytest.mark.integration

PINOT_TIMEOUT_S = 180.0
WINDOW_MS = 10_000


def _alert(rate_key: str, window_start: int, detected_at: int) -> Alert:
    return Alert(
        alert_id=alert_id(rate_key, window_start),
        status="open",
        rule="auth_failures",
        rules=["auth_failures"],
        severity="warning",
        score=30.0,
        rate_key=rate_key,
        window_start=window_start,
        window_end=window_start + WINDOW_MS,
        window_closed=True,
        incident_start=window_start,
        incident_windows=1,
        observed_count=40,
        expected_count=2.0,
        expected_sd=1.5,
        expected_from="hour",
        countries_seen=["DE"],
        auth_failures=30,
        summary="30 of 40 requests rejected",
        features={"signal": "burst"},
        detected_at=detected_at,
    )


@pytest.fixture
def alerts_table(pinot: Any, kafka_bootstrap: str, unique_topics: dict[str, str]) -> Iterator[str]:
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
        ("alerts",),
    )
    controller = PinotController(pinot.controller)
    controller.wait_healthy(60)
    apply_definitions(controller, definitions, recreate=True)
    yield unique_topics["alerts"]
    controller.delete_table("alerts", "REALTIME")


def test_a_replayed_alert_is_stored_once(
    pinot: Any, alerts_table: str, kafka_bootstrap: str
) -> None:
    from jobs.kpi import PinotKpis

    now = int(time.time() * 1000)
    start = now - now % WINDOW_MS - WINDOW_MS
    first = _alert("key:fp-dedup", start, detected_at=now)
    replay = first.model_copy(update={"detected_at": now + 5_000})
    later = _alert("key:fp-dedup", start + WINDOW_MS, detected_at=now + 6_000)
    assert replay.alert_id == first.alert_id != later.alert_id

    # Keyed by rate key as the job writes them: one key, one partition, in this order.
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "acks": "all"})
    for alert in (first, replay, later):
        producer.produce(alerts_table, key=alert.rate_key, value=alert.model_dump_json())
    assert producer.flush(30) == 0
    del producer

    kpis = PinotKpis(pinot.broker)
    try:
        rows: list[list[Any]] = []

        def later_ingested() -> bool:
            nonlocal rows
            try:
                _, rows = kpis.run(
                    Query(
                        "SELECT alert_id, CAST(detected_at AS LONG) FROM alerts "
                        "ORDER BY detected_at LIMIT 10"
                    )
                )
            except Exception:  # the table is still being created: no route for it yet
                return False
            return any(r[0] == later.alert_id for r in rows)

        # The partition is consumed in order, so once the later alert is in, the replay before it
        # has been consumed too (and dropped).
        wait_until(
            "Pinot to ingest the alert after the replay",
            later_ingested,
            PINOT_TIMEOUT_S,
            interval_s=0.5,
            detail=lambda: f"rows {rows}",
        )
        assert [(r[0], int(r[1])) for r in rows] == [
            (first.alert_id, first.detected_at),
            (later.alert_id, later.detected_at),
        ]
        _, count = kpis.run(
            Query(f"SELECT COUNT(*) FROM alerts WHERE alert_id = '{first.alert_id}'")
        )
        assert int(count[0][0]) == 1
        # The rule's features land in a JSON column, queryable by path.
        _, signal = kpis.run(
            Query(
                "SELECT jsonExtractScalar(features, '$.signal', 'STRING') FROM alerts "
                f"WHERE alert_id = '{first.alert_id}'"
            )
        )
        assert signal == [["burst"]]
    finally:
        kpis.close()
