"""Producer batching shared by every writer of the pipeline's output topics.

The job's Kafka sinks (``properties.batch.size`` / ``properties.linger.ms`` in
jobs.kafka_tables.sink_ddl) and the benchmark's plain-Python loop (librdkafka's ``batch.size`` /
``linger.ms``) use these values, so that a comparison between them is not one of batching.
"""

from __future__ import annotations

PRODUCER_BATCH_BYTES = 1_000_000
"""Largest batch per partition. Within both clients' request limits: librdkafka caps a batch at
its ``message.max.bytes`` (1,000,000 by default), and the sinks' ``max.request.size`` is at least
1,048,576 (metering.records.SINK_MAX_REQUEST_BYTES)."""

PRODUCER_LINGER_MS = 20
"""How long a producer waits to fill a batch. Exactly-once output only becomes visible at the next
checkpoint, seconds away; an at-least-once sink (alerts) is visible up to this much later."""


def librdkafka_batching() -> dict[str, int]:
    """The batching settings as confluent-kafka (librdkafka) producer properties."""
    return {"batch.size": PRODUCER_BATCH_BYTES, "linger.ms": PRODUCER_LINGER_MS}


def flink_sink_batching() -> dict[str, str]:
    """The batching settings as Flink Kafka SQL connector options (Kafka producer properties)."""
    return {
        "properties.batch.size": str(PRODUCER_BATCH_BYTES),
        "properties.linger.ms": str(PRODUCER_LINGER_MS),
    }
