"""Checks against the live Kafka cluster before the job is built, so misconfiguration fails fast
with a clear message instead of as a restart loop inside the TaskManagers."""

from __future__ import annotations

import logging

from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource  # re-exported without __all__
from confluent_kafka.admin._resource import ResourceType

from metering.settings import PipelineSettings, check_transaction_timeout

log = logging.getLogger(__name__)


def broker_transaction_max_timeout_ms(bootstrap: str, timeout_s: float = 10.0) -> int | None:
    """transaction.max.timeout.ms of one broker, or None if it cannot be read."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:
        brokers = admin.list_topics(timeout=timeout_s).brokers
        if not brokers:
            return None
        resource = ConfigResource(ResourceType.BROKER, str(min(brokers)))
        configs = admin.describe_configs([resource])[resource].result(timeout=timeout_s)
        entry = configs.get("transaction.max.timeout.ms")
        return int(entry.value) if entry is not None and entry.value is not None else None
    except Exception as e:  # unreachable, not authorised, not Kafka-compatible: checked later
        log.warning("could not read the brokers' transaction.max.timeout.ms: %s", e)
        return None


def check_brokers(cfg: PipelineSettings) -> None:
    """Raise ValueError if the brokers would refuse (or silently endanger) the sinks' timeout."""
    if cfg.kafka_security_protocol != "PLAINTEXT":
        # The client here has no SASL password (it lives on the TaskManagers only).
        log.info("broker preflight skipped for %s", cfg.kafka_security_protocol)
        return
    broker_max = broker_transaction_max_timeout_ms(cfg.bootstrap_servers)
    if broker_max is None:
        return
    check_transaction_timeout(
        cfg.transaction_timeout_ms,
        broker_max,
        cfg.checkpoint_interval_seconds,
        cfg.expected_restart_seconds,
    )
    log.info(
        "sink transaction timeout %d ms within the brokers' max %d ms",
        cfg.transaction_timeout_ms,
        broker_max,
    )
