"""The billing topics, all declared in the catalog (``metering.topics``): the inputs (plans,
subscriptions, grants), which ``tools/billing.py`` writes and the job and every pricer read
whole, and the job's billing outputs (period usage, quota signals, balance signals)."""

from __future__ import annotations

from metering.topics import BY_ROLE, GRANTS, PLANS, SUBSCRIPTIONS, Topic

PERIOD_USAGE = BY_ROLE["period_usage"]
QUOTA_SIGNALS = BY_ROLE["quota_signals"]
BALANCE_SIGNALS = BY_ROLE["balance_signals"]

INPUT_TOPICS: tuple[Topic, ...] = (PLANS, SUBSCRIPTIONS, GRANTS)
"""The billing inputs tools/billing.py writes."""
OUTPUT_TOPICS: tuple[Topic, ...] = (PERIOD_USAGE, QUOTA_SIGNALS, BALANCE_SIGNALS)
"""What the job's billing stage writes."""
BILLING_TOPICS: tuple[Topic, ...] = INPUT_TOPICS + OUTPUT_TOPICS
"""Every billing topic."""
