"""The test broker honours Kafka transactions (read_committed hides an aborted transaction), and
creates the pipeline's topics with their settings; the job refuses to start without its topics."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource

from metering.topics import BY_ROLE
from tools.topics import RETENTION_14_DAYS_MS

pytestmark = pytest.mark.integration

TIMEOUT_S = 60.0
REPO = Path(__file__).resolve().parents[2]
# The job's log format (jobs.gateway_pipeline.main: logging.basicConfig).
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING) \S+ ")


def _produce_transactions(bootstrap: str, topic: str) -> None:
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "transactional.id": f"test-broker-{uuid.uuid4().hex}",
            "enable.idempotence": True,
        }
    )
    producer.init_transactions(TIMEOUT_S)

    producer.begin_transaction()
    for i in range(3):
        producer.produce(topic, key=f"k{i}".encode(), value=f"committed-{i}".encode())
    producer.commit_transaction(TIMEOUT_S)

    producer.begin_transaction()
    for i in range(2):
        producer.produce(topic, key=f"k{i}".encode(), value=f"aborted-{i}".encode())
    # Make sure the aborted records really reach the log before the abort marker; otherwise
    # abort_transaction() would just purge them client-side and prove nothing.
    assert producer.flush(TIMEOUT_S) == 0
    producer.abort_transaction(TIMEOUT_S)


def _read_all(bootstrap: str, topic: str, isolation_level: str) -> list[str]:
    """Read the topic from the beginning until every partition reports end-of-partition."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-broker-{uuid.uuid4().hex}",
            "isolation.level": isolation_level,
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=TIMEOUT_S).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        pending_eof = set(partitions)
        values: list[str] = []
        deadline = time.monotonic() + TIMEOUT_S
        while pending_eof:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(
                    f"{isolation_level}: no end-of-partition for {sorted(pending_eof)} within "
                    f"{TIMEOUT_S:.0f}s; got {values}"
                )
            msg = consumer.poll(min(1.0, remaining))
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    pending_eof.discard(msg.partition())
                    continue
                pytest.fail(f"{isolation_level}: consumer error {err}")
            value = msg.value()
            assert value is not None
            values.append(value.decode())
        return values
    finally:
        consumer.close()


def test_read_committed_sees_only_committed_transaction(
    kafka_bootstrap: str, unique_topics: dict[str, str]
) -> None:
    topic = unique_topics["raw"]
    _produce_transactions(kafka_bootstrap, topic)

    committed = _read_all(kafka_bootstrap, topic, "read_committed")
    assert sorted(committed) == ["committed-0", "committed-1", "committed-2"]

    everything = _read_all(kafka_bootstrap, topic, "read_uncommitted")
    assert sorted(everything) == [
        "aborted-0",
        "aborted-1",
        "committed-0",
        "committed-1",
        "committed-2",
    ]


def test_topics_are_created_with_their_retention_and_cleanup_policy(
    kafka_bootstrap: str, unique_topics: dict[str, str]
) -> None:
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    resources = {
        role: ConfigResource(ConfigResource.Type.TOPIC, name)
        for role, name in unique_topics.items()
    }
    futures = admin.describe_configs(list(resources.values()), request_timeout=TIMEOUT_S)
    configs = {
        role: {
            key: entry.value
            for key, entry in futures[resource].result(TIMEOUT_S).items()
            if key in ("cleanup.policy", "retention.ms")
        }
        for role, resource in resources.items()
    }
    week_ms = str(7 * 24 * 60 * 60 * 1000)  # the broker's default log.retention.hours, 168
    assert configs == {
        "raw": {"cleanup.policy": "delete", "retention.ms": week_ms},
        "enriched": {"cleanup.policy": "delete", "retention.ms": week_ms},
        "usage": {"cleanup.policy": "delete", "retention.ms": week_ms},
        "alerts": {"cleanup.policy": "delete", "retention.ms": RETENTION_14_DAYS_MS},
        "dlq": {"cleanup.policy": "delete", "retention.ms": RETENTION_14_DAYS_MS},
        # The upsert topic: compacted to the latest record per key, and still aged out.
        "reconciliation": {
            "cleanup.policy": "compact,delete",
            "retention.ms": RETENTION_14_DAYS_MS,
        },
        "period_usage": {
            "cleanup.policy": "compact,delete",
            "retention.ms": RETENTION_14_DAYS_MS,
        },
        "quota_signals": {"cleanup.policy": "delete", "retention.ms": RETENTION_14_DAYS_MS},
        "balance_signals": {"cleanup.policy": "delete", "retention.ms": RETENTION_14_DAYS_MS},
    }


def test_the_job_refuses_a_missing_topic_at_start(
    kafka_bootstrap: str, unique_topics: dict[str, str]
) -> None:
    # Some topic flags given, one of them naming a topic the broker does not have (the local
    # broker does not auto-create topics): the job must refuse before building anything.
    missing = f"{unique_topics['usage']}.missing"
    flags = {role: name for role, name in unique_topics.items() if role != "usage"}
    cmd = [sys.executable, "-m", "jobs.gateway_pipeline", "--bootstrap-servers", kafka_bootstrap]
    for role, name in (flags | {"usage": missing}).items():
        cmd += [BY_ROLE[role].flag, name]
    env = dict(os.environ, PIPELINE_HASH_KEY=secrets.token_hex(32))
    started = time.monotonic()
    proc = subprocess.run(
        cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert time.monotonic() - started < 60, "refused only after a producer timeout"
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    errors = [line for line in lines if not LOG_LINE.match(line)]
    assert errors == [
        f"error: topic '{missing}' does not exist on {kafka_bootstrap}; "
        "create it with make topics (or tools.topics)"
    ]
    assert "Traceback" not in proc.stderr
