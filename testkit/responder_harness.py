"""Running the responder (``python -m responder run``) as a subprocess in integration tests.

Shared by the responder's own tests (made-up alert records) and the pipeline test that points
it at the real job's alerts topic: the secrets the receivers and fake gateways expect,
``Responders`` (starts the subprocess with one configuration, as often as a test needs, and
stops it with SIGTERM), a fresh actions topic, and readers of what the responder committed.
Not shipped: a test kit.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from responder.actions import ActionRecord
from testkit.gateway_admin import wait_for
from testkit.receivers import HttpReceivers, SmtpReceiver, free_port
from tools.topics import TopicSpec, delete_topics, ensure_topics

REPO = Path(__file__).resolve().parents[1]
HASH_KEY = "e3b7a1c9f5d2846b0c7e9a3f1d5b8c2e6a4f0d9b7c3e1a5f8d2b6c4e0a9f7d3b"
WEBHOOK_SECRET = "7f2c9e4a1b8d6f3c0e5a9b2d7f4c1e8a"
ROUTING_KEY = "PDr0ut1ngK3y7c1e9a3f5d2b8e6c4a0f"
ADMIN_KEY = "c4e8a2f6b0d9e3c7a1f5b9d2e6c0a4f8"
KONG_TOKEN = "kong-admin-token-5e1a9c3f7b2d"
SLACK_TOKEN = "slack-hook-token-9d3b7f1c5e8a"
SECRETS = (HASH_KEY, WEBHOOK_SECRET, ROUTING_KEY, ADMIN_KEY, KONG_TOKEN, SLACK_TOKEN)
"""Every secret the harness hands the responder (a test adds the keys it seeds)."""
DEADLINE_S = 60.0


def http_receivers() -> HttpReceivers:
    """Webhook, Slack and PagerDuty receivers expecting the harness's secret and routing key."""
    return HttpReceivers(WEBHOOK_SECRET.encode(), ROUTING_KEY)


def smtp_args(smtp: SmtpReceiver) -> list[str]:
    """The responder's flags for mail through the local SMTP receiver."""
    return [
        "--smtp-host",
        "127.0.0.1",
        "--smtp-port",
        str(smtp.port),
        "--smtp-tls",
        "none",
        "--smtp-from",
        "responder@pipeline.example",
    ]


@contextmanager
def actions_topic(bootstrap: str) -> Iterator[str]:
    """A fresh actions topic (2 partitions), deleted afterwards."""
    name = f"test.actions.{uuid.uuid4().hex[:12]}"
    ensure_topics(bootstrap, {name: TopicSpec(partitions=2)})
    try:
        yield name
    finally:
        delete_topics(bootstrap, [name])


@dataclass
class ResponderRun:
    """A responder subprocess and what it printed."""

    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


class Responders:
    """Starts ``python -m responder run`` with one configuration, as often as a test needs.

    ``topics`` names the ``alerts`` topic to read and the ``actions`` topic to write;
    ``hash_key`` is the PIPELINE_HASH_KEY the alerts' key fingerprints were made with; ``env``
    adds to (and overrides) the subprocess's environment.
    """

    def __init__(
        self,
        tmp_path: Path,
        bootstrap: str,
        topics: dict[str, str],
        receivers: HttpReceivers,
        policy: str,
        args: list[str],
        env: dict[str, str],
        *,
        hash_key: str = HASH_KEY,
    ) -> None:
        self.tmp_path = tmp_path
        self.policy = tmp_path / "policy.toml"
        self.policy.write_text(policy)
        self.health_port = free_port()
        suffix = uuid.uuid4().hex[:8]
        self.args = [
            "--bootstrap-servers",
            bootstrap,
            "--alerts-topic",
            topics["alerts"],
            "--actions-topic",
            topics["actions"],
            "--group-id",
            f"test-responder-{suffix}",
            "--transactional-id",
            f"test-responder-{suffix}",
            "--instance",
            f"test-{suffix}",
            "--policy-file",
            str(self.policy),
            "--webhook-url",
            f"{receivers.url}/webhook",
            "--pagerduty-url",
            f"{receivers.url}/pagerduty",
            "--health-port",
            str(self.health_port),
            "--backoff-base-seconds",
            "0.05",
            "--poll-timeout-seconds",
            "0.2",
            *args,
        ]
        self.env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "PIPELINE_HASH_KEY": hash_key,
            "RESPONDER_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "RESPONDER_PAGERDUTY_ROUTING_KEY": ROUTING_KEY,
            "RESPONDER_SLACK_WEBHOOK_URL": f"{receivers.url}/slack/T0/B0/{SLACK_TOKEN}",
            **env,
        }
        self.runs: list[ResponderRun] = []

    def start(self) -> ResponderRun:
        log = self.tmp_path / f"responder-{len(self.runs)}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "responder", "run", *self.args],
                cwd=REPO,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        run = ResponderRun(process, log)
        self.runs.append(run)
        wait_for(lambda: self.ready(run), DEADLINE_S, "the responder to be ready")
        return run

    def ready(self, run: ResponderRun) -> bool:
        if run.process.poll() is not None:
            raise AssertionError(f"the responder exited early:\n{run.output()}")
        try:
            return httpx.get(f"http://127.0.0.1:{self.health_port}/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    def metrics(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.health_port}/metrics").text

    def stop(self, run: ResponderRun) -> None:
        """SIGTERM: the responder finishes what it does and exits 0."""
        run.process.send_signal(signal.SIGTERM)
        assert run.process.wait(30) == 0, run.output()

    def kill_all(self) -> None:
        for run in self.runs:
            if run.process.poll() is None:
                run.process.kill()
                run.process.wait(10)

    def output(self) -> str:
        return "".join(run.output() for run in self.runs)


def read_actions(bootstrap: str, topic: str) -> list[ActionRecord]:
    """Every committed action record, read_committed, to the end of each partition."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-read-{uuid.uuid4().hex}",
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
            "enable.auto.commit": False,
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        waiting, out = set(partitions), []
        deadline = time.monotonic() + DEADLINE_S
        while waiting:
            assert time.monotonic() < deadline, "no end of the actions topic"
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                assert err.code() == KafkaError._PARTITION_EOF, err
                waiting.discard(msg.partition())
                continue
            out.append(ActionRecord.from_json(msg.value() or b""))
        return out
    finally:
        consumer.close()


def terminal(records: list[ActionRecord]) -> list[ActionRecord]:
    return [r for r in records if r.outcome != "planned"]


def assert_no_secrets(text: str, *extra: str) -> None:
    """None of the harness's secrets, nor ``extra`` (keys, a test's hash key), is in ``text``."""
    leaked = [i for i, secret in enumerate((*SECRETS, *extra)) if secret in text]
    assert leaked == [], f"secrets (by position) in the output: {leaked}"
