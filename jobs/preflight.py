"""Checks against the live Kafka cluster before the job is built, so misconfiguration fails fast
with one clear line instead of as a restart loop inside the TaskManagers.

One metadata request and one broker-config request check that:
- every topic the job reads or writes exists: brokers usually do not auto-create topics, and a
  sink whose topic is missing fails only after the producer's metadata timeout (60 s), deep in
  a Flink stack trace, then restarts into the same failure;
- the raw topic's partition count is known (logged; a parallelism above it leaves source subtasks
  idle, so the watermark then depends on the idle timeout);
- the exactly-once sinks' transaction timeout fits the brokers' transaction.max.timeout.ms.

On SASL the admin client here authenticates with the job's own password, from
PIPELINE_KAFKA_SASL_PASSWORD, if this process has it (the JobManager does on Kubernetes);
otherwise the check is skipped and says so.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource  # re-exported without __all__
from confluent_kafka.admin._resource import ResourceType

from metering.kafka_security import SASL_PASSWORD_ENV, librdkafka_security
from metering.settings import PipelineSettings, check_transaction_timeout

log = logging.getLogger(__name__)

PREFLIGHT_TIMEOUT_S = 10.0
TOPICS_HINT = "make topics (or tools.topics)"
NO_PREFLIGHT_FLAG = "--no-broker-preflight"
TRANSACTION_MAX_KEY = "transaction.max.timeout.ms"


class PreflightError(ValueError):
    """The brokers would refuse the job, or cannot be reached; the message is one line."""


@dataclass(frozen=True)
class BrokerView:
    """What the preflight read from the brokers."""

    partitions: dict[str, int]
    """Partition count of every topic the client may see, by name."""
    transaction_max_timeout_ms: int | None
    """The brokers' transaction.max.timeout.ms, or None if it could not be read."""


@dataclass(frozen=True)
class PreflightResult:
    raw_partitions: int
    transaction_max_timeout_ms: int | None


AdminFactory = Callable[[dict[str, Any]], Any]


def admin_config(cfg: PipelineSettings, environ: Mapping[str, str]) -> dict[str, Any] | None:
    """The admin client's configuration, with the job's client security; None on SASL when this
    environment has no password (the check is then skipped)."""
    password = environ.get(SASL_PASSWORD_ENV) or None
    if cfg.kafka_security_protocol in ("SASL_PLAINTEXT", "SASL_SSL") and password is None:
        return None
    return {"bootstrap.servers": cfg.bootstrap_servers} | librdkafka_security(
        cfg.kafka_security_protocol,
        cfg.kafka_sasl_mechanism,
        cfg.kafka_sasl_username,
        cfg.kafka_ssl_ca_location,
        password,
    )


def missing_topics_message(
    missing: Sequence[str], bootstrap: str, principal: str | None = None
) -> str:
    # Under ACLs a topic the principal may not describe is absent from the metadata too, and
    # `make topics` would then fail on it: name both causes.
    seen = "" if principal is None else f" or is not visible to principal '{principal}'"
    if len(missing) == 1:
        return (
            f"topic '{missing[0]}' does not exist on {bootstrap}{seen}; "
            f"create it with {TOPICS_HINT}"
        )
    names = ", ".join(f"'{t}'" for t in missing)
    verb = "do not exist" if principal is None else "do not exist or are not visible"
    who = "" if principal is None else f" to principal '{principal}'"
    return f"topics {names} {verb} on {bootstrap}{who}; create them with {TOPICS_HINT}"


def check_topics(cfg: PipelineSettings, partitions: Mapping[str, int]) -> int:
    """The raw topic's partition count; PreflightError naming every topic of the job that the
    brokers do not have."""
    missing = [t for t in cfg.topics_read_or_written() if t not in partitions]
    if missing:
        principal = (
            cfg.kafka_sasl_username if cfg.kafka_security_protocol.startswith("SASL") else None
        )
        raise PreflightError(missing_topics_message(missing, cfg.bootstrap_servers, principal))
    raw = partitions[cfg.raw_topic]
    log.info("raw topic %s has %d partitions (parallelism %d)", cfg.raw_topic, raw, cfg.parallelism)
    if cfg.parallelism > raw:
        log.warning(
            "parallelism %d exceeds the raw topic's %d partitions: %d source subtasks stay idle, "
            "and the watermark moves on only after --idle-timeout-seconds (%d s) marks them idle",
            cfg.parallelism,
            raw,
            cfg.parallelism - raw,
            cfg.idle_timeout_seconds,
        )
    return raw


def _reason(e: KafkaException) -> str:
    error = e.args[0] if e.args else None
    return str(error.str()) if isinstance(error, KafkaError) else str(e)


def read_brokers(
    admin: Any, bootstrap: str, timeout_s: float, authenticated: bool = False
) -> BrokerView:
    """Topic partitions and transaction.max.timeout.ms; PreflightError if unreachable."""
    try:
        metadata = admin.list_topics(timeout=timeout_s)
    except KafkaException as e:
        # With TLS or SASL a refused handshake or password looks the same from here as a broker
        # that is down, so the advice names the credentials too.
        creds = (
            f"check --kafka-security-protocol, the SASL/TLS settings and {SASL_PASSWORD_ENV}, "
            if authenticated
            else ""
        )
        raise PreflightError(
            f"cannot read topic metadata from the Kafka brokers at {bootstrap} within "
            f"{timeout_s:.0f} s ({_reason(e)}); start them (make kafka-up), fix "
            f"--bootstrap-servers, {creds}or pass {NO_PREFLIGHT_FLAG} if only the cluster "
            "reaches them"
        ) from None
    partitions = {
        name: len(topic.partitions)
        for name, topic in metadata.topics.items()
        if topic.error is None or topic.error.code() != KafkaError.UNKNOWN_TOPIC_OR_PART
    }
    return BrokerView(partitions, _transaction_max(admin, metadata.brokers, timeout_s))


def _transaction_max(admin: Any, brokers: Collection[int], timeout_s: float) -> int | None:
    if not brokers:
        return None
    resource = ConfigResource(ResourceType.BROKER, str(min(brokers)))
    try:
        futures = admin.describe_configs([resource], request_timeout=timeout_s)
        entry = futures[resource].result(timeout=timeout_s).get(TRANSACTION_MAX_KEY)
    except (KafkaException, TimeoutError) as e:  # e.g. no DescribeConfigs ACL on the cluster
        log.warning("could not read the brokers' %s: %s", TRANSACTION_MAX_KEY, e)
        return None
    return int(entry.value) if entry is not None and entry.value is not None else None


def check_brokers(
    cfg: PipelineSettings,
    environ: Mapping[str, str] | None = None,
    admin_factory: AdminFactory = AdminClient,
    timeout_s: float = PREFLIGHT_TIMEOUT_S,
) -> PreflightResult | None:
    """Raise PreflightError (a ValueError) if the brokers would refuse the job; None if skipped."""
    if not cfg.broker_preflight:
        log.warning("broker preflight off (%s): topics and timeout not checked", NO_PREFLIGHT_FLAG)
        return None
    conf = admin_config(cfg, os.environ if environ is None else environ)
    if conf is None:
        log.warning(
            "broker preflight skipped: no SASL password in this environment (%s is not set); "
            "missing topics or a transaction timeout above the brokers' maximum then show up "
            "only when the job runs",
            SASL_PASSWORD_ENV,
        )
        return None
    # librdkafka's own log lines go through this logger instead of raw to stderr.
    admin = admin_factory(conf | {"logger": log})
    view = read_brokers(
        admin, cfg.bootstrap_servers, timeout_s, cfg.kafka_security_protocol != "PLAINTEXT"
    )
    raw_partitions = check_topics(cfg, view.partitions)
    broker_max = view.transaction_max_timeout_ms
    if broker_max is None:
        log.warning(
            "%s not readable; the sink timeout is checked against "
            "--broker-transaction-max-timeout-ms (%d) only",
            TRANSACTION_MAX_KEY,
            cfg.broker_transaction_max_timeout_ms,
        )
    else:
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
    return PreflightResult(raw_partitions, broker_max)
