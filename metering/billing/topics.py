"""The billing topics, as catalog entries (``metering.topics.Topic``) to merge into the catalog.

Inputs, written by ``tools/billing.py`` and read whole by whoever prices (the CLI today, the
streaming part later): plans, subscriptions, grants. Outputs of the streaming part (not written
yet): period usage, quota signals, balance signals.

Plans, subscriptions and grants must never expire: a plan or subscription that disappears
re-prices the periods it covered, and a grant that disappears changes a prepaid balance (the
balance is the sum of every grant ever made). ``metering.topics.Cleanup`` has no plain
``"compact"`` yet, so they are declared ``compact,delete`` with ``retention.ms = -1``
(``FOREVER``): Kafka then never deletes by time (nor by size, ``retention.bytes`` being -1 by
default), which is compaction alone. Once ``Cleanup`` has ``"compact"``, they should use it
(and ``Topic.upsert`` should count it: they are upsert topics, the latest record per key
counts, a tombstone deletes).
"""

from __future__ import annotations

from metering.topics import (
    DAY_MS,
    GRANTS,
    LOCAL_LONG_RETENTION_MS,
    PLANS,
    SUBSCRIPTIONS,
    Topic,
)

# Invoices are made from it and disputed for a year after: kept as long as the usage topic.
PERIOD_USAGE = Topic(
    role="period_usage",
    name="gateway.billing.period-usage",
    about="period-to-date calls, units and amounts per subject and plan segment (upsert)",
    key="<subject>@<period>",
    value=None,
    partitions=6,
    retention_ms=400 * DAY_MS,
    local_retention_ms=LOCAL_LONG_RETENTION_MS,
    cleanup="compact,delete",
    sink=None,
)
# Read back at start by whoever enforces (a hard limit lasts until the period's end, up to 31
# days after its record), so kept well past a period; ids are deterministic, readers dedupe.
QUOTA_SIGNALS = Topic(
    role="quota_signals",
    name="gateway.billing.quota-signals",
    about="quota thresholds reached and hard-limit enforce records (metering.billing.quota)",
    key="<subject>@<period>",
    value=None,
    partitions=3,
    retention_ms=90 * DAY_MS,
    local_retention_ms=LOCAL_LONG_RETENTION_MS,
    cleanup="delete",
    sink=None,
)
BALANCE_SIGNALS = Topic(
    role="balance_signals",
    name="gateway.billing.balance-signals",
    about="prepaid balance low and exhausted signals, once per crossing",
    key="subject",
    value=None,
    partitions=3,
    retention_ms=90 * DAY_MS,
    local_retention_ms=LOCAL_LONG_RETENTION_MS,
    cleanup="delete",
    sink=None,
)

INPUT_TOPICS: tuple[Topic, ...] = (PLANS, SUBSCRIPTIONS, GRANTS)
"""The billing inputs tools/billing.py writes (declared in the catalog, metering.topics)."""
OUTPUT_TOPICS: tuple[Topic, ...] = (PERIOD_USAGE, QUOTA_SIGNALS, BALANCE_SIGNALS)
"""What the streaming part will write (nothing writes them yet)."""
BILLING_TOPICS: tuple[Topic, ...] = INPUT_TOPICS + OUTPUT_TOPICS
"""Every billing topic."""
