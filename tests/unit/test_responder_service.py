"""The service's perform step and unblock scheduling (responder.service) with a stand-in for the
transactional producer: what is committed after each side effect. The Kafka side (plan and
offsets in one transaction, read-back, kill -9) is tests/integration/test_responder.py."""

from __future__ import annotations

import threading
from typing import Any

import orjson
import pytest

from responder.actions import ActionRecord, unblock_action_id
from responder.gateways import KeyOwner
from responder.metrics import Health, Metrics
from responder.notify import DeliveryError
from responder.policy import CircuitBreaker, Policy, parse_policy, plan_alert
from responder.service import Responder, parse_alert
from responder.settings import ResponderSettings
from schemas.events import Alert
from testkit.alerts import T0, make_alert

NOW_S = (T0 + 120_000) / 1000
FP = "c" * 32


class CommittedRecords:
    """Stands in for the transactional producer: keeps what each committed transaction held."""

    def __init__(self) -> None:
        self.transactions: list[list[ActionRecord]] = []
        self._open: list[ActionRecord] = []

    def begin_transaction(self) -> None:
        self._open = []

    def produce(self, topic: str, key: bytes, value: bytes) -> None:
        record = ActionRecord.from_json(value)
        assert key == record.action_id.encode()
        self._open.append(record)

    def commit_transaction(self, timeout: float) -> None:
        self.transactions.append(self._open)

    def records(self) -> list[ActionRecord]:
        return [r for t in self.transactions for r in t]


class Channel:
    def __init__(self, *errors: DeliveryError) -> None:
        self.errors = list(errors)
        self.sent: list[str] = []

    def send(self, record: ActionRecord) -> None:
        if self.errors:
            raise self.errors.pop(0)
        self.sent.append(record.action_id)


class Gateway:
    def __init__(self, owners: dict[str, KeyOwner]) -> None:
        self.owners = owners
        self.blocked: list[str] = []
        self.unblocked: list[str] = []
        self.reversible = True

    @property
    def name(self) -> Any:
        return "apisix"

    def list_keys(self) -> Any:
        return iter(())

    def consumer(self, name: str) -> KeyOwner | None:
        return next((o for o in self.owners.values() if o.consumer == name), None)

    def block(self, owner: KeyOwner, incident: str) -> str:
        self.blocked.append(owner.consumer)
        return f"apisix:consumer:{owner.consumer}"

    def unblock(self, owner: KeyOwner) -> None:
        self.unblocked.append(owner.consumer)


class Index:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def find(self, fingerprint: str) -> KeyOwner | None:
        return self.gateway.owners.get(fingerprint)


POLICY = """
dry_run = false
block_ttl_seconds = 60
never_block = ["ops"]
[[respond]]
actions = ["webhook", "block"]
"""


def _responder(
    policy: Policy, channel: Channel, gateway: Gateway, clock: list[float]
) -> tuple[Responder, CommittedRecords]:
    settings = ResponderSettings(max_attempts=3, backoff_base_seconds=0.001, instance="r1")
    responder = Responder(
        settings,
        policy,
        channels={"webhook": channel, "pagerduty": Channel()},
        gateway=gateway,
        key_index=Index(gateway),  # type: ignore[arg-type]
        metrics=Metrics(),
        health=Health(60),
        stop=threading.Event(),
        clock=lambda: clock[0],
        rand=lambda: 0.0,
    )
    producer = CommittedRecords()
    responder._producer = producer  # type: ignore[assignment]
    return responder, producer


def _plan(responder: Responder, **alert: Any) -> list[ActionRecord]:
    parsed = Alert.model_validate(make_alert(**alert))
    records = plan_alert(
        parsed,
        responder.policy,
        now_ms=responder.now_ms(),
        known=responder.action_log.known,
        breaker=CircuitBreaker(10),
        gateway="apisix",
        responder="r1",
    )
    responder.action_log.apply_all(records)
    return records


def test_perform_commits_one_terminal_record_per_action() -> None:
    clock = [NOW_S]
    gateway = Gateway({FP: KeyOwner("apisix", "acme", "cred-1")})
    channel = Channel(DeliveryError("HTTP 503", retryable=True))
    responder, producer = _responder(parse_policy(POLICY), channel, gateway, clock)
    for record in _plan(responder, rate_key="acme", consumer="acme", key_fingerprint=FP):
        responder._perform(record)
    webhook, block = producer.transactions  # one transaction per finished action
    assert [(r.action, r.outcome, r.attempts) for r in webhook + block] == [
        ("webhook", "done", 2),
        ("block", "done", 1),
    ]
    (done,) = block
    assert done.gateway_consumer == "acme"
    assert done.credential_id == "cred-1"
    assert done.blocked == "apisix:consumer:acme"
    assert done.unblock_at == int(NOW_S * 1000) + 60_000
    assert done.alert is None
    assert webhook[0].alert is None  # the terminal record drops the alert copy
    assert responder.action_log.pending() == []


def test_a_key_of_a_never_block_consumer_is_skipped_when_found() -> None:
    clock = [NOW_S]
    gateway = Gateway({FP: KeyOwner("apisix", "ops", "cred-ops")})
    responder, producer = _responder(parse_policy(POLICY), Channel(), gateway, clock)
    # The alert names no consumer (key:<fingerprint> rate key): only the lookup tells.
    (_, block) = _plan(responder, rate_key=f"key:{FP}", key_fingerprint=FP)
    responder._perform(block)
    (final,) = producer.records()
    assert (final.outcome, final.reason) == (
        "skipped_by_policy",
        "the key belongs to ops, on the never-block list",
    )
    assert gateway.blocked == []


def test_an_unknown_key_and_an_exhausted_channel_fail_with_reasons() -> None:
    clock = [NOW_S]
    channel = Channel(*[DeliveryError("HTTP 500", retryable=True) for _ in range(3)])
    responder, producer = _responder(parse_policy(POLICY), channel, Gateway({}), clock)
    for record in _plan(responder, rate_key="acme", consumer="acme", key_fingerprint=FP):
        responder._perform(record)
    assert [(r.action, r.outcome, r.reason, r.attempts) for r in producer.records()] == [
        ("webhook", "failed", "HTTP 500 after 3 attempts", 3),
        ("block", "failed", "no key with this fingerprint at the gateway (not retried)", 1),
    ]


def test_a_stop_during_a_retry_leaves_the_action_planned() -> None:
    clock = [NOW_S]
    channel = Channel(DeliveryError("HTTP 503", retryable=True))
    responder, producer = _responder(parse_policy(POLICY), channel, Gateway({}), clock)
    (webhook, _) = _plan(responder, rate_key="acme", consumer="acme")
    responder.stop.set()
    responder._perform(webhook)
    assert producer.transactions == []
    assert next(r.action_id for r in responder.action_log.pending()) == webhook.action_id


def test_unblocks_come_due_after_the_ttl_and_yield_to_a_longer_block() -> None:
    clock = [NOW_S]
    gateway = Gateway(
        {FP: KeyOwner("apisix", "acme", "cred-1"), "d" * 32: KeyOwner("apisix", "acme", "cred-2")}
    )
    responder, producer = _responder(parse_policy(POLICY), Channel(), gateway, clock)
    first = _plan(responder, rate_key="acme", consumer="acme", key_fingerprint=FP)
    for record in first:
        responder._perform(record)
    clock[0] += 30  # a second incident on another key of the same consumer, 30 s later
    second = _plan(
        responder,
        rate_key="acme2",
        consumer="acme",
        key_fingerprint="d" * 32,
        incident_start=T0 + 1,
    )
    for record in second:
        responder._perform(record)
    producer.transactions.clear()
    clock[0] += 29.9
    responder._due_unblocks()
    assert producer.transactions == []
    clock[0] += 0.2  # the first block's TTL is over; the second's is not
    responder._last_unblock_check = 0
    responder._due_unblocks()
    (skipped,) = producer.records()
    assert skipped.action == "unblock" and skipped.outcome == "skipped_by_policy"
    assert skipped.action_id == unblock_action_id(first[1].action_id)
    assert skipped.reason == f"block {second[1].action_id} of the same target lasts longer"
    assert gateway.unblocked == []
    clock[0] += 30
    responder._last_unblock_check = 0
    responder._due_unblocks()
    planned, done = producer.records()[1:]
    assert (planned.outcome, done.outcome) == ("planned", "done")
    assert done.block_id == second[1].action_id
    assert gateway.unblocked == ["acme"]
    assert responder.action_log.active_blocks() == []


def test_the_responder_refuses_a_policy_it_cannot_carry_out() -> None:
    settings = ResponderSettings()
    common: dict[str, Any] = {
        "key_index": None,
        "metrics": Metrics(),
        "health": Health(60),
        "stop": threading.Event(),
    }
    with pytest.raises(ValueError, match=r"channels that are not configured: \['slack'\]"):
        Responder(
            settings,
            parse_policy('[[respond]]\nactions = ["slack"]'),
            channels={},
            gateway=None,
            **common,
        )
    with pytest.raises(ValueError, match="no gateway is configured"):
        Responder(
            settings,
            parse_policy('[[respond]]\nactions = ["block"]'),
            channels={"pagerduty": Channel()},
            gateway=None,
            **common,
        )


def test_alerts_are_read_tolerantly() -> None:
    alert = make_alert("acme", consumer="acme")
    assert parse_alert(orjson.dumps({**alert, "new_field": 1})) is not None
    assert parse_alert(b"not json") is None
    assert parse_alert(orjson.dumps({"alert_id": "x"})) is None
    assert parse_alert(None) is None
