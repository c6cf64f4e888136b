"""Notification payloads, webhook signatures, retries and the channels (responder.notify), against
local receivers (testkit.receivers): no network beyond 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from responder.actions import ActionRecord, incident_id
from responder.notify import (
    ID_HEADER,
    SIGNATURE_HEADER,
    DeliveryError,
    EmailChannel,
    PagerDutyChannel,
    SignatureError,
    SlackChannel,
    WebhookChannel,
    backoff_delay,
    classify_http,
    deliver_with_retries,
    email_message,
    pagerduty_event,
    sign,
    slack_message,
    verify,
    webhook_body,
)
from responder.policy import CircuitBreaker, parse_policy, plan_alert
from schemas.events import Alert
from testkit.alerts import T0, make_alert
from testkit.receivers import HttpReceivers, SmtpReceiver, pagerduty_problems

SECRET = b"9c1f0b6e2d4a7f3e8b5c1d9a0e6f2b7c"
ROUTING_KEY = "R0UT1NGK3Y0123456789abcdefABCDEF"
NOW_S = 1_900_000_000
POLICY = parse_policy(
    """
dry_run = false
[contacts]
acme = "security@acme.example"
[[respond]]
actions = ["pagerduty", "slack", "webhook", "email"]
"""
)


def _records(status: str = "open", **kw: Any) -> dict[str, ActionRecord]:
    alert = Alert.model_validate(
        make_alert("acme", consumer="acme", key_fingerprint="f" * 32, status=status, **kw)  # type: ignore[arg-type]
    )
    records = plan_alert(
        alert,
        POLICY,
        now_ms=T0 + 1,
        known=lambda _: False,
        breaker=CircuitBreaker(1),
        gateway="apisix",
        responder="r1",
    )
    return {r.action: r for r in records}


# --- signature -----------------------------------------------------------------------------------


def test_a_signature_verifies_and_returns_its_timestamp() -> None:
    body = b'{"id": "a1"}'
    header = sign(SECRET, NOW_S, body)
    assert header.startswith(f"t={NOW_S},v1=")
    assert verify(SECRET, header, body, now_s=NOW_S + 10) == NOW_S


@pytest.mark.parametrize(
    ("header", "body", "now", "message"),
    [
        (sign(SECRET, NOW_S, b"{}"), b'{"x":1}', NOW_S, "no signature matches"),
        (sign(b"another-secret-of-32-characters!", NOW_S, b"{}"), b"{}", NOW_S, "no signature"),
        (sign(SECRET, NOW_S, b"{}"), b"{}", NOW_S + 301, "outside the tolerance"),
        (sign(SECRET, NOW_S, b"{}"), b"{}", NOW_S - 301, "outside the tolerance"),
        ("v1=abc", b"{}", NOW_S, "lacks t or v1"),
        (f"t={NOW_S}", b"{}", NOW_S, "lacks t or v1"),
        ("t=soon,v1=abc", b"{}", NOW_S, "malformed timestamp"),
        ("garbage", b"{}", NOW_S, "malformed signature header"),
    ],
)
def test_bad_signatures_are_refused(header: str, body: bytes, now: int, message: str) -> None:
    with pytest.raises(SignatureError, match=message):
        verify(SECRET, header, body, now_s=now)


def test_a_replay_outside_the_tolerance_fails_even_with_a_valid_mac() -> None:
    body = b'{"id": "a1"}'
    captured = sign(SECRET, NOW_S, body)
    assert verify(SECRET, captured, body, now_s=NOW_S + 299) == NOW_S
    with pytest.raises(SignatureError):
        verify(SECRET, captured, body, now_s=NOW_S + 3600)


def test_rotation_any_secret_and_any_v1() -> None:
    body = b"{}"
    old = b"old-secret-old-secret-old-secret"
    header = sign(SECRET, NOW_S, body) + "," + sign(old, NOW_S, body).split(",")[1]
    assert verify([old], header, body, now_s=NOW_S) == NOW_S
    assert verify([b"x" * 32, SECRET], header, body, now_s=NOW_S) == NOW_S


# --- payloads ------------------------------------------------------------------------------------


def test_pagerduty_trigger_and_resolve_share_the_incident_dedup_key() -> None:
    incident = incident_id("acme", T0)
    trigger = pagerduty_event(_records("open")["pagerduty"], ROUTING_KEY, "pipeline")
    assert pagerduty_problems(trigger, ROUTING_KEY) == []
    assert trigger["event_action"] == "trigger"
    assert trigger["dedup_key"] == incident
    payload = trigger["payload"]
    assert payload["severity"] == "critical"
    assert payload["source"] == "pipeline"
    assert payload["class"] == "rate_spike"
    assert payload["component"] == "acme"
    assert payload["timestamp"] == "2027-01-15T08:01:00.000+00:00"
    assert payload["summary"].startswith("[critical] rate_spike incident opened on acme: acme:")
    assert payload["custom_details"]["incident_id"] == incident
    update = pagerduty_event(_records("update", severity="high")["pagerduty"], ROUTING_KEY, "p")
    assert (update["dedup_key"], update["payload"]["severity"]) == (incident, "error")
    resolve = pagerduty_event(_records("closed")["pagerduty"], ROUTING_KEY, "pipeline")
    assert resolve == {"routing_key": ROUTING_KEY, "event_action": "resolve", "dedup_key": incident}


def test_pagerduty_summary_is_cut_to_1024() -> None:
    record = _records("open")["pagerduty"]
    long = record.model_copy(update={"alert": {**(record.alert or {}), "summary": "x" * 2000}})
    summary = pagerduty_event(long, ROUTING_KEY, "p")["payload"]["summary"]
    assert len(summary) == 1024 and summary.endswith("…")


def test_slack_and_webhook_bodies() -> None:
    records = _records("open")
    slack = slack_message(records["slack"])
    assert slack["text"].startswith("[critical] rate_spike incident opened on acme")
    assert [b["type"] for b in slack["blocks"]] == ["section", "context"]
    body = webhook_body(records["webhook"], NOW_S)
    assert body["id"] == records["webhook"].action_id
    assert body["type"] == "incident.open"
    assert body["created"] == NOW_S
    assert body["incident_id"] == incident_id("acme", T0)
    assert body["alert"]["alert_id"] == records["webhook"].alert_id


def test_the_email_names_the_key_by_fingerprint_and_has_a_stable_message_id() -> None:
    record = _records("open")["email"]
    msg = email_message(record, ["security@acme.example"], "responder@pipeline.example", T0)
    assert msg["Message-ID"] == f"<{record.action_id}@pipeline.example>"
    assert msg["To"] == "security@acme.example"
    assert msg["Subject"] == "[security] Unusual use of your API key (rate_spike)"
    text = msg.get_content()
    assert "fingerprint ffffffffffff…" in text
    assert "f" * 13 not in text  # only a prefix of the fingerprint
    assert incident_id("acme", T0) in text


# --- retries -------------------------------------------------------------------------------------


def test_classify_http() -> None:
    assert classify_http(202) is None
    for status, retryable in (
        (400, False),
        (403, False),
        (404, False),
        (408, True),
        (429, True),
        (500, True),
        (503, True),
    ):
        error = classify_http(status)
        assert error is not None and (error.reason, error.retryable) == (
            f"HTTP {status}",
            retryable,
        )
    limited = classify_http(429, "7")
    assert limited is not None and limited.retry_after_s == 7.0
    dated = classify_http(429, "Wed, 21 Oct 2015 07:28:00 GMT")
    assert dated is not None and dated.retry_after_s is None


def test_backoff_is_exponential_capped_with_equal_jitter() -> None:
    assert [backoff_delay(a, 0.5, 30, 0.0) for a in (1, 2, 3, 4)] == [0.25, 0.5, 1.0, 2.0]
    assert [backoff_delay(a, 0.5, 30, 1.0) for a in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert backoff_delay(20, 0.5, 30, 1.0) == 30


class Flaky:
    def __init__(self, *errors: DeliveryError) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)


def _deliver(send: Flaky, waits: list[float], stop_after: int | None = None) -> Any:
    def wait(seconds: float) -> bool:
        waits.append(seconds)
        return stop_after is not None and len(waits) >= stop_after

    return deliver_with_retries(
        send, max_attempts=4, base_s=1, cap_s=10, wait=wait, rand=lambda: 1.0
    )


def test_retries_until_success() -> None:
    waits: list[float] = []
    send = Flaky(
        DeliveryError("HTTP 503", retryable=True), DeliveryError("ConnectError", retryable=True)
    )
    result = _deliver(send, waits)
    assert (result.ok, result.attempts, result.reason, waits) == (True, 3, None, [1.0, 2.0])


def test_a_permanent_error_is_not_retried() -> None:
    waits: list[float] = []
    result = _deliver(Flaky(DeliveryError("HTTP 400", retryable=False)), waits)
    assert (result.ok, result.attempts, result.reason, waits) == (
        False,
        1,
        "HTTP 400 (not retried)",
        [],
    )


def test_retries_give_up_after_max_attempts_with_the_last_reason() -> None:
    waits: list[float] = []
    errors = [DeliveryError("HTTP 500", retryable=True) for _ in range(5)]
    result = _deliver(Flaky(*errors), waits)
    assert (result.ok, result.attempts, result.reason) == (False, 4, "HTTP 500 after 4 attempts")
    assert waits == [1.0, 2.0, 4.0]


def test_retry_after_is_honoured_up_to_the_cap() -> None:
    waits: list[float] = []
    send = Flaky(
        DeliveryError("HTTP 429", retryable=True, retry_after_s=7),
        DeliveryError("HTTP 429", retryable=True, retry_after_s=99),
    )
    assert _deliver(send, waits).ok
    assert waits == [7.0, 10.0]


def test_a_stop_while_waiting_interrupts() -> None:
    waits: list[float] = []
    result = _deliver(Flaky(DeliveryError("HTTP 503", retryable=True)), waits, stop_after=1)
    assert (result.ok, result.interrupted, result.attempts) == (False, True, 1)


# --- channels against the receivers --------------------------------------------------------------


@pytest.fixture
def receivers() -> Iterator[HttpReceivers]:
    with HttpReceivers(SECRET, ROUTING_KEY) as r:
        yield r


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5) as c:
        yield c


def test_webhook_delivery_is_signed_and_verifies_at_the_receiver(
    receivers: HttpReceivers, client: httpx.Client
) -> None:
    record = _records("open")["webhook"]
    WebhookChannel(f"{receivers.url}/webhook", SECRET, client).send(record)
    (delivery,) = receivers.webhooks
    assert delivery.verified
    assert delivery.webhook_id == record.action_id
    assert delivery.body["id"] == record.action_id


def test_webhook_with_the_wrong_secret_is_refused_permanently(
    receivers: HttpReceivers, client: httpx.Client
) -> None:
    channel = WebhookChannel(f"{receivers.url}/webhook", b"w" * 32, client)
    with pytest.raises(DeliveryError) as e:
        channel.send(_records("open")["webhook"])
    assert (e.value.reason, e.value.retryable) == ("HTTP 401", False)
    assert [w.verified for w in receivers.webhooks] == [False]


def test_slack_and_pagerduty_channels(receivers: HttpReceivers, client: httpx.Client) -> None:
    SlackChannel(f"{receivers.url}/slack/T0/B0/token", client).send(_records("open")["slack"])
    pd = PagerDutyChannel(f"{receivers.url}/pagerduty", ROUTING_KEY, client, "pipeline")
    for status in ("open", "update", "closed"):
        pd.send(_records(status)["pagerduty"])
    assert len(receivers.slack) == 1
    assert receivers.invalid == []
    incident = incident_id("acme", T0)
    assert [e["event_action"] for e in receivers.pagerduty.events] == [
        "trigger",
        "trigger",
        "resolve",
    ]
    assert receivers.pagerduty.pages == [incident]  # one incident, one page
    assert receivers.pagerduty.resolved == [incident]


def test_a_connection_failure_is_retryable_and_names_no_url(client: httpx.Client) -> None:
    secret_url = "http://127.0.0.1:9/services/T000/B000/very-secret-token"
    with pytest.raises(DeliveryError) as e:
        SlackChannel(secret_url, client).send(_records("open")["slack"])
    assert e.value.retryable
    assert "very-secret-token" not in e.value.reason and "127.0.0.1" not in e.value.reason


def test_email_channel_sends_to_the_consumers_contact() -> None:
    record = _records("open")["email"]
    with SmtpReceiver() as smtp:
        channel = EmailChannel(
            "127.0.0.1",
            smtp.port,
            sender="responder@pipeline.example",
            contacts=POLICY.contact,
            tls="none",
        )
        channel.send(record)
        ((rcpts, msg),) = smtp.messages
    assert rcpts == ["security@acme.example"]
    assert msg["Message-ID"] == f"<{record.action_id}@pipeline.example>"


def test_email_without_a_contact_is_a_permanent_failure() -> None:
    channel = EmailChannel("127.0.0.1", 9, sender="r@p.example", contacts=lambda _c: [])
    with pytest.raises(DeliveryError) as e:
        channel.send(_records("open")["email"])
    assert (e.value.reason, e.value.retryable) == ("no contact for consumer acme", False)


def test_webhook_body_bytes_are_what_was_signed(
    receivers: HttpReceivers, client: httpx.Client
) -> None:
    record = _records("open")["webhook"]
    sent: list[httpx.Request] = []

    def capture(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200)

    with httpx.Client(transport=httpx.MockTransport(capture)) as mock:
        WebhookChannel("http://receiver.test/hook", SECRET, mock, clock=lambda: NOW_S).send(record)
    (request,) = sent
    assert request.headers[ID_HEADER] == record.action_id
    assert verify(SECRET, request.headers[SIGNATURE_HEADER], request.content, now_s=NOW_S) == NOW_S
    assert orjson.loads(request.content)["created"] == NOW_S
