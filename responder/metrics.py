"""Prometheus metrics, the health endpoint, and structured logs without secrets.

One HTTP listener (``--health-host``/``--health-port``) serves:

- ``/metrics``: Prometheus text format (prometheus_client), from the responder's own registry;
- ``/healthz``: liveness, 200 while the main loop turned within ``--health-stale-seconds``
  (503 otherwise, e.g. stuck in a broker call);
- ``/readyz``: 200 once the action log was read back and alerts are being consumed.

Logs are one JSON object per line on stderr. ``SecretFilter`` replaces every configured secret
value in each record, and scrubs credential shapes from its message, before it is written: a
defence in depth, since no code path logs a secret or key on purpose.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

from metering.redact import REDACTED, scrub_text

DELIVERY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class Metrics:
    """The responder's metrics, in a registry of their own (tests create many)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.actions = Counter(
            "responder_actions",
            "Action records written, by action type and outcome",
            ["action", "outcome"],
            registry=r,
        )
        self.delivery = Histogram(
            "responder_delivery_seconds",
            "Time from an action's first delivery attempt to its outcome",
            ["action", "outcome"],
            buckets=DELIVERY_BUCKETS,
            registry=r,
        )
        self.attempts = Counter(
            "responder_delivery_attempts",
            "Delivery attempts, by action type",
            ["action"],
            registry=r,
        )
        self.alerts = Counter(
            "responder_alerts",
            "Alert records consumed, by what came of them (planned, duplicate, unmatched, invalid)",
            ["result"],
            registry=r,
        )
        self.circuit_open = Gauge(
            "responder_circuit_open", "1 while the circuit breaker refuses blocks", registry=r
        )
        self.blocks_last_hour = Gauge(
            "responder_blocks_last_hour", "Blocks planned in the last 60 minutes", registry=r
        )
        self.active_blocks = Gauge(
            "responder_active_blocks", "Blocks in force, waiting for their TTL", registry=r
        )
        self.pending = Gauge(
            "responder_pending_actions", "Planned actions not finished yet", registry=r
        )
        self.transactions = Counter(
            "responder_transactions", "Kafka transactions, by result", ["result"], registry=r
        )

    def text(self) -> bytes:
        return generate_latest(self.registry)


class Health:
    """Liveness and readiness of the main loop."""

    def __init__(self, stale_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._stale = stale_s
        self._clock = clock
        self._beat = clock()
        self.ready = False

    def beat(self) -> None:
        self._beat = self._clock()

    def status(self) -> tuple[bool, dict[str, Any]]:
        age = self._clock() - self._beat
        alive = age <= self._stale
        return alive, {"status": "ok" if alive else "stale", "loop_age_s": round(age, 3)}


class HealthServer:
    """``/healthz``, ``/readyz`` and ``/metrics`` on one threaded HTTP listener."""

    def __init__(self, host: str, port: int, metrics: Metrics, health: Health) -> None:
        metrics_, health_ = metrics, health

        class Handler(BaseHTTPRequestHandler):
            disable_nagle_algorithm = True

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, metrics_.text(), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    alive, body = health_.status()
                    self._send(200 if alive else 503, json.dumps(body).encode())
                elif path == "/readyz":
                    ready = health_.ready and health_.status()[0]
                    self._send(200 if ready else 503, json.dumps({"ready": ready}).encode())
                else:
                    self._send(404, b'{"error": "not found"}')

            def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # scrapes every few seconds would drown the service's own log

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="responder-health", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


# --- logs ----------------------------------------------------------------------------------------

_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message"}


class SecretFilter(logging.Filter):
    """Keeps secrets out of log records.

    Every configured secret value is replaced wherever it appears (message, fields, traceback);
    the free text of the message also goes through ``metering.redact.scrub_text``, which
    removes what is shaped like a credential. Structured fields are not scrubbed by shape: they
    hold ids and names (32-hex action ids would all look like keys), set by the responder's own
    code."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        # Longest first, so a secret containing another is replaced whole.
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def add(self, secrets: Iterable[str]) -> None:
        merged = set(self._secrets) | {s for s in secrets if s}
        self._secrets = sorted(merged, key=len, reverse=True)

    def replace(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = scrub_text(self.replace(record.getMessage()))
        record.args = None
        for key, value in list(record.__dict__.items()):
            if key not in _STANDARD and isinstance(value, str):
                setattr(record, key, self.replace(value))
        if record.exc_info:
            # A traceback can quote a request URL or a config value: keep the exception's type.
            exc_type = record.exc_info[0]
            record.exc_text = exc_type.__name__ if exc_type else "Exception"
            record.exc_info = None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC), level, logger, message and the record's extra
    fields."""

    converter = staticmethod(time.gmtime)

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_text:
            out["exception"] = record.exc_text
        return json.dumps(out, default=str)


def configure_logging(secrets: Iterable[str], level: int = logging.INFO) -> SecretFilter:
    """JSON lines on stderr through the secret filter; returns the filter (more secrets may be
    added later)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    secret_filter = SecretFilter(secrets)
    handler.addFilter(secret_filter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx logs every request with its URL at INFO; for Slack the URL is the secret.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    return secret_filter
