"""Action records (the actions topic), their deterministic ids, and the state read back from them.

Every decision the responder takes is an ``ActionRecord``. An action that has an external side
effect (a notification, a block) gets two records: ``planned`` before the side effect and a
terminal one (``done`` or ``failed``) after it. Decisions without a side effect are terminal at
once: ``skipped_by_policy``, ``dry_run``, ``circuit_open``.

Ids are deterministic, so a replayed alert maps to the same ids and is recognised:

- a notification: ``alert_id | action | target`` (one per alert record and channel);
- a block: ``incident | block | target`` (one per incident and key, whatever its records);
- an unblock: ``<block action id> | unblock``;
- the on-call notice of an open circuit breaker: ``circuit | <hour> | oncall``.

``ActionLog`` folds the records read back from the actions topic into what a restarted
responder needs: which ids are known (dedup), which were planned but never finished (to perform
now), which blocks are active and when they end, and when the recent blocks were planned (the
circuit breaker's hour). Pure: no Kafka, no I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from metering.detect import alert_id as _detector_alert_id

Outcome = Literal["planned", "done", "failed", "skipped_by_policy", "dry_run", "circuit_open"]
OUTCOMES: tuple[str, ...] = get_args(Outcome)
TERMINAL: frozenset[str] = frozenset(OUTCOMES) - {"planned"}
"""Outcomes after which nothing more happens to an action."""

ActionKind = Literal["pagerduty", "slack", "webhook", "email", "block", "unblock", "oncall"]
ACTION_KINDS: tuple[str, ...] = get_args(ActionKind)
NotifyKind = Literal["pagerduty", "slack", "webhook", "email"]
NOTIFY_KINDS: tuple[str, ...] = get_args(NotifyKind)
AlertStatus = Literal["open", "update", "closed"]

HOUR_MS = 3_600_000


def digest(*parts: str) -> str:
    """32 hex characters of SHA-256 over the parts joined by ``|`` (the detector's id form)."""
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


def incident_id(rate_key: str, incident_start: int) -> str:
    """The incident's id: the id of its ``open`` alert (metering.detect.alert_id), so the
    actions of an incident and its alerts join on it. The detector's incident is the rate key
    and the start of its first window; its rule may change from record to record (an update's
    finding, the close's peak), so the rule is not part of it."""
    return _detector_alert_id(rate_key, incident_start)


def notify_action_id(alert_id: str, action: str, target: str) -> str:
    """One notification per alert record, channel and target."""
    return digest(alert_id, action, target)


def block_action_id(incident: str, target: str) -> str:
    """One block per incident and key: an update of the incident is not a second block."""
    return digest(incident, "block", target)


def unblock_action_id(block_id: str) -> str:
    return digest(block_id, "unblock")


def hour_bucket(now_ms: int) -> int:
    """Start of the clock hour holding ``now_ms``."""
    return now_ms - now_ms % HOUR_MS


def oncall_action_id(bucket_start_ms: int) -> str:
    """One on-call notice per clock hour in which the circuit breaker refused a block."""
    return digest("circuit", str(bucket_start_ms), "oncall")


class ActionRecord(BaseModel):
    """One record of the actions topic, keyed by ``action_id``. Never holds an API key or a
    secret: keys are named by their fingerprint (HMAC), gateway credentials by their id."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    action_id: str = Field(description="deterministic; the record key")
    outcome: Outcome
    action: ActionKind
    target: str = Field(
        description="what the action is aimed at: a channel (pagerduty, slack, webhook), "
        "email:<consumer>, or <gateway>:key:<fingerprint> / <gateway>:consumer:<name>"
    )
    incident_id: str = Field(description="the incident: id of its open alert")
    alert_id: str | None = Field(None, description="the alert record behind it, if one")
    alert_status: AlertStatus | None = None
    rule: str | None = None
    severity: str | None = None
    rate_key: str | None = None
    consumer: str | None = Field(None, description="consumer name on the alert")
    key_fingerprint: str | None = None
    dedup_key: str | None = Field(
        None, description="the receiver's idempotency key (PagerDuty dedup_key, webhook id)"
    )
    event_action: Literal["trigger", "resolve"] | None = Field(
        None, description="PagerDuty event action"
    )
    gateway_consumer: str | None = Field(
        None, description="the consumer the gateway knows the key by (after lookup)"
    )
    credential_id: str | None = Field(
        None, description="the gateway's id of the key's credential (never the key)"
    )
    blocked: str | None = Field(
        None,
        description="a block or unblock: what it changes at the gateway, "
        "<gateway>:consumer:<name> or <gateway>:credential:<id>",
    )
    block_id: str | None = Field(None, description="an unblock: the block it ends")
    unblock_at: int | None = Field(
        None, description="a done block: when its TTL ends (epoch ms); null: not reversible"
    )
    reason: str | None = Field(None, description="why skipped or failed; never a secret")
    alert: dict[str, Any] | None = Field(
        None,
        description="a planned notification: the alert record it tells about, so that a "
        "restart sends the same message; dropped from the terminal record",
    )
    attempts: int = Field(0, ge=0, description="delivery attempts made")
    latency_ms: float | None = Field(None, description="from first attempt to outcome")
    dry_run: bool = False
    recorded_at: int = Field(description="epoch ms")
    responder: str = Field(description="instance that wrote it")

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> ActionRecord:
        return cls.model_validate_json(data)

    def finished(self, outcome: Outcome, now_ms: int, **changes: object) -> ActionRecord:
        """The terminal record of a planned action (without the alert it carried)."""
        update = {"outcome": outcome, "recorded_at": now_ms, "alert": None, **changes}
        return self.model_copy(update=update)


@dataclass
class ActiveBlock:
    """A block that is in force at the gateway and ends at ``unblock_at``."""

    block_id: str
    record: ActionRecord
    unblock_at: int


@dataclass
class ActionLog:
    """The responder's memory, rebuilt from its own actions topic at start.

    Records of one action share its key and so its partition, and arrive in order; records of
    different actions (a block and its unblock) may arrive in any order, so derived state is
    computed from the whole set rather than updated step by step."""

    latest: dict[str, ActionRecord] = field(default_factory=dict)
    planned_order: list[str] = field(default_factory=list)
    block_times: list[int] = field(default_factory=list)
    """recorded_at of every block that was planned (not dry-run): the circuit breaker's input."""
    oncall_buckets: set[int] = field(default_factory=set)

    def apply(self, record: ActionRecord) -> None:
        previous = self.latest.get(record.action_id)
        if previous is not None and previous.outcome in TERMINAL:
            return  # a terminal record is final: a late duplicate must not reopen it
        self.latest[record.action_id] = record
        if record.outcome == "planned" and previous is None:
            self.planned_order.append(record.action_id)
            if record.action == "block":
                self.block_times.append(record.recorded_at)
        if record.action == "oncall":
            self.oncall_buckets.add(hour_bucket(record.recorded_at))

    def apply_all(self, records: Iterable[ActionRecord]) -> None:
        for record in records:
            self.apply(record)

    def known(self, action_id: str) -> bool:
        """Whether the action was decided already (planned or finished): a replayed alert maps
        to known ids and plans nothing again."""
        return action_id in self.latest

    def pending(self) -> list[ActionRecord]:
        """Planned actions without a terminal record, in the order they were planned: their
        side effect may or may not have happened (see responder.service)."""
        return [self.latest[i] for i in self.planned_order if self.latest[i].outcome == "planned"]

    def active_blocks(self) -> list[ActiveBlock]:
        """Done, reversible blocks whose unblock has not finished (done, failed or skipped)."""
        ended = {
            r.block_id
            for r in self.latest.values()
            if r.action == "unblock" and r.outcome in TERMINAL and r.block_id
        }
        out = []
        for r in self.latest.values():
            if (
                r.action == "block"
                and r.outcome == "done"
                and r.unblock_at is not None
                and r.action_id not in ended
            ):
                out.append(ActiveBlock(r.action_id, r, r.unblock_at))
        return sorted(out, key=lambda b: (b.unblock_at, b.block_id))

    def due_unblocks(self, now_ms: int) -> list[tuple[ActiveBlock, ActiveBlock | None]]:
        """Active blocks whose TTL has ended and whose unblock is not planned yet, each with the
        block that supersedes it: another active block of the same gateway target that ends
        later (unblocking then would lift that block early), or None."""
        active = self.active_blocks()
        out = []
        for block in active:
            if block.unblock_at > now_ms or self.known(unblock_action_id(block.block_id)):
                continue
            later = [
                other
                for other in active
                if other.block_id != block.block_id
                and gateway_target(other.record) == gateway_target(block.record)
                and other.unblock_at > block.unblock_at
            ]
            out.append((block, max(later, key=lambda b: b.unblock_at) if later else None))
        return out

    def blocks_since(self, since_ms: int) -> int:
        return sum(1 for t in self.block_times if t >= since_ms)


def gateway_target(record: ActionRecord) -> str:
    """What a block changed at the gateway (a consumer, or one credential): two blocks with the
    same gateway target share one state there, so unblocking one lifts the other."""
    return record.blocked or record.action_id
