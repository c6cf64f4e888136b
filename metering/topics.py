"""The pipeline's Kafka topics, each declared once: the topic catalog.

Everything that names, creates or writes a topic derives from ``TOPICS``: the settings' topic
fields (``--<role>-topic``, ``PIPELINE_<ROLE>_TOPIC``), the job's Kafka sinks
(jobs.kafka_tables), the topics ``make topics`` and the compose ``topics`` service create
(tools.topics), the bench's and the fault suite's topics and job flags. deploy/redpanda/
provision.sh, an ``rpk`` script for production clusters, is checked against it by
tests/unit/test_k8s_and_provisioning.py.

Adding an output topic: an entry here; the job's query for it, in the ``Outputs`` field its sink
names (jobs.gateway_pipeline); its line in provision.sh and its typed field in
metering.settings, which the unit tests ask for by name; its tests.

Two provisioning profiles: *local* (``make topics``, Docker Compose, tests, bench, demo; one
broker, ``LOCAL_PARTITIONS`` each) and *production* (provision.sh: replicated, sized and kept per
topic). Pure: no Kafka, no JVM.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Delivery = Literal["exactly-once", "at-least-once"]
Cleanup = Literal["delete", "compact,delete"]

DAY_MS = 24 * 60 * 60 * 1000
LOCAL_PARTITIONS = 2
"""Partitions of every local topic: the job's default parallelism, so no source subtask idles."""
LOCAL_RETENTION_MS = 7 * DAY_MS
"""Local retention of the high-volume topics: Kafka's and Redpanda's default, made explicit."""
LOCAL_LONG_RETENTION_MS = 14 * DAY_MS
"""Local retention of the topics one goes back to when checking a run: alerts, dead letters,
reconciliation."""


@dataclass(frozen=True)
class Sink:
    """How the job writes a topic: which of its outputs, with which guarantee."""

    output: str
    """The field of jobs.gateway_pipeline.Outputs that holds the topic's table."""
    delivery: Delivery
    """exactly-once: transactional, readable (read_committed) after each checkpoint."""
    configurable: bool = False
    """The setting ``<role>_delivery`` (flag ``--<role>-delivery``) may choose the other one;
    ``delivery`` is its default."""


@dataclass(frozen=True)
class Topic:
    """One topic of the pipeline."""

    role: str
    """What the topic is for; names its setting, flag and environment variable, its sink table
    and its sink's transactional-id suffix, so it never changes."""
    name: str
    """The default topic name."""
    about: str
    """What it holds (the setting's help text)."""
    key: str | None
    """What the record key holds; None: records have no key."""
    value: str | None
    """Its records' model in schemas.events.OUTPUT_MODELS; None: not the job's records."""
    partitions: int
    """Production partitions (provision.sh); local topics have ``LOCAL_PARTITIONS``."""
    retention_ms: int
    """Production retention (provision.sh)."""
    local_retention_ms: int
    """Local retention (make topics, compose, tests)."""
    cleanup: Cleanup
    """compact,delete: an upsert topic, where the latest record per key counts; compaction
    drops the superseded records and retention still ends old ones."""
    sink: Sink | None
    """None: the job's input."""

    @property
    def setting(self) -> str:
        """The PipelineSettings field of the topic's name."""
        return f"{self.role}_topic"

    @property
    def flag(self) -> str:
        """The job's flag for the topic's name."""
        return "--" + self.setting.replace("_", "-")

    @property
    def upsert(self) -> bool:
        """Written with upsert semantics (upsert-kafka: the key is the primary key)."""
        return self.cleanup == "compact,delete"

    def config(self) -> dict[str, str]:
        """Topic-level configuration of a local topic."""
        return {"cleanup.policy": self.cleanup, "retention.ms": str(self.local_retention_ms)}


TOPICS: tuple[Topic, ...] = (
    Topic(
        role="raw",
        name="gateway.raw",
        about="topic of raw gateway access-log records",
        key="any (the job reads only the value)",
        value=None,
        partitions=6,
        retention_ms=7 * DAY_MS,
        local_retention_ms=LOCAL_RETENTION_MS,
        cleanup="delete",
        sink=None,
    ),
    Topic(
        role="enriched",
        name="gateway.enriched",
        about="enriched events (Pinot ingests)",
        key="rate key",
        value="enriched_event",
        partitions=6,
        retention_ms=7 * DAY_MS,
        local_retention_ms=LOCAL_RETENTION_MS,
        cleanup="delete",
        sink=Sink(output="enriched", delivery="exactly-once"),
    ),
    # Window counts become invoices: kept past a year of billing disputes.
    Topic(
        role="usage",
        name="gateway.usage",
        about="per-key event-time window counts and late corrections",
        key="rate key",
        value="window_count",
        partitions=6,
        retention_ms=400 * DAY_MS,
        local_retention_ms=LOCAL_RETENTION_MS,
        cleanup="delete",
        sink=Sink(output="usage", delivery="exactly-once"),
    ),
    Topic(
        role="dlq",
        name="gateway.dlq",
        about="dead letters: unusable records + reason",
        key=None,
        value="dead_letter",
        partitions=3,
        retention_ms=30 * DAY_MS,
        local_retention_ms=LOCAL_LONG_RETENTION_MS,
        cleanup="delete",
        sink=Sink(output="dead_letters", delivery="exactly-once"),
    ),
    Topic(
        role="alerts",
        name="gateway.alerts",
        about="compromised-key alerts",
        key="rate key",
        value="alert",
        partitions=3,
        retention_ms=30 * DAY_MS,
        local_retention_ms=LOCAL_LONG_RETENTION_MS,
        cleanup="delete",
        sink=Sink(output="alerts", delivery="at-least-once", configurable=True),
    ),
    # It proves the usage counts were complete: kept as long as the usage it covers.
    Topic(
        role="reconciliation",
        name="gateway.reconciliation",
        about="per source partition and interval: records in = enriched + dead-lettered "
        "+ deduplicated",
        key="<source partition>@<interval start>",
        value="reconciliation",
        partitions=3,
        retention_ms=400 * DAY_MS,
        local_retention_ms=LOCAL_LONG_RETENTION_MS,
        cleanup="compact,delete",
        sink=Sink(output="reconciliation", delivery="exactly-once"),
    ),
    # Invoices are made from it and disputed for a year after: kept as long as the usage topic.
    Topic(
        role="period_usage",
        name="gateway.billing.period-usage",
        about="period-to-date calls, units and amounts per subject and plan segment (upsert)",
        key="<subject>@<period>",
        value="period_usage",
        partitions=6,
        retention_ms=400 * DAY_MS,
        local_retention_ms=LOCAL_LONG_RETENTION_MS,
        cleanup="compact,delete",
        sink=Sink(output="period_usage", delivery="exactly-once"),
    ),
    # Read back at start by whoever enforces (a hard limit lasts until the period's end, up to 31
    # days after its record), so kept well past a period; ids are deterministic.
    Topic(
        role="quota_signals",
        name="gateway.billing.quota-signals",
        about="quota thresholds reached and hard-limit enforce records, once each",
        key="<subject>@<period>",
        value="quota_signal",
        partitions=3,
        retention_ms=90 * DAY_MS,
        local_retention_ms=LOCAL_LONG_RETENTION_MS,
        cleanup="delete",
        sink=Sink(output="quota_signals", delivery="exactly-once"),
    ),
    Topic(
        role="balance_signals",
        name="gateway.billing.balance-signals",
        about="prepaid balance low and exhausted signals, once per crossing",
        key="subject",
        value="balance_signal",
        partitions=3,
        retention_ms=90 * DAY_MS,
        local_retention_ms=LOCAL_LONG_RETENTION_MS,
        cleanup="delete",
        sink=Sink(output="balance_signals", delivery="exactly-once"),
    ),
)
"""Every topic, the input first, then the outputs in the order the job attaches their sinks."""

FOREVER = -1
"""retention.ms that never deletes by time: with compaction, the latest record per key stays."""

# Billing inputs (metering/billing/, written by tools/billing.py): plans, subscriptions and
# grants must never expire: a plan or subscription that disappears re-prices the periods it
# covered, and a balance is the sum of every grant ever made.
PLANS = Topic(
    role="plans",
    name="gateway.billing.plans",
    about="billing plans, keyed by plan id; a tombstone deletes one",
    key="plan id",
    value=None,
    partitions=1,
    retention_ms=FOREVER,
    local_retention_ms=FOREVER,
    cleanup="compact,delete",
    sink=None,
)
SUBSCRIPTIONS = Topic(
    role="subscriptions",
    name="gateway.billing.subscriptions",
    about="billing subscriptions: a subject on a plan from an instant on",
    # Not the subject alone: compaction would drop the subscription a mid-period change ended,
    # which the period's invoice still needs.
    key="<subject>@<effective_from ms>",
    value=None,
    partitions=3,
    retention_ms=FOREVER,
    local_retention_ms=FOREVER,
    cleanup="compact,delete",
    sink=None,
)
GRANTS = Topic(
    role="grants",
    name="gateway.billing.grants",
    about="prepaid grants (top-ups, credits), keyed by grant id",
    key="grant id",
    value=None,
    partitions=3,
    retention_ms=FOREVER,
    local_retention_ms=FOREVER,
    cleanup="compact,delete",
    sink=None,
)

SERVICE_TOPICS: tuple[Topic, ...] = (
    # Read back whole at the responder's start (what it decided, what is blocked until when),
    # so kept longer than the alerts it de-duplicates, and not for ever.
    Topic(
        role="actions",
        name="gateway.actions",
        about="the responder's action records: notifications, blocks and unblocks, planned "
        "then done or failed (responder/)",
        key="action id",
        value=None,
        partitions=3,
        retention_ms=90 * DAY_MS,
        local_retention_ms=LOCAL_LONG_RETENTION_MS,
        cleanup="delete",
        sink=None,
    ),
    PLANS,
    SUBSCRIPTIONS,
    GRANTS,
)
"""Topics of the services beside the job (the responder), written by them, not by the job: the
job has no setting for them, ``make topics`` and provision.sh create them too."""

JOB_SERVICE_INPUTS: tuple[Topic, ...] = (PLANS, SUBSCRIPTIONS, GRANTS)
"""Service topics the job reads too, under their names here: its billing stage follows the
catalog in them unless given a catalog file (``--billing-catalog``)."""

BY_ROLE: dict[str, Topic] = {t.role: t for t in (*TOPICS, *SERVICE_TOPICS)}
ROLES: tuple[str, ...] = tuple(t.role for t in TOPICS)
"""The job's topics' roles."""
OUTPUTS: tuple[Topic, ...] = tuple(t for t in TOPICS if t.sink is not None)
"""The topics the job writes."""


def sink_of(topic: Topic) -> Sink:
    """The topic's sink; ValueError for the input."""
    if topic.sink is None:
        raise ValueError(f"the job does not write the {topic.role} topic")
    return topic.sink
