"""Flink SQL DDL for the Kafka source and sinks (built as strings, so tests need no JVM).

The source and sinks are Kafka SQL connector tables rather than DataStream connectors because the
table source exposes each record's topic, partition and offset as metadata: dead letters must name
their source coordinates, and PyFlink's DataStream KafkaSource only hands over the value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from metering.kafka_producer import flink_sink_batching
from metering.kafka_security import kafka_security_options
from metering.records import SINK_MAX_REQUEST_BYTES
from metering.settings import PipelineSettings
from metering.topics import OUTPUTS, Delivery, Topic

__all__ = [
    "SinkSpec",
    "SourceSpec",
    "kafka_security_options",
    "sink_ddl",
    "sink_specs",
    "sink_table",
    "source_ddl",
]


def _options(opts: dict[str, str]) -> str:
    def quote(s: str) -> str:
        return "'" + s.replace("'", "''") + "'"

    return ",\n  ".join(f"{quote(k)} = {quote(v)}" for k, v in opts.items())


@dataclass(frozen=True)
class SourceSpec:
    table: str
    topic: str
    bootstrap_servers: str
    group_id: str
    startup_mode: str
    bounded: bool
    security: Mapping[str, str] = field(default_factory=dict)
    startup_timestamp_ms: int | None = None


def source_ddl(spec: SourceSpec) -> str:
    opts = {
        "connector": "kafka",
        "topic": spec.topic,
        "properties.bootstrap.servers": spec.bootstrap_servers,
        "properties.group.id": spec.group_id,
        "properties.auto.offset.reset": "earliest",
        # Producers of the raw topic may be transactional too; never read their aborted data.
        "properties.isolation.level": "read_committed",
        "scan.startup.mode": spec.startup_mode,
        "format": "raw",
    }
    if spec.startup_timestamp_ms is not None:
        opts["scan.startup.timestamp-millis"] = str(spec.startup_timestamp_ms)
    if spec.bounded:
        opts["scan.bounded.mode"] = "latest-offset"
    opts |= spec.security
    return f"""CREATE TEMPORARY TABLE `{spec.table}` (
  `payload` BYTES,
  `partition` INT METADATA VIRTUAL,
  `offset` BIGINT METADATA VIRTUAL,
  `timestamp` TIMESTAMP_LTZ(3) METADATA VIRTUAL
) WITH (
  {_options(opts)}
)"""


@dataclass(frozen=True)
class SinkSpec:
    table: str
    topic: str
    bootstrap_servers: str
    delivery: Delivery
    transactional_id_prefix: str | None
    transaction_timeout_ms: int
    keyed: bool = True
    # Upsert: the latest record per key is the value (a compacted topic), for updating tables.
    upsert: bool = False
    security: Mapping[str, str] = field(default_factory=dict)
    max_request_bytes: int = SINK_MAX_REQUEST_BYTES


def sink_ddl(spec: SinkSpec) -> str:
    opts = {
        "connector": "upsert-kafka" if spec.upsert else "kafka",
        "topic": spec.topic,
        "properties.bootstrap.servers": spec.bootstrap_servers,
        "sink.delivery-guarantee": spec.delivery,
        "value.format": "raw",
        # Losing data on a broker hiccup is not an option for billing records.
        "properties.acks": "all",
        "properties.enable.idempotence": "true",
        # Set deliberately, not left to the client's default: the job dead-letters enriched
        # records over --max-enriched-bytes, which stays below this, so no record reaches the
        # producer too large (that failed the job in a restart loop). Brokers must accept it:
        # message.max.bytes, or the topic's max.message.bytes, at least this (Kafka's default
        # 1,048,588 accepts the default 1,048,576).
        "properties.max.request.size": str(spec.max_request_bytes),
    }
    # The same batching as every writer the bench compares with (metering.kafka_producer).
    opts |= flink_sink_batching()
    if spec.upsert:
        # The key is the primary key. Updates to one key within a second are written as one.
        opts |= {
            "key.format": "raw",
            "value.fields-include": "EXCEPT_KEY",
            "sink.buffer-flush.max-rows": "10000",
            "sink.buffer-flush.interval": "1 s",
        }
    elif spec.keyed:
        opts |= {"key.format": "raw", "key.fields": "k", "value.fields-include": "EXCEPT_KEY"}
    if spec.delivery == "exactly-once":
        if not spec.transactional_id_prefix:
            raise ValueError(f"{spec.table}: exactly-once needs a transactional id prefix")
        opts["sink.transactional-id-prefix"] = spec.transactional_id_prefix
        opts["properties.transaction.timeout.ms"] = str(spec.transaction_timeout_ms)
    opts |= spec.security
    if spec.upsert:
        columns = "`k` STRING NOT NULL,\n  `v` STRING,\n  PRIMARY KEY (`k`) NOT ENFORCED"
    else:
        columns = "`k` STRING,\n  `v` STRING" if spec.keyed else "`v` STRING"
    return f"""CREATE TEMPORARY TABLE `{spec.table}` (
  {columns}
) WITH (
  {_options(opts)}
)"""


def sink_table(topic: Topic) -> str:
    """The name of the SQL table that writes ``topic``."""
    return f"{topic.role}_sink"


def sink_specs(cfg: PipelineSettings) -> list[SinkSpec]:
    """One sink per output topic of the catalog (metering.topics), in its order.

    Transactional id prefixes are derived from the configured prefix and the topic's role only
    (no job id, time or random part), so they are stable across restarts and upgrades, and each
    sink has its own: two sinks sharing a prefix would fence each other's producers."""
    names = cfg.topics_by_role()
    return [
        SinkSpec(
            table=sink_table(topic),
            topic=names[topic.role],
            bootstrap_servers=cfg.bootstrap_servers,
            delivery=cfg.delivery(topic),
            transactional_id_prefix=f"{cfg.transactional_id_prefix}-{topic.role}",
            transaction_timeout_ms=cfg.transaction_timeout_ms,
            keyed=topic.key is not None,
            upsert=topic.upsert,
            security=cfg.kafka_security(),
            max_request_bytes=cfg.sink_max_request_bytes(),
        )
        for topic in OUTPUTS
    ]
