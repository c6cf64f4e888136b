"""The responder (``python -m responder run``) on the real broker, with local receivers and the
validating fake gateways (testkit): alert records are produced transactionally, as the job
writes them; the job itself is not run.

Shown here: one page per incident and a resolve at its close; signed webhooks that verify; the
consumer's email; a key blocked at the gateway and unblocked after the TTL; a never-block
consumer untouched; a storm of 100 alerts tripping the circuit breaker with nothing beyond the
limit blocked; and a ``kill -9`` while a delivery is in flight, after which the restart
duplicates no notification (counted at the receivers, which de-duplicate by idempotency key as
the real ones do) and loses no action. No secret or key appears in the responder's output.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from metering.redact import Pseudonymizer
from responder.actions import ActionRecord, incident_id
from testkit.alerts import T0, make_alert, produce_alerts
from testkit.gateway_admin import FakeApisixAdmin, FakeKongAdmin, wait_for
from testkit.receivers import HttpReceivers, SmtpReceiver
from testkit.responder_harness import (
    ADMIN_KEY,
    DEADLINE_S,
    HASH_KEY,
    KONG_TOKEN,
    Responders,
    actions_topic,
    assert_no_secrets,
    http_receivers,
    read_actions,
    smtp_args,
    terminal,
)

pytestmark = pytest.mark.integration

PSEUDO = Pseudonymizer(HASH_KEY.encode())


@pytest.fixture
def topics(kafka_bootstrap: str, unique_topics: dict[str, str]) -> Iterator[dict[str, str]]:
    """The alerts topic of ``unique_topics`` and a fresh actions topic."""
    with actions_topic(kafka_bootstrap) as actions:
        yield {"alerts": unique_topics["alerts"], "actions": actions}


@pytest.fixture
def receivers() -> Iterator[HttpReceivers]:
    with http_receivers() as r:
        yield r


@pytest.fixture
def smtp() -> Iterator[SmtpReceiver]:
    with SmtpReceiver() as s:
        yield s


@pytest.fixture
def responders(tmp_path: Path) -> Iterator[list[Responders]]:
    made: list[Responders] = []
    yield made
    for r in made:
        r.kill_all()


# --- notifications, block, unblock, never-block (APISIX) -----------------------------------------

ACME_KEY = "ak_live_1c7e3a9f5b2d8e4c6a0f"
BILLING_KEY = "bk_live_8e2c6a0f4d9b3e7c1a5f"

POLICY_APISIX = """
dry_run = false
block_ttl_seconds = 3
never_block = ["billing-internal"]

[contacts]
acme = "security@acme.example"

[[respond]]
actions = ["pagerduty", "slack", "webhook"]

[[respond]]
statuses = ["open"]
actions = ["email"]

[[respond]]
min_severity = "critical"
actions = ["block"]
"""


def test_notifies_blocks_unblocks_and_spares_the_never_block_consumer(
    kafka_bootstrap: str,
    topics: dict[str, str],
    receivers: HttpReceivers,
    smtp: SmtpReceiver,
    tmp_path: Path,
    responders: list[Responders],
) -> None:
    acme_fp, billing_fp = PSEUDO.key_fingerprint(ACME_KEY), PSEUDO.key_fingerprint(BILLING_KEY)
    with FakeApisixAdmin(ADMIN_KEY) as apisix:
        apisix.add_consumer("acme")
        apisix.add_credential("acme", "acme-primary", ACME_KEY)
        apisix.add_consumer("billing-internal")
        apisix.add_credential("billing-internal", "billing-1", BILLING_KEY)
        r = Responders(
            tmp_path,
            kafka_bootstrap,
            topics,
            receivers,
            POLICY_APISIX,
            [
                "--gateway",
                "apisix",
                "--apisix-admin-url",
                apisix.url,
                *smtp_args(smtp),
            ],
            {"RESPONDER_APISIX_ADMIN_KEY": ADMIN_KEY},
        )
        responders.append(r)

        def acme(status: str = "open") -> dict[str, object]:
            return make_alert(
                "acme",
                consumer="acme",
                key_fingerprint=acme_fp,
                status=status,  # type: ignore[arg-type]
            )

        billing = make_alert(
            "billing-internal",
            consumer="billing-internal",
            key_fingerprint=billing_fp,
            incident_start=T0 + 5_000,
        )
        alerts = [acme(), acme(), billing]  # the second: the job re-sent it (at-least-once)
        produce_alerts(kafka_bootstrap, topics["alerts"], alerts)
        run = r.start()

        wait_for(lambda: apisix.restriction("acme") is not None, DEADLINE_S, "acme blocked")
        blocked_at = time.monotonic()
        produce_alerts(
            kafka_bootstrap,
            topics["alerts"],
            [acme("update"), acme("closed")],
        )
        wait_for(lambda: apisix.restriction("acme") is None, DEADLINE_S, "acme unblocked")
        assert time.monotonic() - blocked_at >= 2.0  # the 3 s TTL, less the polling slack
        acme_incident, billing_incident = (
            incident_id("acme", T0),
            incident_id("billing-internal", T0 + 5_000),
        )
        wait_for(lambda: len(receivers.pagerduty.events) == 4, DEADLINE_S, "4 PagerDuty events")
        wait_for(lambda: len(receivers.webhooks) == 4, DEADLINE_S, "4 webhooks")
        metrics = r.metrics()
        r.stop(run)

        # PagerDuty: one page per incident; the close resolves it.
        pd = receivers.pagerduty
        assert pd.pages == [acme_incident, billing_incident] or pd.pages == [
            billing_incident,
            acme_incident,
        ]
        assert sorted(e["event_action"] for e in pd.events) == [
            "resolve",
            "trigger",
            "trigger",
            "trigger",
        ]
        assert pd.resolved == [acme_incident]
        # Webhooks: every delivery verifies; one per alert record (the re-sent one deduplicated).
        assert [w.verified for w in receivers.webhooks] == [True] * 4
        assert len(set(receivers.webhook_ids())) == 4
        assert sorted(w.body["type"] for w in receivers.webhooks) == [
            "incident.closed",
            "incident.open",
            "incident.open",
            "incident.update",
        ]
        assert len(receivers.slack) == 4
        assert receivers.invalid == []
        # Email: the one consumer with a contact, once.
        ((rcpts, message),) = smtp.messages
        assert rcpts == ["security@acme.example"]
        assert message["Subject"] == "[security] Unusual use of your API key (rate_spike)"
        # The gateway: acme's consumer was rewritten twice (block, unblock), billing never.
        consumer_writes = [p for m, p in apisix.writes()]
        assert consumer_writes == ["/apisix/admin/consumers", "/apisix/admin/consumers"]
        assert apisix.restriction("billing-internal") is None
        assert apisix.plain_keys("acme") == [ACME_KEY]
        assert apisix.violations == []

    records = read_actions(kafka_bootstrap, topics["actions"])
    outcomes = Counter((r.action, r.consumer, r.outcome) for r in terminal(records))
    assert outcomes == Counter(
        {
            ("pagerduty", "acme", "done"): 3,
            ("slack", "acme", "done"): 3,
            ("webhook", "acme", "done"): 3,
            ("email", "acme", "done"): 1,
            ("block", "acme", "done"): 1,
            ("unblock", "acme", "done"): 1,
            ("pagerduty", "billing-internal", "done"): 1,
            ("slack", "billing-internal", "done"): 1,
            ("webhook", "billing-internal", "done"): 1,
            ("email", "billing-internal", "skipped_by_policy"): 1,
            ("block", "billing-internal", "skipped_by_policy"): 1,
        }
    )
    planned = [r.action_id for r in records if r.outcome == "planned"]
    # Each planned once, the re-sent alert's too: 4 x (pagerduty, slack, webhook) + email, block
    # and unblock of acme.
    assert len(planned) == len(set(planned)) == 15
    (block,) = [r for r in records if r.action == "block" and r.outcome == "done"]
    assert (block.gateway_consumer, block.credential_id, block.blocked) == (
        "acme",
        "acme-primary",
        "apisix:consumer:acme",
    )
    assert 'responder_actions_total{action="block",outcome="done"} 1.0' in metrics
    assert 'responder_alerts_total{result="duplicate"} 1.0' in metrics
    assert_no_secrets(r.output() + "".join(map(str, records)), ACME_KEY, BILLING_KEY)


# --- the circuit breaker (Kong) ----------------------------------------------------------------

POLICY_STORM = """
dry_run = false
block_ttl_seconds = 3600

[circuit_breaker]
max_blocks_per_hour = 5
notify = "pagerduty"

[[respond]]
actions = ["block"]
"""


def test_a_storm_trips_the_circuit_breaker_and_nothing_beyond_the_limit_is_blocked(
    kafka_bootstrap: str,
    topics: dict[str, str],
    receivers: HttpReceivers,
    tmp_path: Path,
    responders: list[Responders],
) -> None:
    keys = {f"tenant{i:03d}": f"tk_live_{i:03d}_{uuid.uuid4().hex}" for i in range(100)}
    with FakeKongAdmin(token=KONG_TOKEN) as kong:
        for name, key in keys.items():
            kong.add_consumer(name, key)
        r = Responders(
            tmp_path,
            kafka_bootstrap,
            topics,
            receivers,
            POLICY_STORM,
            ["--gateway", "kong", "--kong-admin-url", kong.url, "--batch-size", "20"],
            {"RESPONDER_KONG_ADMIN_TOKEN": KONG_TOKEN},
        )
        responders.append(r)
        alerts = [
            make_alert(name, consumer=name, key_fingerprint=PSEUDO.key_fingerprint(key))
            for name, key in keys.items()
        ]
        produce_alerts(kafka_bootstrap, topics["alerts"], alerts)
        run = r.start()

        def decided() -> list[ActionRecord]:
            return [
                x
                for x in terminal(read_actions(kafka_bootstrap, topics["actions"]))
                if x.action in ("block", "oncall")
            ]

        wait_for(lambda: len(decided()) == 101, DEADLINE_S, "100 block decisions and one notice")
        r.stop(run)
        blocked = {name for name in keys if kong.groups(name) == {"responder-blocked"}}
        assert kong.violations == []

    outcomes = Counter((x.action, x.outcome) for x in decided())
    assert outcomes == Counter(
        {("block", "done"): 5, ("block", "circuit_open"): 95, ("oncall", "done"): 1}
    )
    done = {x.gateway_consumer for x in decided() if x.outcome == "done" and x.action == "block"}
    assert blocked == done and len(blocked) == 5
    # On-call was paged once for the open breaker, whatever the number of refused blocks.
    (page,) = receivers.pagerduty.pages
    assert page.startswith("responder-circuit-")
    assert len(receivers.pagerduty.events) == 1
    assert_no_secrets(r.output(), *keys.values())


# --- kill -9 and restart -----------------------------------------------------------------------

POLICY_NOTIFY = """
[contacts]
{contacts}

[[respond]]
actions = ["pagerduty", "slack", "webhook", "email"]
"""


def test_kill_9_mid_delivery_then_restart_duplicates_nothing_and_loses_nothing(
    kafka_bootstrap: str,
    topics: dict[str, str],
    receivers: HttpReceivers,
    smtp: SmtpReceiver,
    tmp_path: Path,
    responders: list[Responders],
) -> None:
    names = [f"c{i}" for i in range(5)]
    contacts = "\n".join(f'{n} = "{n}@example.org"' for n in names)
    r = Responders(
        tmp_path,
        kafka_bootstrap,
        topics,
        receivers,
        POLICY_NOTIFY.format(contacts=contacts),
        smtp_args(smtp),
        {},
    )
    responders.append(r)
    produce_alerts(kafka_bootstrap, topics["alerts"], [make_alert(n, consumer=n) for n in names])
    receivers.stall_webhook_at = 3
    first = r.start()
    assert receivers.stalled.wait(DEADLINE_S), "the third webhook never arrived"
    first.process.kill()  # kill -9 while the delivery is in flight
    assert first.process.wait(10) == -signal.SIGKILL
    receivers.stall_webhook_at = None
    receivers.release.set()

    # The delivery in flight: planned and committed, not finished.
    in_flight = receivers.webhooks[2].webhook_id
    before = read_actions(kafka_bootstrap, topics["actions"])
    assert in_flight in {x.action_id for x in before if x.outcome == "planned"}
    assert in_flight not in {x.action_id for x in terminal(before)}
    assert len(terminal(before)) < 20

    second = r.start()

    def finished() -> int:
        return len(terminal(read_actions(kafka_bootstrap, topics["actions"])))

    wait_for(lambda: finished() == 20, DEADLINE_S, "20 finished actions")
    r.stop(second)

    records = read_actions(kafka_bootstrap, topics["actions"])
    planned = [x.action_id for x in records if x.outcome == "planned"]
    finals = [x.action_id for x in terminal(records)]
    # Nothing lost, nothing decided or finished twice: 5 alerts x 4 channels.
    assert len(planned) == len(set(planned)) == 20
    assert sorted(finals) == sorted(set(planned))
    assert {x.outcome for x in terminal(records)} == {"done"}
    # At the receivers: each notification once. The webhook in flight at the kill arrived
    # twice with the same id (the at-least-once window), which the receiver de-duplicates on.
    ids = receivers.webhook_ids()
    assert len(set(ids)) == 5 and len(ids) == 6
    assert Counter(ids).most_common(1)[0][1] == 2
    assert all(w.verified for w in receivers.webhooks)
    assert len(receivers.slack) == 5
    assert len(receivers.pagerduty.events) == 5
    assert len(receivers.pagerduty.pages) == 5
    assert len(smtp.messages) == 5 and len(set(smtp.message_ids())) == 5
    assert sorted(rcpts[0] for rcpts, _ in smtp.messages) == [f"{n}@example.org" for n in names]
    assert_no_secrets(r.output())
