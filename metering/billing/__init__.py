"""The billing model: plans, subscriptions, grants, and the pure functions that price usage.

Pure and typed: no Kafka, no JVM. ``tools/billing.py`` is the operator CLI around it; the
streaming part (later) calls these functions or mirrors them in Flink SQL. docs/billing.md
explains the model.

Modules: ``money`` (the one rounding rule, Decimal parsing), ``periods`` (calendar months),
``plans`` (plans, subscriptions, grants, the catalog), ``pricing`` (period-to-date usage folded
from window increments), ``quota`` (threshold and enforce signals), ``balance`` (prepaid balances
and their signals), ``invoice`` (invoice lines, Stripe meter events), ``reconcile`` (invoice lines
against the enriched events), ``topics`` (the billing topics, for the catalog), ``settings``
(the CLI's settings).
"""
