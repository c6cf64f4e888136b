"""Notification channels: a signed generic webhook, Slack, PagerDuty Events API v2, email.

Pure parts (unit-tested without a network): the webhook signature and its verification, the
payload of each channel, the error classification and the retry backoff. The channel classes do
one delivery attempt each; ``deliver_with_retries`` repeats it.

**Webhook signature** (the scheme of Stripe's ``Stripe-Signature``): header
``Responder-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``. A receiver
recomputes the HMAC over the raw body, compares in constant time, and refuses a timestamp outside
its tolerance (default 5 minutes), so a captured request cannot be replayed later. Within the
tolerance, and for the responder's own retries (re-signed with a new timestamp), the header
``Responder-Webhook-Id`` (the action id, constant across retries and restarts) is what a
receiver de-duplicates on.

**Idempotency at the receivers** (responder.service explains why it matters): PagerDuty merges
events with the same ``dedup_key`` (the incident id) into one incident, so a repeated trigger
never pages twice, and a resolve closes it; webhook receivers de-duplicate on the id header;
email carries a deterministic ``Message-ID`` (``<action id@sender domain>``), which mail stores
that de-duplicate use. Slack incoming webhooks have no idempotency key.

No secret reaches a reason, a log or a record: failures are described by HTTP status or
exception class, never by ``str(exc)`` (an httpx error can hold the URL, which for Slack is the
secret).
"""

from __future__ import annotations

import hashlib
import hmac
import smtplib
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any, Literal, Protocol

import httpx
import orjson

from responder.actions import ActionRecord

SIGNATURE_HEADER = "Responder-Signature"
ID_HEADER = "Responder-Webhook-Id"
DEFAULT_TOLERANCE_S = 300
PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
PAGERDUTY_SUMMARY_MAX = 1024
"""PagerDuty truncates a longer summary; cut it ourselves, visibly."""
PAGERDUTY_DEDUP_MAX = 255
PAGERDUTY_SEVERITY = {"critical": "critical", "high": "error", "warning": "warning"}
CLIENT_NAME = "gateway-usage-pipeline responder"
USER_AGENT = "gateway-usage-pipeline-responder/1"
SmtpTls = Literal["starttls", "tls", "none"]


# --- signature -------------------------------------------------------------------------------


class SignatureError(ValueError):
    """A webhook signature that does not verify (malformed, wrong, or outside the tolerance)."""


def _mac(secret: bytes, timestamp: int, body: bytes) -> str:
    return hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The ``Responder-Signature`` header value for ``body`` sent at ``timestamp``."""
    return f"t={timestamp},v1={_mac(secret, timestamp, body)}"


def verify(
    secrets: bytes | Sequence[bytes],
    header: str,
    body: bytes,
    *,
    now_s: float,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> int:
    """Check a ``Responder-Signature`` header against the raw body; returns its timestamp.

    Several secrets may be given (during a rotation); any ``v1`` matching any secret passes.
    Raises SignatureError for a malformed header, no matching signature, or a timestamp further
    than ``tolerance_s`` from ``now_s`` (replay protection)."""
    keys = [secrets] if isinstance(secrets, bytes) else list(secrets)
    timestamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        name, sep, value = item.strip().partition("=")
        if not sep:
            raise SignatureError("malformed signature header")
        if name == "t":
            try:
                timestamp = int(value)
            except ValueError:
                raise SignatureError("malformed timestamp") from None
        elif name == "v1":
            signatures.append(value)
    if timestamp is None or not signatures:
        raise SignatureError("signature header lacks t or v1")
    if abs(now_s - timestamp) > tolerance_s:
        raise SignatureError("timestamp outside the tolerance")
    for key in keys:
        expected = _mac(key, timestamp, body)
        if any(hmac.compare_digest(expected, s) for s in signatures):
            return timestamp
    raise SignatureError("no signature matches")


# --- payloads ------------------------------------------------------------------------------


def _who(alert: Mapping[str, Any]) -> str:
    return str(alert.get("consumer") or alert.get("rate_key") or "unknown key")


def headline(record: ActionRecord) -> str:
    """One line for humans: what happened to which key."""
    alert = record.alert or {}
    if record.action == "oncall":
        return f"Responder circuit breaker open: a block was refused ({record.reason})"
    status = {"open": "opened", "update": "escalated", "closed": "closed"}.get(
        str(alert.get("status")), str(alert.get("status"))
    )
    return (
        f"[{alert.get('severity')}] {alert.get('rule')} incident {status} on "
        f"{_who(alert)}: {alert.get('summary', '')}"
    )


def _iso(epoch_ms: object) -> str | None:
    if not isinstance(epoch_ms, int):
        return None
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).isoformat(timespec="milliseconds")


def _details(record: ActionRecord) -> dict[str, Any]:
    alert = record.alert or {}
    keep = (
        "alert_id",
        "status",
        "rule",
        "rules",
        "severity",
        "score",
        "probability",
        "rate_key",
        "consumer",
        "key_fingerprint",
        "observed_count",
        "expected_count",
        "countries_seen",
        "auth_failures",
        "features",
    )
    details = {k: alert[k] for k in keep if k in alert}
    details["incident_id"] = record.incident_id
    details["incident_start"] = _iso(alert.get("incident_start"))
    details["window"] = [_iso(alert.get("window_start")), _iso(alert.get("window_end"))]
    return details


def pagerduty_event(record: ActionRecord, routing_key: str, source: str) -> dict[str, Any]:
    """The Events API v2 body: ``trigger`` (open, update, on-call notice) or ``resolve``
    (closed), with the incident as ``dedup_key`` so that one incident is one page."""
    dedup_key = (record.dedup_key or record.incident_id)[:PAGERDUTY_DEDUP_MAX]
    if record.event_action == "resolve":
        return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": dedup_key}
    alert = record.alert or {}
    summary = headline(record)
    if len(summary) > PAGERDUTY_SUMMARY_MAX:
        summary = summary[: PAGERDUTY_SUMMARY_MAX - 1] + "…"
    severity = (
        "critical"
        if record.action == "oncall"
        else PAGERDUTY_SEVERITY.get(str(alert.get("severity")), "warning")
    )
    return {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": dedup_key,
        "client": CLIENT_NAME,
        "payload": {
            "summary": summary,
            "source": source,
            "severity": severity,
            "timestamp": _iso(alert.get("detected_at")) or _iso(record.recorded_at),
            "component": _who(alert),
            "group": "api-keys",
            "class": "responder_circuit_open" if record.action == "oncall" else alert.get("rule"),
            "custom_details": _details(record),
        },
    }


def slack_message(record: ActionRecord) -> dict[str, Any]:
    """An incoming-webhook message: ``text`` (the notification fallback) and Block Kit blocks."""
    text = headline(record)
    context = f"incident `{record.incident_id}` · alert `{record.alert_id}`"
    return {
        "text": text,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": context}]},
        ],
    }


def webhook_body(record: ActionRecord, created_s: int) -> dict[str, Any]:
    """The generic webhook's JSON: the alert as the job wrote it, and the responder's ids."""
    alert = record.alert or {}
    kind = (
        "responder.circuit_open" if record.action == "oncall" else f"incident.{alert.get('status')}"
    )
    return {
        "id": record.action_id,
        "type": kind,
        "created": created_s,
        "incident_id": record.incident_id,
        "summary": headline(record),
        "reason": record.reason if record.action == "oncall" else None,
        "alert": alert,
    }


def email_message(
    record: ActionRecord, to: Sequence[str], sender: str, now_ms: int
) -> EmailMessage:
    """The email to a consumer's contact: what was seen on their key, by fingerprint only."""
    alert = record.alert or {}
    domain = sender.rpartition("@")[2] or "responder.invalid"
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    msg["Subject"] = f"[security] Unusual use of your API key ({alert.get('rule')})"
    msg["Message-ID"] = f"<{record.action_id}@{domain}>"
    msg["Date"] = format_datetime(datetime.fromtimestamp(now_ms / 1000, UTC))
    msg["X-Responder-Action-Id"] = record.action_id
    fingerprint = str(alert.get("key_fingerprint") or "")
    lines = [
        f"Hello {alert.get('consumer')},",
        "",
        "our API gateway saw unusual use of one of your API keys:",
        "",
        f"  {alert.get('summary', '')}",
        "",
        f"  rule:          {alert.get('rule')} ({alert.get('severity')})",
        f"  since:         {_iso(alert.get('incident_start'))}",
        f"  key:           fingerprint {fingerprint[:12] or 'unknown'}…",
        f"  incident:      {record.incident_id}",
        "",
        "If you do not recognise this traffic, rotate the key. Reply to this email with the",
        "incident id above if you have questions.",
    ]
    msg.set_content("\n".join(lines) + "\n")
    return msg


# --- delivery ------------------------------------------------------------------------------


class DeliveryError(Exception):
    """One failed delivery attempt. ``reason`` never holds a secret or a URL."""

    def __init__(self, reason: str, *, retryable: bool, retry_after_s: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.retry_after_s = retry_after_s


def classify_http(status: int, retry_after: str | None = None) -> DeliveryError | None:
    """None for success (2xx); otherwise the error: 408, 429 and 5xx are retried (honouring a
    Retry-After given in seconds), other statuses are permanent."""
    if 200 <= status < 300:
        return None
    retryable = status in (408, 429) or status >= 500
    after: float | None = None
    if retry_after is not None:
        try:
            after = max(0.0, float(retry_after))
        except ValueError:
            after = None
    return DeliveryError(f"HTTP {status}", retryable=retryable, retry_after_s=after)


def backoff_delay(attempt: int, base_s: float, cap_s: float, rand: float) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based): exponential, capped,
    with "equal jitter" (half fixed, half random) so retries of many actions spread out."""
    full = min(cap_s, base_s * 2 ** (attempt - 1))
    return full / 2 + full / 2 * rand


@dataclass(frozen=True)
class Attempts:
    """The outcome of ``deliver_with_retries``."""

    ok: bool
    attempts: int
    reason: str | None = None
    interrupted: bool = False
    """Stopped while waiting to retry: the action is neither done nor failed."""


def deliver_with_retries(
    send: Callable[[], None],
    *,
    max_attempts: int,
    base_s: float,
    cap_s: float,
    wait: Callable[[float], bool],
    rand: Callable[[], float],
) -> Attempts:
    """Call ``send`` until it succeeds, fails permanently, or ``max_attempts`` are used.

    ``wait(seconds)`` waits between attempts and returns True when the service is stopping
    (then the result is ``interrupted``)."""
    reason: str | None = None
    for attempt in range(1, max_attempts + 1):
        try:
            send()
            return Attempts(True, attempt)
        except DeliveryError as e:
            reason = e.reason
            if not e.retryable:
                return Attempts(False, attempt, f"{e.reason} (not retried)")
            if attempt == max_attempts:
                break
            delay = backoff_delay(attempt, base_s, cap_s, rand())
            if e.retry_after_s is not None:
                delay = max(delay, min(e.retry_after_s, cap_s))
            if wait(delay):
                return Attempts(False, attempt, reason, interrupted=True)
    return Attempts(False, max_attempts, f"{reason} after {max_attempts} attempts")


class Channel(Protocol):
    """One delivery attempt of a notification; raises DeliveryError."""

    def send(self, record: ActionRecord) -> None: ...


def _post_json(client: httpx.Client, url: str, body: bytes, headers: dict[str, str]) -> None:
    try:
        response = client.post(url, content=body, headers=headers)
    except httpx.TimeoutException as e:
        raise DeliveryError(type(e).__name__, retryable=True) from None
    except httpx.HTTPError as e:  # connection refused, reset, protocol errors
        raise DeliveryError(type(e).__name__, retryable=True) from None
    error = classify_http(response.status_code, response.headers.get("retry-after"))
    if error is not None:
        raise error


_JSON = {"Content-Type": "application/json", "User-Agent": USER_AGENT}


class WebhookChannel:
    """POST the signed JSON body to a generic endpoint."""

    def __init__(
        self,
        url: str,
        secret: bytes,
        client: httpx.Client,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._url, self._secret, self._client, self._clock = url, secret, client, clock

    def send(self, record: ActionRecord) -> None:
        now = int(self._clock())
        body = orjson.dumps(webhook_body(record, now))
        headers = {
            **_JSON,
            ID_HEADER: record.action_id,
            SIGNATURE_HEADER: sign(self._secret, now, body),
        }
        _post_json(self._client, self._url, body, headers)


class SlackChannel:
    """POST to a Slack incoming webhook (its URL is the secret)."""

    def __init__(self, url: str, client: httpx.Client) -> None:
        self._url, self._client = url, client

    def send(self, record: ActionRecord) -> None:
        _post_json(self._client, self._url, orjson.dumps(slack_message(record)), dict(_JSON))


class PagerDutyChannel:
    """POST to the PagerDuty Events API v2 (202 Accepted on success)."""

    def __init__(self, url: str, routing_key: str, client: httpx.Client, source: str) -> None:
        self._url, self._key, self._client, self._source = url, routing_key, client, source

    def send(self, record: ActionRecord) -> None:
        body = orjson.dumps(pagerduty_event(record, self._key, self._source))
        _post_json(self._client, self._url, body, dict(_JSON))


class EmailChannel:
    """Send the consumer's email over SMTP (STARTTLS, implicit TLS, or plain for local relays)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        sender: str,
        contacts: Callable[[str | None], list[str]],
        tls: SmtpTls = "starttls",
        username: str | None = None,
        password: str | None = None,
        timeout_s: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._host, self._port, self._tls = host, port, tls
        self._sender, self._contacts = sender, contacts
        self._username, self._password = username, password
        self._timeout, self._clock = timeout_s, clock

    def send(self, record: ActionRecord) -> None:
        to = self._contacts(record.consumer)
        if not to:
            raise DeliveryError(f"no contact for consumer {record.consumer}", retryable=False)
        msg = email_message(record, to, self._sender, int(self._clock() * 1000))
        try:
            self._deliver(msg)
        except smtplib.SMTPRecipientsRefused:
            raise DeliveryError("SMTP recipients refused", retryable=False) from None
        except smtplib.SMTPResponseException as e:
            # 4xx: transient (greylisting, full queue); 5xx: permanent.
            code = int(e.smtp_code)
            raise DeliveryError(f"SMTP {code}", retryable=400 <= code < 500) from None
        except (smtplib.SMTPException, OSError) as e:
            raise DeliveryError(type(e).__name__, retryable=True) from None

    def _deliver(self, msg: EmailMessage) -> None:
        context = ssl.create_default_context()
        smtp: smtplib.SMTP
        if self._tls == "tls":
            smtp = smtplib.SMTP_SSL(self._host, self._port, timeout=self._timeout, context=context)
        else:
            smtp = smtplib.SMTP(self._host, self._port, timeout=self._timeout)
        with smtp:
            if self._tls == "starttls":
                smtp.starttls(context=context)
            if self._username and self._password:
                smtp.login(self._username, self._password)
            smtp.send_message(msg)
