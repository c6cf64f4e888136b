"""Alert records as the job writes them (schemas.events.Alert), for the responder's tests.

``make_alert`` builds a valid record of one incident's ``open``, ``update`` or ``closed`` status
with the detector's own ids (metering.detect.alert_id), so tests exercise the responder with
what the job would send; ``produce_alerts`` writes them to a topic in one Kafka transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, Literal

import orjson
from confluent_kafka import Producer

from metering.detect import alert_id
from schemas.events import Alert

T0 = 1_800_000_000_000
"""An event time (2027-01-15) for incidents: the responder does not judge alert times."""


def make_alert(
    rate_key: str,
    *,
    status: Literal["open", "update", "closed"] = "open",
    consumer: str | None = None,
    key_fingerprint: str | None = None,
    rule: str = "rate_spike",
    severity: str = "critical",
    incident_start: int = T0,
    detected_at: int = T0 + 60_000,
) -> dict[str, Any]:
    """One alert record (validated against the job's model) of the incident of ``rate_key``
    that started at ``incident_start``."""
    suffix = {"open": None, "update": f"update:{severity}", "closed": "closed"}[status]
    record = {
        "alert_id": alert_id(rate_key, incident_start, suffix),
        "status": status,
        "rule": rule,
        "rules": [rule],
        "severity": severity,
        "score": 12.5,
        "probability": 3.2e-13 if status != "closed" else None,
        "rate_key": rate_key,
        "consumer": consumer,
        "key_fingerprint": key_fingerprint,
        "window_start": incident_start,
        "window_end": incident_start + 10_000,
        "window_closed": True,
        "incident_start": incident_start,
        "incident_windows": 1 if status == "open" else 3,
        "observed_count": 900 if status != "closed" else None,
        "expected_count": 12.0 if status != "closed" else None,
        "expected_sd": 3.5 if status != "closed" else None,
        "expected_from": "minutes" if status != "closed" else None,
        "countries_seen": ["DE", "BR"] if status != "closed" else [],
        "auth_failures": 0 if status != "closed" else None,
        "summary": f"{rate_key}: 900 requests in 10 s, 75x its normal rate",
        "features": {"ratio": 75.0} if status != "closed" else {},
        "detected_at": detected_at,
    }
    return Alert.model_validate(record).model_dump(mode="json")


def produce_alerts(bootstrap: str, topic: str, alerts: Sequence[dict[str, Any]]) -> None:
    """Write the alerts, keyed by rate key as the job does, in one committed transaction."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "transactional.id": f"test-alerts-{uuid.uuid4().hex}",
            "enable.idempotence": True,
        }
    )
    producer.init_transactions(30)
    producer.begin_transaction()
    for alert in alerts:
        producer.produce(topic, key=str(alert["rate_key"]).encode(), value=orjson.dumps(alert))
    producer.commit_transaction(30)
