"""Billing operations: plans, subscriptions and grants on their Kafka topics; invoices; checks.

    python -m tools.billing topics                      # create the billing topics if missing
    python -m tools.billing seed --catalog metering/billing/catalog.example.toml
    python -m tools.billing plans list|put --file PLAN.json|delete PLAN_ID
    python -m tools.billing subscriptions list|put|delete ...
    python -m tools.billing grants list|put ...
    python -m tools.billing invoice --period 2026-12 --from-usage-file usage.jsonl
    python -m tools.billing reconcile --period 2026-12 --invoice-lines L --enriched-file E

Plans, subscriptions and grants live on compacted topics (metering.billing.topics), keyed by plan
id, ``<subject>@<effective_from>`` and grant id, with JSON values; a delete writes a tombstone.
Writes go through an idempotent producer (acks=all) and are checked against what the topics
already hold (a subscription to a missing plan, a subject in two currencies are refused).

``invoice`` prices a JSON-lines dump of usage records (the usage topic's ``WindowCount``
records, optionally with ``paths``: path -> calls) into invoice lines and Stripe meter events,
two files; nothing calls Stripe. ``invoice`` and ``reconcile`` read plans and subscriptions from
``--catalog FILE`` when given, else from the topics.

Exit status: 0 done; 1 reconcile found differences; 2 bad input (flags, files, catalog); 3 Kafka
failed. Every setting is also an environment variable (``BILLING_*``); see ``--help`` of each
command. docs/billing.md explains the model.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient
from pydantic import BaseModel, ValidationError

from metering.billing.invoice import close_period, read_lines, stripe_events, write_lines
from metering.billing.money import MoneyError, parse_decimal
from metering.billing.periods import PeriodError, bounds, parse_instant, parse_period
from metering.billing.plans import (
    Catalog,
    CatalogError,
    Grant,
    Plan,
    Subscription,
    load_catalog,
    loads_json,
    validation_problems,
)
from metering.billing.pricing import (
    PricingError,
    WindowIncrement,
    increment_from_usage,
    price_all,
)
from metering.billing.reconcile import reconcile
from metering.billing.settings import BillingSettings, add_setting_flags, settings_from
from metering.billing.topics import INPUT_TOPICS
from tools.readback import drain
from tools.topics import TopicSpec, ensure_topics

M = TypeVar("M", bound=BaseModel)

EXIT_DIFFERENCES = 1
EXIT_BAD_INPUT = 2
EXIT_KAFKA = 3


class BadInput(Exception):
    """A flag, file or catalog the command cannot use: exit 2 with the message."""


class KafkaFailure(Exception):
    """The brokers did not take or give what was asked: exit 3 with the message."""


# --- Kafka -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kafka:
    """The billing topics on the brokers of ``settings``."""

    settings: BillingSettings

    def _check_exists(self, topics: Iterable[str]) -> None:
        admin = AdminClient({"bootstrap.servers": self.settings.bootstrap_servers})
        try:
            # All topics, not by name: a request naming a missing topic may auto-create it.
            present = set(admin.list_topics(timeout=self.settings.kafka_timeout_seconds).topics)
        except KafkaException as e:
            raise KafkaFailure(f"cannot reach {self.settings.bootstrap_servers}: {e}") from None
        missing = sorted(set(topics) - present)
        if missing:
            raise KafkaFailure(
                f"missing topics {missing}; create them with `python -m tools.billing topics`"
            )

    def read(self, topic: str) -> dict[str, Any]:
        """The latest value of each key on a compacted topic (tombstones delete), JSON with
        non-integer numbers as Decimal."""
        self._check_exists([topic])
        try:
            records = drain(
                self.settings.bootstrap_servers,
                topic,
                timeout_s=self.settings.kafka_timeout_seconds,
            )
        except (KafkaException, TimeoutError) as e:
            raise KafkaFailure(f"reading {topic}: {e}") from None
        latest: dict[str, Any] = {}
        for r in records:
            if r.key is None:
                continue
            key = r.key.decode("utf-8")
            if r.value is None:
                latest.pop(key, None)
            else:
                latest[key] = loads_json(r.value)
        return latest

    def catalog(self) -> Catalog:
        """Plans, subscriptions and grants as the topics hold them now."""
        s = self.settings
        data = {
            "plans": list(self.read(s.plans_topic).values()),
            "subscriptions": list(self.read(s.subscriptions_topic).values()),
            "grants": list(self.read(s.grants_topic).values()),
        }
        try:
            return Catalog.model_validate(data)
        except ValidationError as e:
            problems = validation_problems(e)
            raise BadInput(f"the billing topics do not hold a valid catalog: {problems}") from None

    def write(self, records: Sequence[tuple[str, str, BaseModel | None]]) -> None:
        """Put (topic, key, value) records, None values as tombstones; returns once every
        record is acknowledged by all in-sync replicas, KafkaFailure otherwise."""
        self._check_exists({topic for topic, _, _ in records})
        producer = Producer(
            {
                "bootstrap.servers": self.settings.bootstrap_servers,
                # Idempotent: a retried send is written once, in order.
                "enable.idempotence": True,
                "acks": "all",
                "message.timeout.ms": self.settings.kafka_timeout_seconds * 1000,
            }
        )
        errors: list[str] = []

        def delivered(err: Any, msg: Any) -> None:
            if err is not None:
                errors.append(f"{msg.topic()} {msg.key()!r}: {err}")

        for topic, key, value in records:
            payload = value.model_dump_json().encode() if value is not None else None
            producer.produce(topic, key=key.encode(), value=payload, on_delivery=delivered)
            producer.poll(0)
        left = producer.flush(self.settings.kafka_timeout_seconds)
        if errors or left:
            raise KafkaFailure("; ".join(errors) or f"{left} records not acknowledged in time")


# --- commands ----------------------------------------------------------------------------------


def _read_text(path: str) -> str:
    try:
        return sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise BadInput(f"{path}: cannot read: {e.strerror}") from None


def _json_lines(path: str) -> Iterator[dict[str, Any]]:
    """The JSON objects of a JSON-lines file (blank lines skipped), read line by line: a
    month of enriched events need not fit in memory."""
    try:
        # Closed by the with below; opened here so that an unreadable path is bad input.
        f = sys.stdin if path == "-" else open(path, encoding="utf-8")  # noqa: SIM115
    except OSError as e:
        raise BadInput(f"{path}: cannot read: {e.strerror}") from None
    with f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                value = loads_json(line)
            except json.JSONDecodeError as e:
                raise BadInput(f"{path}:{n}: not JSON: {e.msg}") from None
            if not isinstance(value, dict):
                raise BadInput(f"{path}:{n}: not a JSON object")
            yield value


def _model(cls: type[M], data: Any, source: str) -> M:
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        raise BadInput(f"{source}: {validation_problems(e)}") from None


def _checked(current: Catalog, **added: Any) -> Catalog:
    try:
        return current.with_items(**added)
    except ValidationError as e:
        raise BadInput(f"refused, the catalog would be invalid: {validation_problems(e)}") from None


def _print_values(values: Iterable[BaseModel]) -> None:
    for v in values:
        print(v.model_dump_json())


def cmd_topics(args: argparse.Namespace, s: BillingSettings) -> int:
    specs = {
        getattr(s, f"{t.role}_topic"): TopicSpec(args.partitions or t.partitions, t.config())
        for t in INPUT_TOPICS
    }
    try:
        ensure_topics(s.bootstrap_servers, specs, timeout_s=s.kafka_timeout_seconds)
    except (RuntimeError, TimeoutError, KafkaException) as e:
        raise KafkaFailure(str(e)) from None
    for name, spec in specs.items():
        extra = "".join(f" {k}={v}" for k, v in sorted(spec.config.items()))
        print(f"topic {name} ready ({spec.partitions} partitions{extra})")
    return 0


def cmd_plans(args: argparse.Namespace, s: BillingSettings) -> int:
    kafka = Kafka(s)
    current = kafka.catalog()
    if args.action == "list":
        plans = sorted(current.plans, key=lambda p: p.id)
        _print_values(plans)
        return 0
    if args.action == "put":
        try:
            data = loads_json(_read_text(args.file))
        except json.JSONDecodeError as e:
            raise BadInput(f"{args.file}: not JSON: {e.msg}") from None
        plan = _model(Plan, data, args.file)
        _checked(current, plans=[plan])
        kafka.write([(s.plans_topic, plan.id, plan)])
        print(f"plan {plan.id} put")
        return 0
    # delete
    users = sorted({sub.subject for sub in current.subscriptions if sub.plan_id == args.plan_id})
    if users and not args.force:
        raise BadInput(
            f"plan {args.plan_id} has subscriptions ({', '.join(users)}); --force deletes it "
            "anyway (their periods can no longer be priced)"
        )
    kafka.write([(s.plans_topic, args.plan_id, None)])
    print(f"plan {args.plan_id} deleted (tombstone)")
    return 0


def cmd_subscriptions(args: argparse.Namespace, s: BillingSettings) -> int:
    kafka = Kafka(s)
    current = kafka.catalog()
    if args.action == "list":
        subs = [x for x in current.subscriptions if args.subject in (None, x.subject)]
        subs.sort(key=lambda x: (x.subject, x.effective_from))
        _print_values(subs)
        return 0
    if args.action == "put":
        sub = _model(
            Subscription,
            {
                "subject": args.subject,
                "plan_id": args.plan_id,
                "effective_from": args.effective_from,
                "stripe_customer_id": args.stripe_customer_id,
                "contact": args.contact,
            },
            "subscription",
        )
        _checked(current, subscriptions=[sub])
        kafka.write([(s.subscriptions_topic, sub.key, sub)])
        print(f"subscription {sub.key} put: {sub.subject} on {sub.plan_id}")
        return 0
    # delete
    try:
        key = f"{args.subject}@{parse_instant(args.effective_from)}"
    except ValueError as e:
        raise BadInput(str(e)) from None
    if key not in {x.key for x in current.subscriptions}:
        raise BadInput(f"no subscription {key}")
    kafka.write([(s.subscriptions_topic, key, None)])
    print(f"subscription {key} deleted (tombstone)")
    return 0


def cmd_grants(args: argparse.Namespace, s: BillingSettings) -> int:
    kafka = Kafka(s)
    current = kafka.catalog()
    if args.action == "list":
        grants = [g for g in current.grants if args.subject in (None, g.subject)]
        grants.sort(key=lambda g: (g.subject, g.at, g.id))
        _print_values(grants)
        return 0
    try:
        amount = parse_decimal(args.amount, "--amount")
    except MoneyError as e:
        raise BadInput(str(e)) from None
    grant = _model(
        Grant,
        {
            "id": args.id,
            "subject": args.subject,
            "amount": amount,
            "currency": args.currency,
            "at": args.at,
            "note": args.note,
        },
        "grant",
    )
    _checked(current, grants=[grant])
    kafka.write([(s.grants_topic, grant.id, grant)])
    print(f"grant {grant.id} put: {grant.amount} {grant.currency} for {grant.subject}")
    return 0


def _load_catalog(path: str) -> Catalog:
    try:
        return load_catalog(path)
    except CatalogError as e:
        raise BadInput(str(e)) from None


def cmd_seed(args: argparse.Namespace, s: BillingSettings) -> int:
    seed = _load_catalog(args.catalog)
    records: list[tuple[str, str, BaseModel | None]] = [
        *((s.plans_topic, p.id, p) for p in seed.plans),
        *((s.subscriptions_topic, x.key, x) for x in seed.subscriptions),
        *((s.grants_topic, g.id, g) for g in seed.grants),
    ]
    if args.dry_run:
        for topic, key, _ in records:
            print(f"would put {topic} {key}")
        return 0
    kafka = Kafka(s)
    _checked(
        kafka.catalog(), plans=seed.plans, subscriptions=seed.subscriptions, grants=seed.grants
    )
    kafka.write(records)
    print(
        f"seeded {len(seed.plans)} plans, {len(seed.subscriptions)} subscriptions, "
        f"{len(seed.grants)} grants from {args.catalog}"
    )
    return 0


def _catalog_for(args: argparse.Namespace, s: BillingSettings) -> Catalog:
    return _load_catalog(args.catalog) if args.catalog else Kafka(s).catalog()


def _period(text: str) -> str:
    try:
        parse_period(text)
    except PeriodError as e:
        raise BadInput(str(e)) from None
    return text.strip()


def cmd_invoice(args: argparse.Namespace, s: BillingSettings) -> int:
    period = _period(args.period)
    catalog = _catalog_for(args, s)
    start, end = bounds(period)
    increments: list[WindowIncrement] = []
    anonymous = 0
    for n, record in enumerate(_json_lines(args.from_usage_file), 1):
        try:
            inc = increment_from_usage(record)
        except PricingError as e:
            raise BadInput(f"{args.from_usage_file}:{n}: {e}") from None
        if inc is None:
            anonymous += 1
        elif start <= inc.window_start < end:
            increments.append(inc)
    unrouted = _unrouted_weighted(increments, catalog)
    if unrouted and not args.allow_unrouted:
        raise BadInput(
            f"{unrouted} calls have no path but their plan weighs routes: they would be billed "
            "1 unit each; give usage records with paths, or --allow-unrouted"
        )
    try:
        usages = price_all(period, increments, catalog)
    except PricingError as e:
        raise BadInput(str(e)) from None
    lines = close_period(usages.values(), catalog)
    events, no_customer = stripe_events(lines, s.stripe_event_name)
    lines_out = Path(args.lines_out or f"invoice-lines-{period}.jsonl")
    stripe_out = Path(args.stripe_out or f"stripe-meter-events-{period}.jsonl")
    with lines_out.open("w", encoding="utf-8") as f:
        write_lines(lines, f)
    with stripe_out.open("w", encoding="utf-8") as f:
        write_lines(events, f)
    unpriced = sum(u.unpriced_calls for u in usages.values())
    print(
        f"{period}: {len(lines)} invoice lines -> {lines_out}; "
        f"{len(events)} Stripe meter events -> {stripe_out}"
    )
    for line in lines:
        print(
            f"  {line.subject} {line.plan_id}: {line.calls} calls, {line.quantity} units, "
            f"{line.amount} {line.currency}"
        )
    if no_customer:
        names = ", ".join(f"{ln.subject}/{ln.plan_id}" for ln in no_customer)
        print(f"no Stripe customer, no meter event: {names}", file=sys.stderr)
    if unpriced:
        print(f"{unpriced} calls without a subscription in force: not invoiced", file=sys.stderr)
    if anonymous:
        print(f"{anonymous} usage records of anonymous clients: not billable", file=sys.stderr)
    return 0


def _unrouted_weighted(increments: Iterable[WindowIncrement], catalog: Catalog) -> int:
    """Calls without a path whose plan has route weights (they would be billed 1 unit)."""
    n = 0
    for inc in increments:
        sub = catalog.in_force(inc.subject, inc.window_start)
        if sub is not None and catalog.plan(sub.plan_id).route_weights:
            n += inc.unrouted_calls
    return n


def cmd_reconcile(args: argparse.Namespace, s: BillingSettings) -> int:
    period = _period(args.period)
    catalog = _catalog_for(args, s)
    try:
        lines = read_lines(_read_text(args.invoice_lines))
    except ValidationError as e:
        raise BadInput(f"{args.invoice_lines}: {validation_problems(e)}") from None
    try:
        differences, recount = reconcile(
            lines, _json_lines(args.enriched_file), period, catalog, s.window_seconds * 1000
        )
    except (KeyError, TypeError, ValueError) as e:
        raise BadInput(f"{args.enriched_file}: not enriched events: {e}") from None
    for d in differences:
        print(d)
    calls = sum(i.calls for i in recount.increments)
    print(
        f"{period}: {len(lines)} invoice lines, {calls} calls in the enriched events "
        f"({recount.anonymous} anonymous, {recount.other_periods} of other periods skipped): "
        f"{len(differences)} differences"
    )
    return EXIT_DIFFERENCES if differences else 0


# --- parser ------------------------------------------------------------------------------------

Command = Callable[[argparse.Namespace, BillingSettings], int]


def build_parser() -> argparse.ArgumentParser:
    settings = argparse.ArgumentParser(add_help=False)
    add_setting_flags(settings)
    parser = argparse.ArgumentParser(
        prog="python -m tools.billing",
        description="Billing: plans, subscriptions and grants on Kafka; invoices and their "
        "reconciliation (docs/billing.md).",
        epilog="Exit status: 0 done, 1 reconcile found differences, 2 bad input, 3 Kafka failed.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str, help_text: str, fn: Command, *, leaf: bool = True
    ) -> argparse.ArgumentParser:
        # Settings flags on leaf parsers only: a subparser's defaults (None) would overwrite
        # the values its parent parsed.
        parents = [settings] if leaf else []
        p = sub.add_parser(name, help=help_text, description=help_text, parents=parents)
        p.set_defaults(fn=fn)
        return p

    def action(actions: Any, name: str, help_text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = actions.add_parser(
            name, help=help_text, description=help_text, parents=[settings]
        )
        return parser

    p = command("topics", "create the billing input topics that are missing", cmd_topics)
    p.add_argument(
        "--partitions", type=int, default=None, help="partitions of each (default: the catalog's)"
    )

    p = command("plans", "list, put or delete plans", cmd_plans, leaf=False)
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    action(actions, "list", "print every plan as a JSON line")
    put = action(actions, "put", "put a plan (a new version replaces the one of its id)")
    put.add_argument("--file", required=True, help="the plan as a JSON object ('-': stdin)")
    delete = action(actions, "delete", "delete a plan (tombstone)")
    delete.add_argument("plan_id", help="the plan's id")
    delete.add_argument(
        "--force", action="store_true", help="delete even if subscriptions refer to it"
    )

    p = command("subscriptions", "list, put or delete subscriptions", cmd_subscriptions, leaf=False)
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    ls = action(actions, "list", "print subscriptions as JSON lines")
    ls.add_argument("--subject", help="only this subject's")
    put = action(actions, "put", "put a subject on a plan from an instant on")
    put.add_argument("--subject", required=True, help="consumer name, or key:<fingerprint>")
    put.add_argument("--plan-id", required=True, help="the plan's id")
    put.add_argument("--effective-from", required=True, help="epoch ms or ISO 8601 (naive: UTC)")
    put.add_argument("--stripe-customer-id", help="the Stripe customer (cus_...) billed")
    put.add_argument("--contact", help="who hears about the account (free text)")
    delete = action(actions, "delete", "delete one subscription (tombstone)")
    delete.add_argument("--subject", required=True, help="its subject")
    delete.add_argument("--effective-from", required=True, help="its start: epoch ms or ISO 8601")

    p = command("grants", "list or put prepaid grants", cmd_grants, leaf=False)
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    ls = action(actions, "list", "print grants as JSON lines")
    ls.add_argument("--subject", help="only this subject's")
    put = action(actions, "put", "put a grant (the same id again corrects it)")
    put.add_argument("--id", required=True, help="the grant's id (e.g. an invoice number)")
    put.add_argument("--subject", required=True, help="consumer name, or key:<fingerprint>")
    put.add_argument("--amount", required=True, help="positive decimal amount, e.g. 100.00")
    put.add_argument("--currency", default="USD", help="ISO 4217 code (default: USD)")
    put.add_argument("--at", required=True, help="when it was granted: epoch ms or ISO 8601")
    put.add_argument("--note", help="free text")

    p = command("seed", "put the plans, subscriptions and grants of a TOML catalog", cmd_seed)
    p.add_argument("--catalog", required=True, help="the TOML catalog (catalog.example.toml)")
    p.add_argument("--dry-run", action="store_true", help="check and list, write nothing")

    p = command(
        "invoice", "price a usage dump into invoice lines and Stripe meter events", cmd_invoice
    )
    p.add_argument("--period", required=True, help="the period, YYYY-MM (calendar month, UTC)")
    p.add_argument(
        "--from-usage-file",
        required=True,
        help="JSON lines of usage records (the usage topic's), optionally with paths: "
        "path -> calls",
    )
    p.add_argument(
        "--catalog", help="read plans and subscriptions from this TOML file, not the topics"
    )
    p.add_argument("--lines-out", help="invoice lines file (default: invoice-lines-<period>.jsonl)")
    p.add_argument(
        "--stripe-out", help="meter events file (default: stripe-meter-events-<period>.jsonl)"
    )
    p.add_argument(
        "--allow-unrouted",
        action="store_true",
        help="price calls without paths at 1 unit even where their plan weighs routes "
        "(under-bills weighted routes; refused by default)",
    )

    p = command("reconcile", "check invoice lines against enriched events", cmd_reconcile)
    p.add_argument("--period", required=True, help="the period, YYYY-MM")
    p.add_argument("--invoice-lines", required=True, help="invoice lines (JSON lines)")
    p.add_argument(
        "--enriched-file", required=True, help="enriched events (JSON lines, the enriched topic's)"
    )
    p.add_argument(
        "--catalog", help="read plans and subscriptions from this TOML file, not the topics"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = settings_from(vars(args))
    except ValueError as e:
        parser.error(str(e))
    fn: Command = args.fn
    try:
        return fn(args, settings)
    except BadInput as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KafkaFailure as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_KAFKA


if __name__ == "__main__":
    sys.exit(main())
