"""The billing topics. The inputs (plans, subscriptions, grants), which ``tools/billing.py``
writes and every pricer reads whole, are in the catalog (``metering.topics``, which says why
they never expire) and re-exported here. The outputs of the streaming part (period usage, quota
signals, balance signals) are declared here until something writes them; then they join the
catalog too."""

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
