"""The policy file: which alerts get which actions, and the decisions taken from it.

A TOML file (read with ``tomllib``, validated by pydantic; unknown keys are errors, so a typo
cannot silently turn a rule off)::

    dry_run = false                 # default true: blocks are recorded, not performed
    block_ttl_seconds = 3600        # a block is lifted after this long
    never_block = ["billing-internal"]

    [circuit_breaker]
    max_blocks_per_hour = 10        # beyond: no block, on-call is told instead
    notify = "pagerduty"            # the channel that tells on-call

    [contacts]                      # consumer -> address(es) for the email action
    acme = "security@acme.example"

    [[respond]]                     # every matching entry adds its actions
    rules = ["rate_spike", "new_country"]   # omitted: any rule
    min_severity = "high"           # warning < high < critical
    consumers = ["acme"]            # omitted: any consumer
    statuses = ["open", "update", "closed"]
    actions = ["pagerduty", "webhook", "email", "block"]

Every ``[[respond]]`` entry that matches an alert contributes its actions (an action named by two
entries happens once: its id is the same). Blocks are considered for ``open`` and ``update``
records only: a ``closed`` record ends the incident, and the TTL ends the block.

``plan_alert`` turns one alert into action records; it is pure (the caller passes the clock, the
ids already known and the circuit breaker), so every decision is unit-tested without Kafka.
"""

from __future__ import annotations

import re
import tomllib
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from responder.actions import (
    HOUR_MS,
    ActionRecord,
    AlertStatus,
    NotifyKind,
    block_action_id,
    hour_bucket,
    incident_id,
    notify_action_id,
    oncall_action_id,
)
from schemas.events import Alert

Severity = Literal["warning", "high", "critical"]
SEVERITY_RANK: dict[str, int] = {"warning": 0, "high": 1, "critical": 2}
RuleName = Literal["rate_spike", "new_country", "auth_failures", "distributed_guessing"]
PolicyAction = Literal["pagerduty", "slack", "webhook", "email", "block"]
POLICY_ACTIONS: tuple[str, ...] = get_args(PolicyAction)
ALL_STATUSES: tuple[AlertStatus, ...] = ("open", "update", "closed")
BLOCKING_STATUSES: frozenset[str] = frozenset({"open", "update"})
MAX_TTL_SECONDS = 30 * 86_400

_EMAIL = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")


class PolicyError(ValueError):
    """The policy file is missing, not TOML, or not a valid policy."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CircuitBreakerPolicy(_Strict):
    max_blocks_per_hour: int = Field(
        10, ge=0, description="blocks planned in any 60 minutes; beyond, on-call is notified"
    )
    notify: NotifyKind = Field(
        "pagerduty", description="channel that tells on-call the breaker refused a block"
    )

    @field_validator("notify")
    @classmethod
    def _not_email(cls, v: str) -> str:
        if v == "email":
            raise ValueError("on-call is notified through pagerduty, slack or webhook")
        return v


class Response(_Strict):
    """One ``[[respond]]`` entry: which alerts it matches and the actions it adds."""

    name: str | None = None
    rules: list[RuleName] | None = Field(None, description="omitted: every rule")
    min_severity: Severity = "warning"
    consumers: list[str] | None = Field(None, description="omitted: every consumer")
    statuses: list[AlertStatus] = Field(default_factory=lambda: list(ALL_STATUSES))
    actions: Annotated[list[PolicyAction], Field(min_length=1)]

    def matches(self, alert: Alert) -> bool:
        if self.rules is not None and alert.rule not in self.rules:
            return False
        if SEVERITY_RANK[alert.severity] < SEVERITY_RANK[self.min_severity]:
            return False
        if self.consumers is not None and alert.consumer not in self.consumers:
            return False
        return alert.status in self.statuses


class Policy(_Strict):
    dry_run: bool = Field(True, description="record blocks as dry_run instead of performing them")
    block_ttl_seconds: int = Field(3600, ge=1, le=MAX_TTL_SECONDS)
    never_block: list[str] = Field(default_factory=list, description="consumers never blocked")
    circuit_breaker: CircuitBreakerPolicy = CircuitBreakerPolicy()
    contacts: dict[str, str | list[str]] = Field(default_factory=dict)
    respond: list[Response] = Field(default_factory=list)

    @field_validator("contacts")
    @classmethod
    def _addresses(cls, v: dict[str, str | list[str]]) -> dict[str, str | list[str]]:
        for consumer, value in v.items():
            for address in [value] if isinstance(value, str) else value:
                if not _EMAIL.match(address):
                    raise ValueError(f"contacts.{consumer}: not an email address")
        return v

    def contact(self, consumer: str | None) -> list[str]:
        value = self.contacts.get(consumer or "", [])
        return [value] if isinstance(value, str) else list(value)

    def channels(self) -> set[str]:
        """Every notification channel the policy may use (the service checks they are set up)."""
        used: set[str] = {a for r in self.respond for a in r.actions if a != "block"}
        if self.blocks():
            used.add(self.circuit_breaker.notify)
        return used

    def blocks(self) -> bool:
        return any("block" in r.actions for r in self.respond)


def parse_policy(text: str, source: str = "<policy>") -> Policy:
    """A policy from TOML text; PolicyError names the file and the field, never a value."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise PolicyError(f"{source}: not TOML: {e}") from None
    try:
        return Policy.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}"
            for err in e.errors(include_input=False)
        )
        raise PolicyError(f"{source}: {problems}") from None


def load_policy(path: str | Path) -> Policy:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise PolicyError(f"{p}: cannot read: {e.strerror}") from None
    return parse_policy(text, str(p))


# --- circuit breaker -----------------------------------------------------------------------------


@dataclass
class CircuitBreaker:
    """At most ``max_per_hour`` blocks planned in any 60 minutes (a sliding hour).

    Counted when a block is planned, not when it is done, so a storm cannot plan more than the
    limit while the first blocks are still being performed. Rebuilt at start from the planned
    blocks on the actions topic (``ActionLog.block_times``)."""

    max_per_hour: int
    times: deque[int] = field(default_factory=deque)

    @classmethod
    def from_times(cls, max_per_hour: int, times: Sequence[int]) -> CircuitBreaker:
        return cls(max_per_hour, deque(sorted(times)))

    def _prune(self, now_ms: int) -> None:
        while self.times and self.times[0] <= now_ms - HOUR_MS:
            self.times.popleft()

    def count(self, now_ms: int) -> int:
        self._prune(now_ms)
        return len(self.times)

    def allows(self, now_ms: int) -> bool:
        return self.count(now_ms) < self.max_per_hour

    def record(self, now_ms: int) -> None:
        self.times.append(now_ms)

    def copy(self) -> CircuitBreaker:
        return CircuitBreaker(self.max_per_hour, deque(self.times))


# --- decisions -----------------------------------------------------------------------------------


def block_target(gateway: str, alert: Alert) -> str | None:
    """What a block of this alert aims at: the presented key (by fingerprint) when the alert
    has one, else the consumer; None for neither (a client:<network> rate key)."""
    if alert.key_fingerprint:
        return f"{gateway}:key:{alert.key_fingerprint}"
    if alert.consumer:
        return f"{gateway}:consumer:{alert.consumer}"
    return None


def matched_actions(policy: Policy, alert: Alert) -> list[str]:
    """The actions of every matching entry, in policy order, each once."""
    out: list[str] = []
    for response in policy.respond:
        if response.matches(alert):
            out += [a for a in response.actions if a not in out]
    return out


def plan_alert(
    alert: Alert,
    policy: Policy,
    *,
    now_ms: int,
    known: Callable[[str], bool],
    breaker: CircuitBreaker,
    gateway: str,
    responder: str,
) -> list[ActionRecord]:
    """The action records one alert gives: ``planned`` for what will be performed, terminal
    records for what will not (and why). Ids already ``known`` are left out (a replayed alert
    plans nothing twice). ``breaker`` counts the blocks planned here."""
    incident = incident_id(alert.rate_key, alert.incident_start)
    base = {
        "incident_id": incident,
        "alert_id": alert.alert_id,
        "alert_status": alert.status,
        "rule": alert.rule,
        "severity": alert.severity,
        "rate_key": alert.rate_key,
        "consumer": alert.consumer,
        "key_fingerprint": alert.key_fingerprint,
        "recorded_at": now_ms,
        "responder": responder,
    }
    snapshot = alert.model_dump(mode="json")
    records: list[ActionRecord] = []

    def fresh(action_id: str) -> bool:
        return not known(action_id) and all(r.action_id != action_id for r in records)

    def add(action_id: str, **fields: object) -> None:
        if fresh(action_id):
            records.append(ActionRecord.model_validate({**base, "action_id": action_id, **fields}))

    for action in matched_actions(policy, alert):
        if action == "block":
            if alert.status in BLOCKING_STATUSES:
                _plan_block(alert, policy, now_ms, breaker, gateway, fresh, add, snapshot)
            continue
        if action == "email":
            target = f"email:{alert.consumer or ''}"
            aid = notify_action_id(alert.alert_id, action, target)
            if not alert.consumer:
                add(
                    aid,
                    outcome="skipped_by_policy",
                    action=action,
                    target=target,
                    reason="the alert names no consumer to email",
                )
            elif not policy.contact(alert.consumer):
                add(
                    aid,
                    outcome="skipped_by_policy",
                    action=action,
                    target=target,
                    reason=f"no contact for consumer {alert.consumer}",
                )
            else:
                add(aid, outcome="planned", action=action, target=target, alert=snapshot)
            continue
        aid = notify_action_id(alert.alert_id, action, action)
        if action == "pagerduty":
            event_action = "resolve" if alert.status == "closed" else "trigger"
            add(
                aid,
                outcome="planned",
                action=action,
                target=action,
                dedup_key=incident,
                event_action=event_action,
                alert=snapshot,
            )
        else:
            add(aid, outcome="planned", action=action, target=action, dedup_key=aid, alert=snapshot)
    return records


def _plan_block(
    alert: Alert,
    policy: Policy,
    now_ms: int,
    breaker: CircuitBreaker,
    gateway: str,
    fresh: Callable[[str], bool],
    add: Callable[..., None],
    snapshot: dict[str, object],
) -> None:
    incident = incident_id(alert.rate_key, alert.incident_start)
    target = block_target(gateway, alert)
    if target is None:
        add(
            block_action_id(incident, f"{gateway}:none"),
            outcome="skipped_by_policy",
            action="block",
            target=f"{gateway}:none",
            reason="the alert names no key and no consumer to block",
        )
        return
    aid = block_action_id(incident, target)
    if not fresh(aid):
        return  # decided before (an update of a blocked incident, a replay): counted once
    if alert.consumer and alert.consumer in policy.never_block:
        add(
            aid,
            outcome="skipped_by_policy",
            action="block",
            target=target,
            reason=f"consumer {alert.consumer} is on the never-block list",
        )
    elif policy.dry_run:
        add(
            aid,
            outcome="dry_run",
            action="block",
            target=target,
            dry_run=True,
            reason="the policy is in dry run",
        )
    elif not breaker.allows(now_ms):
        limit = policy.circuit_breaker.max_blocks_per_hour
        reason = f"{breaker.count(now_ms)} blocks in the last hour, at most {limit}"
        add(aid, outcome="circuit_open", action="block", target=target, reason=reason)
        bucket = hour_bucket(now_ms)
        channel = policy.circuit_breaker.notify
        add(
            oncall_action_id(bucket),
            outcome="planned",
            action="oncall",
            target=channel,
            dedup_key=f"responder-circuit-{bucket}",
            reason=reason,
            alert=snapshot,
            event_action="trigger" if channel == "pagerduty" else None,
        )
    else:
        add(aid, outcome="planned", action="block", target=target)
        breaker.record(now_ms)
