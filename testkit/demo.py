"""``make demo``: broker topics, live gateway traffic with a key compromised mid-run, the job, and
the responder acting on the job's alerts in dry run.

Runs the real job (``python -m jobs.gateway_pipeline``) on the embedded Flink MiniCluster against
the local broker, shows progress from the output topics as a downstream reader sees them
(read_committed), prints alerts as they arrive, then stops on its own or on Ctrl-C.

Beside the job runs the real responder (``python -m responder run --demo``) with a dry-run policy.
What it talks to runs in this process: the validating fake APISIX Admin API of
``testkit.gateway_admin``, seeded with the traffic's APISIX consumers and the very keys the
traffic generator sends (so the job's fingerprints are found at the gateway), and the webhook and
PagerDuty receivers of ``testkit.receivers``. Every terminal action record on the actions topic
is printed as it is committed (``WOULD BLOCK ...``, ``PAGE ...``, ``WEBHOOK ...``), with what the
receivers and the gateway saw of it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

import httpx
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from metering.billing.plans import Catalog, load_catalog
from metering.billing.pricing import amount_of
from metering.redact import Pseudonymizer
from metering.settings import HASH_KEY_ENV, PipelineSettings
from metering.topics import BY_ROLE
from responder.actions import ActionRecord
from responder.gateways import ApisixAdmin, KeyIndex, KeyOwner
from responder.notify import DeliveryError, headline
from testkit import stack
from testkit.gateway_admin import FakeApisixAdmin
from testkit.receivers import HttpReceivers, free_port
from testkit.traffic import (
    LIVE_COUNTRIES,
    SCENARIO_JOB_FLAGS,
    LiveStats,
    default_geoip_db,
    default_scenario,
    ips_for_countries,
    run_live,
)
from tools.topics import ensure_topics, pipeline_topics

if TYPE_CHECKING:
    from testkit.demo_pinot import PinotView

REPO = Path(__file__).resolve().parent.parent
ACTIONS_TOPIC = BY_ROLE["actions"].name
DEMO_CATALOG = REPO / "metering/billing/catalog.example.toml"
"""The demo's plans, subscriptions and grants (Bronze, Gold, Platinum, a trial, a prepaid)."""
RESPONDER_STOP_S = 30.0
"""How long a SIGTERMed responder may take to finish the action in progress and commit it."""
DRAIN_S = 15.0
"""Longest wait, once the job is stopped, for the responder to act on the last alerts. What it
has not performed by then stays planned on the actions topic: its next start performs it."""
T = TypeVar("T")

DEMO_POLICY = """\
# Written by the demo (testkit/demo.py) for this run only. Blocks are recorded, not performed.
dry_run = true
block_ttl_seconds = 600

[[respond]]
name = "every alert record goes to the webhook"
actions = ["webhook"]

[[respond]]
name = "on-call is paged for high and critical incidents"
min_severity = "high"
actions = ["pagerduty"]

[[respond]]
name = "keys that are clearly abused are blocked"
rules = ["rate_spike", "new_country"]
min_severity = "critical"
statuses = ["open", "update"]
actions = ["block"]
"""


@dataclass
class Progress:
    enriched: int = 0
    dead_letters: int = 0
    usage_windows: int = 0
    alerts: list[dict[str, Any]] = field(default_factory=list)
    actions: int = 0
    period_usage: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Subject -> its latest period-usage record."""
    billing_signals: list[dict[str, Any]] = field(default_factory=list)
    signal_seen_ms: dict[str, int] = field(default_factory=dict)
    """Balance signal id -> wall time it became readable (read_committed)."""
    prepaid_calls: dict[str, list[int]] = field(default_factory=dict)
    """Prepaid subject -> event times of its enriched calls: what the overdraw is measured on."""
    lock: threading.Lock = field(default_factory=threading.Lock)


def _fmt_time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%H:%M:%S")


def format_alert(a: dict[str, Any]) -> str:
    """One line per alert record: an incident opened, escalated or closed."""
    who = a.get("consumer") or a["rate_key"]
    fp = (a.get("key_fingerprint") or "")[:12]
    line = (
        f"ALERT {a['status'].upper():6} {a['severity'].upper():8} {a['rule']:20} {who} "
        f"(key {fp or '-'}) window {_fmt_time(a['window_start'])}-{_fmt_time(a['window_end'])} "
        f"UTC: "
    )
    if a["status"] == "closed":
        line += f"after {a['incident_windows']} windows with findings ({', '.join(a['rules'])})"
    else:
        line += a["summary"]
    return line + f" [id {a['alert_id'][:12]}]"


# --- the responder's side: fake APISIX, receivers, the subprocess ------------------------------


def _coordinator_retry(call: Callable[[], T], timeout_s: float = 30.0) -> T:
    """``call()``, asked again while a just-started broker's group coordinator is not ready
    (it answers NOT_COORDINATOR or "loading" until then)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return call()
        except KafkaException as e:
            code = e.args[0].code() if e.args else None
            retriable = code in (
                KafkaError.NOT_COORDINATOR,
                KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
                KafkaError.COORDINATOR_NOT_AVAILABLE,
            )
            if not retriable or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _end_offsets(consumer: Consumer, topic: str) -> list[TopicPartition]:
    out = []
    for p in consumer.list_topics(topic, timeout=10).topics[topic].partitions:
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        out.append(TopicPartition(topic, p, high))
    return out


def start_group_at_end(bootstrap: str, group: str, topic: str) -> None:
    """Commit the topic's current end offsets for a new consumer group, so that a consumer of
    the group (the responder, whose reset policy is earliest) starts with this run's records
    and not with every alert earlier demos left on the broker."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
    )
    try:
        offsets = _end_offsets(consumer, topic)
        _coordinator_retry(lambda: consumer.commit(offsets=offsets, asynchronous=False))
    finally:
        consumer.close()


def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
    )
    try:
        parts = [TopicPartition(topic, p.partition) for p in _end_offsets(consumer, topic)]
        return {
            tp.partition: tp.offset
            for tp in _coordinator_retry(lambda: consumer.committed(parts, timeout=10))
        }
    finally:
        consumer.close()


@dataclass(frozen=True)
class DemoSecrets:
    """Throwaway secrets of this run, never printed. The responder refuses placeholders."""

    apisix_admin_key: str = field(default_factory=lambda: secrets.token_hex(16))
    # APISIX's data encryption: AES-128-CBC, 16-character keys.
    apisix_keyring: str = field(default_factory=lambda: secrets.token_hex(8))
    webhook_secret: str = field(default_factory=lambda: secrets.token_hex(32))
    pagerduty_routing_key: str = field(default_factory=lambda: secrets.token_hex(16))

    def environment(self) -> dict[str, str]:
        return {
            "RESPONDER_APISIX_ADMIN_KEY": self.apisix_admin_key,
            "RESPONDER_APISIX_KEYRING": self.apisix_keyring,
            "RESPONDER_WEBHOOK_SECRET": self.webhook_secret,
            "RESPONDER_PAGERDUTY_ROUTING_KEY": self.pagerduty_routing_key,
        }


def demo_apisix(
    stack: contextlib.ExitStack, keys: dict[str, str], demo_secrets: DemoSecrets
) -> FakeApisixAdmin:
    """The fake APISIX Admin API with one consumer per APISIX consumer of the traffic, each with
    one key-auth credential holding the key the traffic presents (stored encrypted, as APISIX's
    data encryption does)."""
    apisix = FakeApisixAdmin(
        demo_secrets.apisix_admin_key, keyring=[demo_secrets.apisix_keyring.encode()]
    )
    stack.enter_context(apisix)
    for consumer, key in keys.items():
        apisix.add_consumer(consumer)
        apisix.add_credential(consumer, f"{consumer}-primary", key)
    return apisix


def traffic_keys(country_ips: dict[str, list[str]], seed: int) -> dict[str, str]:
    """The APISIX consumers of the demo's traffic and the key each presents. ``run_live`` draws
    its scenario with ``default_scenario(country_ips, now, seed=seed)``; the same addresses and
    seed give the same consumers and keys (the start time does not enter them)."""
    scenario = default_scenario(country_ips, 0, seed=seed)
    return {c.name: c.api_key for c in scenario.consumers if c.gateway == "apisix"}


class ActionView:
    """Turns the actions topic into one readable line per terminal record, with what the
    receivers and the gateway saw of it. Planned records are remembered, not printed: their
    terminal record says how they went."""

    def __init__(
        self,
        receivers: HttpReceivers,
        owner_of: Callable[[str], KeyOwner | None],
        consumer_of: Callable[[str], KeyOwner | None],
    ) -> None:
        self._receivers = receivers
        self._owner_of = owner_of
        self._consumer_of = consumer_of
        self._planned: dict[str, ActionRecord] = {}
        self._pages_shown: Counter[str] = Counter()
        self.outcomes: Counter[str] = Counter()
        self.records = 0
        self.lock = threading.Lock()

    def open_plans(self) -> int:
        with self.lock:
            return len(self._planned)

    def handle(self, value: bytes | None) -> str | None:
        try:
            record = ActionRecord.from_json(value or b"")
        except ValidationError:
            return "ACTION (an unreadable record on the actions topic)"
        with self.lock:
            self.records += 1
            if record.outcome == "planned":
                self._planned[record.action_id] = record
                return None
            planned = self._planned.pop(record.action_id, None)
            self.outcomes[record.outcome] += 1
        line = self.describe(record, planned)
        if planned is None and record.outcome in ("done", "failed"):
            line += " [planned by an earlier responder run]"
        return line

    def describe(self, r: ActionRecord, planned: ActionRecord | None) -> str:
        about = f"alert {(r.alert_id or '-')[:12]}, {r.rule} {r.severity}"
        if r.outcome == "failed":
            return f"FAILED {r.action} {r.target} after {r.attempts} attempts: {r.reason}"
        if r.outcome == "circuit_open":
            return f"CIRCUIT OPEN, not blocking {r.target}: {r.reason} ({about})"
        if r.outcome == "skipped_by_policy":
            return f"SKIPPED {r.action} {r.target}: {r.reason} ({about})"
        if r.action == "block":
            return self._block(r, about)
        if r.action == "pagerduty":
            return self._page(r, planned)
        if r.action == "webhook":
            return self._webhook(r)
        if r.action == "unblock":
            return f"UNBLOCKED {r.gateway_consumer} ({r.blocked}), its block's TTL ended"
        if r.action == "oncall":
            return f"ON-CALL told via {r.target}: {r.reason}"
        summary = headline(planned) if planned is not None else about
        return f"{r.action.upper()} {r.target}: {summary}"

    def _block(self, r: ActionRecord, about: str) -> str:
        if r.outcome == "done":
            until = _fmt_time(r.unblock_at) + " UTC" if r.unblock_at else "for good"
            return f"BLOCKED {r.gateway_consumer} ({r.blocked}) until {until} ({about})"
        # Dry run: the block was decided, not performed. Look its target up as the responder
        # would: a key by its fingerprint among the gateway's keys (fingerprinted under the job's
        # hash key), or a consumer (an alert without a key) by name.
        kind, _, value = r.target.partition(":")[2].partition(":")
        try:
            owner = (self._owner_of if kind == "key" else self._consumer_of)(value)
        except DeliveryError as e:
            return f"WOULD BLOCK {r.consumer or r.rate_key} (lookup failed: {e.reason}; {about})"
        if owner is None:
            what = f"key {value[:12]}" if kind == "key" else "consumer"
            return (
                f"WOULD BLOCK {r.consumer or r.rate_key} {what} (not known to the demo's APISIX: "
                f"not a consumer behind it; {about})"
            )
        if kind != "key":
            return f"WOULD BLOCK consumer {owner.consumer}, all its keys ({about}; dry run)"
        what = (
            f"key-auth credential {owner.credential_id}"
            if owner.credential_id
            else "consumer-level key-auth key"
        )
        return f"WOULD BLOCK {owner.consumer} {what} ({about}; dry run)"

    def _page(self, r: ActionRecord, planned: ActionRecord | None) -> str:
        key = r.dedup_key or r.incident_id
        if r.event_action == "resolve":
            return f"RESOLVE {r.rule} incident on {r.consumer or r.rate_key} (dedup {key})"
        summary = headline(planned) if planned is not None else f"{r.rule} on {r.consumer}"
        with self._receivers.lock:
            pages = self._receivers.pagerduty.pages.count(key)
        if pages > self._pages_shown[key]:
            self._pages_shown[key] += 1
            return f"PAGE {summary} (dedup {key})"
        return f"PAGE {summary} (dedup {key}: joins the open incident, nobody paged again)"

    def _webhook(self, r: ActionRecord) -> str:
        with self._receivers.lock:
            got = [w for w in self._receivers.webhooks if w.webhook_id == r.action_id]
        if not got:
            return f"WEBHOOK {r.alert_status} (id {r.action_id[:12]}) → 2xx"
        last = got[-1]
        status = 200 if last.verified else 401
        signature = "signature verified" if last.verified else "bad signature"
        return f"WEBHOOK {last.body.get('type')} → {status} ({signature}, id {r.action_id[:12]})"


class ResponderProcess:
    """``python -m responder run --demo`` beside the job, its output in a log file."""

    def __init__(
        self,
        cfg: PipelineSettings,
        env: dict[str, str],
        log_path: Path,
        policy_path: Path,
        apisix: FakeApisixAdmin,
        receivers: HttpReceivers,
        demo_secrets: DemoSecrets,
    ) -> None:
        self.group = f"demo-responder-{secrets.token_hex(4)}"
        self.health_port = free_port()
        self.log_path = log_path
        self.ready = False
        self._reported_exit = False
        args = [
            "--demo",
            "--bootstrap-servers",
            cfg.bootstrap_servers,
            "--alerts-topic",
            cfg.alerts_topic,
            "--actions-topic",
            ACTIONS_TOPIC,
            # A group per run (its offsets start at the end: start_group_at_end); one stable
            # transactional id, so that a new demo fences and aborts what a killed one left open.
            "--group-id",
            self.group,
            "--transactional-id",
            "demo-responder",
            "--instance",
            "demo-responder",
            "--policy-file",
            str(policy_path),
            "--gateway",
            "apisix",
            "--apisix-admin-url",
            apisix.url,
            "--webhook-url",
            f"{receivers.url}/webhook",
            "--pagerduty-url",
            f"{receivers.url}/pagerduty",
            "--health-port",
            str(self.health_port),
        ]
        start_group_at_end(cfg.bootstrap_servers, self.group, cfg.alerts_topic)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log: IO[bytes] = log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "responder", "run", *args],
            cwd=REPO,
            env={**env, **demo_secrets.environment()},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            # Its own session: Ctrl-C reaches the demo only, which then stops it with SIGTERM.
            start_new_session=True,
        )

    def _get(self, path: str) -> httpx.Response | None:
        try:
            return httpx.get(f"http://127.0.0.1:{self.health_port}{path}", timeout=2)
        except httpx.HTTPError:
            return None

    def check(self) -> None:
        """Say once when it is ready, or when it exited."""
        if self.process.poll() is not None:
            if not self._reported_exit:
                self._reported_exit = True
                print(
                    f"demo: the responder exited with code {self.process.returncode}; "
                    f"see {self.log_path}",
                    file=sys.stderr,
                    flush=True,
                )
            return
        if not self.ready:
            reply = self._get("/readyz")
            if reply is not None and reply.status_code == 200:
                self.ready = True
                print("demo: the responder is consuming the alerts (dry run)", flush=True)

    def actions_written(self) -> float | None:
        """Action records it committed since it started (its responder_actions counter)."""
        reply = self._get("/metrics")
        if reply is None or reply.status_code != 200:
            return None
        for family in text_string_to_metric_families(reply.text):
            if family.name == "responder_actions":
                return sum(s.value for s in family.samples if s.name == "responder_actions_total")
        return 0.0

    def stop(self) -> None:
        """SIGTERM: it finishes and commits the action in progress, then exits."""
        try:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(RESPONDER_STOP_S)
                except subprocess.TimeoutExpired:
                    print(f"demo: the responder did not stop; killing it ({self.log_path})")
                    self.process.kill()
                    self.process.wait()
        finally:
            self._log.close()


# --- reading the output topics ------------------------------------------------------------------


class Watcher:
    """Counts what the job commits to its output topics from now on, prints alerts at once and,
    with an ActionView, every terminal action record. Starts at the topics' current end."""

    def __init__(self, cfg: PipelineSettings, progress: Progress, actions: ActionView | None):
        self._cfg = cfg
        self._progress = progress
        self._actions = actions
        self._alert_offsets: dict[int, int] = {}
        self._consumer = Consumer(
            {
                "bootstrap.servers": cfg.bootstrap_servers,
                "group.id": f"demo-watch-{secrets.token_hex(4)}",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
            }
        )
        topics = [cfg.enriched_topic, cfg.dlq_topic, cfg.usage_topic, cfg.alerts_topic]
        topics += [cfg.period_usage_topic, cfg.quota_signals_topic, cfg.balance_signals_topic]
        if actions is not None:
            topics.append(ACTIONS_TOPIC)
        assignment = []
        for topic in topics:
            assignment += _end_offsets(self._consumer, topic)
        self._consumer.assign(assignment)

    def alerts_seen(self) -> dict[int, int]:
        """Alerts partition -> offset after the last alert printed."""
        with self._progress.lock:
            return dict(self._alert_offsets)

    def run(self, stop: threading.Event) -> None:
        cfg, progress = self._cfg, self._progress
        try:
            while not stop.is_set():
                for msg in self._consumer.consume(500, timeout=0.5):
                    if msg.error() is not None:
                        continue
                    topic = msg.topic() or ""
                    if topic == ACTIONS_TOPIC and self._actions is not None:
                        line = self._actions.handle(msg.value())
                        with progress.lock:
                            progress.actions += 1
                        if line is not None:
                            print(line, flush=True)
                        continue
                    with progress.lock:
                        if topic == cfg.period_usage_topic:
                            usage = json.loads(msg.value() or b"{}")
                            progress.period_usage[usage["subject"]] = usage
                        elif topic in (cfg.quota_signals_topic, cfg.balance_signals_topic):
                            signal = json.loads(msg.value() or b"{}")
                            progress.billing_signals.append(signal)
                            seen = int(time.time() * 1000)
                            progress.signal_seen_ms[signal["signal_id"]] = seen
                            quota = topic == cfg.quota_signals_topic
                            print(format_quota(signal) if quota else format_balance(signal))
                        elif topic == cfg.enriched_topic:
                            progress.enriched += 1
                            if (msg.key() or b"").decode() in progress.prepaid_calls:
                                event = json.loads(msg.value() or b"{}")
                                calls = progress.prepaid_calls[event["rate_key"]]
                                calls.append(int(event["event_time"]))
                        elif topic == cfg.dlq_topic:
                            progress.dead_letters += 1
                        elif topic == cfg.usage_topic:
                            progress.usage_windows += 1
                        else:
                            alert = json.loads(msg.value() or b"{}")
                            progress.alerts.append(alert)
                            self._alert_offsets[msg.partition() or 0] = (msg.offset() or 0) + 1
                            print(format_alert(alert), flush=True)
        finally:
            self._consumer.close()


class JobInput:
    """Raw records the job has consumed, from the offsets it commits to its group on checkpoints."""

    def __init__(self, cfg: PipelineSettings, start_ms: int) -> None:
        self._consumer = Consumer(
            {"bootstrap.servers": cfg.bootstrap_servers, "group.id": cfg.group_id}
        )
        meta = self._consumer.list_topics(cfg.raw_topic, timeout=10).topics[cfg.raw_topic]
        self._partitions = [TopicPartition(cfg.raw_topic, p) for p in meta.partitions]
        # Where the job starts (--startup-mode timestamp): the first record at or after
        # start_ms, or the end of a partition that has none yet.
        at = [TopicPartition(cfg.raw_topic, p, start_ms) for p in meta.partitions]
        self._start = 0
        for tp in self._consumer.offsets_for_times(at, timeout=10):
            self._start += (
                tp.offset if tp.offset >= 0 else self._consumer.get_watermark_offsets(tp)[1]
            )

    def _committed(self) -> list[TopicPartition]:
        return list(
            _coordinator_retry(lambda: self._consumer.committed(self._partitions, timeout=10))
        )

    def _total(self) -> int:
        committed = self._committed()
        total = 0
        for tp in committed:
            if tp.offset >= 0:
                total += tp.offset
            else:  # nothing committed yet: the job starts from the beginning
                low, _ = self._consumer.get_watermark_offsets(tp, timeout=10)
                total += low
        return total

    def consumed(self) -> int:
        # Before the job's first checkpoint its group holds an earlier run's offsets.
        return max(0, self._total() - self._start)

    def close(self) -> None:
        self._consumer.close()


def drain(
    cfg: PipelineSettings,
    responder: ResponderProcess,
    watcher: Watcher,
    view: ActionView,
    timeout_s: float = DRAIN_S,
) -> bool:
    """Wait until the responder has acted on every alert the demo printed: its group's committed
    offsets (committed with its plans) cover those alerts, every plan seen has its terminal
    record, and the demo has read every action record it wrote."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and responder.process.poll() is None:
        wanted = watcher.alerts_seen()
        if wanted:
            committed = committed_offsets(cfg.bootstrap_servers, responder.group, cfg.alerts_topic)
            decided = all(committed.get(p, -1) >= o for p, o in wanted.items())
        else:
            decided = True
        written = responder.actions_written()
        with view.lock:
            read = view.records
        if decided and written is not None and read >= written and view.open_plans() == 0:
            return True
        time.sleep(0.2)
    return False


class ResponderSide:
    """The fake APISIX, the receivers, the demo policy and, once started, the responder; all
    stopped on exit."""

    def __init__(
        self,
        cfg: PipelineSettings,
        env: dict[str, str],
        country_ips: dict[str, list[str]],
        seed: int,
    ) -> None:
        self._cfg = cfg
        self._env = env
        self._secrets = DemoSecrets()
        self._stack = contextlib.ExitStack()
        self.keys = traffic_keys(country_ips, seed)
        self.log_path = Path(env["FLINK_LOG_DIR"]) / "responder.log"
        self.process: ResponderProcess | None = None

    def __enter__(self) -> ResponderSide:
        stack, demo_secrets = self._stack, self._secrets
        try:
            self.apisix = demo_apisix(stack, self.keys, demo_secrets)
            self.receivers = HttpReceivers(
                demo_secrets.webhook_secret.encode(), demo_secrets.pagerduty_routing_key
            )
            stack.enter_context(self.receivers)
            http = stack.enter_context(httpx.Client(timeout=5))
            admin = ApisixAdmin(
                self.apisix.url,
                demo_secrets.apisix_admin_key,
                http,
                keyring=[demo_secrets.apisix_keyring.encode()],
            )
            index = KeyIndex(admin, Pseudonymizer(self._env[HASH_KEY_ENV].encode()))
            self.view = ActionView(self.receivers, index.find, admin.consumer)
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="demo-policy-")))
            self.policy = folder / "policy.toml"
            self.policy.write_text(DEMO_POLICY, encoding="utf-8")
        except BaseException:
            stack.close()
            raise
        return self

    def start(self) -> ResponderProcess:
        print(
            f"demo: starting the responder in dry run beside the job (fake APISIX Admin API "
            f"with {len(self.keys)} consumers, local webhook and PagerDuty receivers); "
            f"its log: {self.log_path}",
            flush=True,
        )
        self.process = ResponderProcess(
            self._cfg,
            self._env,
            self.log_path,
            self.policy,
            self.apisix,
            self.receivers,
            self._secrets,
        )
        self._stack.callback(self.process.stop)
        return self.process

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def summary(self) -> None:
        view, receivers, apisix = self.view, self.receivers, self.apisix
        outcomes = ", ".join(f"{n} {o}" for o, n in sorted(view.outcomes.items())) or "none"
        print(f"  responder: terminal actions {outcomes} (log {self.log_path})")
        with receivers.lock:
            pd = receivers.pagerduty
            hooks = receivers.webhooks
            verified = sum(1 for w in hooks if w.verified)
            print(
                f"  receivers: PagerDuty {len(pd.events)} events, {len(pd.pages)} pages, "
                f"{len(pd.resolved)} resolved; webhook {len(hooks)} deliveries, "
                f"{verified} with a valid signature"
            )
            if receivers.invalid:
                print(f"  receivers refused: {'; '.join(receivers.invalid)}")
        violations = f", violations: {'; '.join(apisix.violations)}" if apisix.violations else ""
        print(
            f"  APISIX Admin API: {len(apisix.requests)} requests, {len(apisix.writes())} "
            f"writes (dry run){violations}"
        )


def seed_billing_catalog(bootstrap: str) -> None:
    """The example catalog's plans, subscriptions and grants on the billing topics, which the
    job's billing stage reads at its start (idempotent: the same keys are put again)."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tools.billing",
            "seed",
            "--catalog",
            str(DEMO_CATALOG),
            "--bootstrap-servers",
            bootstrap,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"demo: seeding the billing catalog failed: {proc.stderr.strip()}")
    print(f"demo: billing: {proc.stdout.strip()}", flush=True)


def format_quota(q: dict[str, Any]) -> str:
    if q["kind"] == "enforce":
        return (
            f"billing: ENFORCE {q['subject']} reached the hard limit of plan {q['plan_id']} "
            f"({q['included_units']:,} units): blocked until the end of {q['period']}"
        )
    return (
        f"billing: {q['subject']} reached {q['threshold_percent']} % of plan {q['plan_id']}'s "
        f"{q['included_units']:,} units ({q['units']:,} units in {q['period']})"
    )


def overdraw(
    signal: dict[str, Any], seen_ms: int, call_times: Sequence[int], catalog: Catalog
) -> tuple[int, float] | None:
    """(calls, seconds) between the call that took the balance across the signal's threshold
    and the moment the signal was readable: what a prepaid subject used before anyone could
    act. None if the crossing call is not among ``call_times``. Assumes the subject's calls
    all weigh one unit on one plan for the period (the demo's prepaid plan)."""
    grants = sum(g.amount for g in catalog.grants_of(signal["subject"]))
    sub = catalog.in_force(signal["subject"], min(call_times, default=0))
    if sub is None:
        return None
    plan = catalog.plan(sub.plan_id)
    spend = grants - Decimal(signal["threshold"])
    times = sorted(call_times)
    n = next((i for i in range(1, len(times) + 1) if amount_of(plan, i) >= spend), None)
    if n is None:
        return None
    crossed = times[n - 1]
    return sum(1 for t in times[n:] if t <= seen_ms), (seen_ms - crossed) / 1000


def format_balance(b: dict[str, Any]) -> str:
    what = "is LOW" if b["kind"] == "low" else "is EXHAUSTED"
    return (
        f"billing: {b['subject']}'s prepaid balance {what}: {b['balance']} {b['currency']} "
        f"left (threshold {b['threshold']})"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testkit.demo", description=__doc__)
    parser.add_argument("--bootstrap-servers", default="127.0.0.1:9092")
    parser.add_argument("--duration", type=float, default=150.0, help="seconds of traffic")
    parser.add_argument(
        "--attack-at",
        type=float,
        default=90.0,
        help="seconds into the traffic; the detector has learned the keys after about 80 s",
    )
    parser.add_argument("--rate", type=float, default=150.0, help="requests per second")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--pinot-broker",
        help="also ingest into Pinot and show the KPIs from this broker (make demo PINOT=1)",
    )
    parser.add_argument("--pinot-controller", default="http://127.0.0.1:9000")
    parser.add_argument(
        "--dashboard-port",
        type=int,
        default=8501,
        help="with --pinot-broker: serve the dashboard on this port (0: no dashboard)",
    )
    parser.add_argument(
        "--no-responder", action="store_true", help="do not run the responder beside the job"
    )
    args = parser.parse_args(argv)

    env = dict(os.environ)
    if not env.get(HASH_KEY_ENV):
        # Demo only: a throwaway key, never printed. Real deployments provide their own.
        env[HASH_KEY_ENV] = secrets.token_hex(32)
    env.setdefault("FLINK_LOG_DIR", str(REPO / ".local/demo-logs"))
    cfg = PipelineSettings(bootstrap_servers=args.bootstrap_servers, checkpoint_interval_seconds=5)
    ensure_topics(
        cfg.bootstrap_servers,
        pipeline_topics(
            raw=cfg.raw_topic,
            enriched=cfg.enriched_topic,
            alerts=cfg.alerts_topic,
            dlq=cfg.dlq_topic,
            usage=cfg.usage_topic,
            reconciliation=cfg.reconciliation_topic,
            actions=ACTIONS_TOPIC,
        ),
    )
    seed_billing_catalog(cfg.bootstrap_servers)
    # Drawn once: the traffic sends these addresses and the fake APISIX knows its keys.
    country_ips = ips_for_countries(default_geoip_db(), LIVE_COUNTRIES, 4, args.seed)

    pinot = None
    if args.pinot_broker:
        from testkit.demo_pinot import PinotView

        pinot = PinotView(cfg, args.pinot_controller, args.pinot_broker)
    demo_start_ms = int(time.time() * 1000)

    with contextlib.ExitStack() as stack:
        if pinot is not None and args.dashboard_port:
            stack.enter_context(dashboard_links(args.pinot_broker, args.dashboard_port))
        side = None
        if not args.no_responder:
            side = stack.enter_context(ResponderSide(cfg, env, country_ips, args.seed))
        status = run(args, cfg, env, country_ips, pinot, demo_start_ms, side)
    return status


# The consumer whose portal link the demo prints: prepaid, so its page shows a quota, a bill
# and a balance falling.
PORTAL_CONSUMER = "globex-mobile"


@contextlib.contextmanager
def dashboard_links(broker_url: str, port: int) -> Iterator[None]:
    """The dashboard over the demo's Pinot for the demo's run, its links printed. Its token
    secret is drawn for this run, so the links printed die with it."""
    from dashboard import tokens

    if stack.port_open(port):
        print(f"demo: port {port} is taken; no dashboard (--dashboard-port picks another)")
        yield
        return
    secret = secrets.token_hex(32)
    log = REPO / ".local" / "demo-logs" / "dashboard.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with stack.dashboard(broker_url, port, secret, log_path=log, log=lambda _: None) as url:
        token = tokens.create_token(PORTAL_CONSUMER, secret.encode(), int(time.time()))
        print(f"demo: dashboard (log {log}):", flush=True)
        print(f"  ops view:      {url}/?view=ops", flush=True)
        print(f"  product view:  {url}/?view=product", flush=True)
        print(f"  {PORTAL_CONSUMER}'s portal: {url}/?token={token}", flush=True)
        yield
        if sys.stdin.isatty():
            print(f"demo: the dashboard stays up at {url} until Ctrl-C", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                threading.Event().wait()


def run(
    args: argparse.Namespace,
    cfg: PipelineSettings,
    env: dict[str, str],
    country_ips: dict[str, list[str]],
    pinot: PinotView | None,
    demo_start_ms: int,
    side: ResponderSide | None,
) -> int:
    progress = Progress()
    progress.prepaid_calls = {g.subject: [] for g in load_catalog(DEMO_CATALOG).grants}
    # Before the job and the responder start, so that nothing they commit is missed.
    watcher = Watcher(cfg, progress, side.view if side is not None else None)
    responder = side.start() if side is not None else None
    print(f"demo: starting the job on the embedded Flink MiniCluster ({cfg.bootstrap_servers})")
    print(f"demo: Flink logs in {env['FLINK_LOG_DIR']}", flush=True)
    job = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jobs.gateway_pipeline",
            "--bootstrap-servers",
            cfg.bootstrap_servers,
            "--checkpoint-interval-seconds",
            str(cfg.checkpoint_interval_seconds),
            # This run's traffic only, not the records an earlier demo left on the broker.
            "--startup-mode",
            "timestamp",
            "--startup-timestamp-ms",
            str(demo_start_ms),
            # The demo's keys are born with it: a minute of history, not the default 30.
            *SCENARIO_JOB_FLAGS,
        ],
        cwd=REPO,
        env=env,
        start_new_session=True,  # so Ctrl-C here stops the job and its JVM as one group
    )
    stop = threading.Event()
    # The watcher outlives the traffic: it reads the responder's last actions after the job.
    stop_watching = threading.Event()
    job_input = JobInput(cfg, demo_start_ms)
    watch_thread = threading.Thread(target=watcher.run, args=(stop_watching,), daemon=True)
    watch_thread.start()
    if pinot is not None:
        pinot.start_probe(stop)
    stats: list[LiveStats] = []

    def traffic() -> None:
        stats.append(
            run_live(
                cfg.bootstrap_servers,
                cfg.raw_topic,
                rate=args.rate,
                duration=args.duration,
                attack_at=args.attack_at,
                country_ips=country_ips,
                seed=args.seed,
                stop=stop,
                report=lambda line: print(line, flush=True),
            )
        )

    generator = threading.Thread(target=traffic, daemon=True)
    generator.start()
    started = time.monotonic()
    interrupted = False
    try:
        while generator.is_alive() or time.monotonic() - started < args.duration + 20:
            if job.poll() is not None:
                print(f"demo: the job exited early with code {job.returncode}", file=sys.stderr)
                break
            time.sleep(5)
            if responder is not None:
                responder.check()
            records_in = job_input.consumed()
            with progress.lock:
                print(
                    f"progress +{time.monotonic() - started:5.0f}s: raw records in {records_in}, "
                    "enriched "
                    f"{progress.enriched}, dead-lettered {progress.dead_letters}, "
                    f"window counts {progress.usage_windows}, alerts {len(progress.alerts)}"
                    + (f", action records {progress.actions}" if responder is not None else ""),
                    flush=True,
                )
            if not generator.is_alive() and time.monotonic() - started > args.duration + 20:
                break
    except KeyboardInterrupt:
        interrupted = True
        print("\ndemo: Ctrl-C, stopping", flush=True)
    finally:
        stop.set()
        generator.join(timeout=10)
        if job.poll() is None:
            stack.stop_group(job, 30)
        if side is not None and responder is not None:
            # No alert comes any more: let it act on the last ones, unless asked to stop now.
            if not interrupted and not drain(cfg, responder, watcher, side.view):
                print(
                    "demo: the responder has not finished every action; what is left stays "
                    "planned and its next start performs it",
                    flush=True,
                )
            responder.stop()
        stop_watching.set()
        watch_thread.join(timeout=5)
        job_input.close()
        if pinot is not None:
            pinot.stop_probe()

    produced = stats[0] if stats else None
    print("demo: summary")
    if produced is not None:
        print(
            f"  produced: {produced.records} records, {produced.events} request events "
            f"({produced.attack_events} from the attacker), {produced.bad_records} bad records"
        )
    print(
        f"  committed: enriched {progress.enriched}, dead-lettered {progress.dead_letters}, "
        f"window counts {progress.usage_windows}, alerts {len(progress.alerts)}"
    )
    for subject, usage in sorted(progress.period_usage.items()):
        if not usage["segments"]:
            print(
                f"  billing: {subject}: {usage['unpriced_calls']:,} calls, no subscription "
                "(counted, not priced)"
            )
            continue
        plans = "+".join(seg["plan_id"] for seg in usage["segments"])
        print(
            f"  billing: {subject} ({plans}): {usage['calls']:,} calls, {usage['units']:,} units, "
            f"{usage['amount']} {usage['currency']} so far in {usage['period']}"
        )
    print(f"  billing signals: {len(progress.billing_signals)} (quota thresholds and balances)")
    catalog = load_catalog(DEMO_CATALOG)
    for sig in progress.billing_signals:
        if sig.get("kind") not in ("low", "exhausted"):
            continue
        calls = progress.prepaid_calls.get(sig["subject"], [])
        measured = overdraw(sig, progress.signal_seen_ms[sig["signal_id"]], calls, catalog)
        if measured is not None:
            print(
                f"  overdraw: {sig['subject']} {sig['kind']}: readable {measured[1]:.1f} s and "
                f"{measured[0]} calls after the call that crossed {sig['threshold']}"
            )
    rules = sorted({(a["rule"], a.get("consumer") or a["rate_key"]) for a in progress.alerts})
    for rule, who in rules:
        print(f"  alert: {rule} for {who}")
    if side is not None:
        side.summary()
    if pinot is not None:
        end_ms = int(time.time() * 1000) + 60_000
        # Event times can trail the demo's start by the generator's out-of-orderness.
        start_ms = demo_start_ms - 60_000
        rows = pinot.wait_for(progress.enriched, start_ms, end_ms)
        print(f"  pinot: api_events holds {rows} of the {progress.enriched} enriched events")
        print(f"  pinot freshness: {pinot.freshness.summary()}")
        pinot.report(start_ms, end_ms)
        pinot.close()
    if not progress.alerts and not interrupted:
        print("  no alert arrived; see the Flink logs", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
