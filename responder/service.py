"""The consume-transact loop: alerts in, action records out, side effects in between.

**Exactly once, nothing lost: the planned -> done protocol.** A Kafka transaction can make
records and consumed offsets atomic, but an HTTP call or an SMTP delivery cannot join it. So
every action with a side effect goes through two transactions:

1. **Plan.** For a batch of alerts, decide (``policy.plan_alert``) and write the ``planned``
   records, together with the terminal records of decisions without side effect
   (``skipped_by_policy``, ``dry_run``, ``circuit_open``), and the batch's alert offsets
   (``send_offsets_to_transaction``), in ONE transaction. Either all of it is committed or none:
   an alert is never consumed without its decisions on record, nor decided twice.
2. **Perform.** After that commit, perform each planned action (retrying with backoff), one at a
   time.
3. **Finish.** Right after each action, commit its terminal record (``done`` or ``failed``,
   with the attempts and the reason) in a transaction of its own.

At start the responder first calls ``init_transactions`` (fencing any previous instance with the
same transactional id and aborting its open transaction), then reads its own actions topic back
to the end (read_committed: aborted plans are invisible) into an ``ActionLog``: the ids already
decided (a replayed alert, e.g. re-sent by the job after its own restart, plans nothing twice:
ids are deterministic per alert, and per incident for blocks), the blocks in force and when they
end, the blocks of the last hour (the circuit breaker), and the actions planned but never
finished, which it performs now, before consuming more alerts.

What a crash (``kill -9``) can do, by where it lands:

- before step 1's commit: the transaction is aborted; the alerts are consumed again and decided
  afresh; nothing had been performed. Nothing lost, nothing doubled.
- between step 1's commit and the side effect: the action is planned-but-unfinished and is
  performed after the restart. Nothing lost, nothing doubled.
- **between the side effect and step 3's commit**: the responder cannot know whether the side
  effect happened, so it performs it again (at least once). This window is one action wide
  (actions are performed one at a time, each finished at once) and lasts one delivery plus one
  commit. Receivers with idempotency absorb the repeat: PagerDuty (same ``dedup_key``: the event
  joins the open incident, no second page), webhook receivers that de-duplicate on
  ``Responder-Webhook-Id``, mail stores that de-duplicate on ``Message-ID``, and the gateway
  (blocks and unblocks are idempotent). A Slack message, or mail through a store that does not
  de-duplicate, can be seen twice.
- after step 3's commit: nothing is repeated.

A SIGTERM stops the loop after the action in progress: it is finished and committed, the rest
of the batch stays planned and is performed by the next start. A failed transaction (fenced by
a newer instance, a rebalance that took the partitions) aborts and stops the service with an
error; its restart rebuilds everything from the topics.

Assumes one active responder per transactional id (a second one fences the first): the
recovery of planned actions is not partitioned between instances.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from pydantic import ConfigDict, ValidationError

from responder.actions import (
    NOTIFY_KINDS,
    ActionLog,
    ActionRecord,
    Outcome,
    unblock_action_id,
)
from responder.gateways import Gateway, KeyIndex, KeyOwner
from responder.metrics import Health, Metrics
from responder.notify import Attempts, Channel, DeliveryError, deliver_with_retries
from responder.policy import CircuitBreaker, Policy, matched_actions, plan_alert
from responder.settings import ResponderSettings
from schemas.events import Alert

log = logging.getLogger("responder")

KAFKA_TIMEOUT_S = 30.0
READ_BACK_TIMEOUT_S = 120.0
UNBLOCK_CHECK_S = 1.0
"""How often due unblocks are looked for: the TTL's resolution."""


class AlertIn(Alert):
    """The job's Alert, read tolerantly: a field a newer job adds is ignored, not a reason to
    drop the alert (the job's own tests forbid extras; a reader must not)."""

    model_config = ConfigDict(extra="ignore")


def parse_alert(value: bytes | None) -> Alert | None:
    if not value:
        return None
    try:
        return AlertIn.model_validate_json(value)
    except ValidationError:
        return None


class TransactionFailed(RuntimeError):
    """A Kafka transaction was aborted; the service stops and its restart recovers."""


class Skipped(Exception):
    """The policy forbids the action after all (found out while performing it)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Performed:
    """How performing one action went."""

    attempts: Attempts
    skipped: str | None = None
    fields: dict[str, Any] | None = None


def read_action_log(
    settings: ResponderSettings, timeout_s: float = READ_BACK_TIMEOUT_S
) -> ActionLog:
    """Everything committed on the actions topic, folded into an ActionLog."""
    consumer = Consumer(
        {
            **settings.kafka_common(),
            "group.id": f"{settings.group_id}-readback",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        }
    )
    action_log = ActionLog()
    try:
        topic = settings.actions_topic
        metadata = consumer.list_topics(topic, timeout=KAFKA_TIMEOUT_S).topics.get(topic)
        if metadata is None or metadata.error is not None or not metadata.partitions:
            raise RuntimeError(f"the actions topic {topic} does not exist; create it first")
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in metadata.partitions])
        waiting = set(metadata.partitions)
        deadline = time.monotonic() + timeout_s
        skipped = 0
        while waiting:
            if time.monotonic() > deadline:
                raise RuntimeError(f"reading {topic} back did not reach its end in {timeout_s}s")
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    waiting.discard(msg.partition())
                    continue
                raise KafkaException(err)
            try:
                action_log.apply(ActionRecord.from_json(msg.value() or b""))
            except ValidationError:
                skipped += 1
        if skipped:
            log.warning("unreadable action records skipped", extra={"count": skipped})
    finally:
        consumer.close()
    return action_log


class Responder:
    """One responder instance. ``run`` returns when ``stop`` is set (or raises on a failed
    transaction)."""

    def __init__(
        self,
        settings: ResponderSettings,
        policy: Policy,
        *,
        channels: Mapping[str, Channel],
        gateway: Gateway | None,
        key_index: KeyIndex | None,
        metrics: Metrics,
        health: Health,
        stop: threading.Event,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
    ) -> None:
        missing = sorted(policy.channels() - set(channels))
        if missing:
            raise ValueError(f"the policy uses channels that are not configured: {missing}")
        if policy.blocks() and gateway is None:
            raise ValueError("the policy blocks keys but no gateway is configured (--gateway)")
        self.settings = settings
        self.policy = policy
        self.channels = dict(channels)
        self.gateway = gateway
        self.key_index = key_index
        self.metrics = metrics
        self.health = health
        self.stop = stop
        self.clock = clock
        self.rand = rand
        self.action_log = ActionLog()
        self.breaker = CircuitBreaker(policy.circuit_breaker.max_blocks_per_hour)
        self._producer: Producer | None = None
        self._last_unblock_check = 0.0
        self._last_gauges = 0.0

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    # --- lifecycle -----------------------------------------------------------------------------

    def run(self) -> None:
        s = self.settings
        self._producer = Producer(
            {
                **s.kafka_common(),
                "transactional.id": s.transactional_id,
                "enable.idempotence": True,
                "transaction.timeout.ms": s.transaction_timeout_ms,
                "linger.ms": 5,
            }
        )
        self._producer.init_transactions(KAFKA_TIMEOUT_S)
        self.action_log = read_action_log(s)
        self.breaker = CircuitBreaker.from_times(
            self.policy.circuit_breaker.max_blocks_per_hour, self.action_log.block_times
        )
        pending = self.action_log.pending()
        log.info(
            "action log read back",
            extra={"actions": len(self.action_log.latest), "pending": len(pending)},
        )
        for record in pending:
            if self.stop.is_set():
                break
            self._perform(record)
        consumer = Consumer(
            {
                **s.kafka_common(),
                "group.id": s.group_id,
                # Static membership: a restarted responder takes its partitions back at once
                # instead of after the dead member's session timeout (and fences a zombie).
                "group.instance.id": s.instance,
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                # Performing a batch (with retries) happens between two polls.
                "max.poll.interval.ms": 900_000,
            }
        )
        try:
            consumer.subscribe([s.alerts_topic])
            self.health.ready = True
            log.info("consuming alerts", extra={"topic": s.alerts_topic, "group": s.group_id})
            while not self.stop.is_set():
                self.health.beat()
                messages = consumer.consume(s.batch_size, s.poll_timeout_seconds)
                if messages:
                    self._batch(consumer, messages)
                if not self.stop.is_set():
                    self._due_unblocks()
                self._gauges()
        finally:
            self.health.ready = False
            consumer.close()
            self._producer.flush(KAFKA_TIMEOUT_S)

    # --- transactions -------------------------------------------------------------------------

    def _transaction(
        self,
        records: list[ActionRecord],
        consumer: Consumer | None = None,
        offsets: Mapping[tuple[str, int], int] | None = None,
    ) -> None:
        producer = self._producer
        assert producer is not None
        try:
            producer.begin_transaction()
            for record in records:
                producer.produce(
                    self.settings.actions_topic,
                    key=record.action_id.encode(),
                    value=record.to_json(),
                )
            if consumer is not None and offsets:
                producer.send_offsets_to_transaction(
                    [TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                    consumer.consumer_group_metadata(),
                    KAFKA_TIMEOUT_S,
                )
            self._commit(producer)
        except KafkaException as e:
            self.metrics.transactions.labels("aborted").inc()
            error = e.args[0] if e.args and isinstance(e.args[0], KafkaError) else None
            if error is not None and error.txn_requires_abort():
                with contextlib.suppress(KafkaException):
                    producer.abort_transaction(KAFKA_TIMEOUT_S)
            code = error.name() if error is not None else type(e).__name__
            raise TransactionFailed(f"transaction aborted ({code}); restart to recover") from None
        self.metrics.transactions.labels("committed").inc()

    @staticmethod
    def _commit(producer: Producer, tries: int = 3) -> None:
        for attempt in range(1, tries + 1):
            try:
                producer.commit_transaction(KAFKA_TIMEOUT_S)
                return
            except KafkaException as e:
                error = e.args[0] if e.args and isinstance(e.args[0], KafkaError) else None
                if error is None or not error.retriable() or attempt == tries:
                    raise

    # --- alerts --------------------------------------------------------------------------------

    def _batch(self, consumer: Consumer, messages: list[Message]) -> None:
        now = self.now_ms()
        breaker = self.breaker.copy()
        records: list[ActionRecord] = []
        ids: set[str] = set()
        offsets: dict[tuple[str, int], int] = {}
        gateway = self.gateway.name if self.gateway is not None else "none"
        for msg in messages:
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                if err.fatal():
                    raise KafkaException(err)
                log.warning("consumer error", extra={"error": err.name()})
                continue
            offsets[(msg.topic() or "", msg.partition() or 0)] = (msg.offset() or 0) + 1
            alert = parse_alert(msg.value())
            if alert is None:
                self.metrics.alerts.labels("invalid").inc()
                log.warning(
                    "not an alert record; skipped",
                    extra={"partition": msg.partition(), "offset": msg.offset()},
                )
                continue
            planned = plan_alert(
                alert,
                self.policy,
                now_ms=now,
                known=lambda i: self.action_log.known(i) or i in ids,
                breaker=breaker,
                gateway=gateway,
                responder=self.settings.instance,
            )
            if planned:
                result = "planned"
            elif matched_actions(self.policy, alert):
                result = "duplicate"
            else:
                result = "unmatched"
            self.metrics.alerts.labels(result).inc()
            records += planned
            ids.update(r.action_id for r in planned)
        if records or offsets:
            self._transaction(records, consumer, offsets)
        self.breaker = breaker
        self.action_log.apply_all(records)
        for record in records:
            self._count(record)
        for record in records:
            if self.stop.is_set():
                break  # the rest stays planned: the next start performs it
            if record.outcome == "planned":
                self._perform(record)

    # --- performing ----------------------------------------------------------------------------

    def _retrying(self, send: Callable[[], None]) -> Attempts:
        def wait(seconds: float) -> bool:
            self.health.beat()
            return self.stop.wait(seconds)

        return deliver_with_retries(
            send,
            max_attempts=self.settings.max_attempts,
            base_s=self.settings.backoff_base_seconds,
            cap_s=self.settings.backoff_max_seconds,
            wait=wait,
            rand=self.rand,
        )

    def _perform(self, record: ActionRecord) -> None:
        """Perform one planned action and commit its terminal record."""
        self.health.beat()
        started = time.monotonic()
        try:
            if record.action in NOTIFY_KINDS or record.action == "oncall":
                name = record.target if record.action == "oncall" else record.action
                channel = self.channels[name]
                outcome = Performed(self._retrying(lambda: channel.send(record)))
            elif record.action == "block":
                outcome = self._block(record)
            else:
                outcome = self._unblock(record)
        except Skipped as e:
            outcome = Performed(Attempts(False, 1), skipped=e.reason)
        attempts = outcome.attempts
        if attempts.interrupted:
            log.info("stopping: action left planned", extra=self._fields(record))
            return
        final_outcome: Outcome
        if outcome.skipped is not None:
            final_outcome = "skipped_by_policy"
            reason: str | None = outcome.skipped
        else:
            final_outcome = "done" if attempts.ok else "failed"
            reason = attempts.reason
        elapsed = time.monotonic() - started
        final = record.finished(
            final_outcome,
            self.now_ms(),
            attempts=attempts.attempts,
            reason=reason,
            latency_ms=round(elapsed * 1000, 3),
            **(outcome.fields or {}),
        )
        self._transaction([final])
        self.action_log.apply(final)
        self.metrics.attempts.labels(record.action).inc(attempts.attempts)
        self.metrics.delivery.labels(record.action, final_outcome).observe(elapsed)
        self._count(final)

    def _owner(self, record: ActionRecord) -> KeyOwner:
        assert self.gateway is not None
        kind, _, value = record.target.partition(":")[2].partition(":")
        owner: KeyOwner | None
        if kind == "key":
            assert self.key_index is not None
            owner = self.key_index.find(value)
            if owner is None:
                raise DeliveryError("no key with this fingerprint at the gateway", retryable=False)
        else:
            owner = self.gateway.consumer(value)
            if owner is None:
                raise DeliveryError("no such consumer at the gateway", retryable=False)
        if owner.consumer in self.policy.never_block:
            raise Skipped(f"the key belongs to {owner.consumer}, on the never-block list")
        return owner

    def _block(self, record: ActionRecord) -> Performed:
        gateway = self.gateway
        assert gateway is not None
        done: dict[str, Any] = {}

        def block() -> None:
            owner = self._owner(record)
            blocked = gateway.block(owner, record.incident_id)
            done.update(
                gateway_consumer=owner.consumer,
                credential_id=owner.credential_id,
                blocked=blocked,
                unblock_at=(
                    self.now_ms() + self.policy.block_ttl_seconds * 1000
                    if gateway.reversible
                    else None
                ),
            )

        attempts = self._retrying(block)
        return Performed(attempts, fields=done if attempts.ok else None)

    def _unblock(self, record: ActionRecord) -> Performed:
        gateway = self.gateway
        assert gateway is not None
        owner = KeyOwner(gateway.name, record.gateway_consumer or "", record.credential_id)
        return Performed(self._retrying(lambda: gateway.unblock(owner)))

    def _due_unblocks(self) -> None:
        if self.gateway is None or time.monotonic() - self._last_unblock_check < UNBLOCK_CHECK_S:
            return
        self._last_unblock_check = time.monotonic()
        now = self.now_ms()
        for block, later in self.action_log.due_unblocks(now):
            if self.stop.is_set():
                return
            planned = block.record.model_copy(
                update={
                    "action_id": unblock_action_id(block.block_id),
                    "action": "unblock",
                    "outcome": "planned",
                    "block_id": block.block_id,
                    "unblock_at": None,
                    "reason": None,
                    "attempts": 0,
                    "latency_ms": None,
                    "dedup_key": None,
                    "event_action": None,
                    "alert": None,
                    "recorded_at": now,
                    "responder": self.settings.instance,
                }
            )
            if later is not None:
                skipped = planned.model_copy(
                    update={
                        "outcome": "skipped_by_policy",
                        "reason": f"block {later.block_id} of the same target lasts longer",
                    }
                )
                self._transaction([skipped])
                self.action_log.apply(skipped)
                self._count(skipped)
                continue
            self._transaction([planned])
            self.action_log.apply(planned)
            self._count(planned)
            self._perform(planned)

    # --- observability -------------------------------------------------------------------------

    @staticmethod
    def _fields(record: ActionRecord) -> dict[str, Any]:
        return {
            "action_id": record.action_id,
            "action": record.action,
            "outcome": record.outcome,
            "target": record.target,
            "incident_id": record.incident_id,
            "alert_id": record.alert_id,
        }

    def _count(self, record: ActionRecord) -> None:
        self.metrics.actions.labels(record.action, record.outcome).inc()
        fields = self._fields(record)
        if record.reason:
            fields["reason"] = record.reason
        level = logging.WARNING if record.outcome in ("failed", "circuit_open") else logging.INFO
        log.log(level, "action %s", record.outcome, extra=fields)

    def _gauges(self) -> None:
        if time.monotonic() - self._last_gauges < UNBLOCK_CHECK_S:
            return
        self._last_gauges = time.monotonic()
        now = self.now_ms()
        self.metrics.circuit_open.set(0 if self.breaker.allows(now) else 1)
        self.metrics.blocks_last_hour.set(self.breaker.count(now))
        self.metrics.pending.set(len(self.action_log.pending()))
        self.metrics.active_blocks.set(len(self.action_log.active_blocks()))
