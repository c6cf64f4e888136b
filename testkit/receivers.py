"""Receivers for the responder's notifications, on 127.0.0.1, recording what arrives.

- ``HttpReceivers``: one HTTP server with three endpoints:
  ``/webhook`` verifies each delivery's signature (responder.notify.verify) and records it with
  its ``Responder-Webhook-Id``; ``/slack/...`` records Slack incoming-webhook messages;
  ``/pagerduty`` is a PagerDuty Events API v2 stand-in that checks each event's shape and keeps
  incidents by ``dedup_key`` the way PagerDuty does (a trigger for a key with an open incident
  joins it; a trigger for a key without one opens one, which is a page; a resolve closes it).
  ``stall_webhook_at = n`` holds the n-th webhook delivery (after recording it) until
  ``release`` is set, so a test can kill the responder while a delivery is in flight.
- ``SmtpReceiver``: an aiosmtpd server recording the messages it accepts.

Counting is the tests' business: every delivery is kept raw, duplicates included.
"""

from __future__ import annotations

import email
import email.policy
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from responder.notify import ID_HEADER, SIGNATURE_HEADER, SignatureError, verify
from testkit.local_http import LocalHttpServer

PD_SEVERITIES = frozenset({"critical", "error", "warning", "info"})


@dataclass(frozen=True)
class WebhookDelivery:
    webhook_id: str
    verified: bool
    body: dict[str, Any]


@dataclass
class PagerDutyState:
    events: list[dict[str, Any]] = field(default_factory=list)
    open: set[str] = field(default_factory=set)
    pages: list[str] = field(default_factory=list)
    """dedup_key of every trigger that opened an incident: what would page someone."""
    resolved: list[str] = field(default_factory=list)


def pagerduty_problems(event: Any, routing_key: str) -> list[str]:
    """Why an event is not a valid Events API v2 event (empty: valid)."""
    if not isinstance(event, dict):
        return ["not an object"]
    problems = []
    if event.get("routing_key") != routing_key:
        problems.append("routing_key")
    action = event.get("event_action")
    if action not in ("trigger", "acknowledge", "resolve"):
        problems.append("event_action")
    key = event.get("dedup_key")
    if action != "trigger" and not key:
        problems.append("dedup_key required")
    if key is not None and (not isinstance(key, str) or len(key) > 255):
        problems.append("dedup_key")
    if action == "trigger":
        payload = event.get("payload")
        if not isinstance(payload, dict):
            return [*problems, "payload"]
        summary = payload.get("summary")
        if not isinstance(summary, str) or not summary or len(summary) > 1024:
            problems.append("payload.summary")
        if not payload.get("source"):
            problems.append("payload.source")
        if payload.get("severity") not in PD_SEVERITIES:
            problems.append("payload.severity")
    return problems


class HttpReceivers:
    """Webhook, Slack and PagerDuty endpoints on one local HTTP server."""

    def __init__(self, webhook_secret: bytes, routing_key: str, tolerance_s: float = 300) -> None:
        self.webhook_secret = webhook_secret
        self.routing_key = routing_key
        self.tolerance_s = tolerance_s
        self.lock = threading.Lock()
        self.webhooks: list[WebhookDelivery] = []
        self.slack: list[dict[str, Any]] = []
        self.pagerduty = PagerDutyState()
        self.invalid: list[str] = []
        self.stall_webhook_at: int | None = None
        self.stalled = threading.Event()
        self.release = threading.Event()
        self._http = LocalHttpServer(self._reply)

    def _reply(self, request: BaseHTTPRequestHandler) -> tuple[int, bytes]:
        raw = request.rfile.read(int(request.headers.get("Content-Length") or 0))
        status, body = self._handle(request.path, dict(request.headers.items()), raw)
        return status, body if isinstance(body, bytes) else json.dumps(body).encode()

    @property
    def url(self) -> str:
        return self._http.url

    def __enter__(self) -> HttpReceivers:
        self._http.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self._http.stop()

    def _handle(self, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, Any]:
        try:
            body = json.loads(raw)
        except ValueError:
            with self.lock:
                self.invalid.append(f"{path}: not JSON")
            return 400, {"message": "invalid JSON"}
        if path == "/webhook":
            return self._webhook(headers, raw, body)
        if path.startswith("/slack/"):  # a Slack webhook URL's path holds its secret
            with self.lock:
                self.slack.append(body)
            return 200, b"ok"
        if path == "/pagerduty":
            return self._pagerduty(body)
        return 404, {"message": "not found"}

    def _webhook(self, headers: dict[str, str], raw: bytes, body: Any) -> tuple[int, Any]:
        lowered = {k.lower(): v for k, v in headers.items()}
        try:
            verify(
                self.webhook_secret,
                lowered.get(SIGNATURE_HEADER.lower(), ""),
                raw,
                now_s=time.time(),
                tolerance_s=self.tolerance_s,
            )
            verified = True
        except SignatureError:
            verified = False
        with self.lock:
            self.webhooks.append(
                WebhookDelivery(lowered.get(ID_HEADER.lower(), ""), verified, body)
            )
            stall = (
                self.stall_webhook_at is not None and len(self.webhooks) == self.stall_webhook_at
            )
        if stall:
            self.stalled.set()
            self.release.wait(120)
        return (200, {"received": True}) if verified else (401, {"message": "bad signature"})

    def _pagerduty(self, event: Any) -> tuple[int, Any]:
        problems = pagerduty_problems(event, self.routing_key)
        if problems:
            with self.lock:
                self.invalid.append(f"pagerduty: {', '.join(problems)}")
            return 400, {"status": "invalid event", "errors": problems}
        key = event.get("dedup_key")
        with self.lock:
            pd = self.pagerduty
            pd.events.append(event)
            if event["event_action"] == "trigger" and key not in pd.open:
                pd.open.add(key)
                pd.pages.append(key)
            elif event["event_action"] == "resolve" and key in pd.open:
                pd.open.discard(key)
                pd.resolved.append(key)
        return 202, {"status": "success", "message": "Event processed", "dedup_key": key}

    def webhook_ids(self) -> list[str]:
        with self.lock:
            return [w.webhook_id for w in self.webhooks]


class _Collect:
    def __init__(self, receiver: SmtpReceiver) -> None:
        self._receiver = receiver

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        message = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        with self._receiver.lock:
            self._receiver.messages.append((list(envelope.rcpt_tos), message))
        return "250 OK"


def free_port() -> int:
    """A port nothing listens on right now (aiosmtpd's controller needs one up front: it
    connects to its own port to check that it started)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SmtpReceiver:
    """A local SMTP server (aiosmtpd) keeping (recipients, message) of every mail accepted."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.messages: list[tuple[list[str], EmailMessage]] = []
        self.port = free_port()
        self._controller = Controller(_Collect(self), hostname="127.0.0.1", port=self.port)

    def __enter__(self) -> SmtpReceiver:
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._controller.stop()

    def message_ids(self) -> list[str]:
        with self.lock:
            return [str(m["Message-ID"]) for _, m in self.messages]
