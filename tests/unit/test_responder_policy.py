"""The responder's policy file and its decisions (responder.policy): no Kafka, no network."""

from __future__ import annotations

from pathlib import Path

import pytest

from responder.actions import (
    HOUR_MS,
    ActionLog,
    ActionRecord,
    block_action_id,
    hour_bucket,
    incident_id,
    notify_action_id,
    oncall_action_id,
)
from responder.policy import (
    CircuitBreaker,
    Policy,
    PolicyError,
    load_policy,
    matched_actions,
    parse_policy,
    plan_alert,
)
from schemas.events import Alert
from testkit.alerts import T0, make_alert

NOW = T0 + 120_000
FP = "a" * 32

ENFORCING = """
dry_run = false
block_ttl_seconds = 600
never_block = ["billing-internal"]

[circuit_breaker]
max_blocks_per_hour = 2
notify = "pagerduty"

[contacts]
acme = "security@acme.example"
both = ["a@both.example", "b@both.example"]

[[respond]]
name = "page on anything high"
min_severity = "high"
actions = ["pagerduty", "webhook"]

[[respond]]
name = "tell the consumer and block"
rules = ["rate_spike", "new_country"]
min_severity = "critical"
statuses = ["open", "update"]
actions = ["email", "block", "webhook"]
"""


def _alert(**kw: object) -> Alert:
    return Alert.model_validate(make_alert(**kw))  # type: ignore[arg-type]


def _plan(
    alert: Alert,
    policy: Policy,
    *,
    log: ActionLog | None = None,
    breaker: CircuitBreaker | None = None,
    now: int = NOW,
) -> list[ActionRecord]:
    log = log or ActionLog()
    breaker = breaker or CircuitBreaker(policy.circuit_breaker.max_blocks_per_hour)
    return plan_alert(
        alert,
        policy,
        now_ms=now,
        known=log.known,
        breaker=breaker,
        gateway="apisix",
        responder="r1",
    )


def _outcomes(records: list[ActionRecord]) -> list[tuple[str, str, str]]:
    return [(r.action, r.target, r.outcome) for r in records]


# --- the file ------------------------------------------------------------------------------------


def test_defaults_are_safe() -> None:
    policy = parse_policy("")
    assert policy.dry_run is True
    assert policy.block_ttl_seconds == 3600
    assert policy.circuit_breaker.max_blocks_per_hour == 10
    assert policy.respond == []


def test_a_full_policy_parses() -> None:
    policy = parse_policy(ENFORCING)
    assert policy.dry_run is False
    assert policy.never_block == ["billing-internal"]
    assert policy.contact("both") == ["a@both.example", "b@both.example"]
    assert policy.contact("nobody") == []
    assert policy.channels() == {"pagerduty", "webhook", "email"}
    assert policy.blocks()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("dryrun = false", "dryrun: Extra inputs are not permitted"),
        ("[[respond]]\nactions = []", "respond.0.actions: List should have at least 1 item"),
        ('[[respond]]\nactions = ["sms"]', "respond.0.actions.0: Input should be"),
        ('[[respond]]\nrules = ["ddos"]\nactions = ["webhook"]', "respond.0.rules.0"),
        ("block_ttl_seconds = 0", "block_ttl_seconds: Input should be greater than or equal to 1"),
        ("[contacts]\nacme = 'not-an-address'", "contacts: Value error, contacts.acme"),
        ("[circuit_breaker]\nnotify = 'email'", "circuit_breaker.notify"),
        ("dry_run = ", "not TOML"),
    ],
)
def test_invalid_policies_are_refused_with_the_field(text: str, message: str) -> None:
    with pytest.raises(PolicyError) as e:
        parse_policy(text, "p.toml")
    assert str(e.value).startswith("p.toml: ")
    assert message in str(e.value)


def test_policy_errors_do_not_echo_values() -> None:
    with pytest.raises(PolicyError) as e:
        parse_policy("[contacts]\nacme = 'secret-looking-value-123'")
    assert "secret-looking-value-123" not in str(e.value)


def test_load_policy_reads_a_file_and_names_a_missing_one(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(ENFORCING)
    assert load_policy(path).block_ttl_seconds == 600
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path / "missing.toml")


# --- matching ------------------------------------------------------------------------------------


def test_matching_entries_add_up_in_policy_order() -> None:
    policy = parse_policy(ENFORCING)
    critical = _alert(rate_key="acme", consumer="acme", severity="critical")
    assert matched_actions(policy, critical) == ["pagerduty", "webhook", "email", "block"]
    high = _alert(rate_key="acme", consumer="acme", severity="high")
    assert matched_actions(policy, high) == ["pagerduty", "webhook"]
    warning = _alert(rate_key="acme", consumer="acme", severity="warning")
    assert matched_actions(policy, warning) == []
    guessing = _alert(rate_key="acme", severity="critical", rule="auth_failures")
    assert matched_actions(policy, guessing) == ["pagerduty", "webhook"]
    closed = _alert(rate_key="acme", severity="critical", status="closed")
    assert matched_actions(policy, closed) == ["pagerduty", "webhook"]


def test_consumer_filter() -> None:
    policy = parse_policy('[[respond]]\nconsumers = ["acme"]\nactions = ["slack"]')
    assert matched_actions(policy, _alert(rate_key="acme", consumer="acme")) == ["slack"]
    assert matched_actions(policy, _alert(rate_key="other", consumer="other")) == []
    assert matched_actions(policy, _alert(rate_key="key:abc")) == []


# --- decisions ---------------------------------------------------------------------------------


def test_an_open_alert_plans_every_action_with_deterministic_ids() -> None:
    policy = parse_policy(ENFORCING)
    alert = _alert(rate_key="acme", consumer="acme", key_fingerprint=FP)
    records = _plan(alert, policy)
    incident = incident_id("acme", T0)
    assert incident == alert.alert_id  # the incident's id is its open alert's
    target = f"apisix:key:{FP}"
    assert _outcomes(records) == [
        ("pagerduty", "pagerduty", "planned"),
        ("webhook", "webhook", "planned"),
        ("email", "email:acme", "planned"),
        ("block", target, "planned"),
    ]
    by_action = {r.action: r for r in records}
    assert by_action["pagerduty"].action_id == notify_action_id(
        alert.alert_id, "pagerduty", "pagerduty"
    )
    assert by_action["pagerduty"].dedup_key == incident
    assert by_action["pagerduty"].event_action == "trigger"
    assert by_action["webhook"].dedup_key == by_action["webhook"].action_id
    assert by_action["block"].action_id == block_action_id(incident, target)
    assert all(r.incident_id == incident and r.recorded_at == NOW for r in records)
    assert by_action["email"].alert == alert.model_dump(mode="json")
    assert by_action["block"].alert is None


def test_pagerduty_dedup_key_is_the_incident_for_every_status() -> None:
    policy = parse_policy(ENFORCING)
    events = []
    for status in ("open", "update", "closed"):
        alert = _alert(rate_key="acme", consumer="acme", status=status, rule="new_country")
        (pd,) = [r for r in _plan(alert, policy) if r.action == "pagerduty"]
        events.append((pd.dedup_key, pd.event_action))
    incident = incident_id("acme", T0)
    assert events == [(incident, "trigger"), (incident, "trigger"), (incident, "resolve")]


def test_a_replayed_alert_plans_nothing() -> None:
    policy = parse_policy(ENFORCING)
    alert = _alert(rate_key="acme", consumer="acme", key_fingerprint=FP)
    log = ActionLog()
    breaker = CircuitBreaker(2)
    log.apply_all(_plan(alert, policy, log=log, breaker=breaker))
    assert _plan(alert, policy, log=log, breaker=breaker) == []
    assert breaker.count(NOW) == 1


def test_an_update_notifies_again_but_does_not_block_again() -> None:
    policy = parse_policy(ENFORCING)
    log = ActionLog()
    breaker = CircuitBreaker(2)
    log.apply_all(
        _plan(
            _alert(rate_key="acme", consumer="acme", key_fingerprint=FP),
            policy,
            log=log,
            breaker=breaker,
        )
    )
    update = _alert(rate_key="acme", consumer="acme", key_fingerprint=FP, status="update")
    records = _plan(update, policy, log=log, breaker=breaker)
    assert [r.action for r in records] == ["pagerduty", "webhook", "email"]
    assert breaker.count(NOW) == 1


def test_the_default_policy_blocks_nothing_it_records_a_dry_run() -> None:
    policy = parse_policy('[[respond]]\nactions = ["block"]')
    breaker = CircuitBreaker(10)
    (record,) = _plan(
        _alert(rate_key="acme", consumer="acme", key_fingerprint=FP), policy, breaker=breaker
    )
    assert (record.outcome, record.dry_run, record.reason) == (
        "dry_run",
        True,
        "the policy is in dry run",
    )
    assert breaker.count(NOW) == 0


def test_never_block_consumers_are_skipped() -> None:
    policy = parse_policy(ENFORCING)
    alert = _alert(rate_key="billing-internal", consumer="billing-internal", key_fingerprint=FP)
    (block,) = [r for r in _plan(alert, policy) if r.action == "block"]
    assert block.outcome == "skipped_by_policy"
    assert block.reason == "consumer billing-internal is on the never-block list"


def test_email_needs_a_consumer_and_a_contact() -> None:
    policy = parse_policy(ENFORCING)
    (unknown,) = [
        r for r in _plan(_alert(rate_key="other", consumer="other"), policy) if r.action == "email"
    ]
    assert (unknown.outcome, unknown.reason) == (
        "skipped_by_policy",
        "no contact for consumer other",
    )
    (anonymous,) = [
        r
        for r in _plan(_alert(rate_key=f"key:{FP}", key_fingerprint=FP), policy)
        if r.action == "email"
    ]
    assert anonymous.outcome == "skipped_by_policy"
    assert anonymous.reason == "the alert names no consumer to email"


def test_block_targets_key_then_consumer_then_nothing() -> None:
    policy = parse_policy(ENFORCING)
    by_consumer = [
        r for r in _plan(_alert(rate_key="acme", consumer="acme"), policy) if r.action == "block"
    ]
    assert [(r.target, r.outcome) for r in by_consumer] == [("apisix:consumer:acme", "planned")]
    client = _alert(rate_key="client:0f0f", rule="new_country")
    (nothing,) = [r for r in _plan(client, policy) if r.action == "block"]
    assert nothing.outcome == "skipped_by_policy"
    assert nothing.reason == "the alert names no key and no consumer to block"


def test_the_circuit_breaker_refuses_beyond_the_limit_and_tells_on_call_once() -> None:
    policy = parse_policy(ENFORCING)  # at most 2 blocks an hour
    log = ActionLog()
    breaker = CircuitBreaker(2)
    outcomes = []
    for i in range(5):
        alert = _alert(rate_key=f"k{i}", consumer=f"k{i}", key_fingerprint=f"{i:032x}")
        records = _plan(alert, policy, log=log, breaker=breaker, now=NOW + i)
        log.apply_all(records)
        outcomes.append([(r.action, r.outcome) for r in records if r.action in ("block", "oncall")])
    assert outcomes == [
        [("block", "planned")],
        [("block", "planned")],
        [("block", "circuit_open"), ("oncall", "planned")],
        [("block", "circuit_open")],
        [("block", "circuit_open")],
    ]
    oncall = next(r for r in log.latest.values() if r.action == "oncall")
    assert oncall.action_id == oncall_action_id(hour_bucket(NOW))
    assert oncall.target == "pagerduty"
    assert oncall.dedup_key == f"responder-circuit-{hour_bucket(NOW)}"
    assert oncall.reason == "2 blocks in the last hour, at most 2"
    circuit = [r for r in log.latest.values() if r.outcome == "circuit_open"]
    assert all(r.reason == "2 blocks in the last hour, at most 2" for r in circuit)


def test_the_breaker_is_a_sliding_hour_rebuilt_from_the_log() -> None:
    breaker = CircuitBreaker.from_times(2, [NOW - HOUR_MS, NOW - 10])
    assert breaker.count(NOW) == 1  # the first is exactly an hour old: out
    assert breaker.allows(NOW)
    breaker.record(NOW)
    assert not breaker.allows(NOW)
    assert breaker.allows(NOW - 10 + HOUR_MS)
    assert CircuitBreaker(0).allows(NOW) is False


def test_no_block_on_a_closed_incident() -> None:
    policy = parse_policy('dry_run = false\n[[respond]]\nactions = ["block"]')
    closed = _alert(rate_key="acme", consumer="acme", key_fingerprint=FP, status="closed")
    assert _plan(closed, policy) == []


def test_the_shipped_example_policy_is_valid_and_safe() -> None:
    policy = load_policy(Path(__file__).resolve().parents[2] / "responder/policy.example.toml")
    assert policy.dry_run is True
    assert policy.channels() == {"pagerduty", "webhook", "email"}
    assert policy.blocks()
